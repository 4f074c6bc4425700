package mock

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestUsage(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	tests := []struct {
		name, path, body          string
		prompt, completion, total int64
		text                      string // expected completion text, "" = not checked
	}{
		{"chat string", "/v1/chat/completions",
			`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello big  world"}]}`, 3, 16, 19, ""},
		{"chat several messages", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":" one\ttwo\nthree "}],"max_tokens":4}`,
			5, 4, 9, "w1 w2 w3 w4"},
		{"chat parts", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a b"},{"type":"image_url","image_url":{"url":"x"}},{"type":"text","text":"c"}]}],"max_completion_tokens":2}`,
			3, 2, 5, "w1 w2"},
		{"chat null content", "/v1/chat/completions",
			`{"model":"m","messages":[{"role":"assistant","content":null,"tool_calls":[]},{"role":"user","content":"x"}],"max_tokens":1}`,
			1, 1, 2, "w1"},
		{"chat unicode spaces", "/v1/chat/completions",
			"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"caf\u00e9\u00a0cr\u00e8me\u2003br\u00fbl\u00e9e\"}],\"max_tokens\":0}",
			3, 0, 3, ""},
		{"chat empty messages", "/v1/chat/completions", `{"model":"m","messages":[],"max_tokens":3}`, 0, 3, 3, "w1 w2 w3"},
		{"completions string", "/v1/completions", `{"model":"m","prompt":"the quick brown fox","max_tokens":5}`,
			4, 5, 9, "w1 w2 w3 w4 w5"},
		{"completions array", "/v1/completions", `{"model":"m","prompt":["a b","c d e"]}`, 5, 16, 21, ""},
		{"completions tokens", "/v1/completions", `{"model":"m","prompt":[1,2,3],"max_tokens":1}`, 3, 1, 4, "w1"},
		{"embeddings string", "/v1/embeddings", `{"model":"e","input":"one two three"}`, 3, 0, 3, ""},
		{"embeddings array", "/v1/embeddings", `{"model":"e","input":["one two","three","four five six"]}`, 6, 0, 6, ""},
		{"embeddings token arrays", "/v1/embeddings", `{"model":"e","input":[[1,2],[3]]}`, 3, 0, 3, ""},
		{"responses string", "/v1/responses", `{"model":"m","input":"tell me a joke","max_output_tokens":7}`,
			4, 7, 11, "w1 w2 w3 w4 w5 w6 w7"},
		{"responses messages", "/v1/responses",
			`{"model":"m","instructions":"not counted here","input":[{"role":"user","content":"a b"},{"type":"message","role":"user","content":[{"type":"input_text","text":"c d e"}]}]}`,
			5, 16, 21, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := post(t, srv, tt.path, tt.body)
			var got struct {
				Usage   *usage `json:"usage"`
				Choices []struct {
					Text    string `json:"text"`
					Message struct {
						Content string `json:"content"`
					} `json:"message"`
				} `json:"choices"`
				Output []struct {
					Content []struct {
						Text string `json:"text"`
					} `json:"content"`
				} `json:"output"`
			}
			mustJSON(t, string(r.body), &got)
			if got.Usage == nil {
				t.Fatalf("no usage in %s", r.body)
			}
			p, c, tot := got.Usage.figures()
			if p != tt.prompt || c != tt.completion || tot != tt.total {
				t.Errorf("got usage %d/%d/%d, want %d/%d/%d", p, c, tot, tt.prompt, tt.completion, tt.total)
			}
			if tt.text == "" {
				return
			}
			var text string
			switch {
			case len(got.Choices) == 1:
				text = got.Choices[0].Message.Content + got.Choices[0].Text
			case len(got.Output) == 1 && len(got.Output[0].Content) == 1:
				text = got.Output[0].Content[0].Text
			default:
				t.Fatalf("no single choice or output in %s", r.body)
			}
			if text != tt.text {
				t.Errorf("got text %q, want %q", text, tt.text)
			}
		})
	}
}

func TestChatBody(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	r := post(t, srv, "/v1/chat/completions", `{"model":"we\"ird\u2028model","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`)
	if got, want := r.header.Get("Content-Type"), "application/json"; got != want {
		t.Errorf("got Content-Type %q, want %q", got, want)
	}
	var got map[string]any
	mustJSON(t, string(r.body), &got)
	for k, want := range map[string]any{
		"object": "chat.completion", "model": "we\"ird\u2028model", "created": float64(1700000000),
	} {
		if got[k] != want {
			t.Errorf("got %s %v, want %v", k, got[k], want)
		}
	}
	if id, _ := got["id"].(string); !strings.HasPrefix(id, "chatcmpl-") {
		t.Errorf("got id %q, want a chatcmpl- prefix", id)
	}
	choice := got["choices"].([]any)[0].(map[string]any)
	if choice["index"] != float64(0) || choice["finish_reason"] != "stop" {
		t.Errorf("got choice %v, want index 0 and finish_reason stop", choice)
	}
	if v, ok := choice["logprobs"]; !ok || v != nil {
		t.Errorf("got logprobs %v (present %v), want null", v, ok)
	}
	msg := choice["message"].(map[string]any)
	if msg["role"] != "assistant" || msg["content"] != "w1 w2" {
		t.Errorf("got message %v, want assistant \"w1 w2\"", msg)
	}
}

func TestUniqueIDs(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	seen := map[string]bool{}
	for range 5 {
		var got struct{ ID string }
		mustJSON(t, string(post(t, srv, "/v1/chat/completions", `{"model":"m","messages":[]}`).body), &got)
		if seen[got.ID] {
			t.Fatalf("got id %q twice", got.ID)
		}
		seen[got.ID] = true
	}
}

func TestNoUsage(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{NoUsage: true})
	tests := []struct{ name, path, body string }{
		{"chat", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"a b"}]}`},
		{"completions", "/v1/completions", `{"model":"m","prompt":"a b"}`},
		{"embeddings", "/v1/embeddings", `{"model":"m","input":"a b"}`},
		{"responses", "/v1/responses", `{"model":"m","input":"a b"}`},
		{"chat stream", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":"a"}],"stream":true,"stream_options":{"include_usage":true}}`},
		{"completions stream", "/v1/completions", `{"model":"m","prompt":"a","stream":true,"stream_options":{"include_usage":true}}`},
		{"responses stream", "/v1/responses", `{"model":"m","input":"a","stream":true}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := post(t, srv, tt.path, tt.body)
			for _, f := range []string{"prompt_tokens", "completion_tokens", "input_tokens", "output_tokens", "total_tokens"} {
				if strings.Contains(string(r.body), `"`+f+`"`) {
					t.Errorf("got %s in %s, want no usage figures", f, r.body)
				}
			}
		})
	}
}

func TestErrors(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	tests := []struct {
		name, method, path, body string
		status                   int
		param                    any
	}{
		{"bad json", "POST", "/v1/chat/completions", `{"model":`, 400, nil},
		{"not an object", "POST", "/v1/embeddings", `[1,2]`, 400, nil},
		{"wrong type", "POST", "/v1/chat/completions", `{"model":"m","messages":[],"stream":"yes"}`, 400, "stream"},
		{"bad content", "POST", "/v1/chat/completions", `{"model":"m","messages":[{"role":"user","content":7}]}`, 400, "messages"},
		{"negative max_tokens", "POST", "/v1/chat/completions", `{"model":"m","messages":[],"max_tokens":-1}`, 400, "max_tokens"},
		{"huge max_tokens", "POST", "/v1/completions", `{"model":"m","prompt":"a","max_tokens":1000000000}`, 400, "max_tokens"},
		{"missing input", "POST", "/v1/embeddings", `{"model":"m"}`, 400, "input"},
		{"bad encoding", "POST", "/v1/embeddings", `{"model":"m","input":"a","encoding_format":"hex"}`, 400, "encoding_format"},
		{"bad dimensions", "POST", "/v1/embeddings", `{"model":"m","input":"a","dimensions":0}`, 400, "dimensions"},
		{"bad prompt", "POST", "/v1/completions", `{"model":"m","prompt":{"a":1}}`, 400, "prompt"},
		{"bad input", "POST", "/v1/responses", `{"model":"m","input":3}`, 400, "input"},
		{"unknown path", "POST", "/v1/nope", `{}`, 404, nil},
		{"unknown root", "GET", "/", "", 404, nil},
		{"unknown model", "GET", "/v1/models/nope", "", 404, "model"},
		{"get chat", "GET", "/v1/chat/completions", "", 405, nil},
		{"post models", "POST", "/v1/models", `{}`, 405, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, srv, tt.method, tt.path, tt.body)
			if r.status != tt.status {
				t.Fatalf("got status %d, want %d; body %s", r.status, tt.status, r.body)
			}
			var got struct {
				Error *struct {
					Message *string `json:"message"`
					Type    *string `json:"type"`
					Param   any     `json:"param"`
					Code    any     `json:"code"`
				} `json:"error"`
			}
			mustJSON(t, string(r.body), &got)
			if got.Error == nil || got.Error.Message == nil || *got.Error.Message == "" || got.Error.Type == nil {
				t.Fatalf("got body %s, want an OpenAI error with message and type", r.body)
			}
			if got.Error.Param != tt.param {
				t.Errorf("got param %v, want %v", got.Error.Param, tt.param)
			}
			if got := r.header.Get("X-Ratelimit-Limit-Requests"); got != "10000" {
				t.Errorf("got x-ratelimit-limit-requests %q, want 10000", got)
			}
		})
	}
}

func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	for _, tt := range []struct{ method, path, body string }{
		{"POST", "/v1/chat/completions", `{"model":"m","messages":[]}`},
		{"POST", "/v1/chat/completions", `{"model":"m","messages":[],"stream":true}`},
		{"POST", "/v1/completions", `{"model":"m","prompt":"x"}`},
		{"POST", "/v1/embeddings", `{"model":"m","input":"x"}`},
		{"POST", "/v1/responses", `{"model":"m","input":"x","stream":true}`},
		{"GET", "/v1/models", ""},
	} {
		r := do(t, srv, tt.method, tt.path, tt.body)
		limit, remaining := r.header.Get("x-ratelimit-limit-requests"), r.header.Get("x-ratelimit-remaining-requests")
		if limit != "10000" || remaining != "9999" {
			t.Errorf("%s %s: got x-ratelimit-limit/remaining-requests %q/%q, want 10000/9999", tt.method, tt.path, limit, remaining)
		}
	}
}

func TestModels(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	r := do(t, srv, "GET", "/v1/models", "")
	var got struct {
		Object string `json:"object"`
		Data   []struct {
			ID, Object, OwnedBy string
		} `json:"data"`
	}
	mustJSON(t, string(r.body), &got)
	if got.Object != "list" || len(got.Data) != len(Models()) {
		t.Fatalf("got %s, want a list of %d models", r.body, len(Models()))
	}
	for i, m := range got.Data {
		if m.ID != Models()[i] || m.Object != "model" {
			t.Errorf("got model %d %+v, want id %q object model", i, m, Models()[i])
		}
	}
	one := do(t, srv, "GET", "/v1/models/"+Models()[0], "")
	if one.status != 200 || !strings.Contains(string(one.body), `"id":"`+Models()[0]+`"`) {
		t.Errorf("got %d %s, want the model %q", one.status, one.body, Models()[0])
	}
}

func TestEmbeddings(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	type data struct {
		Object    string          `json:"object"`
		Index     int             `json:"index"`
		Embedding json.RawMessage `json:"embedding"`
	}
	get := func(body string) []data {
		var got struct {
			Object string `json:"object"`
			Model  string `json:"model"`
			Data   []data `json:"data"`
		}
		mustJSON(t, string(post(t, srv, "/v1/embeddings", body).body), &got)
		if got.Object != "list" || got.Model != "emb" {
			t.Fatalf("got object %q model %q, want list and emb", got.Object, got.Model)
		}
		for i, d := range got.Data {
			if d.Index != i || d.Object != "embedding" {
				t.Fatalf("got data %d index %d object %q, want index %d object embedding", i, d.Index, d.Object, i)
			}
		}
		return got.Data
	}
	floats := func(raw json.RawMessage) []float32 {
		var v []float32
		mustJSON(t, string(raw), &v)
		return v
	}

	single := get(`{"model":"emb","input":"hello there"}`)
	many := get(`{"model":"emb","input":["other","hello there"]}`)
	if len(single) != 1 || len(many) != 2 {
		t.Fatalf("got %d and %d vectors, want 1 and 2", len(single), len(many))
	}
	a, b, other := floats(single[0].Embedding), floats(many[1].Embedding), floats(many[0].Embedding)
	if len(a) != DefaultDimensions {
		t.Fatalf("got %d dimensions, want %d", len(a), DefaultDimensions)
	}
	var norm float64
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("got different vectors for the same text: %v and %v", a, b)
		}
		norm += float64(a[i]) * float64(a[i])
	}
	if math.Abs(norm-1) > 1e-5 {
		t.Errorf("got squared norm %v, want 1", norm)
	}
	if a[0] == other[0] && a[1] == other[1] {
		t.Errorf("got the same vector for different texts: %v", a)
	}

	if got := floats(get(`{"model":"emb","input":"x","dimensions":3}`)[0].Embedding); len(got) != 3 {
		t.Errorf("got %d dimensions, want 3", len(got))
	}

	var s string
	mustJSON(t, string(get(`{"model":"emb","input":"hello there","encoding_format":"base64"}`)[0].Embedding), &s)
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != 4*DefaultDimensions {
		t.Fatalf("got base64 %q (%v), want %d bytes", s, err, 4*DefaultDimensions)
	}
	for i := range a {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:])); got != a[i] {
			t.Errorf("got base64 value %d = %v, want %v", i, got, a[i])
		}
	}
}

func TestTokenLatency(t *testing.T) {
	t.Parallel()
	const latency = 20 * time.Millisecond
	srv := newServer(t, Options{TokenLatency: latency})
	start := time.Now()
	post(t, srv, "/v1/chat/completions", `{"model":"m","messages":[],"max_tokens":3}`)
	if got := time.Since(start); got < 3*latency {
		t.Errorf("got a response after %v, want at least %v", got, 3*latency)
	}
	start = time.Now()
	r := post(t, srv, "/v1/chat/completions", `{"model":"m","messages":[],"max_tokens":3,"stream":true}`)
	if got := time.Since(start); got < 3*latency {
		t.Errorf("got a stream after %v, want at least %v", got, 3*latency)
	}
	if n := len(parseSSE(t, r.body)); n != 5 {
		t.Errorf("got %d events, want 5", n)
	}
}

// TestClientGone checks that a handler stops when its client disconnects in
// the middle of a slow stream (goleak in TestMain catches a stuck one).
func TestClientGone(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/v1/responses"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, Options{TokenLatency: time.Hour})
			ctx, cancel := context.WithCancel(context.Background())
			body := `{"model":"m","messages":[],"prompt":"p","input":"i","stream":true}`
			req, err := http.NewRequestWithContext(ctx, "POST", srv.URL+path, strings.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatalf("POST %s: %v", path, err)
			}
			cancel()
			_ = resp.Body.Close()
			// srv.Close in cleanup blocks until the handler has returned.
		})
	}
}
