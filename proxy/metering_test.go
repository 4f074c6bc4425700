package proxy

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/genai-gateway/genai-gateway/limiter"
)

func TestClientDisconnectMidStream(t *testing.T) {
	up := newFakeLLM(t, perWord(20*time.Millisecond))
	canceled := make(chan struct{})
	inner := up.srv.Config.Handler
	up.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		inner.ServeHTTP(w, r)
		if r.Context().Err() != nil {
			close(canceled)
		}
	})
	store := newMapStore()
	e := newEnv(t, upstreams(up), newRealLimiter(t, store, 1_000_000, 0))
	body := `{"model":"gpt-4o","stream":true,"max_tokens":1000,"messages":[{"role":"user","content":"count to a thousand"}]}`
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+routeChat, strings.NewReader(body))
	req.Header.Set("user", "dave")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	for chunks := 0; chunks < 3 && sc.Scan(); {
		if strings.HasPrefix(sc.Text(), "data: {") {
			chunks++
		}
	}
	cancel()
	resp.Body.Close()
	select {
	case <-canceled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not canceled")
	}
	e.idle(t)
	prompt := testutil.ToFloat64(e.p.m.promptByUserModel.WithLabelValues("dave", "gpt-4o"))
	completion := testutil.ToFloat64(e.p.m.completionByUserModel.WithLabelValues("dave", "gpt-4o"))
	if want := float64(e.p.tok.estimatePrompt(routeChat, "gpt-4o", []byte(body))); prompt != want {
		t.Errorf("prompt tokens: got %v, want the estimate %v", prompt, want)
	}
	if completion < 3 || completion > 1000*2 {
		t.Errorf("completion tokens: got %v, want the tokens streamed before the disconnect (>= 3)", completion)
	}
	if got := store.total("tokens", "dave"); got != int64(prompt+completion) {
		t.Errorf("settled usage in the limiter: got %d, want %v", got, prompt+completion)
	}
	if got := testutil.ToFloat64(e.p.m.requests.WithLabelValues(routeChat, "gpt-4o", "up0", "499")); got != 1 {
		t.Errorf("requests_total{code=499}: got %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.p.m.upstreamErrors.WithLabelValues("up0", reasonCanceled)); got != 1 {
		t.Errorf("upstream_errors{canceled}: got %v, want 1", got)
	}
}

func TestUpstreamBreaks(t *testing.T) {
	tests := []struct {
		name       string
		handler    http.HandlerFunc
		wantStatus int  // 0: the client sees a transport error mid-body
		wantTokens bool // streamed text is metered
	}{
		{"mid stream", func(w http.ResponseWriter, r *http.Request) {
			s := newSSEWriter(w)
			s.raw(`data: {"choices":[{"index":0,"delta":{"content":"hello"}}]}` + "\n\n")
			s.raw(`data: {"choices":[{"index":0,"delta":{"content":" world"}}]}` + "\n\n")
			hijackClose(w)
		}, 0, true},
		{"before the body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", "100")
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			hijackClose(w)
		}, 502, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeLLM(t)
			up.srv.Config.Handler = tt.handler
			e := newEnv(t, upstreams(up), nil)
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+routeChat,
				strings.NewReader(`{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`))
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			e.idle(t)
			if tt.wantStatus == 0 {
				if rerr == nil {
					t.Errorf("client read a complete body %q, want a truncated one", body)
				}
				if !bytes.Contains(body, []byte(`" world"`)) {
					t.Errorf("client did not get the events before the break: %q", body)
				}
			} else {
				if resp.StatusCode != tt.wantStatus {
					t.Fatalf("status: got %d, want %d", resp.StatusCode, tt.wantStatus)
				}
				apiErrorBody(t, body)
			}
			if got := testutil.ToFloat64(e.p.m.upstreamErrors.WithLabelValues("up0", reasonBroken)); got != 1 {
				t.Errorf("upstream_errors{broken}: got %v, want 1", got)
			}
			completion := testutil.ToFloat64(e.p.m.completionTotal)
			if want := float64(e.p.tok.count("gpt-4o", []byte("hello world"))); tt.wantTokens && completion != want {
				t.Errorf("completion tokens: got %v, want %v", completion, want)
			}
		})
	}
}

func hijackClose(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		conn.Close()
	}
}

func TestTokenizerFallback(t *testing.T) {
	tests := []struct{ name, path, body string }{
		{"chat", routeChat, `{"model":"gpt-4o","max_tokens":7,"messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say something."}]}`},
		{"chat stream", routeChat, `{"model":"gpt-4o-mini","stream":true,"max_tokens":7,"messages":[{"role":"user","content":"Say something."}]}`},
		{"completions stream", routeCompletions, `{"model":"gpt-3.5-turbo-instruct","stream":true,"max_tokens":7,"prompt":"Once upon a time"}`},
		{"responses", routeResponses, `{"model":"gpt-4.1","max_output_tokens":7,"instructions":"be nice","input":"Say something."}`},
		{"responses stream", routeResponses, `{"model":"gpt-4.1","stream":true,"max_output_tokens":7,"input":[{"role":"user","content":[{"type":"input_text","text":"Say something."}]}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeLLM(t, noUsage())
			e := newEnv(t, upstreams(up), nil)
			resp, body := e.post(t, tt.path, tt.body, "user", "erin")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d: %s", resp.StatusCode, body)
			}
			model := gjsonModel(tt.body)
			wantPrompt := float64(e.p.tok.estimatePrompt(tt.path, model, []byte(tt.body)))
			wantCompletion := float64(e.p.tok.count(model, []byte("w1 w2 w3 w4 w5 w6 w7")))
			if wantPrompt < 3 || wantCompletion < 7 {
				t.Fatalf("implausible tokenizer counts: prompt %v, completion %v", wantPrompt, wantCompletion)
			}
			if got := testutil.ToFloat64(e.p.m.promptByUserModel.WithLabelValues("erin", model)); got != wantPrompt {
				t.Errorf("prompt tokens: got %v, want %v", got, wantPrompt)
			}
			if got := testutil.ToFloat64(e.p.m.completionByUserModel.WithLabelValues("erin", model)); got != wantCompletion {
				t.Errorf("completion tokens: got %v, want %v", got, wantCompletion)
			}
		})
	}
}

func TestOriginalMetrics(t *testing.T) {
	up := newFakeLLM(t)
	e := newEnv(t, upstreams(up), nil)
	traffic := []struct{ path, user, body string }{
		{routeChat, "alice", `{"model":"gpt-4o","max_tokens":3,"messages":[{"role":"user","content":"one two"}]}`},
		{routeCompletions, "alice", `{"model":"llama-3","max_tokens":2,"prompt":"one"}`},
		{routeChat, "bob", `{"model":"gpt-4o","stream":true,"max_tokens":1,"messages":[{"role":"user","content":"one two three"}]}`},
		{routeEmbeddings, "", `{"model":"gpt-4o","input":"one two three four"}`},
		{routeChat, "bob", `{"model":"unknown/model","messages":[`}, // 400: not metered
	}
	for _, tr := range traffic {
		hdr := []string{}
		if tr.user != "" {
			hdr = []string{"user", tr.user}
		}
		e.post(t, tr.path, tr.body, hdr...)
	}
	const want = `
# HELP prompt_tokens_total Prompt tokens of all requests.
# TYPE prompt_tokens_total counter
prompt_tokens_total 10
# HELP completion_tokens_total Completion tokens of all requests.
# TYPE completion_tokens_total counter
completion_tokens_total 6
# HELP tokens_total Prompt plus completion tokens of all requests.
# TYPE tokens_total counter
tokens_total 16
# HELP prompt_tokens_by_model_total Prompt tokens by model.
# TYPE prompt_tokens_by_model_total counter
prompt_tokens_by_model_total{model="gpt-4o"} 9
prompt_tokens_by_model_total{model="llama-3"} 1
# HELP completion_tokens_by_model_total Completion tokens by model.
# TYPE completion_tokens_by_model_total counter
completion_tokens_by_model_total{model="gpt-4o"} 4
completion_tokens_by_model_total{model="llama-3"} 2
# HELP tokens_by_model_total Prompt plus completion tokens by model.
# TYPE tokens_by_model_total counter
tokens_by_model_total{model="gpt-4o"} 13
tokens_by_model_total{model="llama-3"} 3
# HELP prompt_tokens_by_user_by_model_total Prompt tokens by user and model.
# TYPE prompt_tokens_by_user_by_model_total counter
prompt_tokens_by_user_by_model_total{model="gpt-4o",user=""} 4
prompt_tokens_by_user_by_model_total{model="gpt-4o",user="alice"} 2
prompt_tokens_by_user_by_model_total{model="gpt-4o",user="bob"} 3
prompt_tokens_by_user_by_model_total{model="llama-3",user="alice"} 1
# HELP completion_tokens_by_user_by_model_total Completion tokens by user and model.
# TYPE completion_tokens_by_user_by_model_total counter
completion_tokens_by_user_by_model_total{model="gpt-4o",user=""} 0
completion_tokens_by_user_by_model_total{model="gpt-4o",user="alice"} 3
completion_tokens_by_user_by_model_total{model="gpt-4o",user="bob"} 1
completion_tokens_by_user_by_model_total{model="llama-3",user="alice"} 2
# HELP tokens_by_user_by_model_total Prompt plus completion tokens by user and model.
# TYPE tokens_by_user_by_model_total counter
tokens_by_user_by_model_total{model="gpt-4o",user=""} 4
tokens_by_user_by_model_total{model="gpt-4o",user="alice"} 5
tokens_by_user_by_model_total{model="gpt-4o",user="bob"} 4
tokens_by_user_by_model_total{model="llama-3",user="alice"} 3
`
	names := []string{"prompt_tokens_total", "completion_tokens_total", "tokens_total",
		"prompt_tokens_by_model_total", "completion_tokens_by_model_total", "tokens_by_model_total",
		"prompt_tokens_by_user_by_model_total", "completion_tokens_by_user_by_model_total", "tokens_by_user_by_model_total"}
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	const wantReqs = `
# HELP genai_gateway_requests_total Requests by route, model, upstream and status code (499: the client went away).
# TYPE genai_gateway_requests_total counter
genai_gateway_requests_total{code="200",model="gpt-4o",route="/v1/chat/completions",upstream="up0"} 2
genai_gateway_requests_total{code="200",model="gpt-4o",route="/v1/embeddings",upstream="up0"} 1
genai_gateway_requests_total{code="200",model="llama-3",route="/v1/completions",upstream="up0"} 1
genai_gateway_requests_total{code="400",model="",route="/v1/chat/completions",upstream=""} 1
`
	if err := testutil.GatherAndCompare(e.reg, strings.NewReader(wantReqs), "genai_gateway_requests_total"); err != nil {
		t.Error(err)
	}
	if got := testutil.ToFloat64(e.p.m.inFlight); got != 0 {
		t.Errorf("in flight: got %v, want 0", got)
	}
}

func TestLabelCaps(t *testing.T) {
	up := newFakeLLM(t)
	cfg := upstreams(up)
	cfg.MaxUsers = 2
	e := newEnv(t, cfg, nil)
	for _, u := range []string{"u1", "u2", "u3", "u4", "u1"} {
		e.post(t, routeEmbeddings, `{"model":"m","input":"a b"}`, "user", u)
	}
	for user, want := range map[string]float64{"u1": 4, "u2": 2, "other": 4, "u3": 0} {
		if got := testutil.ToFloat64(e.p.m.promptByUserModel.WithLabelValues(user, "m")); got != want {
			t.Errorf("prompt tokens of user %q: got %v, want %v", user, got, want)
		}
	}
	for i := range maxModels + 5 {
		e.p.m.addTokens("u1", fmt.Sprintf("model-%d", i), 1, 0, 0)
	}
	if got := testutil.ToFloat64(e.p.m.promptByModel.WithLabelValues("other")); got != 6 {
		t.Errorf("prompt tokens of model \"other\": got %v, want 6", got)
	}
}

func TestRateLimited(t *testing.T) {
	up := newFakeLLM(t)
	tests := []struct {
		name     string
		rej      *limiter.Rejection
		wantBody string
		wantHdr  map[string]string
	}{
		{"tokens", &limiter.Rejection{Limit: "prompt-hourly", Metric: limiter.MetricPromptTokens, Type: "tokens",
			LimitValue: 1000, Remaining: 10, Reset: 6 * time.Minute, RetryAfter: 1500 * time.Millisecond,
			Message: `Rate limit reached for "frank" on prompt-hourly.`},
			`{"error":{"message":"Rate limit reached for \"frank\" on prompt-hourly.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}` + "\n",
			map[string]string{"Retry-After": "2", "Retry-After-Ms": "1500", "X-Ratelimit-Limit-Tokens": "1000",
				"X-Ratelimit-Remaining-Tokens": "10", "X-Ratelimit-Reset-Tokens": "6m0s"}},
		{"requests", &limiter.Rejection{Limit: "req-minute", Metric: limiter.MetricRequests, Type: "requests",
			LimitValue: 60, Remaining: 0, Reset: 250 * time.Millisecond, RetryAfter: 200 * time.Millisecond, Message: "slow down"},
			`{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}` + "\n",
			map[string]string{"Retry-After": "1", "Retry-After-Ms": "200", "X-Ratelimit-Limit-Requests": "60",
				"X-Ratelimit-Remaining-Requests": "0", "X-Ratelimit-Reset-Requests": "250ms"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, upstreams(up), &fakeLimiter{err: tt.rej})
			before := up.hits.Load()
			resp, body := e.post(t, routeChat, `{"model":"gpt-4o","messages":[]}`, "user", "frank")
			if resp.StatusCode != 429 {
				t.Fatalf("status: got %d, want 429", resp.StatusCode)
			}
			if string(body) != tt.wantBody {
				t.Errorf("body:\ngot  %s\nwant %s", body, tt.wantBody)
			}
			for k, v := range tt.wantHdr {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s: got %q, want %q", k, got, v)
				}
			}
			if up.hits.Load() != before {
				t.Error("a refused request reached the upstream")
			}
		})
	}
	t.Run("missing user", func(t *testing.T) {
		e := newEnv(t, upstreams(up), &fakeLimiter{err: limiter.ErrMissingUser})
		resp, body := e.post(t, routeChat, `{"model":"gpt-4o","messages":[]}`)
		if resp.StatusCode != 400 {
			t.Fatalf("status: got %d, want 400", resp.StatusCode)
		}
		if msg, _, _ := apiErrorBody(t, body); !strings.Contains(msg, "`user`") {
			t.Errorf("message %q does not name the header", msg)
		}
	})
	t.Run("lazy estimate", func(t *testing.T) {
		lim := &fakeLimiter{}
		e := newEnv(t, upstreams(up), lim)
		body := `{"model":"gpt-4o","messages":[{"role":"user","content":"estimate me please"}]}`
		e.post(t, routeChat, body, "user", "g")
		if want := e.p.tok.estimatePrompt(routeChat, "gpt-4o", []byte(body)); len(lim.estimates) != 1 || lim.estimates[0] != want {
			t.Errorf("estimates: got %v, want [%d]", lim.estimates, want)
		}
	})
	t.Run("real limiter", func(t *testing.T) {
		store := newMapStore()
		e := newEnv(t, upstreams(up), newRealLimiter(t, store, 0, 1))
		before := up.hits.Load()
		r1, _ := e.post(t, routeChat, `{"model":"gpt-4o","messages":[]}`, "user", "h")
		r2, body := e.post(t, routeChat, `{"model":"gpt-4o","messages":[]}`, "user", "h")
		if r1.StatusCode != 200 || r2.StatusCode != 429 {
			t.Fatalf("statuses: got %d, %d, want 200, 429", r1.StatusCode, r2.StatusCode)
		}
		if _, typ, code := apiErrorBody(t, body); typ != "requests" || code != "rate_limit_exceeded" {
			t.Errorf("type, code: got %q, %v", typ, code)
		}
		if r2.Header.Get("X-Ratelimit-Limit-Requests") != "1" || r2.Header.Get("Retry-After") == "" {
			t.Errorf("429 headers: %v", r2.Header)
		}
		if got := up.hits.Load() - before; got != 1 {
			t.Errorf("upstream hits: got %d, want 1", got)
		}
	})
}

func TestPassthrough(t *testing.T) {
	up := newFakeLLM(t)
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(`{"id":"file-1","object":"file"}`))
	zw.Close()
	inner := up.srv.Config.Handler
	up.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/files" {
			inner.ServeHTTP(httptestDiscard{w.Header()}, r) // record the request
			w.Header().Del("Content-Type")
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Type", "application/json")
			w.Write(gz.Bytes())
			return
		}
		inner.ServeHTTP(w, r)
	})
	e := newEnv(t, upstreams(up), nil)
	var form bytes.Buffer
	mw := multipart.NewWriter(&form)
	mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "batch.jsonl")
	fw.Write(bytes.Repeat([]byte(`{"custom_id":"1"}`+"\n"), 1000))
	mw.Close()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/files", bytes.NewReader(form.Bytes()))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Accept-Encoding", "gzip")
	resp, body := e.do(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := up.last(t)
	if !bytes.Equal(got.body, form.Bytes()) || got.header.Get("Content-Type") != mw.FormDataContentType() {
		t.Errorf("upload not passed through untouched (%d bytes, %q)", len(got.body), got.header.Get("Content-Type"))
	}
	if resp.Header.Get("Content-Encoding") != "gzip" || !bytes.Equal(body, gz.Bytes()) {
		t.Errorf("gzip response not passed through untouched: %q %q", resp.Header.Get("Content-Encoding"), body)
	}
	if got := testutil.ToFloat64(e.p.m.requests.WithLabelValues(routeOther, "", "up0", "200")); got != 1 {
		t.Errorf("requests_total{route=other}: got %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.p.m.promptTotal); got != 0 {
		t.Errorf("unmetered route metered %v prompt tokens", got)
	}
}

// httptestDiscard is a ResponseWriter that drops the body.
type httptestDiscard struct{ h http.Header }

func (d httptestDiscard) Header() http.Header         { return d.h }
func (d httptestDiscard) Write(b []byte) (int, error) { return len(b), nil }
func (d httptestDiscard) WriteHeader(int)             {}

func TestWaitForStreams(t *testing.T) {
	up := newFakeLLM(t, perWord(10*time.Millisecond))
	e := newEnv(t, upstreams(up), nil)
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+routeChat,
		strings.NewReader(`{"model":"gpt-4o","stream":true,"max_tokens":30,"messages":[]}`))
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	e.p.SetDraining()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := e.p.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait during a stream: got %v, want a deadline error", err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- e.p.Wait(ctx)
	}()
	b, _ := io.ReadAll(resp.Body)
	if !bytes.HasSuffix(b, []byte("data: [DONE]\n\n")) {
		t.Errorf("stream cut by draining: %q", b)
	}
	if err := <-done; err != nil {
		t.Errorf("Wait after the stream: %v", err)
	}
}
