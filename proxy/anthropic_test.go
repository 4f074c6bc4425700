package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
	"github.com/genai-gateway/genai-gateway/proxy/auth"
)

// mockUpstream is cmd/mockllm's handler (which speaks the OpenAI API,
// Anthropic's Messages API and Azure's paths) behind a recorder of the
// request heads it got.
type mockUpstream struct {
	srv *httptest.Server
	mu  sync.Mutex
	got []*http.Request // heads only
}

func newMockUpstream(t testing.TB, opts mock.Options) *mockUpstream {
	t.Helper()
	u := &mockUpstream{}
	h := mock.NewHandler(opts)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.mu.Lock()
		u.got = append(u.got, r.Clone(context.Background()))
		u.mu.Unlock()
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// last returns the head of the last request the upstream got.
func (u *mockUpstream) last(t testing.TB) *http.Request {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.got) == 0 {
		t.Fatal("the upstream got no request")
	}
	return u.got[len(u.got)-1]
}

func (u *mockUpstream) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.got)
}

// providerEnv is a gateway with an OpenAI-compatible upstream for gpt-*
// and an anthropic one for claude-* (upstream key sk-ant-upstream), limited
// by lim (may be nil).
type providerEnv struct {
	*env
	openai, claude *mockUpstream
}

func newProviderEnv(t *testing.T, lim Limiter) *providerEnv {
	t.Helper()
	pe := &providerEnv{openai: newMockUpstream(t, mock.Options{}), claude: newMockUpstream(t, mock.Options{})}
	cfg := Config{Upstreams: []Upstream{
		{Name: "oa", URL: pe.openai.srv.URL, Models: []string{"gpt-*"}, Timeout: time.Minute},
		{Name: "claude", URL: pe.claude.srv.URL, Models: []string{"claude-*"}, Provider: ProviderAnthropic,
			APIKey: "sk-ant-upstream", Timeout: time.Minute},
	}}
	pe.env = newEnv(t, cfg, lim)
	return pe
}

func (pe *providerEnv) anthropic(opts ...aoption.RequestOption) anthropic.Client {
	return anthropic.NewClient(append([]aoption.RequestOption{
		aoption.WithBaseURL(pe.srv.URL),
		aoption.WithAPIKey("sk-ant-client"),
		aoption.WithHTTPClient(pe.client),
		aoption.WithMaxRetries(0),
		aoption.WithHeader("user", "ann"),
	}, opts...)...)
}

func (pe *providerEnv) openaiClient() openai.Client {
	return openai.NewClient(
		option.WithBaseURL(pe.srv.URL+"/v1/"),
		option.WithAPIKey("sk-client"),
		option.WithHTTPClient(pe.client),
		option.WithMaxRetries(0),
		option.WithHeader("user", "ann"),
	)
}

// tokens returns the prompt and completion tokens metered for user and model.
func (e *env) tokens(user, model string) (prompt, completion float64) {
	return testutil.ToFloat64(e.p.m.promptByUserModel.WithLabelValues(user, model)),
		testutil.ToFloat64(e.p.m.completionByUserModel.WithLabelValues(user, model))
}

// messageParams asks for n words after the 3-word prompt "hello there gateway".
func messageParams(n int64) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: n,
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there gateway"))},
	}
}

// TestAnthropicSDK drives /v1/messages with the official Anthropic client:
// routed by model to the anthropic upstream with its own key, metered from
// the Messages usage (plain and streamed), count_tokens unmetered, and a
// 429 the SDK reads as a rate-limit error.
func TestAnthropicSDK(t *testing.T) {
	store := newMapStore()
	pe := newProviderEnv(t, newRealLimiter(t, store, 1000, 0))
	client := pe.anthropic()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	t.Run("messages", func(t *testing.T) {
		msg, err := client.Messages.New(ctx, messageParams(4))
		if err != nil {
			t.Fatal(err)
		}
		if got := msg.Content[0].Text; got != "w1 w2 w3 w4" {
			t.Errorf("text: got %q, want %q", got, "w1 w2 w3 w4")
		}
		if msg.Usage.InputTokens != 3 || msg.Usage.OutputTokens != 4 {
			t.Errorf("usage: got %d/%d, want 3/4", msg.Usage.InputTokens, msg.Usage.OutputTokens)
		}
		pe.idle(t)
		if p, c := pe.tokens("ann", "claude-sonnet-4-5"); p != 3 || c != 4 {
			t.Errorf("metered: got %v/%v, want 3/4", p, c)
		}
		if got := store.total("tokens", "ann"); got != 7 {
			t.Errorf("limiter counter: got %d, want 7", got)
		}
		head := pe.claude.last(t)
		if got := head.Header.Get("X-Api-Key"); got != "sk-ant-upstream" {
			t.Errorf("upstream x-api-key: got %q, want the upstream's key", got)
		}
		if got := head.Header.Get("Anthropic-Version"); got == "" {
			t.Error("upstream anthropic-version: got none, want the client's")
		}
		if head.URL.Path != "/v1/messages" {
			t.Errorf("upstream path: got %s, want /v1/messages", head.URL.Path)
		}
		if pe.openai.count() != 0 {
			t.Errorf("openai upstream got %d requests, want 0", pe.openai.count())
		}
	})

	t.Run("stream", func(t *testing.T) {
		s := client.Messages.NewStreaming(ctx, messageParams(5))
		var acc anthropic.Message
		for s.Next() {
			if err := acc.Accumulate(s.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if got := acc.Content[0].Text; got != "w1 w2 w3 w4 w5" {
			t.Errorf("text: got %q, want %q", got, "w1 w2 w3 w4 w5")
		}
		if acc.Usage.OutputTokens != 5 {
			t.Errorf("output tokens: got %d, want 5", acc.Usage.OutputTokens)
		}
		pe.idle(t)
		if p, c := pe.tokens("ann", "claude-sonnet-4-5"); p != 6 || c != 9 {
			t.Errorf("metered after the stream: got %v/%v, want 6/9", p, c)
		}
		if got := store.total("tokens", "ann"); got != 15 {
			t.Errorf("limiter counter: got %d, want 15", got)
		}
	})

	t.Run("count_tokens", func(t *testing.T) {
		n, err := client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
			Model:    "claude-sonnet-4-5",
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("one two three four"))},
		})
		if err != nil {
			t.Fatal(err)
		}
		if n.InputTokens != 4 {
			t.Errorf("input_tokens: got %d, want 4", n.InputTokens)
		}
		pe.idle(t)
		if p, c := pe.tokens("ann", "claude-sonnet-4-5"); p != 6 || c != 9 {
			t.Errorf("count_tokens was metered: got %v/%v, want 6/9", p, c)
		}
		if got := store.total("tokens", "ann"); got != 15 {
			t.Errorf("count_tokens was charged: counter %d, want 15", got)
		}
		if got := pe.claude.last(t).URL.Path; got != "/v1/messages/count_tokens" {
			t.Errorf("upstream path: got %s", got)
		}
	})

	t.Run("429", func(t *testing.T) {
		one := newProviderEnv(t, newRealLimiter(t, newMapStore(), 0, 1)).anthropic() // one request per user
		if _, err := one.Messages.New(ctx, messageParams(1)); err != nil {
			t.Fatal(err)
		}
		_, err := one.Messages.New(ctx, messageParams(1))
		var ae *anthropic.Error
		if !errors.As(err, &ae) {
			t.Fatalf("error: got %v, want *anthropic.Error", err)
		}
		if ae.StatusCode != http.StatusTooManyRequests {
			t.Errorf("status: got %d, want 429", ae.StatusCode)
		}
		if got := ae.Response.Header.Get("Retry-After"); got == "" {
			t.Error("retry-after: got none")
		}
		var body struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal([]byte(ae.RawJSON()), &body); err != nil {
			t.Fatalf("body %q: %v", ae.RawJSON(), err)
		}
		if body.Type != "error" || body.Error.Type != "rate_limit_error" || body.Error.Message == "" {
			t.Errorf("body: got %+v, want Anthropic's rate_limit_error", body)
		}
	})

	t.Run("unknown model", func(t *testing.T) {
		p := messageParams(1)
		p.Model = "mistral-large"
		_, err := client.Messages.New(ctx, p)
		var ae *anthropic.Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusNotFound {
			t.Fatalf("error: got %v, want a 404 *anthropic.Error", err)
		}
		if !strings.Contains(ae.RawJSON(), `"not_found_error"`) {
			t.Errorf("body: got %s, want Anthropic's not_found_error", ae.RawJSON())
		}
	})

	if !strings.Contains(pe.logs.String(), `"provider":"anthropic"`) {
		t.Error("access log: no line carries provider anthropic")
	}
}

// TestAnthropicNativeDefaults: without a key of its own the upstream gets
// the client's x-api-key, and a client that names no anthropic-version gets
// the default one sent for it.
func TestAnthropicNativeDefaults(t *testing.T) {
	claude := newMockUpstream(t, mock.Options{})
	e := newEnv(t, Config{Upstreams: []Upstream{{Name: "c", URL: claude.srv.URL, Provider: ProviderAnthropic, Timeout: time.Minute}}}, nil)
	resp, body := e.post(t, routeMessages, `{"model":"claude-x","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`,
		"x-api-key", "sk-ant-own", "user", "bo")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	head := claude.last(t)
	if got := head.Header.Get("X-Api-Key"); got != "sk-ant-own" {
		t.Errorf("x-api-key: got %q, want the client's", got)
	}
	if got := head.Header.Get("Anthropic-Version"); got != "2023-06-01" {
		t.Errorf("anthropic-version: got %q, want the default 2023-06-01", got)
	}
	if p, c := e.tokens("bo", "claude-x"); p != 1 || c != 2 {
		t.Errorf("metered: got %v/%v, want 1/2", p, c)
	}
}

// TestSharedLimit: one total_tokens limit is charged by an OpenAI model
// and by a Claude model (natively and through translation), and refuses
// the next request of either once spent. Admission counts the prompt
// estimate plus max_tokens; settlement corrects to the usage.
func TestSharedLimit(t *testing.T) {
	store := newMapStore()
	pe := newProviderEnv(t, newRealLimiter(t, store, 40, 0))
	resp, body := pe.post(t, routeChat, `{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"a b c"}]}`, "user", "sam")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}
	if got := store.total("tokens", "sam"); got != 8 {
		t.Fatalf("after gpt-4o: counter %d, want 8 (3 + 5)", got)
	}
	resp, body = pe.post(t, routeMessages, `{"model":"claude-haiku-4-5","max_tokens":6,"messages":[{"role":"user","content":"a b c d"}]}`,
		"user", "sam", "anthropic-version", "2023-06-01")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("messages: %d %s", resp.StatusCode, body)
	}
	if got := store.total("tokens", "sam"); got != 18 {
		t.Fatalf("after claude (native): counter %d, want 18 (8 + 4 + 6)", got)
	}
	resp, body = pe.post(t, routeChat, `{"model":"claude-haiku-4-5","max_tokens":7,"messages":[{"role":"user","content":"a b"}]}`, "user", "sam")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("translated chat: %d %s", resp.StatusCode, body)
	}
	if got := store.total("tokens", "sam"); got != 27 {
		t.Fatalf("after claude (translated): counter %d, want 27 (18 + 2 + 7)", got)
	}
	resp, body = pe.post(t, routeChat, `{"model":"gpt-4o","max_tokens":20,"messages":[{"role":"user","content":"a b c"}]}`, "user", "sam")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("over the shared limit: got %d %s, want 429", resp.StatusCode, body)
	}
	resp, body = pe.post(t, routeMessages, `{"model":"claude-haiku-4-5","max_tokens":20,"messages":[{"role":"user","content":"a b"}]}`, "user", "sam")
	if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), `"rate_limit_error"`) {
		t.Fatalf("claude over the shared limit: got %d %s, want 429 rate_limit_error", resp.StatusCode, body)
	}
}

// TestMergedModels: GET /v1/models lists every upstream's models (the
// Anthropic list mapped to OpenAI's shape), filtered by each upstream's
// globs and by the models the caller's key may call; an upstream that
// fails is left out.
func TestMergedModels(t *testing.T) {
	oa, claude := newMockUpstream(t, mock.Options{}), newMockUpstream(t, mock.Options{})
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	cfg := Config{Upstreams: []Upstream{
		{Name: "oa", URL: oa.srv.URL, Models: []string{"gpt-4o*"}, Timeout: time.Minute},
		{Name: "down", URL: deadURL, Timeout: time.Minute},
		{Name: "claude", URL: claude.srv.URL, Models: []string{"claude-*"}, Provider: ProviderAnthropic, APIKey: "sk-ant-up", Timeout: time.Minute},
	}}
	list := func(e *env, hdr ...string) []string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/models", nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, body := e.do(t, req)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var l struct {
			Object string
			Data   []struct {
				ID, Object string
				OwnedBy    string `json:"owned_by"`
				Created    int64
			}
		}
		if err := json.Unmarshal(body, &l); err != nil || l.Object != "list" {
			t.Fatalf("body %s: %v", body, err)
		}
		var ids []string
		for _, m := range l.Data {
			ids = append(ids, m.ID)
			if m.Object != "model" || m.Created <= 0 {
				t.Errorf("model %+v: want object model and a creation time", m)
			}
		}
		return ids
	}
	e := newEnv(t, cfg, nil)
	got := strings.Join(list(e), ",")
	if want := "gpt-4o-mini,gpt-4o,claude-sonnet-4-5,claude-haiku-4-5,claude-opus-4-1"; got != want {
		t.Errorf("models: got %s, want %s", got, want)
	}
	if h := claude.last(t).Header; h.Get("X-Api-Key") != "sk-ant-up" || h.Get("Anthropic-Version") == "" {
		t.Errorf("anthropic list request: x-api-key %q, anthropic-version %q", h.Get("X-Api-Key"), h.Get("Anthropic-Version"))
	}

	const key = "ggw_models000000000000000000000000000000000000"
	cfg.Auth = newAuth(t, auth.Key{Name: "k", SHA256: sha(key), Models: []string{"claude-haiku-*", "gpt-4o-mini"}})
	ae := newEnv(t, cfg, nil)
	if got := strings.Join(list(ae, "Authorization", "Bearer "+key), ","); got != "gpt-4o-mini,claude-haiku-4-5" {
		t.Errorf("models for a key limited to two: got %s", got)
	}
}
