package proxy

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/limiter"
)

func TestMeteredRoutes(t *testing.T) {
	tests := []struct {
		name, path, body      string
		prompt, completion    float64
		wantSSE               bool
		wantInBody, notInBody []string
	}{
		{name: "chat", path: routeChat,
			body:   `{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hello big world"}]}]}`,
			prompt: 5, completion: 5, wantInBody: []string{`"content":"w1 w2 w3 w4 w5"`, `"prompt_tokens":5`}},
		{name: "chat stream", path: routeChat,
			body:   `{"model":"gpt-4o","stream":true,"max_tokens":3,"messages":[{"role":"user","content":"hello big world"}]}`,
			prompt: 3, completion: 3, wantSSE: true,
			wantInBody: []string{`"content":" w3"`, "data: [DONE]\n\n"}, notInBody: []string{`"usage":{`, `"choices":[]`}},
		{name: "completions", path: routeCompletions,
			body:   `{"model":"gpt-3.5-turbo-instruct","prompt":["one two","three"],"max_tokens":4}`,
			prompt: 3, completion: 4, wantInBody: []string{`"text":"w1 w2 w3 w4"`}},
		{name: "completions stream", path: routeCompletions,
			body:   `{"model":"gpt-3.5-turbo-instruct","prompt":"one two three four","max_tokens":2,"stream":true}`,
			prompt: 4, completion: 2, wantSSE: true,
			wantInBody: []string{`"text":" w2"`, "data: [DONE]"}, notInBody: []string{`"usage":{`, `"choices":[]`}},
		{name: "embeddings", path: routeEmbeddings,
			body:   `{"model":"text-embedding-3-small","input":["a b c","d e"]}`,
			prompt: 5, completion: 0, wantInBody: []string{`"embedding":[0.25,-0.5,1]`}},
		{name: "responses", path: routeResponses,
			body:   `{"model":"gpt-4o","input":"tell me a story","max_output_tokens":6}`,
			prompt: 4, completion: 6, wantInBody: []string{`"text":"w1 w2 w3 w4 w5 w6"`}},
		{name: "responses stream", path: routeResponses,
			body:   `{"model":"gpt-4o","input":[{"role":"user","content":"tell me"}],"max_output_tokens":2,"stream":true}`,
			prompt: 2, completion: 2, wantSSE: true,
			wantInBody: []string{"event: response.completed\n", `"delta":" w2"`, `"input_tokens":2`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeLLM(t)
			e := newEnv(t, upstreams(up), nil)
			resp, body := e.post(t, tt.path, tt.body, "user", "alice")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want 200 (body %s)", resp.StatusCode, body)
			}
			if got := strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"); got != tt.wantSSE {
				t.Errorf("event stream: got %v, want %v", got, tt.wantSSE)
			}
			if got := resp.Header.Get("X-Ratelimit-Remaining-Requests"); got != "9999" {
				t.Errorf("upstream x-ratelimit header: got %q, want 9999", got)
			}
			for _, s := range tt.wantInBody {
				if !strings.Contains(string(body), s) {
					t.Errorf("body lacks %q:\n%s", s, body)
				}
			}
			for _, s := range tt.notInBody {
				if strings.Contains(string(body), s) {
					t.Errorf("body has %q:\n%s", s, body)
				}
			}
			model := gjsonModel(tt.body)
			if got := testutil.ToFloat64(e.p.m.promptByUserModel.WithLabelValues("alice", model)); got != tt.prompt {
				t.Errorf("prompt tokens: got %v, want %v", got, tt.prompt)
			}
			if got := testutil.ToFloat64(e.p.m.completionByUserModel.WithLabelValues("alice", model)); got != tt.completion {
				t.Errorf("completion tokens: got %v, want %v", got, tt.completion)
			}
			if got := testutil.ToFloat64(e.p.m.requests.WithLabelValues(tt.path, model, "up0", "200")); got != 1 {
				t.Errorf("requests_total: got %v, want 1", got)
			}
			if got := testutil.CollectAndCount(e.p.m.ttft); got != 1 {
				t.Errorf("ttft series: got %d, want 1", got)
			}
		})
	}
}

func gjsonModel(body string) string {
	var v struct{ Model string }
	_ = json.Unmarshal([]byte(body), &v)
	return v.Model
}

func TestUsageChunkHiding(t *testing.T) {
	tests := []struct {
		name, body     string
		clientGetsIt   bool
		upstreamBodyIs string // "" = same as sent
	}{
		{name: "not asked", body: `{"model":"gpt-4o","stream":true,"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`,
			upstreamBodyIs: `{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`},
		{name: "asked", clientGetsIt: true,
			body: `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`},
		{name: "asked false", body: `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":false},"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`,
			upstreamBodyIs: `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`},
		{name: "other options", body: `{"model":"gpt-4o","stream":true,"stream_options":{ "include_obfuscation":false },"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`,
			upstreamBodyIs: `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true, "include_obfuscation":false },"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`},
		{name: "null options", body: `{"model":"gpt-4o","stream":true,"stream_options":null,"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`,
			upstreamBodyIs: `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"max_tokens":2,"messages":[{"role":"user","content":"hi there"}]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeLLM(t)
			e := newEnv(t, upstreams(up), nil)
			resp, body := e.post(t, routeChat, tt.body, "user", "bob")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want 200", resp.StatusCode)
			}
			want := tt.upstreamBodyIs
			if want == "" {
				want = tt.body
			}
			if got := string(up.last(t).body); got != want {
				t.Errorf("upstream body:\ngot  %s\nwant %s", got, want)
			}
			var inc struct {
				StreamOptions struct {
					IncludeUsage bool `json:"include_usage"`
				} `json:"stream_options"`
			}
			if err := json.Unmarshal(up.last(t).body, &inc); err != nil || !inc.StreamOptions.IncludeUsage {
				t.Errorf("upstream include_usage: got false (err %v), want true", err)
			}
			usageChunk := strings.Contains(string(body), `"choices":[],`)
			if usageChunk != tt.clientGetsIt {
				t.Errorf("client got the usage chunk: got %v, want %v\n%s", usageChunk, tt.clientGetsIt, body)
			}
			if !strings.HasSuffix(string(body), "data: [DONE]\n\n") {
				t.Errorf("stream does not end with [DONE]:\n%s", body)
			}
			if got := testutil.ToFloat64(e.p.m.completionByUserModel.WithLabelValues("bob", "gpt-4o")); got != 2 {
				t.Errorf("completion tokens: got %v, want 2", got)
			}
			if got := testutil.ToFloat64(e.p.m.promptByUserModel.WithLabelValues("bob", "gpt-4o")); got != 2 {
				t.Errorf("prompt tokens: got %v, want 2", got)
			}
		})
	}
}

func TestRequestBodyByteExact(t *testing.T) {
	body := "{ \"model\" : \"gpt-4o\",\n\t\"messages\":[{\"role\":\"user\",\"content\":\"h\\u00e9llo \\\"q\\\" \u00e9t\u00e9\"}],\n \"temperature\": 0.70, \"x_extra\": {\"a\":[1,2e3]} }  "
	up := newFakeLLM(t)
	e := newEnv(t, upstreams(up), nil)
	resp, _ := e.post(t, routeChat+"?trace=1", body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status: got %d, want 200", resp.StatusCode)
	}
	got := up.last(t)
	if string(got.body) != body {
		t.Errorf("upstream body:\ngot  %q\nwant %q", got.body, body)
	}
	if got.query != "trace=1" {
		t.Errorf("query: got %q, want trace=1", got.query)
	}
	if cl := got.header.Get("Content-Length"); cl != "" && cl != itoa(len(body)) {
		t.Errorf("content-length: got %s, want %d", cl, len(body))
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestUpstreamErrorPassthrough(t *testing.T) {
	for _, status := range []int{400, 401, 429, 500, 503} {
		t.Run(http.StatusText(status), func(t *testing.T) {
			body := `{"error":{"message":"nope ` + itoa(status) + `","type":"x","param":null,"code":"c"}}` + "\n  "
			up := newFakeLLM(t)
			up.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json; charset=utf-8")
				w.Header().Set("X-Request-Id", "req-123")
				w.Header().Set("X-Ratelimit-Reset-Tokens", "6m0s")
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(status)
				w.Write([]byte(body))
			})
			e := newEnv(t, upstreams(up), nil)
			resp, got := e.post(t, routeChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"a b"}]}`, "user", "u")
			if resp.StatusCode != status {
				t.Errorf("status: got %d, want %d", resp.StatusCode, status)
			}
			if string(got) != body {
				t.Errorf("body: got %q, want %q", got, body)
			}
			for k, v := range map[string]string{"Content-Type": "application/json; charset=utf-8", "X-Request-Id": "req-123",
				"X-Ratelimit-Reset-Tokens": "6m0s", "Retry-After": "7", "Content-Length": itoa(len(body))} {
				if resp.Header.Get(k) != v {
					t.Errorf("header %s: got %q, want %q", k, resp.Header.Get(k), v)
				}
			}
			if got := testutil.ToFloat64(e.p.m.promptTotal); got != 0 {
				t.Errorf("prompt tokens of a failed request: got %v, want 0", got)
			}
			if got := testutil.ToFloat64(e.p.m.requests.WithLabelValues(routeChat, "gpt-4o", "up0", itoa(status))); got != 1 {
				t.Errorf("requests_total{code=%d}: got %v, want 1", status, got)
			}
		})
	}
}

// apiErrorBody decodes an OpenAI error body, failing unless it has exactly
// the four fields with param null.
func apiErrorBody(t *testing.T, b []byte) (message, typ string, code any) {
	t.Helper()
	var v map[string]map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("error body %q: %v", b, err)
	}
	e := v["error"]
	if len(v) != 1 || len(e) != 4 {
		t.Fatalf("error body %s: want exactly {error:{message,type,param,code}}", b)
	}
	if p, ok := e["param"]; !ok || p != nil {
		t.Errorf("param: got %v, want null", p)
	}
	m, _ := e["message"].(string)
	ty, _ := e["type"].(string)
	if m == "" || ty == "" {
		t.Errorf("message and type must be non-empty strings: %s", b)
	}
	return m, ty, e["code"]
}

func TestGatewayErrors(t *testing.T) {
	up := newFakeLLM(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	slow := newFakeLLM(t)
	release := make(chan struct{})
	slow.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })

	cfg := Config{MaxBodyBytes: 1000, Upstreams: []Upstream{
		{Name: "dead", URL: deadURL, Models: []string{"dead-*"}},
		{Name: "slow", URL: slow.srv.URL, Models: []string{"slow-*"}, Timeout: 100 * time.Millisecond},
		{Name: "ok", URL: up.srv.URL, Models: []string{"gpt-*"}},
	}}
	e := newEnv(t, cfg, nil)
	big := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("x", 1000) + `"}]}`
	tests := []struct {
		name, method, path, body string
		chunked                  bool
		status                   int
		typ                      string
		code                     any
	}{
		{"bad json", "POST", routeChat, `{"model":"gpt-4o",`, false, 400, "invalid_request_error", nil},
		{"not an object", "POST", routeChat, `["gpt-4o"]`, false, 400, "invalid_request_error", nil},
		{"missing model", "POST", routeEmbeddings, `{"input":"x"}`, false, 400, "invalid_request_error", nil},
		{"model not a string", "POST", routeChat, `{"model":4}`, false, 400, "invalid_request_error", nil},
		{"unknown model", "POST", routeChat, `{"model":"claude-3"}`, false, 404, "invalid_request_error", "model_not_found"},
		{"too large", "POST", routeChat, big, false, 413, "invalid_request_error", "request_too_large"},
		{"too large chunked", "POST", routeChat, big, true, 413, "invalid_request_error", "request_too_large"},
		{"dead upstream", "POST", routeChat, `{"model":"dead-1"}`, false, 502, "server_error", "upstream_unreachable"},
		{"slow upstream", "POST", routeResponses, `{"model":"slow-1","input":"x"}`, false, 504, "server_error", "upstream_timeout"},
		{"unknown path", "GET", "/v2/models", "", false, 404, "invalid_request_error", nil},
		{"root", "GET", "/", "", false, 404, "invalid_request_error", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rd = strings.NewReader(tt.body)
			req, _ := http.NewRequest(tt.method, e.srv.URL+tt.path, rd)
			if tt.chunked {
				req.Body = io.NopCloser(struct{ io.Reader }{rd})
				req.ContentLength = -1
			}
			resp, body := e.do(t, req)
			if resp.StatusCode != tt.status {
				t.Fatalf("status: got %d, want %d (%s)", resp.StatusCode, tt.status, body)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content-type: got %q, want application/json", ct)
			}
			_, typ, code := apiErrorBody(t, body)
			if typ != tt.typ || code != tt.code {
				t.Errorf("type, code: got %q, %v, want %q, %v", typ, code, tt.typ, tt.code)
			}
		})
	}
	if got := testutil.ToFloat64(e.p.m.upstreamErrors.WithLabelValues("dead", reasonUnreachable)); got != 1 {
		t.Errorf("upstream errors{dead,unreachable}: got %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.p.m.upstreamErrors.WithLabelValues("slow", reasonTimeout)); got != 1 {
		t.Errorf("upstream errors{slow,timeout}: got %v, want 1", got)
	}
	if got := testutil.ToFloat64(e.p.m.requests.WithLabelValues(routeChat, "dead-1", "dead", "502")); got != 1 {
		t.Errorf("requests_total{502}: got %v, want 1", got)
	}
	if up.hits.Load() != 0 {
		t.Errorf("healthy upstream hits: got %d, want 0", up.hits.Load())
	}
}

func TestRoutingByGlob(t *testing.T) {
	llama, rest := newFakeLLM(t), newFakeLLM(t)
	cfg := Config{Upstreams: []Upstream{
		{Name: "local", URL: llama.srv.URL + "/openai/", Models: []string{"llama-*", "qwen?"}},
		{Name: "cloud", URL: rest.srv.URL + "/openai?api-version=2024", Models: nil},
	}}
	e := newEnv(t, cfg, nil)
	tests := []struct {
		model string
		want  *fakeLLM
		query string
	}{
		{"llama-3", llama, ""},
		{"qwen2", llama, ""},
		{"qwen25", rest, "api-version=2024"},
		{"gpt-4o", rest, "api-version=2024"},
	}
	for _, tt := range tests {
		before := tt.want.hits.Load()
		resp, _ := e.post(t, routeChat, `{"model":"`+tt.model+`","messages":[]}`)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", tt.model, resp.StatusCode)
		}
		if tt.want.hits.Load() != before+1 {
			t.Errorf("%s: went to the wrong upstream", tt.model)
		}
		got := tt.want.last(t)
		if got.path != "/openai/v1/chat/completions" || got.query != tt.query {
			t.Errorf("%s: upstream URL: got %s?%s, want /openai/v1/chat/completions?%s", tt.model, got.path, got.query, tt.query)
		}
	}
	// Unmetered paths go to the first upstream.
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v1/models", nil)
	resp, body := e.do(t, req)
	if resp.StatusCode != 200 || !bytes.Contains(body, []byte(`"llama-3"`)) {
		t.Errorf("GET /v1/models: got %d %s", resp.StatusCode, body)
	}
	if got := llama.last(t); got.path != "/openai/v1/models" {
		t.Errorf("models path: got %s, want /openai/v1/models", got.path)
	}
	only := newEnv(t, Config{Upstreams: []Upstream{{Name: "l", URL: llama.srv.URL, Models: []string{"llama-*"}}}}, nil)
	if resp, _ := only.post(t, routeChat, `{"model":"gpt-4o"}`); resp.StatusCode != 404 {
		t.Errorf("unrouted model: got %d, want 404", resp.StatusCode)
	}
}

func TestHeaders(t *testing.T) {
	up := newFakeLLM(t)
	inner := up.srv.Config.Handler
	up.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "X-Up-Hop")
		w.Header().Set("X-Up-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("X-Up-Keep", "1")
		inner.ServeHTTP(w, r)
	})
	e := newEnv(t, upstreams(up), nil)
	upHost := strings.TrimPrefix(up.srv.URL, "http://")
	for _, path := range []string{routeChat, "/v1/models"} {
		t.Run(path, func(t *testing.T) {
			method, body := http.MethodPost, `{"model":"gpt-4o","messages":[]}`
			if path == "/v1/models" {
				method, body = http.MethodGet, ""
			}
			req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
			req.Header.Set("Connection", "X-Client-Hop")
			req.Header.Set("X-Client-Hop", "secret-hop")
			req.Header.Set("Proxy-Authorization", "Basic cHJveHk=")
			req.Header.Set("Te", "trailers")
			req.Header.Set("X-Forwarded-For", "203.0.113.7")
			req.Header.Set("X-Keep", "kept")
			req.Header.Set("Authorization", "Bearer sk-client")
			resp, _ := e.do(t, req)
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			got := up.last(t)
			for _, h := range []string{"X-Client-Hop", "Proxy-Authorization", "Te", "Connection"} {
				v := got.header.Get(h)
				// ReverseProxy (unmetered paths) forwards "Te: trailers" on purpose.
				if v != "" && !(h == "Connection" && strings.EqualFold(v, "keep-alive")) && !(h == "Te" && path == "/v1/models") {
					t.Errorf("upstream got hop-by-hop %s: %q", h, v)
				}
			}
			if got.host != upHost {
				t.Errorf("Host: got %q, want %q", got.host, upHost)
			}
			if v := got.header.Get("X-Forwarded-For"); v != "203.0.113.7, 127.0.0.1" {
				t.Errorf("X-Forwarded-For: got %q, want %q", v, "203.0.113.7, 127.0.0.1")
			}
			if v := got.header.Get("X-Keep"); v != "kept" {
				t.Errorf("X-Keep: got %q, want kept", v)
			}
			if v := got.header.Get("Authorization"); v != "Bearer sk-client" {
				t.Errorf("Authorization without api_key: got %q, want the client's", v)
			}
			if resp.Header.Get("X-Up-Hop") != "" || resp.Header.Get("Keep-Alive") != "" {
				t.Errorf("client got upstream hop-by-hop headers: %v", resp.Header)
			}
			// /v1/models is merged over the upstreams: no upstream's
			// response headers are the answer's.
			if path != "/v1/models" && resp.Header.Get("X-Up-Keep") != "1" {
				t.Errorf("X-Up-Keep: got %q, want 1", resp.Header.Get("X-Up-Keep"))
			}
		})
	}
}

func TestAPIKeyReplacement(t *testing.T) {
	up := newFakeLLM(t)
	cfg := upstreams(up)
	cfg.Upstreams[0].APIKey = "sk-upstream-key"
	e := newEnv(t, cfg, nil)
	for _, path := range []string{routeChat, "/v1/models"} {
		method, body := http.MethodPost, `{"model":"gpt-4o","messages":[]}`
		if path == "/v1/models" {
			method, body = http.MethodGet, ""
		}
		req, _ := http.NewRequest(method, e.srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer sk-client-token")
		resp, _ := e.do(t, req)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		got := up.last(t).header
		if v := got.Values("Authorization"); len(v) != 1 || v[0] != "Bearer sk-upstream-key" {
			t.Errorf("%s: upstream Authorization: got %q, want the upstream key", path, v)
		}
		for k, vs := range got {
			for _, v := range vs {
				if strings.Contains(v, "sk-client-token") {
					t.Errorf("%s: upstream saw the client's token in %s", path, k)
				}
			}
		}
	}
}

func TestNoSecretsInLogs(t *testing.T) {
	up := newFakeLLM(t)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	cfg := Config{Upstreams: []Upstream{
		{Name: "ok", URL: up.srv.URL, APIKey: "sk-upstream-secret", Models: []string{"gpt-*"}},
		{Name: "dead", URL: deadURL, APIKey: "sk-dead-secret"},
	}}
	e := newEnv(t, cfg, nil)
	const token = "sk-client-secret"
	for _, c := range []struct{ method, path, body string }{
		{"POST", routeChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`},
		{"POST", routeChat, `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}`},
		{"POST", routeChat, `{"model":"other","messages":[]}`},
		{"POST", routeChat, `{"model":`},
		{"GET", "/v1/models?api-key=" + token, ""},
		{"GET", "/nowhere", ""},
	} {
		req, _ := http.NewRequest(c.method, e.srv.URL+c.path, strings.NewReader(c.body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Api-Key", token)
		req.Header.Set("user", "carol")
		e.do(t, req)
	}
	logs := e.logs.String()
	for _, secret := range []string{token, "sk-upstream-secret", "sk-dead-secret"} {
		if strings.Contains(logs, secret) {
			t.Errorf("log holds secret %q:\n%s", secret, logs)
		}
	}
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(logs), "\n") {
		if strings.Contains(l, `"message":"request"`) { // the access log; /v1/models also warns of the dead upstream
			lines = append(lines, l)
		}
	}
	if len(lines) != 6 {
		t.Fatalf("log lines: got %d, want 6 (one per request):\n%s", len(lines), logs)
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"method", "path", "model", "user", "upstream", "status", "prompt_tokens", "completion_tokens", "duration_ms"} {
		if _, ok := first[k]; !ok {
			t.Errorf("access log line lacks %q: %s", k, lines[0])
		}
	}
	if first["user"] != "carol" || first["status"] != 200.0 || first["upstream"] != "ok" {
		t.Errorf("access log line: %s", lines[0])
	}
	if !strings.Contains(lines[2], `"error"`) {
		t.Errorf("a failed request logs its error: %s", lines[2])
	}
}

func TestHealthAndReady(t *testing.T) {
	up := newFakeLLM(t)
	ready := true
	cfg := upstreams(up)
	cfg.Ready = func() bool { return ready }
	e := newEnv(t, cfg, nil)
	get := func(path string) int {
		req, _ := http.NewRequest(http.MethodGet, e.srv.URL+path, nil)
		resp, _ := e.do(t, req)
		return resp.StatusCode
	}
	steps := []struct {
		name           string
		do             func()
		health, readyz int
	}{
		{"serving", func() {}, 200, 200},
		{"cluster not ready", func() { ready = false }, 200, 503},
		{"cluster ready", func() { ready = true }, 200, 200},
		{"draining", e.p.SetDraining, 200, 503},
	}
	for _, s := range steps {
		s.do()
		if got := get("/healthz"); got != s.health {
			t.Errorf("%s: /healthz got %d, want %d", s.name, got, s.health)
		}
		if got := get("/readyz"); got != s.readyz {
			t.Errorf("%s: /readyz got %d, want %d", s.name, got, s.readyz)
		}
	}
}

// TestTLSUpstream: https upstreams are reached over TLS (HTTP/1.1 with
// keep-alive: fasthttp's client does not speak HTTP/2), streams included.
func TestTLSUpstream(t *testing.T) {
	up := newFakeLLM(t, tlsH2())
	cfg := upstreams(up)
	cfg.TLSConfig = up.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	e := newEnv(t, cfg, nil)
	for _, body := range []string{
		`{"model":"gpt-4o","max_tokens":2,"messages":[{"role":"user","content":"a b"}]}`,
		`{"model":"gpt-4o","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"a b"}]}`,
	} {
		resp, got := e.post(t, routeChat, body, "user", "tls")
		if resp.StatusCode != 200 || !bytes.Contains(got, []byte(`w2`)) {
			t.Fatalf("status %d: %s", resp.StatusCode, got)
		}
		if tls := up.last(t).tls; !tls {
			t.Errorf("upstream request: got plain HTTP, want TLS")
		}
	}
	if got := testutil.ToFloat64(e.p.m.completionByUserModel.WithLabelValues("tls", "gpt-4o")); got != 4 {
		t.Errorf("completion tokens: got %v, want 4", got)
	}
}

func TestNewValidation(t *testing.T) {
	tests := []struct {
		name string
		ups  []Upstream
	}{
		{"no upstreams", nil},
		{"relative url", []Upstream{{Name: "a", URL: "api.openai.com"}}},
		{"bad scheme", []Upstream{{Name: "a", URL: "ftp://host"}}},
		{"credentials in url", []Upstream{{Name: "a", URL: "https://user:pw@host"}}},
		{"bad glob", []Upstream{{Name: "a", URL: "https://host", Models: []string{"gpt-["}}}},
	}
	for _, tt := range tests {
		if _, err := New(Config{Upstreams: tt.ups}, nil, zerolog.Nop(), prometheus.NewRegistry()); err == nil {
			t.Errorf("%s: got no error", tt.name)
		} else if strings.Contains(err.Error(), "pw") {
			t.Errorf("%s: error leaks the URL password: %v", tt.name, err)
		}
	}
	up := newFakeLLM(t)
	var typedNil *limiter.Limiter
	e := newEnv(t, upstreams(up), typedNil)
	if resp, _ := e.post(t, routeChat, `{"model":"gpt-4o","messages":[]}`); resp.StatusCode != 200 {
		t.Errorf("typed nil limiter: got %d, want 200", resp.StatusCode)
	}
}
