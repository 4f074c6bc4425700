package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

const (
	testIssuer   = "https://login.example.com/"
	testAudience = "genai-gateway"
)

// clock is a settable clock, safe to read from the key set's fetches.
type clock struct{ ns atomic.Int64 }

func newClock(t time.Time) *clock    { c := &clock{}; c.set(t); return c }
func (c *clock) now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) add(d time.Duration) { c.ns.Add(int64(d)) }

// signer is a test signing key with its key ID.
type signer struct {
	kid string
	alg jose.SignatureAlgorithm
	key crypto.Signer
}

func newRSA(t testing.TB, kid string) signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, alg: jose.RS256, key: k}
}

func newECDSA(t testing.TB, kid string) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, alg: jose.ES256, key: k}
}

func (s signer) jwk() jose.JSONWebKey {
	return jose.JSONWebKey{Key: s.key.Public(), KeyID: s.kid, Algorithm: string(s.alg), Use: "sig"}
}

// sign returns a compact JWS of claims.
func (s signer) sign(t testing.TB, claims map[string]any) string {
	t.Helper()
	opts := (&jose.SignerOptions{}).WithType("JWT")
	sg, err := jose.NewSigner(jose.SigningKey{Algorithm: s.alg, Key: jose.JSONWebKey{Key: s.key, KeyID: s.kid}}, opts)
	if err != nil {
		t.Fatal(err)
	}
	return signPayload(t, sg, claims)
}

func signPayload(t testing.TB, sg jose.Signer, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := sg.Sign(payload)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// claimsAt returns valid claims for a token issued at now.
func claimsAt(now time.Time, extra ...any) map[string]any {
	c := map[string]any{
		"iss": testIssuer, "aud": testAudience, "sub": "alice",
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == nil {
			delete(c, extra[i].(string))
			continue
		}
		c[extra[i].(string)] = extra[i+1]
	}
	return c
}

// idp is a local JWKS server whose keys a test can rotate.
type idp struct {
	srv     *httptest.Server
	mu      sync.Mutex
	keys    []jose.JSONWebKey
	fetches atomic.Int64
}

func newIDP(t testing.TB, keys ...signer) *idp {
	t.Helper()
	p := &idp{}
	p.serve(keys...)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.fetches.Add(1)
		p.mu.Lock()
		set := jose.JSONWebKeySet{Keys: p.keys}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(set)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// serve replaces the published keys.
func (p *idp) serve(keys ...signer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.keys = p.keys[:0]
	for _, k := range keys {
		p.keys = append(p.keys, k.jwk())
	}
}

func jwtConfig(url string, clk *clock) Config {
	return Config{
		Keys: keysConfig().Keys,
		JWT:  JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKSURL: url},
		Now:  clk.now,
	}
}

func bearerHeader(token string) func(string) []byte {
	return headers("Authorization", "Bearer "+token)
}

func TestJWT(t *testing.T) {
	rsaKey, ecKey := newRSA(t, "rsa-1"), newECDSA(t, "ec-1")
	stranger := newRSA(t, "rsa-1") // same kid, other key
	unknownKid := newRSA(t, "rsa-9")
	p := newIDP(t, rsaKey, ecKey)
	clk := newClock(testNow)
	cfg := jwtConfig(p.srv.URL, clk)
	cfg.JWT.Leeway = 30 * time.Second
	cfg.JWT.ModelsClaim = "models"
	a, reg := newTestAuth(t, cfg)
	now := testNow

	pubPEM := func() []byte {
		der, err := x509.MarshalPKIXPublicKey(rsaKey.key.Public())
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}()
	hmacWith := func(secret []byte) string {
		sg, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: secret},
			(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", rsaKey.kid))
		if err != nil {
			t.Fatal(err)
		}
		return signPayload(t, sg, claimsAt(now))
	}
	b64 := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(claimsAt(now))
	algNone := b64([]byte(`{"alg":"none","typ":"JWT","kid":"rsa-1"}`)) + "." + b64(payload) + "."
	algNoneSigned := algNone + b64([]byte("sig"))
	valid := rsaKey.sign(t, claimsAt(now, "models", []string{"gpt-4o*"}))
	tamperedParts := strings.Split(valid, ".")
	otherPayload, _ := json.Marshal(claimsAt(now, "sub", "mallory", "models", []string{"*"}))
	tampered := tamperedParts[0] + "." + b64(otherPayload) + "." + tamperedParts[2]

	tests := []struct {
		name       string
		token      string
		wantUser   string
		wantModels []string
		wantReason string
	}{
		{"RS256", valid, "alice", []string{"gpt-4o*"}, ""},
		{"ES256", ecKey.sign(t, claimsAt(now, "sub", "bob", "models", "gpt-* o3")), "bob", []string{"gpt-*", "o3"}, ""},
		{"aud list", rsaKey.sign(t, claimsAt(now, "aud", []string{"other", testAudience})), "alice", []string{}, ""},
		{"numeric sub (RFC 7519: a string)", rsaKey.sign(t, claimsAt(now, "sub", 12345)), "", nil, ReasonBadToken},
		{"exp within leeway", rsaKey.sign(t, claimsAt(now, "exp", now.Add(-30*time.Second).Unix())), "alice", []string{}, ""},
		{"exp past leeway", rsaKey.sign(t, claimsAt(now, "exp", now.Add(-31*time.Second).Unix())), "", nil, ReasonExpired},
		{"no exp", rsaKey.sign(t, claimsAt(now, "exp", nil)), "", nil, ReasonExpired},
		{"nbf far ahead", rsaKey.sign(t, claimsAt(now, "nbf", now.Add(time.Hour).Unix())), "", nil, ReasonBadToken},
		{"wrong issuer", rsaKey.sign(t, claimsAt(now, "iss", "https://evil.example.com/")), "", nil, ReasonWrongIssuer},
		{"issuer without slash", rsaKey.sign(t, claimsAt(now, "iss", strings.TrimSuffix(testIssuer, "/"))), "", nil, ReasonWrongIssuer},
		{"wrong audience", rsaKey.sign(t, claimsAt(now, "aud", "someone-else")), "", nil, ReasonWrongAudience},
		{"no audience", rsaKey.sign(t, claimsAt(now, "aud", nil)), "", nil, ReasonWrongAudience},
		{"unknown kid", unknownKid.sign(t, claimsAt(now)), "", nil, ReasonBadToken},
		{"known kid, other key", stranger.sign(t, claimsAt(now)), "", nil, ReasonBadToken},
		{"tampered payload", tampered, "", nil, ReasonBadToken},
		{"alg none", algNone, "", nil, ReasonBadToken},
		{"alg none with signature", algNoneSigned, "", nil, ReasonBadToken},
		{"HS256 keyed with public key PEM", hmacWith(pubPEM), "", nil, ReasonBadToken},
		{"HS256 keyed with public key DER", hmacWith(func() []byte { b, _ := pem.Decode(pubPEM); return b.Bytes }()), "", nil, ReasonBadToken},
		{"no sub", rsaKey.sign(t, claimsAt(now, "sub", nil)), "", nil, ReasonBadClaims},
		{"empty sub", rsaKey.sign(t, claimsAt(now, "sub", "")), "", nil, ReasonBadClaims},
		{"sub with slash", rsaKey.sign(t, claimsAt(now, "sub", "alice/bob")), "", nil, ReasonBadClaims},
		{"sub too long", rsaKey.sign(t, claimsAt(now, "sub", strings.Repeat("a", MaxUserBytes+1))), "", nil, ReasonBadClaims},
		{"sub an object", rsaKey.sign(t, claimsAt(now, "sub", map[string]any{"a": 1})), "", nil, ReasonBadToken},
		{"models a number", rsaKey.sign(t, claimsAt(now, "models", 7)), "", nil, ReasonBadClaims},
		{"models bad glob", rsaKey.sign(t, claimsAt(now, "models", []string{"gpt-["})), "", nil, ReasonBadClaims},
		{"models list of numbers", rsaKey.sign(t, claimsAt(now, "models", []int{1})), "", nil, ReasonBadClaims},
		{"JWE-shaped", "a.b.c.d.e", "", nil, ReasonUnknown},
		{"garbage with dots", "aaa.bbb.ccc", "", nil, ReasonBadToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := a.Authenticate(context.Background(), bearerHeader(tt.token))
			if r := Reason(err); r != tt.wantReason {
				t.Fatalf("reason: got %q (%v), want %q", r, err, tt.wantReason)
			}
			if err != nil {
				if strings.Contains(err.Error(), tt.token) || strings.Contains(err.Error(), "alice") {
					t.Errorf("error %q: got the token or a claim in it, want neither", err)
				}
				return
			}
			if id.User != tt.wantUser || id.Kind != KindJWT || id.KeyName != "" || id.OnBehalf {
				t.Errorf("identity: got %+v, want user %q kind jwt", id, tt.wantUser)
			}
			if strings.Join(id.Models, " ") != strings.Join(tt.wantModels, " ") || id.Models == nil {
				t.Errorf("models: got %#v, want %#v", id.Models, tt.wantModels)
			}
		})
	}
	// Keys keep working next to JWT.
	if id, err := a.Authenticate(context.Background(), headers("x-api-key", keySearch)); err != nil || id.User != "search-team" {
		t.Errorf("key beside jwt: got %+v, %v; want search-team", id, err)
	}
	// Unknown kids do not make the gateway hammer the issuer: the first
	// token fetched, every later fetch fell within MinRefetch.
	if got := p.fetches.Load(); got != 1 {
		t.Errorf("JWKS fetches: got %d, want 1", got)
	}
	if got := testutil.ToFloat64(a.m.fetches.WithLabelValues(fetchThrottled)); got < 1 {
		t.Errorf("throttled fetches: got %v, want >= 1", got)
	}
	_ = reg
}

func TestJWTKeyRotation(t *testing.T) {
	oldKey, newKey := newRSA(t, "2026-05"), newECDSA(t, "2026-06")
	p := newIDP(t, oldKey)
	clk := newClock(testNow)
	a, _ := newTestAuth(t, jwtConfig(p.srv.URL, clk))
	ctx := context.Background()

	if _, err := a.Authenticate(ctx, bearerHeader(oldKey.sign(t, claimsAt(clk.now())))); err != nil {
		t.Fatalf("old key before rotation: got %v, want nil", err)
	}
	p.serve(oldKey, newKey) // the issuer publishes its next key

	// Within MinRefetch of the last fetch the new kid is not learnt yet.
	clk.add(DefaultMinRefetch - time.Second)
	fresh := newKey.sign(t, claimsAt(clk.now()))
	if _, err := a.Authenticate(ctx, bearerHeader(fresh)); Reason(err) != ReasonBadToken {
		t.Fatalf("new kid within MinRefetch: got %v, want bad_token", err)
	}
	clk.add(time.Second)
	// go-oidc hands the result of a fetch that just ended to callers that
	// arrive before it clears it, so the throttled one may answer once more.
	id, err := authenticateSoon(a, bearerHeader(fresh))
	if err != nil || id.User != "alice" {
		t.Fatalf("new kid after MinRefetch: got %+v, %v; want alice", id, err)
	}
	if got := p.fetches.Load(); got != 2 {
		t.Errorf("JWKS fetches: got %d, want 2", got)
	}
	// Both keys are cached: no further fetch.
	for _, k := range []signer{oldKey, newKey} {
		if _, err := a.Authenticate(ctx, bearerHeader(k.sign(t, claimsAt(clk.now())))); err != nil {
			t.Errorf("kid %s after rotation: got %v, want nil", k.kid, err)
		}
	}
	if got := p.fetches.Load(); got != 2 {
		t.Errorf("JWKS fetches after cached verifications: got %d, want 2", got)
	}
}

// authenticateSoon retries Authenticate for up to two seconds until it
// succeeds, and returns its last answer.
func authenticateSoon(a *Authenticator, header func(string) []byte) (Identity, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		id, err := a.Authenticate(context.Background(), header)
		if err == nil || time.Now().After(deadline) {
			return id, err
		}
		time.Sleep(time.Millisecond)
	}
}

func TestJWTReloadKeepsCachedKeys(t *testing.T) {
	k := newRSA(t, "k")
	p := newIDP(t, k)
	clk := newClock(testNow)
	cfg := jwtConfig(p.srv.URL, clk)
	a, _ := newTestAuth(t, cfg)
	ctx := context.Background()
	tok := k.sign(t, claimsAt(clk.now()))
	if _, err := a.Authenticate(ctx, bearerHeader(tok)); err != nil {
		t.Fatal(err)
	}
	cfg.Keys = cfg.Keys[:1]
	b, err := a.Reload(cfg)
	if err != nil {
		t.Fatalf("Reload: got %v, want nil", err)
	}
	defer b.Close()
	a.Close() // swapped out
	if _, err := b.Authenticate(ctx, bearerHeader(tok)); err != nil {
		t.Errorf("token after reload: got %v, want nil", err)
	}
	if _, err := b.Authenticate(ctx, headers("x-api-key", keyExpired)); Reason(err) != ReasonUnknown {
		t.Errorf("removed key after reload: got %v, want unknown", err)
	}
	if got := p.fetches.Load(); got != 1 {
		t.Errorf("JWKS fetches: got %d, want 1 (cache shared)", got)
	}
	// A changed URL gets a key set of its own.
	q := newIDP(t, k)
	cfg.JWT.JWKSURL = q.srv.URL
	c, err := b.Reload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Authenticate(ctx, bearerHeader(tok)); err != nil || q.fetches.Load() != 1 {
		t.Errorf("new URL: got %v after %d fetches, want nil after 1", err, q.fetches.Load())
	}
}

func TestJWKSFetchBounds(t *testing.T) {
	k := newRSA(t, "k")
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	t.Cleanup(func() { close(release) })
	huge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		set, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.jwk()}})
		_, _ = w.Write(set[:len(set)-2])
		_, _ = w.Write([]byte(`,"pad":"` + strings.Repeat("x", MaxJWKSBytes) + `"}`))
	}))
	t.Cleanup(huge.Close)
	failing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusBadGateway)
	}))
	t.Cleanup(failing.Close)

	for _, tt := range []struct{ name, url string }{
		{"slow", slow.URL}, {"larger than MaxJWKSBytes", huge.URL}, {"502", failing.URL},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(testNow)
			cfg := jwtConfig(tt.url, clk)
			cfg.JWT.FetchTimeout = 200 * time.Millisecond
			a, _ := newTestAuth(t, cfg)
			start := time.Now()
			_, err := a.Authenticate(context.Background(), bearerHeader(k.sign(t, claimsAt(clk.now()))))
			if Reason(err) != ReasonBadToken {
				t.Errorf("got %v, want bad_token", err)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("took %s, want about the fetch timeout", d)
			}
			if got := testutil.ToFloat64(a.m.fetches.WithLabelValues(fetchOK)) + testutil.ToFloat64(a.m.fetches.WithLabelValues(fetchError)); got != 1 {
				t.Errorf("fetches counted: got %v, want 1", got)
			}
		})
	}
}

func TestJWTCallerContext(t *testing.T) {
	k := newRSA(t, "k")
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(block) })
	clk := newClock(testNow)
	a, _ := newTestAuth(t, jwtConfig(srv.URL, clk))
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := a.Authenticate(ctx, bearerHeader(k.sign(t, claimsAt(clk.now()))))
	if Reason(err) != ReasonBadToken {
		t.Errorf("got %v, want bad_token once the caller's context ends", err)
	}
}

func TestJWKSFile(t *testing.T) {
	rsaKey, ecKey := newRSA(t, "r"), newECDSA(t, "e")
	dir := t.TempDir()
	write := func(name string, v any) string {
		t.Helper()
		data, ok := v.([]byte)
		if !ok {
			var err error
			if data, err = json.Marshal(v); err != nil {
				t.Fatal(err)
			}
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good.json", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{rsaKey.jwk(), ecKey.jwk()}})
	clk := newClock(testNow)
	cfg := Config{Now: clk.now, JWT: JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKSFile: good, UserClaim: "email"}}
	a, _ := newTestAuth(t, cfg)
	for _, k := range []signer{rsaKey, ecKey} {
		id, err := a.Authenticate(context.Background(), bearerHeader(k.sign(t, claimsAt(clk.now(), "email", "alice@example.com"))))
		if err != nil || id.User != "alice@example.com" || id.Models != nil {
			t.Errorf("%s: got %+v, %v; want alice@example.com with every model", k.alg, id, err)
		}
	}
	numeric := rsaKey.sign(t, claimsAt(clk.now(), "email", 12345))
	if id, err := a.Authenticate(context.Background(), bearerHeader(numeric)); err != nil || id.User != "12345" {
		t.Errorf("numeric user claim: got %+v, %v; want user 12345", id, err)
	}
	object := rsaKey.sign(t, claimsAt(clk.now(), "email", map[string]any{"a": 1}))
	if _, err := a.Authenticate(context.Background(), bearerHeader(object)); Reason(err) != ReasonBadClaims {
		t.Errorf("object user claim: got %v, want bad_claims", err)
	}
	if _, err := a.Authenticate(context.Background(), bearerHeader(newRSA(t, "r").sign(t, claimsAt(clk.now(), "email", "x")))); Reason(err) != ReasonBadToken {
		t.Errorf("key not in file: got %v, want bad_token", err)
	}

	bad := []struct {
		name, path, want string
	}{
		{"private key", write("private.json", jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: rsaKey.key, KeyID: "r"}}}), "private key"},
		{"symmetric key", write("oct.json", []byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0c2VjcmV0c2VjcmV0"}]}`)), "symmetric"},
		{"empty set", write("empty.json", []byte(`{"keys":[]}`)), "no signature keys"},
		{"not json", write("bad.json", []byte(`nope`)), "not a JWKS document"},
		{"missing", filepath.Join(dir, "missing.json"), "no such file"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			c.JWT.JWKSFile = tt.path
			_, err := New(c, zerolog.Nop(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "jwt: jwks_file: ") {
				t.Errorf("New: got %v, want \"jwt: jwks_file: ...%s...\"", err, tt.want)
			}
		})
	}
}

func TestNewRefusesBadJWT(t *testing.T) {
	base := JWTConfig{Issuer: testIssuer, Audience: testAudience, JWKSURL: "https://login.example.com/jwks"}
	tests := []struct {
		name string
		edit func(*JWTConfig)
		want string
	}{
		{"no audience", func(j *JWTConfig) { j.Audience = "" }, "audience"},
		{"no key source", func(j *JWTConfig) { j.JWKSURL = "" }, "exactly one of jwks_url and jwks_file"},
		{"both key sources", func(j *JWTConfig) { j.JWKSFile = "x.json" }, "exactly one of jwks_url and jwks_file"},
		{"relative URL", func(j *JWTConfig) { j.JWKSURL = "/jwks" }, "jwks_url"},
		{"negative leeway", func(j *JWTConfig) { j.Leeway = -time.Second }, "leeway"},
		{"leeway too long", func(j *JWTConfig) { j.Leeway = MaxLeeway + time.Second }, "leeway"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := base
			tt.edit(&j)
			_, err := New(Config{JWT: j}, zerolog.Nop(), nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New: got %v, want an error about %q", err, tt.want)
			}
		})
	}
}

func TestLooksLikeJWT(t *testing.T) {
	tests := []struct {
		in   string
		want bool
	}{
		{"a.b.c", true},
		{"a.b.", true},
		{"eyJ-_.x_-.A0", true},
		{".b.c", false},
		{"a..c", false},
		{"a.b", false},
		{"a.b.c.d.e", false},
		{"a.b+.c", false},
		{"ggw_abc", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			if got := looksLikeJWT([]byte(tt.in)); got != tt.want {
				t.Errorf("looksLikeJWT(%q): got %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}
