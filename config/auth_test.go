package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadAuth(t *testing.T) {
	cfg, warnings := mustLoad(t, "testdata/auth.yaml", nil)
	if len(warnings) != 0 {
		t.Errorf("got warnings %q, want none", warnings)
	}
	want := Auth{
		Keys: []APIKey{
			{Name: "search-team", SHA256: "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824", Models: []string{"gpt-4o*", "claude-*"}},
			{Name: "batch", User: "Batch Jobs", SHA256: "486EA46224D1BB4FB680F34F7C9AD96A8F24EC88BE73EA8E5A6C65260E9CB8A7",
				OnBehalf: true, Expires: time.Date(2027, 6, 30, 0, 0, 0, 0, time.UTC)},
		},
		JWT: JWT{
			Issuer: "https://login.example.com/", Audience: "genai-gateway",
			JWKSURL:     "https://login.example.com/.well-known/jwks.json?tenant=a",
			ModelsClaim: "llm_models", Leeway: 30 * time.Second,
		},
	}
	if !reflect.DeepEqual(cfg.Auth, want) {
		t.Errorf("auth:\ngot  %+v\nwant %+v", cfg.Auth, want)
	}
	if !cfg.Auth.Enabled() {
		t.Error("Enabled(): got false, want true")
	}
	if got := cfg.Auth.Keys[0].EffectiveUser(); got != "search-team" {
		t.Errorf("keys[0].EffectiveUser(): got %q, want the name", got)
	}
	if got := cfg.Auth.Keys[1].EffectiveUser(); got != "Batch Jobs" {
		t.Errorf("keys[1].EffectiveUser(): got %q, want %q", got, "Batch Jobs")
	}
	if got := cfg.Auth.JWT.EffectiveUserClaim(); got != "sub" {
		t.Errorf("jwt.EffectiveUserClaim(): got %q, want sub", got)
	}
	if Default().Auth.Enabled() {
		t.Error("Default().Auth.Enabled(): got true, want false")
	}
}

func TestLoadAuthInvalidReportsEverything(t *testing.T) {
	_, _, err := Load("testdata/auth_invalid.yaml", nil, nil)
	if err == nil {
		t.Fatal("got nil, want every auth problem")
	}
	wantProblem(t, err, "auth.keys[0].name", "must not be empty")
	wantProblem(t, err, "auth.keys[0].user", "must not be empty")
	wantProblem(t, err, "auth.keys[0].sha256", "64 hex digits")
	wantProblem(t, err, "auth.keys[1].models[0]", "not a valid glob")
	wantProblem(t, err, "auth.keys[2].name", `"dup" is already the name of auth.keys[1]`)
	wantProblem(t, err, "auth.keys[2].user", `must not contain "/"`)
	wantProblem(t, err, "auth.keys[2].sha256", "same hash as auth.keys[1]")
	wantProblem(t, err, "auth.jwt.issuer", "http:// or https://")
	wantProblem(t, err, "auth.jwt.audience", "must be set")
	wantProblem(t, err, "auth.jwt.jwks_url", "jwks_file")
	wantProblem(t, err, "auth.jwt.leeway", "from 0s to 5m0s", "10m0s")
	if n := len(errLines(err)); n != 11 {
		t.Errorf("got %d problems, want 11:\n%v", n, err)
	}
	if strings.Contains(strings.ToLower(err.Error()), "2cf24dba") {
		t.Errorf("got a key hash in the errors, want none:\n%v", err)
	}
}

func TestValidateAuth(t *testing.T) {
	const h = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
	jwt := "  jwt: {issuer: \"https://idp.example.com\", audience: gw, jwks_url: \"https://idp.example.com/keys\"}\n"
	tests := []struct {
		name    string
		yaml    string
		key     string // "" = valid
		message string
	}{
		{"one key", "auth:\n  keys: [{name: a, sha256: " + h + "}]\n", "", ""},
		{"jwt with file", "auth:\n  jwt: {issuer: \"https://idp.example.com\", audience: gw, jwks_file: /etc/jwks.json, user_claim: email}\n", "", ""},
		{"jwt with url", "auth:\n" + jwt, "", ""},
		{"leeway at its bound", "auth:\n  jwt: {issuer: \"https://idp.example.com\", audience: gw, jwks_file: k.json, leeway: 5m}\n", "", ""},
		{"user of 256 bytes", "auth:\n  keys: [{name: a, user: " + strings.Repeat("u", 256) + ", sha256: " + h + "}]\n", "", ""},
		{"user of 257 bytes", "auth:\n  keys: [{name: a, user: " + strings.Repeat("u", 257) + ", sha256: " + h + "}]\n", "auth.keys[0].user", "at most 256 bytes"},
		{"name of 257 bytes, no user", "auth:\n  keys: [{name: " + strings.Repeat("n", 257) + ", sha256: " + h + "}]\n", "auth.keys[0].user", "at most 256 bytes"},
		{"control character in user", "auth:\n  keys: [{name: a, user: \"a\\tb\", sha256: " + h + "}]\n", "auth.keys[0].user", "printable"},
		{"short hash", "auth:\n  keys: [{name: a, sha256: " + h[:63] + "}]\n", "auth.keys[0].sha256", "64 hex digits"},
		{"hash with a space", "auth:\n  keys: [{name: a, sha256: \" " + h[1:] + "\"}]\n", "auth.keys[0].sha256", "64 hex digits"},
		{"no hash", "auth:\n  keys: [{name: a}]\n", "auth.keys[0].sha256", "64 hex digits"},
		{"empty glob", "auth:\n  keys: [{name: a, sha256: " + h + ", models: [\"\"]}]\n", "auth.keys[0].models[0]", "must not be empty"},
		{"jwt without issuer", "auth:\n  jwt: {audience: gw, jwks_file: k.json}\n", "auth.jwt.issuer", "must be set"},
		{"issuer with query", "auth:\n  jwt: {issuer: \"https://idp.example.com/?a=b\", audience: gw, jwks_file: k.json}\n", "auth.jwt.issuer", "query"},
		{"no key source", "auth:\n  jwt: {issuer: \"https://idp.example.com\", audience: gw}\n", "auth.jwt.jwks_url", "one of"},
		{"jwks url relative", "auth:\n  jwt: {issuer: \"https://idp.example.com\", audience: gw, jwks_url: /keys}\n", "auth.jwt.jwks_url", "absolute"},
		{"jwks url with credentials", "auth:\n  jwt: {issuer: \"https://idp.example.com\", audience: gw, jwks_url: \"https://u:secretpw@idp.example.com/k\"}\n", "auth.jwt.jwks_url", "credentials"},
		{"negative leeway", "auth:\n  jwt: {issuer: \"https://idp.example.com\", audience: gw, jwks_file: k.json, leeway: -1s}\n", "auth.jwt.leeway", "-1s"},
		{"user claim with spaces", "auth:\n  jwt: {issuer: \"https://idp.example.com\", audience: gw, jwks_file: k.json, user_claim: \" sub\"}\n", "auth.jwt.user_claim", "spaces"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := Load(writeConfig(t, tt.yaml), nil, nil)
			if tt.key == "" {
				if err != nil {
					t.Fatalf("got error\n%v\nwant none", err)
				}
				return
			}
			wantProblem(t, err, tt.key, tt.message)
			if err != nil && strings.Contains(err.Error(), "secretpw") {
				t.Errorf("got a password in the errors, want none:\n%v", err)
			}
		})
	}
}
