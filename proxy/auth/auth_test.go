package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// Test keys: plaintexts and the config that holds their hashes.
const (
	keySearch  = "ggw_search0123456789abcdefghijklmnopqrstuvwxyzAB"
	keyExpired = "ggw_expired0123456789abcdefghijklmnopqrstuvwxyzA"
	keyProxy   = "ggw_proxy0123456789abcdefghijklmnopqrstuvwxyzABC"
)

var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func hashOf(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

func keysConfig() Config {
	return Config{
		Keys: []Key{
			{Name: "search-team", SHA256: hashOf(keySearch), Models: []string{"gpt-4o*", "claude-*"}},
			{Name: "old", User: "legacy", SHA256: strings.ToUpper(hashOf(keyExpired)), Expires: testNow},
			{Name: "svc", User: "service", SHA256: hashOf(keyProxy), OnBehalf: true, Expires: testNow.Add(time.Hour)},
		},
		Now: func() time.Time { return testNow },
	}
}

func newTestAuth(t testing.TB, cfg Config) (*Authenticator, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	a, err := New(cfg, zerolog.Nop(), reg)
	if err != nil {
		t.Fatalf("New: got error %v, want nil", err)
	}
	t.Cleanup(a.Close)
	return a, reg
}

// headers returns a header function over a map of canonical names, as
// fasthttp's Peek or net/http's Get would answer (case-insensitively).
func headers(kv ...string) func(string) []byte {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return func(name string) []byte {
		if v, ok := h[http.CanonicalHeaderKey(name)]; ok {
			return []byte(v[0])
		}
		return nil
	}
}

func TestAuthenticateKeys(t *testing.T) {
	a, reg := newTestAuth(t, keysConfig())
	search := Identity{User: "search-team", KeyName: "search-team", Models: []string{"gpt-4o*", "claude-*"}, Kind: KindKey}
	service := Identity{User: "service", KeyName: "svc", OnBehalf: true, Kind: KindKey}
	tests := []struct {
		name    string
		header  func(string) []byte
		want    Identity
		wantErr string // reason
	}{
		{"bearer", headers("Authorization", "Bearer "+keySearch), search, ""},
		{"bearer lower case scheme, extra spaces", headers("authorization", "bearer   "+keySearch+" "), search, ""},
		{"x-api-key", headers("x-api-key", keySearch), search, ""},
		{"api-key", headers("api-key", keyProxy), service, ""},
		{"same key twice", headers("Authorization", "Bearer "+keySearch, "x-api-key", keySearch), search, ""},
		{"same key three times", headers("Authorization", "Bearer "+keySearch, "x-api-key", keySearch, "api-key", keySearch), search, ""},
		{"empty x-api-key ignored", headers("x-api-key", " ", "api-key", keySearch), search, ""},
		{"not yet expired", headers("api-key", keyProxy), service, ""},
		{"none", headers(), Identity{}, ReasonMissing},
		{"empty values", headers("Authorization", "", "x-api-key", "  "), Identity{}, ReasonMissing},
		{"unknown", headers("Authorization", "Bearer ggw_nope"), Identity{}, ReasonUnknown},
		{"key with a typo", headers("x-api-key", keySearch[:len(keySearch)-1]+"C"), Identity{}, ReasonUnknown},
		{"expired at its instant", headers("x-api-key", keyExpired), Identity{}, ReasonExpired},
		{"basic scheme", headers("Authorization", "Basic "+keySearch), Identity{}, ReasonMalformed},
		{"bearer without token", headers("Authorization", "Bearer"), Identity{}, ReasonMalformed},
		{"bearer blank token", headers("Authorization", "Bearer    "), Identity{}, ReasonMalformed},
		{"bearer glued", headers("Authorization", "Bearer"+keySearch), Identity{}, ReasonMalformed},
		{"raw key in Authorization", headers("Authorization", keySearch), Identity{}, ReasonMalformed},
		{"control byte", headers("x-api-key", keySearch+"\x00"), Identity{}, ReasonMalformed},
		{"space inside", headers("x-api-key", "ggw_a b"), Identity{}, ReasonMalformed},
		{"too long", headers("x-api-key", strings.Repeat("a", MaxCredentialBytes+1)), Identity{}, ReasonMalformed},
		{"two different keys", headers("Authorization", "Bearer "+keySearch, "x-api-key", keyProxy), Identity{}, ReasonAmbiguous},
		{"valid and unknown", headers("x-api-key", keySearch, "api-key", "ggw_other"), Identity{}, ReasonAmbiguous},
		{"bearer and different api-key", headers("Authorization", "Bearer "+keyProxy, "api-key", keySearch), Identity{}, ReasonAmbiguous},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := a.Authenticate(context.Background(), tt.header)
			if r := Reason(err); r != tt.wantErr {
				t.Fatalf("reason: got %q (%v), want %q", r, err, tt.wantErr)
			}
			if err != nil {
				for _, k := range []string{keySearch, keyExpired, keyProxy} {
					if strings.Contains(err.Error(), k) {
						t.Errorf("error %q: got the credential in it, want it left out", err)
					}
				}
				if got.User != "" || got.Kind != "" {
					t.Errorf("identity on error: got %+v, want zero", got)
				}
				return
			}
			if got.User != tt.want.User || got.KeyName != tt.want.KeyName || got.OnBehalf != tt.want.OnBehalf ||
				got.Kind != tt.want.Kind || strings.Join(got.Models, ",") != strings.Join(tt.want.Models, ",") ||
				(got.Models == nil) != (tt.want.Models == nil) {
				t.Errorf("identity: got %+v, want %+v", got, tt.want)
			}
		})
	}
	counts := map[string]float64{
		ReasonMissing: 2, ReasonUnknown: 2, ReasonExpired: 1, ReasonMalformed: 8, ReasonAmbiguous: 3,
		ReasonBadToken: 0, ReasonWrongIssuer: 0, ReasonWrongAudience: 0, ReasonBadClaims: 0,
	}
	failures, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var series int
	for _, mf := range failures {
		if mf.GetName() == "genai_gateway_auth_failures_total" {
			series = len(mf.GetMetric())
		}
	}
	if series != len(counts) {
		t.Errorf("genai_gateway_auth_failures_total series: got %d, want %d (every reason from the start)", series, len(counts))
	}
	for reason, want := range counts {
		if got := testutil.ToFloat64(a.m.failures[reason]); got != want {
			t.Errorf("genai_gateway_auth_failures_total{reason=%q}: got %v, want %v", reason, got, want)
		}
	}
}

func TestKeyExpiryFollowsClock(t *testing.T) {
	now := testNow.Add(-time.Second)
	cfg := keysConfig()
	cfg.Now = func() time.Time { return now }
	a, _ := newTestAuth(t, cfg)
	h := headers("x-api-key", keyExpired)
	if _, err := a.Authenticate(context.Background(), h); err != nil {
		t.Fatalf("one second before expires: got %v, want nil", err)
	}
	now = testNow
	if _, err := a.Authenticate(context.Background(), h); Reason(err) != ReasonExpired {
		t.Fatalf("at expires: got %v, want reason expired", err)
	}
}

func TestIdentityAllows(t *testing.T) {
	tests := []struct {
		name   string
		models []string
		model  string
		want   bool
	}{
		{"nil allows all", nil, "anything", true},
		{"empty allows none", []string{}, "gpt-4o", false},
		{"glob match", []string{"gpt-4o*", "claude-*"}, "claude-sonnet-4", true},
		{"exact", []string{"gpt-4o"}, "gpt-4o", true},
		{"prefix only", []string{"gpt-4o"}, "gpt-4o-mini", false},
		{"no match", []string{"gpt-4o*"}, "o3", false},
		{"star does not cross slash", []string{"meta/*"}, "meta/llama/x", false},
		{"bad pattern never matches", []string{"[", "x"}, "[", false},
		{"empty model", []string{"*"}, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (Identity{Models: tt.models}).Allows(tt.model); got != tt.want {
				t.Errorf("Allows(%q) with %q: got %v, want %v", tt.model, tt.models, got, tt.want)
			}
		})
	}
}

func TestNewRefusesBadKeys(t *testing.T) {
	good := hashOf("a")
	tests := []struct {
		name string
		keys []Key
		want string
	}{
		{"empty name", []Key{{SHA256: good}}, "keys[0].name: must not be empty"},
		{"duplicate name", []Key{{Name: "a", SHA256: good}, {Name: "a", SHA256: hashOf("b")}}, `keys[1].name: "a" is already the name of keys[0]`},
		{"short hash", []Key{{Name: "a", SHA256: good[:63]}}, "keys[0].sha256: must be 64 hex digits"},
		{"not hex", []Key{{Name: "a", SHA256: "z" + good[1:]}}, "keys[0].sha256: must be 64 hex digits"},
		{"duplicate hash across case", []Key{{Name: "a", SHA256: good}, {Name: "b", SHA256: strings.ToUpper(good)}}, `keys[1].sha256: same as key "a"`},
		{"user too long", []Key{{Name: "a", User: strings.Repeat("u", MaxUserBytes+1), SHA256: good}}, "keys[0].user: must be at most 256 bytes"},
		{"user with slash", []Key{{Name: "a/b", SHA256: good}}, `keys[0].user: must not contain "/"`},
		{"bad glob", []Key{{Name: "a", SHA256: good, Models: []string{"gpt-["}}}, "keys[0].models[0]: not a valid glob pattern"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(Config{Keys: tt.keys}, zerolog.Nop(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestCheckUser(t *testing.T) {
	tests := []struct {
		user string
		ok   bool
	}{
		{"alice", true},
		{"Alice Smith", true},
		{"jörg@example.com", true},
		{strings.Repeat("x", MaxUserBytes), true},
		{"", false},
		{strings.Repeat("x", MaxUserBytes+1), false},
		{"a/b", false},
		{"a\nb", false},
		{"a\x7fb", false},
		{"\xff", false},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			if err := CheckUser(tt.user); (err == nil) != tt.ok {
				t.Errorf("CheckUser(%q): got %v, want ok=%v", tt.user, err, tt.ok)
			}
		})
	}
}

func TestEmptyConfigRefusesEverything(t *testing.T) {
	a, _ := newTestAuth(t, Config{})
	_, err := a.Authenticate(context.Background(), headers("x-api-key", keySearch))
	if Reason(err) != ReasonUnknown {
		t.Errorf("got %v, want reason unknown", err)
	}
}

func TestTwoAuthenticatorsShareOneRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	a, err := New(keysConfig(), zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(keysConfig(), zerolog.Nop(), reg)
	if err != nil {
		t.Fatalf("second New on one registry: got %v, want nil (collectors reused)", err)
	}
	defer b.Close()
	for _, x := range []*Authenticator{a, b} {
		_, _ = x.Authenticate(context.Background(), headers())
	}
	if got := testutil.ToFloat64(a.m.failures[ReasonMissing]); got != 2 {
		t.Errorf("failures{reason=missing}: got %v, want 2 (one series for both)", got)
	}
}

func TestReasonOfOtherErrors(t *testing.T) {
	if got := Reason(nil); got != "" {
		t.Errorf("Reason(nil): got %q, want empty", got)
	}
	if got := Reason(errors.New("x")); got != "" {
		t.Errorf("Reason(other): got %q, want empty", got)
	}
	wrapped := errors.Join(errors.New("ctx"), errUnknown)
	if got := Reason(wrapped); got != ReasonUnknown {
		t.Errorf("Reason(wrapped): got %q, want %q", got, ReasonUnknown)
	}
}

func BenchmarkAuthenticateKey(b *testing.B) {
	cfg := keysConfig()
	for i := range 1000 {
		cfg.Keys = append(cfg.Keys, Key{Name: "k" + string(rune('a'+i%26)) + hashOf(string(rune(i)))[:8], SHA256: hashOf("filler" + string(rune(i)))})
	}
	a, _ := newTestAuth(b, cfg)
	// fasthttp-like: header values are slices the server already holds.
	authz := []byte("Bearer " + keySearch)
	header := func(name string) []byte {
		if name == HeaderAuthorization {
			return authz
		}
		return nil
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		id, err := a.Authenticate(ctx, header)
		if err != nil || !id.Allows("gpt-4o-mini") {
			b.Fatalf("got %v %+v", err, id)
		}
	}
}
