package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzLoad writes arbitrary bytes as the config file: Load must never
// panic, a configuration it accepts must validate, and no secret from the
// environment may show in its errors or warnings.
func FuzzLoad(f *testing.F) {
	seeds, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range seeds {
		data, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"", "~", "[]", "listen: [", "a: &a [*a]", "<<: {listen: x}", "x: ${OPENAI_API_KEY}",
		"rate_limit: {overrides: {\"\": [{}]}}", "upstreams: [{<<: [{name: a}, {url: b}]}]",
		"log: !!binary aGVsbG8=", "? {a: b}\n: c", "---\n---\n", "\xff\xfe",
	} {
		f.Add([]byte(s))
	}
	const secret = "sk-fuzz-secret-0123456789"
	environ := []string{"OPENAI_API_KEY=" + secret, "GENAI_GATEWAY_CLUSTER_SECRET_KEY=" + secret}
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, warnings, err := Load(path, environ, nil)
		out := strings.Join(warnings, "\n")
		if err != nil {
			out += err.Error()
		} else if verr := cfg.Validate(); verr != nil {
			t.Errorf("Load accepted a configuration that does not validate: %v", verr)
		}
		if strings.Contains(out, secret) {
			t.Errorf("a secret shows in the errors or warnings:\n%s", out)
		}
	})
}
