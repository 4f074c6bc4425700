package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"github.com/genai-gateway/genai-gateway/config"
)

// Gateway API keys are keyPrefix and keyChars base62 characters:
// 43 × log2(62) ≈ 256 random bits. The prefix lets secret scanners find
// leaked keys.
const (
	keyPrefix = "ggw_"
	keyChars  = 43
	base62    = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// keygen prints a new gateway API key and its auth.keys entry.
func keygen(args []string, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("genai-gateway keygen", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "", "name of the key, shown in logs, metrics and /usage (required)")
	user := fs.String("user", "", "user the key authenticates as, for limits and metrics (default: the name)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: genai-gateway keygen --name NAME [--user USER]\n\n"+
			"Prints a new random gateway API key and the auth.keys entry, with the key's SHA-256, to paste into the config file.\n\nFlags:\n%s", fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK
		}
		fmt.Fprintf(stderr, "genai-gateway keygen: %v (see --help)\n", err)
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "genai-gateway keygen: unexpected argument %q (see --help)\n", fs.Arg(0))
		return exitConfig
	}
	if *name == "" {
		fmt.Fprintln(stderr, "genai-gateway keygen: --name is required, as in: genai-gateway keygen --name search-team")
		return exitConfig
	}

	key := newKey()
	sum := sha256.Sum256([]byte(key))
	entry := config.APIKey{Name: *name, User: *user, SHA256: hex.EncodeToString(sum[:])}
	if entry.User == "" {
		entry.User = entry.Name
	}
	// The entry must pass the same validation as the file it goes into.
	cfg := config.Default()
	cfg.Auth.Keys = []config.APIKey{entry}
	if err := cfg.Validate(); err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintf(stderr, "genai-gateway keygen: %s\n", strings.TrimPrefix(line, "auth.keys[0]."))
		}
		return exitConfig
	}
	out, err := yaml.Marshal([]yamlKey{{Name: entry.Name, User: entry.User, SHA256: entry.SHA256}})
	if err != nil {
		fmt.Fprintf(stderr, "genai-gateway keygen: %v\n", err)
		return exitError
	}
	fmt.Fprintf(stdout, "# Gateway API key %q. Give it to its owner now: the gateway keeps only its SHA-256.\n%s\n\n"+
		"# Add this entry under auth.keys in the config file:\n%s", entry.Name, key, out)
	return exitOK
}

// yamlKey is the printed auth.keys entry, in the file's key order.
type yamlKey struct {
	Name   string `yaml:"name"`
	User   string `yaml:"user"`
	SHA256 string `yaml:"sha256"`
}

// newKey returns keyPrefix and keyChars uniformly random base62 characters
// from crypto/rand (rejection sampling keeps every character equally
// likely). crypto/rand.Read does not fail on supported platforms.
func newKey() string {
	var b strings.Builder
	b.Grow(len(keyPrefix) + keyChars)
	b.WriteString(keyPrefix)
	buf := make([]byte, 64)
	for n := 0; n < keyChars; {
		_, _ = rand.Read(buf)
		for _, c := range buf {
			// 248 = 4 × 62: bytes at or above it would favour the first
			// characters of the alphabet.
			if c < 248 && n < keyChars {
				b.WriteByte(base62[c%62])
				n++
			}
		}
	}
	return b.String()
}
