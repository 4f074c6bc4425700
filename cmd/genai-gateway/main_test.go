package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/genai-gateway/genai-gateway/config"
)

func TestRunCommands(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, []byte("listen: 127.0.0.1:0\nupstreams:\n  - {name: a, url: \"http://127.0.0.1:1\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unlimited := filepath.Join(dir, "unlimited.yaml")
	if err := os.WriteFile(unlimited, []byte("rate_limit:\n  limits: [{name: l, metric: requests, limit: 1, window: 1m}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("listen: 127.0.0.1:0\nmax_body_bytes: -1\nbogus: true\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		env      []string
		wantCode int
		wantOut  []string // substrings of stdout+stderr
	}{
		{"version", []string{"--version"}, nil, 0, []string{"genai-gateway"}},
		{"help", []string{"--help"}, nil, 0, []string{"check-config", "keygen --name", "--config", "--openai-domain"}},
		{"check good", []string{"check-config", "--config", good}, nil, 0, []string{"valid"}},
		{"check good from env", []string{"check-config"}, []string{"GENAI_GATEWAY_CONFIG=" + good}, 0, []string{good}},
		{"check warns", []string{"check-config", "--config", unlimited}, nil, 0, []string{"valid", "warning: rate_limit.limits is set, but rate_limit.enabled is false"}},
		{"check bad", []string{"check-config", "--config", bad}, nil, 2, []string{"max_body_bytes", "bogus"}},
		{"run bad", []string{"--config", bad}, nil, 2, []string{"max_body_bytes"}},
		{"missing file", []string{"--config", filepath.Join(dir, "nope.yaml")}, nil, 2, []string{"nope.yaml"}},
		{"unknown command", []string{"frobnicate"}, nil, 2, []string{"frobnicate"}},
		{"unknown flag", []string{"--frobnicate"}, nil, 2, []string{"frobnicate"}},
		{"sleep", []string{"sleep", "0.01"}, nil, 0, nil},
		{"sleep bad", []string{"sleep", "soon"}, nil, 2, []string{"soon"}},
		{"healthcheck down", []string{"healthcheck", "--url", "http://127.0.0.1:1/healthz", "--timeout", "1s"}, nil, 1, []string{"healthcheck"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, tt.env, &stdout, &stderr)
			out := stdout.String() + stderr.String()
			if code != tt.wantCode {
				t.Errorf("exit code: got %d, want %d\n%s", code, tt.wantCode, out)
			}
			for _, s := range tt.wantOut {
				if !strings.Contains(out, s) {
					t.Errorf("output: got %q, want it to contain %q", out, s)
				}
			}
		})
	}
}

func TestConsoleLogHasNoColourInFiles(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(config.Log{Level: "info", Format: "console"}, &buf)
	log.Info().Str("k", "v").Msg("hello")
	if out := buf.String(); strings.Contains(out, "\x1b[") || !strings.Contains(out, "hello") {
		t.Errorf("console log to a buffer: got %q, want plain text with the message", out)
	}
}
