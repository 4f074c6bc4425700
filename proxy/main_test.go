package proxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"go.uber.org/goleak"

	"github.com/genai-gateway/genai-gateway/limiter"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, fasthttpSleepers()...)
}

// fasthttpSleepers are fasthttp's housekeeping goroutines, which sleep out
// their interval after a server stops or a pool empties, then exit.
func fasthttpSleepers() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
	}
}

// fakeLLM is an httptest upstream that speaks the mockllm wire format:
// prompt tokens = words of the prompt text, completion = N words "w1 ... wN"
// (N = max_tokens | max_completion_tokens | max_output_tokens, else 16),
// real JSON and real SSE.
type fakeLLM struct {
	srv      *httptest.Server
	h2       bool // serve HTTP/2 over TLS
	noUsage  bool
	perWord  time.Duration // sleep before each streamed word
	hits     atomic.Int64
	mu       sync.Mutex
	requests []recorded
}

// recorded is one request as the upstream saw it.
type recorded struct {
	method, path, query, host string
	header                    http.Header
	body                      []byte
	protoMajor                int
	tls                       bool
}

type fakeOpt func(*fakeLLM)

func noUsage() fakeOpt                { return func(f *fakeLLM) { f.noUsage = true } }
func perWord(d time.Duration) fakeOpt { return func(f *fakeLLM) { f.perWord = d } }
func tlsH2() fakeOpt                  { return func(f *fakeLLM) { f.h2 = true } }

func newFakeLLM(t testing.TB, opts ...fakeOpt) *fakeLLM {
	f := &fakeLLM{}
	for _, o := range opts {
		o(f)
	}
	f.srv = httptest.NewUnstartedServer(f)
	if f.h2 {
		f.srv.EnableHTTP2 = true
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeLLM) last(t testing.TB) recorded {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.requests) == 0 {
		t.Fatal("upstream got no request")
	}
	return f.requests[len(f.requests)-1]
}

type fakeReq struct {
	Model               string            `json:"model"`
	Messages            []json.RawMessage `json:"messages"`
	Prompt              json.RawMessage   `json:"prompt"`
	Input               json.RawMessage   `json:"input"`
	MaxTokens           *int              `json:"max_tokens"`
	MaxCompletionTokens *int              `json:"max_completion_tokens"`
	MaxOutputTokens     *int              `json:"max_output_tokens"`
	Stream              bool              `json:"stream"`
	StreamOptions       *struct {
		IncludeUsage bool `json:"include_usage"`
	} `json:"stream_options"`
}

func (f *fakeLLM) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.hits.Add(1)
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.requests = append(f.requests, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Clone(), body, r.ProtoMajor, r.TLS != nil})
	f.mu.Unlock()
	w.Header().Set("x-ratelimit-limit-requests", "10000")
	w.Header().Set("x-ratelimit-remaining-requests", "9999")
	path := strings.TrimPrefix(r.URL.Path, "/openai") // base-path tests
	if r.Method == http.MethodGet && path == "/v1/models" {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"object":"list","data":[{"id":"gpt-4o","object":"model","created":1,"owned_by":"mock"},{"id":"llama-3","object":"model","created":1,"owned_by":"mock"}]}`)
		return
	}
	var req fakeReq
	if err := json.Unmarshal(body, &req); err != nil || r.Method != http.MethodPost {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		io.WriteString(w, `{"error":{"message":"Invalid URL","type":"invalid_request_error","param":null,"code":null}}`)
		return
	}
	n := 16
	for _, p := range []*int{req.MaxTokens, req.MaxCompletionTokens, req.MaxOutputTokens} {
		if p != nil {
			n = *p
			break
		}
	}
	words := make([]string, n)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i+1)
	}
	text := strings.Join(words, " ")
	switch path {
	case "/v1/chat/completions":
		prompt := 0
		for _, m := range req.Messages {
			var msg struct{ Content json.RawMessage }
			_ = json.Unmarshal(m, &msg)
			prompt += contentWords(msg.Content)
		}
		f.chat(w, r, req, prompt, words, false)
	case "/v1/completions":
		f.chat(w, r, req, inputWords(req.Prompt), words, true)
	case "/v1/embeddings":
		prompt := inputWords(req.Input)
		u := map[string]any{"prompt_tokens": prompt, "total_tokens": prompt}
		f.json(w, map[string]any{"object": "list", "model": req.Model, "usage": u,
			"data": []any{map[string]any{"object": "embedding", "index": 0, "embedding": []float64{0.25, -0.5, 1}}}})
	case "/v1/responses":
		prompt := contentWords(req.Input)
		var items []struct{ Content json.RawMessage }
		if json.Unmarshal(req.Input, &items) == nil {
			prompt = 0
			for _, it := range items {
				prompt += contentWords(it.Content)
			}
		}
		f.responses(w, r, req, prompt, words, text)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func (f *fakeLLM) json(w http.ResponseWriter, v map[string]any) {
	if f.noUsage {
		delete(v, "usage")
	}
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

func (f *fakeLLM) chat(w http.ResponseWriter, r *http.Request, req fakeReq, prompt int, words []string, legacy bool) {
	u := map[string]any{"prompt_tokens": prompt, "completion_tokens": len(words), "total_tokens": prompt + len(words)}
	object, text := "chat.completion", strings.Join(words, " ")
	if legacy {
		object = "text_completion"
	}
	if !req.Stream {
		choice := map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": text}}
		if legacy {
			choice = map[string]any{"index": 0, "finish_reason": "stop", "text": text}
		}
		f.json(w, map[string]any{"id": "cmpl-1", "object": object, "created": 1, "model": req.Model,
			"choices": []any{choice}, "usage": u})
		return
	}
	includeUsage := req.StreamOptions != nil && req.StreamOptions.IncludeUsage && !f.noUsage
	sse := newSSEWriter(w)
	chunk := func(delta map[string]any, finish any) {
		choice := map[string]any{"index": 0, "delta": delta, "finish_reason": finish}
		if legacy {
			choice = map[string]any{"index": 0, "text": delta["content"], "finish_reason": finish}
		}
		c := map[string]any{"id": "cmpl-1", "object": object + ".chunk", "created": 1, "model": req.Model,
			"choices": []any{choice}}
		if includeUsage {
			c["usage"] = nil
		}
		sse.data(c)
	}
	for i, wd := range words {
		if f.perWord > 0 {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(f.perWord):
			}
		}
		d := map[string]any{"content": wd}
		if i > 0 {
			d["content"] = " " + wd
		} else {
			d["role"] = "assistant"
		}
		chunk(d, nil)
	}
	chunk(map[string]any{}, "stop")
	if includeUsage {
		sse.data(map[string]any{"id": "cmpl-1", "object": object + ".chunk", "created": 1, "model": req.Model,
			"choices": []any{}, "usage": u})
	}
	sse.raw("data: [DONE]\n\n")
}

func (f *fakeLLM) responses(w http.ResponseWriter, r *http.Request, req fakeReq, prompt int, words []string, text string) {
	resp := map[string]any{"id": "resp_1", "object": "response", "created_at": 1, "status": "completed",
		"model": req.Model, "output": []any{map[string]any{"type": "message", "id": "msg_1", "status": "completed",
			"role": "assistant", "content": []any{map[string]any{"type": "output_text", "text": text, "annotations": []any{}}}}},
		"usage": map[string]any{"input_tokens": prompt, "output_tokens": len(words), "total_tokens": prompt + len(words)}}
	if !req.Stream {
		f.json(w, resp)
		return
	}
	if f.noUsage {
		delete(resp, "usage")
	}
	sse := newSSEWriter(w)
	sse.event("response.created", map[string]any{"type": "response.created", "sequence_number": 0,
		"response": map[string]any{"id": "resp_1", "object": "response", "status": "in_progress", "model": req.Model, "output": []any{}}})
	for i, wd := range words {
		if i > 0 {
			wd = " " + wd
		}
		sse.event("response.output_text.delta", map[string]any{"type": "response.output_text.delta", "item_id": "msg_1",
			"output_index": 0, "content_index": 0, "delta": wd, "sequence_number": i + 1})
	}
	sse.event("response.completed", map[string]any{"type": "response.completed", "sequence_number": len(words) + 1, "response": resp})
}

type sseWriter struct {
	w http.ResponseWriter
}

func newSSEWriter(w http.ResponseWriter) *sseWriter {
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	return &sseWriter{w}
}

func (s *sseWriter) data(v any) {
	b, _ := json.Marshal(v)
	s.raw("data: " + string(b) + "\n\n")
}

func (s *sseWriter) event(name string, v any) {
	b, _ := json.Marshal(v)
	s.raw("event: " + name + "\ndata: " + string(b) + "\n\n")
}

func (s *sseWriter) raw(str string) {
	io.WriteString(s.w, str)
	http.NewResponseController(s.w).Flush()
}

// contentWords counts the words of a content: a string or parts with text.
func contentWords(raw json.RawMessage) int {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return len(strings.Fields(s))
	}
	var parts []struct{ Text string }
	n := 0
	if json.Unmarshal(raw, &parts) == nil {
		for _, p := range parts {
			n += len(strings.Fields(p.Text))
		}
	}
	return n
}

// inputWords counts a prompt or input: a string or an array of strings.
func inputWords(raw json.RawMessage) int {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return len(strings.Fields(s))
	}
	var ss []string
	n := 0
	if json.Unmarshal(raw, &ss) == nil {
		for _, s := range ss {
			n += len(strings.Fields(s))
		}
	}
	return n
}

// env is a Proxy served by its fasthttp server on a loopback port, with
// its registry and log.
type env struct {
	p      *Proxy
	srv    *gatewayServer
	reg    *prometheus.Registry
	logs   *syncBuffer
	client *http.Client
}

func newEnv(t testing.TB, cfg Config, lim Limiter) *env {
	t.Helper()
	if cfg.UserHeader == "" {
		cfg.UserHeader = "user"
	}
	e := &env{reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	p, err := New(cfg, lim, zerolog.New(e.logs), e.reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.p = p
	e.srv = serveGateway(t, p)
	tr := &http.Transport{}
	e.client = &http.Client{Transport: tr}
	t.Cleanup(func() {
		e.srv.Close()
		tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := p.Wait(ctx); err != nil {
			t.Errorf("Wait: %v", err)
		}
	})
	return e
}

// gatewayServer is a Proxy's fasthttp server listening on 127.0.0.1.
type gatewayServer struct {
	URL string
	srv *fasthttp.Server
	ln  net.Listener
}

func serveGateway(t testing.TB, p *Proxy) *gatewayServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gatewayServer{URL: "http://" + ln.Addr().String(), srv: p.Server(), ln: ln}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = g.srv.Serve(ln)
	}()
	t.Cleanup(func() { <-done })
	return g
}

// Close stops accepting and closes every connection; streams in flight end.
func (g *gatewayServer) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = g.srv.ShutdownWithContext(ctx)
}

// upstreams is a Config with one upstream per fake, in order.
func upstreams(fs ...*fakeLLM) Config {
	var c Config
	for i, f := range fs {
		c.Upstreams = append(c.Upstreams, Upstream{Name: fmt.Sprintf("up%d", i), URL: f.srv.URL, Timeout: time.Minute})
	}
	return c
}

// post sends a JSON body to the gateway and returns the response with its
// body read, after the request's bookkeeping (metrics, log) has finished.
func (e *env) post(t testing.TB, path, body string, hdr ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	return e.do(t, req)
}

func (e *env) do(t testing.TB, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	e.idle(t)
	return resp, b
}

// idle waits until no request is in flight in the gateway.
func (e *env) idle(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.p.inflight.wait(ctx); err != nil {
		t.Fatalf("gateway still busy: %v", err)
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// mapStore is an in-memory limiter.Store.
type mapStore struct {
	mu sync.Mutex
	m  map[string]int64
}

func newMapStore() *mapStore { return &mapStore{m: map[string]int64{}} }

func (s *mapStore) key(limit, user string, start, size int64) string {
	return fmt.Sprintf("%s\x00%s\x00%d\x00%d", limit, user, start, size)
}

func (s *mapStore) Add(limit, user string, start, size, delta int64) {
	s.mu.Lock()
	s.m[s.key(limit, user, start, size)] += delta
	s.mu.Unlock()
}

func (s *mapStore) Sum(limit, user string, start, size int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[s.key(limit, user, start, size)]
}

// total is the sum of every key of limit and user.
func (s *mapStore) total(limit, user string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	prefix := limit + "\x00" + user + "\x00"
	for k, v := range s.m {
		if strings.HasPrefix(k, prefix) {
			n += v
		}
	}
	return n
}

// newRealLimiter is the real limiter over a map store with one total_tokens
// limit (and optionally a requests limit) per user.
func newRealLimiter(t testing.TB, store *mapStore, tokens, requests int64) *limiter.Limiter {
	t.Helper()
	pol := limiter.Policy{Enabled: true, MissingUser: limiter.MissingUserReject}
	if tokens > 0 {
		pol.Limits = append(pol.Limits, limiter.Limit{Name: "tokens", Metric: limiter.MetricTotalTokens, Limit: tokens, Window: time.Hour})
	}
	if requests > 0 {
		pol.Limits = append(pol.Limits, limiter.Limit{Name: "reqs", Metric: limiter.MetricRequests, Limit: requests, Window: time.Hour})
	}
	l, err := limiter.New(pol, store, limiter.Options{}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("limiter.New: %v", err)
	}
	return l
}

// fakeLimiter admits or refuses every request with err, recording calls.
type fakeLimiter struct {
	mu        sync.Mutex
	err       error
	calls     int
	estimates []int64
}

func (f *fakeLimiter) Usage(string) []limiter.LimitUsage { return nil }

func (f *fakeLimiter) Admit(user, model string, est limiter.Estimate) (*limiter.Reservation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.err != nil {
		return nil, f.err
	}
	f.estimates = append(f.estimates, est.Exact())
	return nil, nil
}

func (f *fakeLimiter) Fallback(r *limiter.Reservation, user, model string, est limiter.Estimate) (*limiter.Reservation, error) {
	_, err := f.Admit(user, model, est)
	return r, err
}
