package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// flags returns a flag set with RegisterFlags, parsed from args.
func flags(t *testing.T, args ...string) *pflag.FlagSet {
	t.Helper()
	fs := pflag.NewFlagSet("test", pflag.ContinueOnError)
	RegisterFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("parse flags %q: %v", args, err)
	}
	return fs
}

// writeConfig writes content to a fresh file and returns its path.
func writeConfig(t testing.TB, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// mustLoad loads and fails the test on error.
func mustLoad(t *testing.T, path string, environ []string, args ...string) (Config, []string) {
	t.Helper()
	cfg, warnings, err := Load(path, environ, flags(t, args...))
	if err != nil {
		t.Fatalf("Load: got error\n%v\nwant none", err)
	}
	return cfg, warnings
}

// errLines splits a joined error into its lines.
func errLines(err error) []string {
	if err == nil {
		return nil
	}
	return strings.Split(err.Error(), "\n")
}

// wantProblem fails unless some line of err starts with key + ":" and holds
// every fragment.
func wantProblem(t *testing.T, err error, key string, fragments ...string) {
	t.Helper()
	for _, line := range errLines(err) {
		if !strings.HasPrefix(line, key+": ") {
			continue
		}
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(line, f)
		}
		if ok {
			return
		}
	}
	t.Errorf("got error\n%v\nwant a line starting %q containing %q", err, key+": ", fragments)
}

// wantWarning fails unless some warning holds every fragment.
func wantWarning(t *testing.T, warnings []string, fragments ...string) {
	t.Helper()
	for _, w := range warnings {
		ok := true
		for _, f := range fragments {
			ok = ok && strings.Contains(w, f)
		}
		if ok {
			return
		}
	}
	t.Errorf("got warnings %q, want one containing %q", warnings, fragments)
}
