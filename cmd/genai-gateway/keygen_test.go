package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/genai-gateway/genai-gateway/config"
	"github.com/genai-gateway/genai-gateway/proxy/auth"
)

var keyPattern = regexp.MustCompile(`^ggw_[0-9A-Za-z]{43}$`)

// keygenOutput runs keygen and splits what it printed.
func keygenOutput(t *testing.T, args ...string) (key string, entry []config.APIKey, yamlText string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	if code := run(append([]string{"keygen"}, args...), nil, &stdout, &stderr); code != exitOK {
		t.Fatalf("keygen %q: got exit %d (%s), want 0", args, code, stderr.String())
	}
	lines := strings.Split(stdout.String(), "\n")
	if len(lines) < 2 {
		t.Fatalf("got output %q, want a comment and the key", stdout.String())
	}
	key = lines[1]
	yamlText = strings.Join(lines[2:], "\n")
	if err := yaml.Unmarshal([]byte(yamlText), &entry); err != nil {
		t.Fatalf("entry %q: got %v, want YAML", yamlText, err)
	}
	return key, entry, yamlText
}

func TestKeygen(t *testing.T) {
	key, entry, yamlText := keygenOutput(t, "--name", "search-team")
	if !keyPattern.MatchString(key) {
		t.Errorf("key: got %q, want ggw_ and 43 base62 characters", key)
	}
	sum := sha256.Sum256([]byte(key))
	want := config.APIKey{Name: "search-team", User: "search-team", SHA256: hex.EncodeToString(sum[:])}
	if len(entry) != 1 || entry[0].Name != want.Name || entry[0].User != want.User || entry[0].SHA256 != want.SHA256 {
		t.Errorf("entry: got %+v, want %+v", entry, want)
	}
	if strings.Contains(yamlText, key) {
		t.Error("entry: got the key in it, want only its hash")
	}

	key2, entry2, _ := keygenOutput(t, "--name", "search-team")
	if key2 == key || entry2[0].SHA256 == entry[0].SHA256 {
		t.Errorf("two runs: got the same key %q twice, want different keys", key)
	}

	// The printed entry pasted under auth.keys loads, and the printed key
	// authenticates as its user.
	indented := "  " + strings.ReplaceAll(strings.TrimSpace(yamlText), "\n", "\n  ")
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte("auth:\n keys:\n"+indented+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(path, nil, nil)
	if err != nil {
		t.Fatalf("load pasted entry: got %v, want nil", err)
	}
	a, err := auth.New(auth.Config{Keys: []auth.Key{{Name: cfg.Auth.Keys[0].Name, User: cfg.Auth.Keys[0].EffectiveUser(), SHA256: cfg.Auth.Keys[0].SHA256}}}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	id, err := a.Authenticate(context.Background(), func(name string) []byte {
		if name == auth.HeaderAuthorization {
			return []byte("Bearer " + key)
		}
		return nil
	})
	if err != nil || id.User != "search-team" {
		t.Errorf("authenticate with the printed key: got %+v, %v; want user search-team", id, err)
	}
}

func TestKeygenUserAndQuoting(t *testing.T) {
	_, entry, _ := keygenOutput(t, "--name", "ops: nightly #1", "--user", "Batch Jobs")
	if len(entry) != 1 || entry[0].Name != "ops: nightly #1" || entry[0].User != "Batch Jobs" {
		t.Errorf("entry: got %+v, want name %q and user %q", entry, "ops: nightly #1", "Batch Jobs")
	}
}

func TestKeygenErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no name", nil, "--name is required"},
		{"empty name", []string{"--name", ""}, "--name is required"},
		{"unknown flag", []string{"--nme", "x"}, "unknown flag"},
		{"extra argument", []string{"--name", "x", "y"}, `unexpected argument "y"`},
		{"user with slash", []string{"--name", "x", "--user", "a/b"}, `user: must not contain "/"`},
		{"name too long", []string{"--name", strings.Repeat("n", 300)}, "user: must be at most 256 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"keygen"}, tt.args...), nil, &stdout, &stderr)
			if code != exitConfig {
				t.Errorf("exit code: got %d, want %d", code, exitConfig)
			}
			if !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("stderr: got %q, want it to contain %q", stderr.String(), tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout: got %q, want nothing (no key printed on error)", stdout.String())
			}
		})
	}
}

func TestNewKeyAlphabet(t *testing.T) {
	seen := map[byte]bool{}
	for range 200 {
		k := newKey()
		if !keyPattern.MatchString(k) {
			t.Fatalf("newKey: got %q, want ggw_ and 43 base62 characters", k)
		}
		for i := len("ggw_"); i < len(k); i++ {
			seen[k[i]] = true
		}
	}
	if len(seen) != 62 {
		t.Errorf("characters used over 200 keys: got %d, want all 62", len(seen))
	}
}
