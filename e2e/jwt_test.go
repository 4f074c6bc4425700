package e2e

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/openai/openai-go/v3"
)

// issuer is a stand-in OIDC identity provider: signing keys and a JWKS
// endpoint on a real HTTP server (httptest) that the gateway process fetches.
type issuer struct {
	url     string // the iss claim
	jwksURL string
	fetches atomic.Int64
	keys    map[string]jose.SigningKey // by kid
}

const (
	jwtIssuer   = "https://login.e2e.example/"
	jwtAudience = "genai-gateway"
)

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := &issuer{url: jwtIssuer, keys: map[string]jose.SigningKey{
		"rsa-1": {Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: rsaKey, KeyID: "rsa-1"}},
		"ec-1":  {Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: ecKey, KeyID: "ec-1"}},
	}}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: rsaKey.Public(), KeyID: "rsa-1", Algorithm: string(jose.RS256), Use: "sig"},
		{Key: ecKey.Public(), KeyID: "ec-1", Algorithm: string(jose.ES256), Use: "sig"},
	}}
	doc, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/jwks.json" {
			http.NotFound(w, r)
			return
		}
		iss.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	t.Cleanup(srv.Close)
	iss.jwksURL = srv.URL + "/jwks.json"
	return iss
}

// token signs claims with the issuer's key kid.
func (iss *issuer) token(t *testing.T, kid string, claims map[string]any) string {
	t.Helper()
	key, ok := iss.keys[kid]
	if !ok {
		t.Fatalf("no key %q", kid)
	}
	return sign(t, key, claims)
}

func sign(t *testing.T, key jose.SigningKey, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(key, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// claims are a valid token's claims for the user with that email, issued
// now for an hour, allowed gpt-4o models; edit overrides them.
func claims(sub, email string, edit map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss":        jwtIssuer,
		"aud":        jwtAudience,
		"sub":        sub,
		"email":      email,
		"iat":        now.Add(-time.Minute).Unix(),
		"exp":        now.Add(time.Hour).Unix(),
		"llm_models": []string{"gpt-4o*"},
	}
	for k, v := range edit {
		c[k] = v
	}
	return c
}

// TestJWTThroughGateway: a running gateway verifies OIDC tokens against a
// JWKS it fetches over HTTP. RS256 and ES256 tokens are served and charged
// to the user_claim (email, not sub); models_claim restricts the models;
// expired tokens, tokens for another audience and tokens signed with a key
// the issuer never published are refused with 401, each counted by reason.
func TestJWTThroughGateway(t *testing.T) {
	mock := startMock(t)
	iss := newIssuer(t)
	cfg := fmt.Sprintf(`auth:
  jwt:
    issuer: %s
    audience: %s
    jwks_url: %s
    user_claim: email
    models_claim: llm_models
rate_limit:
  enabled: true
  limits:
    - {name: tokens-hourly, metric: total_tokens, limit: 100000, window: 1h}
`, jwtIssuer, jwtAudience, iss.jwksURL)
	r := startReplica(t, replicaSpec{name: "jwt", upstream: mock, extra: cfg})
	waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 10*time.Second)
	ctx := context.Background()

	alice := iss.token(t, "rsa-1", claims("00u-alice", "alice@example.com", nil))
	bob := iss.token(t, "ec-1", claims("00u-bob", "bob@example.com", nil))

	t.Run("RS256 and ES256 tokens charged to the user claim", func(t *testing.T) {
		if _, err := chat(ctx, keyClient(r.proxy, alice), 5); err != nil {
			t.Fatalf("chat with alice's RS256 token: %v", err)
		}
		if _, err := chat(ctx, keyClient(r.proxy, bob), 3); err != nil {
			t.Fatalf("chat with bob's ES256 token: %v", err)
		}
		if iss.fetches.Load() == 0 {
			t.Error("the gateway verified tokens without fetching the issuer's JWKS")
		}
		for user, want := range map[string]int64{"alice@example.com": 9, "bob@example.com": 7, "00u-alice": 0} {
			var u usage
			eventually(t, 5*time.Second, func() bool {
				getJSON(t, r.ops+"/usage?user="+user, &u)
				return u.used("tokens-hourly") == want
			}, "/usage?user=%s: want %d tokens used (got %+v)", user, want, &u)
		}
		got, _ := metricValue(t, r.ops, "tokens_by_user_by_model_total", `{model="gpt-4o-mini",user="alice@example.com"}`)
		if got != 9 {
			t.Errorf("tokens_by_user_by_model_total{gpt-4o-mini,alice@example.com}: got %v, want 9", got)
		}
	})

	t.Run("models_claim", func(t *testing.T) {
		c := keyClient(r.proxy, alice)
		_, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "text-embedding-3-small",
			Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("not allowed")},
		})
		wantRefused(t, err, http.StatusForbidden, "model_not_allowed", "embeddings with a token allowed gpt-4o*")
	})

	// A key the issuer never published, under a kid it did publish.
	rogueKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rogue := jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: crypto.Signer(rogueKey), KeyID: "rsa-1"}}
	hourAgo := time.Now().Add(-time.Hour)
	refused := []struct {
		name, token, reason string
	}{
		{"expired RS256", iss.token(t, "rsa-1", claims("00u-alice", "alice@example.com",
			map[string]any{"iat": hourAgo.Add(-time.Hour).Unix(), "exp": hourAgo.Unix()})), "expired"},
		{"expired ES256", iss.token(t, "ec-1", claims("00u-bob", "bob@example.com",
			map[string]any{"iat": hourAgo.Add(-time.Hour).Unix(), "exp": hourAgo.Unix()})), "expired"},
		{"wrong audience", iss.token(t, "rsa-1", claims("00u-alice", "alice@example.com",
			map[string]any{"aud": "another-app"})), "wrong_audience"},
		{"signed by a key the issuer never published", sign(t, rogue, claims("00u-mallory", "alice@example.com", nil)), "bad_token"},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			labels := fmt.Sprintf(`{reason=%q}`, tt.reason)
			before, _ := metricValue(t, r.ops, "genai_gateway_auth_failures_total", labels)
			_, err := chat(ctx, keyClient(r.proxy, tt.token), 5)
			wantRefused(t, err, http.StatusUnauthorized, "invalid_api_key", tt.name)
			if after, _ := metricValue(t, r.ops, "genai_gateway_auth_failures_total", labels); after-before != 1 {
				t.Errorf("genai_gateway_auth_failures_total%s: got +%v, want +1", labels, after-before)
			}
		})
	}

	// Nothing refused was charged: alice still has exactly her 9 tokens.
	var u usage
	getJSON(t, r.ops+"/usage?user=alice@example.com", &u)
	if got := u.used("tokens-hourly"); got != 9 {
		t.Errorf("alice@example.com after the refusals: got %d tokens used, want 9", got)
	}
}
