package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/openai/openai-go/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
	"github.com/tidwall/gjson"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
	"github.com/genai-gateway/genai-gateway/limiter"
	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// fallbackLimiter limits per model: 4o-tokens on gpt-4o, mini-tokens on
// gpt-4o-mini (miniTokens), and one requests limit over every model.
func fallbackLimiter(t testing.TB, store *mapStore, miniTokens int64) *limiter.Limiter {
	t.Helper()
	pol := limiter.Policy{Enabled: true, MissingUser: limiter.MissingUserReject, Limits: []limiter.Limit{
		{Name: "4o-tokens", Metric: limiter.MetricTotalTokens, Limit: 1 << 40, Window: time.Hour, Models: []string{"gpt-4o"}},
		{Name: "mini-tokens", Metric: limiter.MetricTotalTokens, Limit: miniTokens, Window: time.Hour, Models: []string{"gpt-4o-mini"}},
		{Name: "reqs", Metric: limiter.MetricRequests, Limit: 1 << 40, Window: time.Hour},
	}}
	l, err := limiter.New(pol, store, limiter.Options{}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// fallbackConfig routes gpt-4o to big, a pool of one, and gpt-4o-mini to
// small, with routing.fallbacks {gpt-4o: [gpt-4o-mini]}.
func fallbackConfig(big, small string) Config {
	c := poolConfig(route.NamePriority, big, small)
	c.Upstreams[0].Name, c.Upstreams[0].Models = "big", []string{"gpt-4o"}
	c.Upstreams[1].Name, c.Upstreams[1].Models = "small", []string{"gpt-4o-mini"}
	c.Upstreams[0].Timeout = 300 * time.Millisecond
	c.Routing.Fallbacks = map[string][]string{"gpt-4o": {"gpt-4o-mini"}}
	return c
}

// TestModelFallback: when the requested model's whole pool fails in a way
// routing retries, the request goes on to its fallback model before
// anything reached the client: the client gets the fallback's answer,
// which names the model that answered; it is metered under that model and
// charged once to the limits of both models; the access log names the
// requested model and every attempt. A stream that broke after its first
// byte is not replayed on the fallback.
func TestModelFallback(t *testing.T) {
	for _, tt := range []struct {
		name    string
		mode    int
		refused bool // big refuses connections
		stream  bool
		outcome string
	}{
		{"429", mode429, false, false, "429"},
		{"500", mode500, false, false, "500"},
		{"503", mode503, false, false, "503"},
		{"503, streamed", mode503, false, true, "503"},
		{"hang past the timeout", modeHang, false, false, "timeout"},
		{"connection dropped", modeDrop, false, false, "connect"},
		{"connection refused", modeOK, true, false, "connect"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			big := newFlaky(t, tt.mode)
			bigURL := big.srv.URL
			if tt.refused {
				bigURL = refusedURL(t)
			}
			small := newFakeLLM(t)
			store := newMapStore()
			e := newEnv(t, fallbackConfig(bigURL, small.srv.URL), fallbackLimiter(t, store, 1<<40))
			body := poolChat
			if tt.stream {
				body = strings.Replace(body, `"max_tokens":5`, `"max_tokens":5,"stream":true`, 1)
			}
			resp, got := e.post(t, routeChat, body, "user", "bob")
			e.idle(t)
			if resp.StatusCode != 200 {
				t.Fatalf("status: got %d, want 200 (body %s)", resp.StatusCode, got)
			}
			if small.hits.Load() != 1 {
				t.Fatalf("the fallback's upstream got %d requests, want 1", small.hits.Load())
			}
			if m := gjson.GetBytes(small.last(t).body, "model").Str; m != "gpt-4o-mini" {
				t.Errorf("the fallback's upstream was asked for %q, want gpt-4o-mini", m)
			}
			answered := gjson.GetBytes(got, "model").Str
			if tt.stream {
				answered = gjson.Get(firstEvent(t, got), "model").Str
			}
			if answered != "gpt-4o-mini" {
				t.Errorf("the answer names model %q, want gpt-4o-mini (body %.300s)", answered, got)
			}
			for name, want := range map[string]int64{"4o-tokens": 8, "mini-tokens": 8, "reqs": 1} {
				if got := store.total(name, "bob"); got != want {
					t.Errorf("%s: charged %d, want %d (once)", name, got, want)
				}
			}
			if p, c := e.tokens("bob", "gpt-4o-mini"); p != 3 || c != 5 {
				t.Errorf("metered under gpt-4o-mini: %v + %v tokens, want 3 + 5", p, c)
			}
			if p, c := e.tokens("bob", "gpt-4o"); p != 0 || c != 0 {
				t.Errorf("metered under gpt-4o: %v + %v tokens, want none", p, c)
			}
			l := logLines(t, e)[0]
			if l["model"] != "gpt-4o-mini" || l["requested_model"] != "gpt-4o" || l["upstream"] != "small" || l["attempts"] != 2.0 {
				t.Errorf("log: model %v, requested_model %v, upstream %v, attempts %v; want gpt-4o-mini, gpt-4o, small, 2",
					l["model"], l["requested_model"], l["upstream"], l["attempts"])
			}
			r, _ := l["retried"].([]any)
			if want := fmt.Sprintf("map[model:gpt-4o outcome:%s upstream:big]", tt.outcome); len(r) != 1 || fmt.Sprint(r[0]) != want {
				t.Errorf("log retried: got %v, want [%s]", l["retried"], want)
			}
		})
	}

	t.Run("a stream broken after its first byte is not replayed", func(t *testing.T) {
		big, small := newFlaky(t, modeBreakStream), newFakeLLM(t)
		store := newMapStore()
		e := newEnv(t, fallbackConfig(big.srv.URL, small.srv.URL), fallbackLimiter(t, store, 1<<40))
		resp, got, rerr := e.chatReadErr(t, strings.Replace(poolChat, `"max_tokens":5`, `"max_tokens":5,"stream":true`, 1), "bob")
		e.idle(t)
		if resp.StatusCode != 200 || rerr == nil || !strings.Contains(string(got), "hello") {
			t.Errorf("status %d, body %q, read error %v: want big's stream, broken", resp.StatusCode, got, rerr)
		}
		if small.hits.Load() != 0 {
			t.Errorf("the fallback got %d requests, want 0", small.hits.Load())
		}
		if got := store.total("mini-tokens", "bob"); got != 0 {
			t.Errorf("mini-tokens charged %d, want 0", got)
		}
	})
}

// firstEvent is the data of the first event of an SSE body.
func firstEvent(t *testing.T, body []byte) string {
	t.Helper()
	for line := range strings.SplitSeq(string(body), "\n") {
		if d, ok := strings.CutPrefix(line, "data: "); ok {
			return d
		}
	}
	t.Fatalf("no event in %q", body)
	return ""
}

// TestThroughTwoFallbacks: gpt-4o fails, its first fallback o3 fails too,
// and gpt-4o-mini answers. The request is charged to the limits of the
// model asked for and of the model that answered, once each, and to none of
// o3's: what that fallback reserved is given back when the request moves on.
func TestThroughTwoFallbacks(t *testing.T) {
	big, mid, small := newFlaky(t, mode503), newFlaky(t, mode500), newFakeLLM(t)
	c := fallbackConfig(big.srv.URL, small.srv.URL)
	c.Upstreams = append(c.Upstreams, Upstream{Name: "mid", URL: mid.srv.URL, Models: []string{"o3"}, Timeout: time.Minute})
	c.Routing.Fallbacks = map[string][]string{"gpt-4o": {"o3", "gpt-4o-mini"}}
	store := newMapStore()
	lim := fallbackLimiter(t, store, 1<<40)
	pol := limiter.Policy{Enabled: true, MissingUser: limiter.MissingUserReject, Limits: []limiter.Limit{
		{Name: "4o-tokens", Metric: limiter.MetricTotalTokens, Limit: 1 << 40, Window: time.Hour, Models: []string{"gpt-4o"}},
		{Name: "o3-tokens", Metric: limiter.MetricTotalTokens, Limit: 1 << 40, Window: time.Hour, Models: []string{"o3"}},
		{Name: "mini-tokens", Metric: limiter.MetricTotalTokens, Limit: 1 << 40, Window: time.Hour, Models: []string{"gpt-4o-mini"}},
		{Name: "reqs", Metric: limiter.MetricRequests, Limit: 1 << 40, Window: time.Hour},
	}}
	if err := lim.SetPolicy(pol); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, c, lim)
	resp, got := e.post(t, routeChat, poolChat, "user", "bob")
	e.idle(t)
	if resp.StatusCode != 200 || gjson.GetBytes(got, "model").Str != "gpt-4o-mini" {
		t.Fatalf("status %d, body %.300s: want gpt-4o-mini's answer", resp.StatusCode, got)
	}
	if big.all.Load() != 1 || mid.all.Load() != 1 || small.hits.Load() != 1 {
		t.Errorf("requests: gpt-4o %d, o3 %d, gpt-4o-mini %d; want 1 each", big.all.Load(), mid.all.Load(), small.hits.Load())
	}
	for name, want := range map[string]int64{"4o-tokens": 8, "o3-tokens": 0, "mini-tokens": 8, "reqs": 1} {
		if got := store.total(name, "bob"); got != want {
			t.Errorf("%s: charged %d, want %d", name, got, want)
		}
	}
	if l := logLines(t, e)[0]; l["model"] != "gpt-4o-mini" || l["requested_model"] != "gpt-4o" || l["attempts"] != 3.0 {
		t.Errorf("log: model %v, requested_model %v, attempts %v; want gpt-4o-mini, gpt-4o, 3", l["model"], l["requested_model"], l["attempts"])
	}
}

// TestFallbackNotTaken: a fallback is skipped when the caller's key may not
// call it, when its limits refuse the request, or when the failure is not
// one routing retries; the client then gets the requested model's failure,
// and nothing is charged.
func TestFallbackNotTaken(t *testing.T) {
	t.Run("its limits refuse", func(t *testing.T) {
		big, small := newFlaky(t, mode503), newFakeLLM(t)
		store := newMapStore()
		e := newEnv(t, fallbackConfig(big.srv.URL, small.srv.URL), fallbackLimiter(t, store, 2))
		resp, got := e.post(t, routeChat, poolChat, "user", "bob")
		e.idle(t)
		if resp.StatusCode != 503 || !strings.Contains(string(got), "upstream trouble") {
			t.Errorf("status %d, body %s: want big's 503", resp.StatusCode, got)
		}
		if small.hits.Load() != 0 {
			t.Errorf("the fallback got %d requests, want 0", small.hits.Load())
		}
		for _, name := range []string{"4o-tokens", "mini-tokens", "reqs"} {
			if got := store.total(name, "bob"); got != 0 {
				t.Errorf("%s: charged %d for a failed request, want 0", name, got)
			}
		}
		// The fallback's upstream was picked, then given back.
		if inflight := gauges(t, e, "genai_gateway_upstream_in_flight"); inflight["upstream=big"]+inflight["upstream=small"] != 0 {
			t.Errorf("in flight after the request: %v, want 0", inflight)
		}
	})
	t.Run("the key may not call it", func(t *testing.T) {
		big, small := newFlaky(t, mode503), newFakeLLM(t)
		cfg := fallbackConfig(big.srv.URL, small.srv.URL)
		cfg.Upstreams[0].Models = []string{"llama-3"}
		cfg.Upstreams[1].Models = []string{"gpt-4o", "llama-3-small"}
		cfg.Routing.Fallbacks = map[string][]string{"llama-3": {"gpt-4o", "llama-3-small"}}
		cfg.Auth = testKeys(t) // bob's key may call llama-* only
		e := newEnv(t, cfg, nil)
		resp, got := e.post(t, routeChat, strings.Replace(poolChat, "gpt-4o", "llama-3", 1), "Authorization", "Bearer "+keyBob)
		e.idle(t)
		if resp.StatusCode != 200 || gjson.GetBytes(got, "model").Str != "llama-3-small" {
			t.Fatalf("status %d, body %s: want llama-3-small's answer", resp.StatusCode, got)
		}
		if m := gjson.GetBytes(small.last(t).body, "model").Str; m != "llama-3-small" {
			t.Errorf("the fallback upstream was asked for %q, want llama-3-small (gpt-4o is not bob's)", m)
		}
	})
	t.Run("a client error", func(t *testing.T) {
		big := httptest.NewServer(failWith(400))
		t.Cleanup(big.Close)
		small := newFakeLLM(t)
		e := newEnv(t, fallbackConfig(big.URL, small.srv.URL), nil)
		resp, _ := e.post(t, routeChat, poolChat, "user", "bob")
		if resp.StatusCode != 400 || small.hits.Load() != 0 {
			t.Errorf("status %d, fallback hits %d: want the upstream's 400, no fallback", resp.StatusCode, small.hits.Load())
		}
	})
}

// TestFallbackWhenPoolFull: a pool whose upstreams are all at max_in_flight
// sends the request to its fallback instead of refusing it.
func TestFallbackWhenPoolFull(t *testing.T) {
	big, small := newFlaky(t, modeHang), newFakeLLM(t)
	cfg := fallbackConfig(big.srv.URL, small.srv.URL)
	cfg.Upstreams[0].MaxInFlight, cfg.Upstreams[0].Timeout = 1, 5*time.Second
	store := newMapStore()
	e := newEnv(t, cfg, fallbackLimiter(t, store, 1<<40))
	held := make(chan struct{})
	go func() {
		defer close(held)
		resp, err := e.client.Post(e.srv.URL+routeChat, "application/json", strings.NewReader(poolChat))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for big.all.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	resp, got := e.post(t, routeChat, poolChat, "user", "bob")
	if resp.StatusCode != 200 || gjson.GetBytes(got, "model").Str != "gpt-4o-mini" {
		t.Errorf("status %d, body %s: want gpt-4o-mini's answer", resp.StatusCode, got)
	}
	if got := store.total("reqs", "bob"); got != 1 {
		t.Errorf("reqs: charged %d, want 1", got)
	}
	big.unblock()
	<-held
}

// TestFallbackAcrossProviders: a fallback may be served by another
// provider: an OpenAI chat request for gpt-4o falls back to a Claude model
// on an anthropic upstream, and a Messages request for a Claude model to
// gpt-4o on an OpenAI-compatible one, both through the official SDKs.
func TestFallbackAcrossProviders(t *testing.T) {
	down := newFlaky(t, mode503)
	oa, claude := newMockUpstream(t, mock.Options{}), newMockUpstream(t, mock.Options{})
	cfg := Config{
		Upstreams: []Upstream{
			{Name: "down", URL: down.srv.URL, Models: []string{"gpt-4o", "claude-opus-4"}, Timeout: time.Minute},
			{Name: "oa", URL: oa.srv.URL, Models: []string{"gpt-4o-mini"}, Timeout: time.Minute},
			{Name: "claude", URL: claude.srv.URL, Models: []string{"claude-sonnet-4-5"}, Provider: ProviderAnthropic, APIKey: "sk-ant-upstream", Timeout: time.Minute},
		},
		Routing: Routing{Retries: 2, RetryOn: route.DefaultRetryOn, Fallbacks: map[string][]string{
			"gpt-4o":        {"claude-sonnet-4-5"},
			"claude-opus-4": {"gpt-4o-mini"},
		}},
	}
	pe := &providerEnv{env: newEnv(t, cfg, nil), openai: oa, claude: claude}
	ctx := context.Background()
	oc, ac := pe.openaiClient(), pe.anthropic()

	chat, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:    "gpt-4o",
		Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there gateway")},
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if chat.Model != "claude-sonnet-4-5" || claude.count() != 1 {
		t.Errorf("chat answered by %q (claude upstream got %d requests), want claude-sonnet-4-5", chat.Model, claude.count())
	}
	if p, _ := pe.tokens("ann", "claude-sonnet-4-5"); p == 0 {
		t.Error("chat not metered under claude-sonnet-4-5")
	}

	msg, err := ac.Messages.New(ctx, anthropic.MessageNewParams{
		Model: "claude-opus-4", MaxTokens: 16,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there gateway"))},
	})
	if err != nil {
		t.Fatalf("messages: %v", err)
	}
	if msg.Model != "gpt-4o-mini" || oa.count() != 1 {
		t.Errorf("messages answered by %q (openai upstream got %d requests), want gpt-4o-mini", msg.Model, oa.count())
	}
	if p, _ := pe.tokens("ann", "gpt-4o-mini"); p == 0 {
		t.Error("messages not metered under gpt-4o-mini")
	}
	if got := testutil.ToFloat64(pe.p.m.promptByUserModel.WithLabelValues("ann", "claude-opus-4")); got != 0 {
		t.Errorf("metered under the requested claude-opus-4: %v", got)
	}
}

// TestFallbackOnTheSameUpstream: one upstream (a local vLLM, say) serves
// both a model and its fallback, with max_in_flight 1. When the model
// answers 503 the fallback goes to the same upstream: the failed attempt
// gives its slot back before the fallback takes one.
func TestFallbackOnTheSameUpstream(t *testing.T) {
	up := newFakeLLM(t)
	inner := up.srv.Config.Handler
	up.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if gjson.GetBytes(body, "model").Str == "gpt-4o" {
			failWith(http.StatusServiceUnavailable)(w, r)
			return
		}
		r.Body = io.NopCloser(strings.NewReader(string(body)))
		inner.ServeHTTP(w, r)
	})
	cfg := poolConfig(route.NamePriority, up.srv.URL)
	cfg.Upstreams[0].Models, cfg.Upstreams[0].MaxInFlight = []string{"gpt-4o", "gpt-4o-mini"}, 1
	cfg.Routing.Fallbacks = map[string][]string{"gpt-4o": {"gpt-4o-mini"}}
	e := newEnv(t, cfg, nil)
	resp, got := e.post(t, routeChat, poolChat, "user", "bob")
	e.idle(t)
	if resp.StatusCode != 200 || gjson.GetBytes(got, "model").Str != "gpt-4o-mini" {
		t.Errorf("status %d, body %s: want gpt-4o-mini's answer from the same upstream", resp.StatusCode, got)
	}
	if inflight := gauges(t, e, "genai_gateway_upstream_in_flight"); inflight["upstream=up0"] != 0 {
		t.Errorf("in flight after the request: %v, want 0", inflight)
	}
}
