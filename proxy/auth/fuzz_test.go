package auth

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// FuzzAuthenticate feeds random header values to an Authenticator holding
// keys and a JWT issuer: it must never panic, never accept anything but a
// configured key, and never put the credential in its error.
func FuzzAuthenticate(f *testing.F) {
	k := newRSA(f, "k")
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.jwk()}}
	clk := newClock(testNow)
	cfg := keysConfig()
	cfg.JWT = JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKSFile: writeJWKS(f, set), ModelsClaim: "models"}
	cfg.Now = clk.now
	a, _ := newTestAuth(f, cfg)

	valid := k.sign(f, claimsAt(testNow))
	expired := k.sign(f, claimsAt(testNow, "exp", testNow.Add(-time.Hour).Unix()))
	for _, seed := range [][3]string{
		{"Bearer " + keySearch, "", ""},
		{"", keySearch, keyProxy},
		{"bearer " + valid, "", ""},
		{"Bearer " + expired, "", ""},
		{"Bearer " + valid[:len(valid)-4] + "AAAA", "", ""},
		{"Bearer a.b.", "", ""},
		{"Basic x", "", ""},
		{"", "", "\x00\xff"},
		{"Bearer eyJhbGciOiJub25lIn0.e30.", "", ""},
	} {
		f.Add(seed[0], seed[1], seed[2])
	}
	configured := map[string]bool{keySearch: true, keyProxy: true}
	f.Fuzz(func(t *testing.T, authz, xAPIKey, apiKey string) {
		id, err := a.Authenticate(context.Background(), headers("Authorization", authz, "X-Api-Key", xAPIKey, "Api-Key", apiKey))
		if err != nil {
			if Reason(err) == "" {
				t.Fatalf("error without a reason: %v", err)
			}
			for _, v := range []string{authz, xAPIKey, apiKey} {
				if v = strings.TrimSpace(strings.TrimPrefix(v, "Bearer ")); len(v) >= 8 && strings.Contains(err.Error(), v) {
					t.Fatalf("error %q holds the credential %q", err, v)
				}
			}
			return
		}
		switch id.Kind {
		case KindKey:
			for _, v := range []string{authz, xAPIKey, apiKey} {
				v = strings.Trim(v, " \t")
				if cut, ok := cutBearer(v); ok {
					v = cut
				}
				if v != "" && !configured[v] {
					t.Fatalf("accepted %q as key %q, want only configured keys", v, id.KeyName)
				}
			}
		case KindJWT:
			cred := strings.Trim(authz, " \t")
			if c, ok := cutBearer(cred); ok {
				cred = c
			}
			if cred != valid {
				t.Fatalf("accepted token %q, want only the signed seed", cred)
			}
		default:
			t.Fatalf("identity of kind %q", id.Kind)
		}
	})
}

func cutBearer(v string) (string, bool) {
	if len(v) > 7 && strings.EqualFold(v[:7], "bearer ") {
		return strings.Trim(v[7:], " \t"), true
	}
	return "", false
}

func writeJWKS(t testing.TB, set jose.JSONWebKeySet) string {
	t.Helper()
	data, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
