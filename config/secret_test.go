package config

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"
)

const (
	apiKey    = "sk-live-0123456789abcdef"
	gossipKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
)

func TestSecretFormatting(t *testing.T) {
	s := Secret(apiKey)
	if s.Value() != apiKey {
		t.Errorf("Value: got %q, want %q", s.Value(), apiKey)
	}
	for _, verb := range []string{"%v", "%+v", "%s", "%q", "%x", "%X", "%d", "%10s", "%-5v"} {
		got := fmt.Sprintf(verb, s)
		if strings.Contains(got, apiKey) || strings.Contains(got, fmt.Sprintf("%x", apiKey)) || !strings.Contains(got, "<redacted>") {
			t.Errorf("Sprintf(%q): got %q, want <redacted> only", verb, got)
		}
	}
	checks := []struct{ name, got, want string }{
		{"String", s.String(), "<redacted>"},
		{"GoString", s.GoString(), `"<redacted>"`},
		{"%#v", fmt.Sprintf("%#v", s), `"<redacted>"`},
		{"empty String", Secret("").String(), ""},
		{"empty %v", fmt.Sprintf("[%v]", Secret("")), "[]"},
		{"empty GoString", Secret("").GoString(), `""`},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, c.got, c.want)
		}
	}
	for name, marshal := range map[string]func(any) ([]byte, error){
		"json": json.Marshal,
		"yaml": yaml.Marshal,
	} {
		out, err := marshal(s)
		// encoding/json escapes < and > as \u003c and \u003e.
		if err != nil || strings.Contains(string(out), apiKey) || !strings.Contains(string(out), "redacted") {
			t.Errorf("%s: got %s, %v; want <redacted>", name, out, err)
		}
	}
	if text, _ := s.MarshalText(); string(text) != "<redacted>" {
		t.Errorf("MarshalText: got %q, want <redacted>", text)
	}
	if out, _ := json.Marshal(Secret("")); string(out) != `""` {
		t.Errorf("json of an empty secret: got %s, want \"\"", out)
	}
}

// TestConfigNeverPrintsSecrets prints a loaded configuration with secrets
// every way a program might, and looks for them in the output (as
// Alertmanager's TestHideConfigSecrets does).
func TestConfigNeverPrintsSecrets(t *testing.T) {
	path := writeConfig(t, `
upstreams: [{name: a, url: "http://a", api_key: "${KEY}"}]
cluster: {secret_key: "${GOSSIP}"}
`)
	cfg, _ := mustLoad(t, path, []string{"KEY=" + apiKey, "GOSSIP=" + gossipKey})
	if cfg.Upstreams[0].APIKey.Value() != apiKey || cfg.Cluster.SecretKey.Value() != gossipKey {
		t.Fatalf("secrets not loaded: got %q and %q", cfg.Upstreams[0].APIKey.Value(), cfg.Cluster.SecretKey.Value())
	}
	var outputs = map[string]string{
		"%v":             fmt.Sprintf("%v", cfg),
		"%+v":            fmt.Sprintf("%+v", cfg),
		"%#v":            fmt.Sprintf("%#v", cfg),
		"%v of pointer":  fmt.Sprintf("%+v", &cfg),
		"%v of upstream": fmt.Sprintf("%v", cfg.Upstreams[0]),
	}
	j, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs["json"] = string(j)
	y, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	outputs["yaml"] = string(y)
	var logged bytes.Buffer
	log := zerolog.New(&logged)
	log.Info().Interface("config", cfg).Stringer("key", cfg.Upstreams[0].APIKey).
		Any("cluster", cfg.Cluster).Msg("loaded")
	outputs["zerolog"] = logged.String()
	for name, out := range outputs {
		if strings.Contains(out, apiKey) || strings.Contains(out, gossipKey) {
			t.Errorf("%s: output holds a secret:\n%s", name, out)
		}
		if !strings.Contains(out, "redacted") {
			t.Errorf("%s: got\n%s\nwant <redacted> in place of the secrets", name, out)
		}
	}
}

func TestLoadErrorsAndWarningsNeverPrintSecrets(t *testing.T) {
	path := writeConfig(t, `
upstreams: [{name: a, url: "http://a", api_key: "${OPENAI_API_KEY}", timeout: "${OPENAI_API_KEY}"}]
cluster: {secret_key: "${OPENAI_API_KEY}"}
`)
	_, warnings, err := Load(path, []string{"OPENAI_API_KEY=" + apiKey, "GENAI_GATEWAY_NOT_A_KEY=" + apiKey}, nil)
	if err == nil {
		t.Fatal("got no error, want problems with timeout and secret_key")
	}
	all := err.Error() + strings.Join(warnings, "\n")
	if strings.Contains(all, apiKey) {
		t.Errorf("got\n%s\nwant no secret in errors and warnings", all)
	}
	wantProblem(t, err, "upstreams[0].timeout")
	wantProblem(t, err, "cluster.secret_key")
}

func TestClusterKey(t *testing.T) {
	tests := []struct {
		name, key string
		size      int
		errFrag   string
	}{
		{"empty", "", 0, ""},
		{"16 bytes", base64.StdEncoding.EncodeToString(make([]byte, 16)), 16, ""},
		{"24 bytes", base64.StdEncoding.EncodeToString(make([]byte, 24)), 24, ""},
		{"32 bytes", gossipKey, 32, ""},
		{"spaces around", " " + gossipKey + "\n", 32, ""},
		{"wrong size", base64.StdEncoding.EncodeToString(make([]byte, 20)), 0, "20 bytes"},
		{"not base64", "%%%%not-base64%%%%", 0, "not valid base64"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := Cluster{SecretKey: Secret(tt.key)}.Key()
			if tt.errFrag != "" {
				if err == nil || !strings.HasPrefix(err.Error(), "cluster.secret_key: ") || !strings.Contains(err.Error(), tt.errFrag) {
					t.Errorf("got %v, want an error naming cluster.secret_key containing %q", err, tt.errFrag)
				}
				if err != nil && tt.key != "" && strings.Contains(err.Error(), tt.key) {
					t.Errorf("error %q holds the secret", err)
				}
				return
			}
			if err != nil || len(key) != tt.size || (tt.size == 0 && key != nil) {
				t.Errorf("got %d bytes (nil %v), %v; want %d bytes", len(key), key == nil, err, tt.size)
			}
		})
	}
}
