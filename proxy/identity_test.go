package proxy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/limiter"
	"github.com/genai-gateway/genai-gateway/proxy/auth"
)

// Keys of the identity tests: plaintexts and the config entries holding
// only their SHA-256.
const (
	keyAlice   = "ggw_alice0000000000000000000000000000000000000"
	keyBob     = "ggw_bob000000000000000000000000000000000000000"
	keyService = "ggw_service00000000000000000000000000000000000"
)

func sha(k string) string { s := sha256.Sum256([]byte(k)); return hex.EncodeToString(s[:]) }

func newAuth(t testing.TB, keys ...auth.Key) *auth.Authenticator {
	t.Helper()
	a, err := auth.New(auth.Config{Keys: keys}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("auth.New: %v", err)
	}
	t.Cleanup(a.Close)
	return a
}

func testKeys(t testing.TB) *auth.Authenticator {
	return newAuth(t,
		auth.Key{Name: "alice-key", User: "alice", SHA256: sha(keyAlice)},
		auth.Key{Name: "bob-key", User: "bob", SHA256: sha(keyBob), Models: []string{"llama-*"}},
		auth.Key{Name: "service", User: "svc", SHA256: sha(keyService), OnBehalf: true},
	)
}

// TestCallers checks every probe of the identity issue: nobody spends the
// upstream's key without a gateway key, nobody is charged for another, and
// the client's credential never reaches the upstream.
func TestCallers(t *testing.T) {
	up := newFakeLLM(t)
	store := newMapStore()
	cfg := upstreams(up)
	cfg.Upstreams[0].APIKey = "sk-upstream-secret"
	cfg.Auth = testKeys(t)
	e := newEnv(t, cfg, newRealLimiter(t, store, 1_000_000, 1000))
	chat := `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`

	t.Run("no credential: 401, never forwarded", func(t *testing.T) {
		before := up.hits.Load()
		for _, path := range []string{routeChat, "/v1/models", "/v1/images/generations", "/usage"} {
			resp, body := e.post(t, path, chat, "user", "alice")
			if resp.StatusCode != 401 {
				t.Fatalf("%s: status got %d, want 401", path, resp.StatusCode)
			}
			if _, typ, code := apiErrorBody(t, body); typ != "invalid_request_error" || code != "invalid_api_key" {
				t.Errorf("%s: type, code: got %q, %v, want invalid_request_error, invalid_api_key", path, typ, code)
			}
		}
		if got := up.hits.Load() - before; got != 0 {
			t.Errorf("upstream hits: got %d, want 0", got)
		}
	})
	t.Run("unknown key: 401", func(t *testing.T) {
		resp, _ := e.post(t, routeChat, chat, "Authorization", "Bearer ggw_nobody")
		if resp.StatusCode != 401 {
			t.Fatalf("status: got %d, want 401", resp.StatusCode)
		}
	})
	t.Run("impersonation: the user header is ignored", func(t *testing.T) {
		resp, _ := e.post(t, routeChat, chat, "Authorization", "Bearer "+keyAlice, "user", "victim")
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200", resp.StatusCode)
		}
		if got := store.total("reqs", "victim"); got != 0 {
			t.Errorf("victim charged %d requests, want 0", got)
		}
		if got := store.total("reqs", "alice"); got != 1 {
			t.Errorf("alice charged %d requests, want 1", got)
		}
		if got := testutil.ToFloat64(e.p.m.promptByUserModel.WithLabelValues("alice", "gpt-4o")); got == 0 {
			t.Error("tokens not metered under the key's user")
		}
	})
	t.Run("credential consumed, upstream key sent", func(t *testing.T) {
		for _, h := range []string{"Authorization", "x-api-key", "api-key"} {
			v := keyAlice
			if h == "Authorization" {
				v = "Bearer " + keyAlice
			}
			resp, _ := e.post(t, routeChat, chat, h, v)
			if resp.StatusCode != 200 {
				t.Fatalf("%s: status got %d, want 200", h, resp.StatusCode)
			}
			got := up.last(t).header
			if a := got.Get("Authorization"); a != "Bearer sk-upstream-secret" {
				t.Errorf("%s: upstream Authorization: got %q, want the upstream's key", h, a)
			}
			for _, k := range []string{"X-Api-Key", "Api-Key"} {
				if got.Get(k) != "" {
					t.Errorf("%s: the client's credential reached the upstream in %s", h, k)
				}
			}
		}
	})
	t.Run("model not allowed: 403", func(t *testing.T) {
		before := up.hits.Load()
		resp, body := e.post(t, routeChat, chat, "Authorization", "Bearer "+keyBob)
		if resp.StatusCode != 403 {
			t.Fatalf("status: got %d, want 403", resp.StatusCode)
		}
		if _, _, code := apiErrorBody(t, body); code != "model_not_allowed" {
			t.Errorf("code: got %v, want model_not_allowed", code)
		}
		if up.hits.Load() != before {
			t.Error("a refused request reached the upstream")
		}
	})
	t.Run("on_behalf: end users under the key", func(t *testing.T) {
		for _, end := range []string{"u1", "u1", "u2"} {
			if resp, _ := e.post(t, routeChat, chat, "Authorization", "Bearer "+keyService, "user", end); resp.StatusCode != 200 {
				t.Fatalf("status: got %d, want 200", resp.StatusCode)
			}
		}
		if got := store.total("reqs", "svc/u1"); got != 2 {
			t.Errorf("svc/u1: got %d requests, want 2", got)
		}
		if got := store.total("reqs", "u1"); got != 0 {
			t.Errorf("bare u1 charged %d: one key reached another's user", got)
		}
	})
	t.Run("usage on the proxy port: the caller's own", func(t *testing.T) {
		resp, body := e.get(t, "/usage?user=bob", "Authorization", "Bearer "+keyAlice)
		if resp.StatusCode != 200 {
			t.Fatalf("status: got %d, want 200", resp.StatusCode)
		}
		if !strings.Contains(string(body), `"user":"alice"`) {
			t.Errorf("body: got %s, want alice's usage", body)
		}
	})
	t.Run("gateway limit headers and request id", func(t *testing.T) {
		resp, _ := e.post(t, routeChat, chat, "Authorization", "Bearer "+keyAlice, "X-Request-Id", "abc-1")
		if resp.Header.Get("X-Gateway-Ratelimit-Limit-Requests") != "1000" || resp.Header.Get("X-Gateway-Ratelimit-Remaining-Tokens") == "" {
			t.Errorf("x-gateway-ratelimit-*: got %v", resp.Header)
		}
		if got := resp.Header.Get("X-Request-Id"); got != "abc-1" {
			t.Errorf("X-Request-Id: got %q, want the client's", got)
		}
		if !strings.Contains(e.logs.String(), `"key":"alice-key"`) {
			t.Error("access log does not name the key")
		}
		if strings.Contains(e.logs.String(), keyAlice) || strings.Contains(e.logs.String(), "sk-upstream-secret") {
			t.Error("a key reached the log")
		}
	})
}

// TestKeyRevokedOnSwap: a key removed from the config stops working for new
// requests once the new authenticator is in place.
func TestKeyRevokedOnSwap(t *testing.T) {
	up := newFakeLLM(t)
	cfg := upstreams(up)
	cfg.Auth = testKeys(t)
	e := newEnv(t, cfg, nil)
	chat := `{"model":"gpt-4o","messages":[]}`
	if resp, _ := e.post(t, routeChat, chat, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 200 {
		t.Fatalf("before: status %d, want 200", resp.StatusCode)
	}
	old := e.p.SetAuthenticator(newAuth(t, auth.Key{Name: "bob-key", User: "bob", SHA256: sha(keyBob)}))
	if old == nil {
		t.Fatal("SetAuthenticator returned no previous authenticator")
	}
	if resp, _ := e.post(t, routeChat, chat, "Authorization", "Bearer "+keyAlice); resp.StatusCode != 401 {
		t.Errorf("after removal: status %d, want 401", resp.StatusCode)
	}
	if resp, _ := e.post(t, routeChat, chat, "Authorization", "Bearer "+keyBob); resp.StatusCode != 200 {
		t.Errorf("remaining key: status %d, want 200", resp.StatusCode)
	}
}

// TestNoWaitingForever: a refusal whose Retry-After passes max_client_wait,
// or that waiting cannot cure, tells SDKs not to retry.
func TestNoWaitingForever(t *testing.T) {
	up := newFakeLLM(t)
	tests := []struct {
		name string
		rej  *limiter.Rejection
		want string
	}{
		{"short wait", &limiter.Rejection{Metric: limiter.MetricTotalTokens, Type: "tokens", RetryAfter: 2 * time.Second}, ""},
		{"an hour", &limiter.Rejection{Metric: limiter.MetricTotalTokens, Type: "tokens", RetryAfter: time.Hour}, "false"},
		{"never fits", &limiter.Rejection{Metric: limiter.MetricTotalTokens, Type: "tokens", RetryAfter: 2 * time.Second, Never: true}, "false"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstreams(up), &fakeLimiter{err: tt.rej})
			resp, _ := e.post(t, routeChat, `{"model":"gpt-4o","messages":[]}`, "user", "u")
			if got := resp.Header.Get("X-Should-Retry"); resp.StatusCode != 429 || got != tt.want {
				t.Errorf("status %d, x-should-retry: got %q, want %q", resp.StatusCode, got, tt.want)
			}
		})
	}
}

// TestFailedNotCharged: an upstream 5xx or 429 costs the user nothing, the
// request included.
func TestFailedNotCharged(t *testing.T) {
	for _, status := range []int{500, 503, 429} {
		up := newFakeLLM(t)
		up.srv.Config.Handler = failWith(status)
		store := newMapStore()
		e := newEnv(t, upstreams(up), newRealLimiter(t, store, 1000, 10))
		resp, _ := e.post(t, routeChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"a b c"}]}`, "user", "u")
		if resp.StatusCode != status {
			t.Fatalf("status: got %d, want %d", resp.StatusCode, status)
		}
		if got := store.total("reqs", "u"); got != 0 {
			t.Errorf("%d: requests charged %d, want 0", status, got)
		}
		if got := store.total("tokens", "u"); got != 0 {
			t.Errorf("%d: tokens charged %d, want 0", status, got)
		}
	}
}

// failWith is an upstream handler answering status with an OpenAI error.
func failWith(status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":{"message":"upstream failed","type":"server_error","param":null,"code":null}}`))
	}
}

// get sends a GET to the gateway with headers, like post.
func (e *env) get(t testing.TB, path string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(t, req)
}

// TestRestrictedKeyPassthrough: a key limited to some models (bob: llama-*)
// cannot spend the upstream's key on what the gateway cannot tie to a
// model: files, batches, stored objects and bodies without a model are
// refused, and an upload goes through only when its multipart model field
// names a model the key may call. A body that is JSON in all but its
// Content-Type is read as JSON, so leaving the header out changes nothing.
// An unrestricted key (alice) passes through as before.
func TestRestrictedKeyPassthrough(t *testing.T) {
	up := newFakeLLM(t)
	store := newMapStore()
	cfg := upstreams(up)
	cfg.Upstreams[0].APIKey = "sk-upstream-secret"
	cfg.Auth = testKeys(t)
	e := newEnv(t, cfg, newRealLimiter(t, store, 1_000_000, 1000))
	form := func(model string) string {
		return "--XX\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG...\r\n" +
			"--XX\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\n" + model + "\r\n" +
			"--XX\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\nhi\r\n--XX--\r\n"
	}
	raw := func(method, path, key, ct, body string) string {
		s := fmt.Sprintf("%s %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nConnection: close\r\n", method, path, key)
		if ct != "" {
			s += "Content-Type: " + ct + "\r\n"
		}
		if method == "POST" {
			s += fmt.Sprintf("Content-Length: %d\r\n", len(body))
		}
		return s + "\r\n" + body
	}
	const imageJSON = `{"model":"gpt-image-1","prompt":"hi"}`
	for _, tt := range []struct {
		name, key, method, path, ct, body string
		status                            int
		code                              string
		reached                           bool
	}{
		{"bob lists files", keyBob, "GET", "/v1/files", "", "", 403, "model_not_allowed", false},
		{"bob reads a stored answer", keyBob, "GET", "/v1/chat/completions/chatcmpl-1", "", "", 403, "model_not_allowed", false},
		{"bob creates a batch", keyBob, "POST", "/v1/batches", "application/json", `{"input_file_id":"f","endpoint":"/v1/chat/completions"}`, 403, "model_not_allowed", false},
		{"bob uploads a file", keyBob, "POST", "/v1/files", "multipart/form-data; boundary=XX", form(""), 403, "model_not_allowed", false},
		{"bob edits an image with gpt-image-1", keyBob, "POST", "/v1/images/edits", "multipart/form-data; boundary=XX", form("gpt-image-1"), 403, "model_not_allowed", false},
		{"bob edits an image with llama-vision", keyBob, "POST", "/v1/images/edits", "multipart/form-data; boundary=XX", form("llama-vision"), 0, "", true},
		{"bob's JSON without a Content-Type", keyBob, "POST", "/v1/images/generations", "", imageJSON, 403, "model_not_allowed", false},
		{"bob's JSON as text/plain", keyBob, "POST", "/v1/images/generations", "text/plain", imageJSON, 403, "model_not_allowed", false},
		{"bob cancels a batch (no body)", keyBob, "POST", "/v1/batches/b1/cancel", "", "", 403, "model_not_allowed", false},
		{"bob names two models in one form", keyBob, "POST", "/v1/images/edits", "multipart/form-data; boundary=XX", strings.TrimSuffix(form("llama-vision"), "--XX--\r\n") + "--XX\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-image-1\r\n--XX--\r\n", 400, "duplicate_key", false},
		{"bob retrieves a model he may call", keyBob, "GET", "/v1/models/llama-3", "", "", 0, "", true},
		{"bob retrieves a model he may not call", keyBob, "GET", "/v1/models/gpt-4o", "", "", 403, "model_not_allowed", false},
		{"alice cancels a batch, JSON with no body", keyAlice, "POST", "/v1/batches/b1/cancel", "application/json", "", 0, "", true},
		{"alice lists files", keyAlice, "GET", "/v1/files", "", "", 0, "", true},
		{"alice edits an image with gpt-image-1", keyAlice, "POST", "/v1/images/edits", "multipart/form-data; boundary=XX", form("gpt-image-1"), 0, "", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := up.hits.Load()
			resp, body := rawExchange(t, e, raw(tt.method, tt.path, tt.key, tt.ct, tt.body))
			reached := up.hits.Load() > before
			if reached != tt.reached {
				t.Fatalf("reached the upstream: %v, want %v (status %d %s)", reached, tt.reached, resp.StatusCode, body)
			}
			if !tt.reached {
				if _, _, code := apiErrorBody(t, body); resp.StatusCode != tt.status || code != tt.code {
					t.Errorf("got %d %s, want %d %s", resp.StatusCode, body, tt.status, tt.code)
				}
				return
			}
			if got := up.last(t); got.path != tt.path || string(got.body) != tt.body || got.header.Get("Authorization") != "Bearer sk-upstream-secret" {
				t.Errorf("upstream saw %s with %d bytes (want %d) and auth %q", got.path, len(got.body), len(tt.body), got.header.Get("Authorization"))
			}
		})
	}
	// JSON that names a model is routed, checked and counted whatever its
	// Content-Type says.
	before := store.total("reqs", "alice")
	if resp, body := rawExchange(t, e, raw("POST", "/v1/images/generations", keyAlice, "text/plain", imageJSON)); up.last(t).path != "/v1/images/generations" {
		t.Fatalf("alice's image as text/plain: %d %s", resp.StatusCode, body)
	}
	if got := store.total("reqs", "alice"); got != before+1 {
		t.Errorf("alice's text/plain JSON with a model: requests counted %d, want %d", got-before, 1)
	}
}
