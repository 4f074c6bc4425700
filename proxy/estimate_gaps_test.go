package proxy

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// gapWords returns n distinct words "x0 x1 ... x(n-1)", about 2 tokens each.
func gapWords(n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "x%d", i)
	}
	return b.String()
}

// toolBodies are requests whose prompt is mostly in tool definitions, tool calls' arguments,
// tool_use inputs or output schemas: text upstreams bill as prompt. %s is where the big text
// goes (a JSON string's content).
var toolBodies = []struct{ name, route, body string }{
	{"chat tools", routeChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],` +
		`"tools":[{"type":"function","function":{"name":"f","description":"%s","parameters":{"type":"object","properties":{}}}}]}`},
	{"chat tool_calls arguments", routeChat, `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"%s"}}]},` +
		`{"role":"tool","tool_call_id":"c1","content":"ok"}]}`},
	{"chat function_call", routeChat, `{"model":"gpt-4o","messages":[{"role":"assistant","function_call":{"name":"f","arguments":"%s"}}]}`},
	{"chat functions", routeChat, `{"model":"gpt-4o","messages":[],"functions":[{"name":"f","description":"%s"}]}`},
	{"chat response_format", routeChat, `{"model":"gpt-4o","messages":[],` +
		`"response_format":{"type":"json_schema","json_schema":{"name":"s","schema":{"type":"object","description":"%s"}}}}`},
	{"responses tools", routeResponses, `{"model":"gpt-4o","input":"hi","tools":[{"type":"function","name":"f","description":"%s"}]}`},
	{"responses function_call", routeResponses, `{"model":"gpt-4o","input":[{"role":"user","content":"hi"},` +
		`{"type":"function_call","call_id":"c1","name":"f","arguments":"%s"},{"type":"function_call_output","call_id":"c1","output":"ok"}]}`},
	{"responses text.format", routeResponses, `{"model":"gpt-4o","input":"hi",` +
		`"text":{"format":{"type":"json_schema","name":"s","schema":{"type":"object","description":"%s"}}}}`},
	{"messages tools", routeMessages, `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}],` +
		`"tools":[{"name":"f","description":"%s","input_schema":{"type":"object"}}]}`},
	{"messages tool_use input", routeMessages, `{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"},` +
		`{"role":"assistant","content":[{"type":"tool_use","id":"t1","name":"f","input":{"q":"%s"}}]},` +
		`{"role":"user","content":[{"type":"tool_result","tool_use_id":"t1","content":"ok"}]}]}`},
}

// TestEstimateCountsTools checks that the exact count, the bound and the guess all count the
// text in tools, tool calls and schemas: 2,000 words there are about 4,000 tokens.
func TestEstimateCountsTools(t *testing.T) {
	var tok tokenizers
	big := gapWords(2000)
	alone := tok.estimatePrompt(routeCompletions, "gpt-4o", []byte(`{"prompt":"`+big+`"}`))
	for _, tt := range toolBodies {
		t.Run(tt.name, func(t *testing.T) {
			body := []byte(fmt.Sprintf(tt.body, big))
			for _, model := range boundModels {
				exact := tok.estimatePrompt(tt.route, model, body)
				bound, cheap := promptBound(tt.route, model, body)
				if exact < alone {
					t.Errorf("%s: exact %d, want at least the text's own %d", model, exact, alone)
				}
				if bound < exact {
					t.Errorf("%s: bound %d, want >= exact %d", model, bound, exact)
				}
				if cheap < exact*3/4 || cheap > bound {
					t.Errorf("%s: guess %d, want within [%d, %d]", model, cheap, exact*3/4, bound)
				}
			}
		})
	}
}

// randomToolsBody returns a body for route with random texts in tool definitions, tool calls
// and schemas, raw and escaped: the texts counted as raw JSON.
func randomToolsBody(r *rand.Rand, route string) []byte {
	x := func() string { return randomText(r) }
	switch route {
	case routeChat:
		return []byte(`{"messages":[{"role":"assistant","tool_calls":[{"function":{"name":` + x() + `,"arguments":` + x() + `}}],` +
			`"function_call":{"name":` + x() + `,"arguments":` + x() + `}}],"tools":[{"function":{"description":` + x() + `}},` + x() + `],` +
			`"functions":` + x() + `,"response_format":{"json_schema":{"d":` + x() + `}}}`)
	case routeResponses:
		return []byte(`{"input":[{"type":"function_call","name":` + x() + `,"arguments":` + x() + `},{"output":[{"text":` + x() + `}]}],` +
			`"tools":[{"description":` + x() + `}],"text":{"format":{"schema":{` + x() + `:` + x() + `}}}}`)
	default:
		return []byte(`{"messages":[{"role":"assistant","content":[{"type":"tool_use","name":` + x() + `,"input":{"q":` + x() + `}}]}],` +
			`"tools":[{"description":` + x() + `,"input_schema":[` + x() + `]}]}`)
	}
}

// TestPromptBoundToolsRandom checks bound >= exact with the real tokenizers on random texts in
// the fields counted as raw JSON (invalid UTF-8, escapes and all).
func TestPromptBoundToolsRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	var tok tokenizers
	for _, route := range []string{routeChat, routeResponses, routeMessages} {
		t.Run(route, func(t *testing.T) {
			for range 300 {
				checkBound(t, &tok, route, randomToolsBody(r, route))
			}
		})
	}
}

// TestToolsRefusedAtAdmission: a chat request carrying 10,000 words in its tools and an
// assistant tool call's arguments (about 20,000 prompt tokens upstream) against a 2,000-token
// limit is refused before it is forwarded, as larger than the limit, instead of being
// admitted on the estimate of its message texts (17 tokens).
func TestToolsRefusedAtAdmission(t *testing.T) {
	up := newFakeLLM(t)
	store := newMapStore()
	e := newEnv(t, upstreams(up), newRealLimiter(t, store, 2000, 0))
	big := gapWords(5000)
	body := `{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"hi"},` +
		`{"role":"assistant","content":null,"tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"` + big + `"}}]},` +
		`{"role":"tool","tool_call_id":"c1","content":"ok"}],` +
		`"tools":[{"type":"function","function":{"name":"f","description":"` + big + `","parameters":{"type":"object","properties":{}}}}]}`
	resp, b := e.post(t, routeChat, body, "user", "mallory")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("x-should-retry") != "false" {
		t.Errorf("status %d, x-should-retry %q (body %.200s): want 429, false", resp.StatusCode, resp.Header.Get("x-should-retry"), b)
	}
	if n := up.hits.Load(); n != 0 {
		t.Errorf("upstream calls: got %d, want 0", n)
	}
	if got := store.total("tokens", "mallory"); got != 0 {
		t.Errorf("charged: got %d, want 0", got)
	}
}

// randomLetters returns n pseudo-random letters from alphabet, deterministic.
func randomLetters(n int, alphabet string) string {
	var b strings.Builder
	x := uint32(12345)
	for range n {
		x = x*1664525 + 1013904223
		b.WriteByte(alphabet[(x>>16)%uint32(len(alphabet))])
	}
	return b.String()
}

// TestPromptGuessRuns checks the guess on texts made of one long run, which the pre-split
// guess used to count as one word (or nothing): 30,000 random letters were guessed at 1
// token, about 15,000 exactly. The guess must be within 1.5x of the exact count.
func TestPromptGuessRuns(t *testing.T) {
	var tok tokenizers
	tests := []struct{ name, text string }{
		{"lower letters", randomLetters(30_000, "abcdefghijklmnopqrstuvwxyz")},
		{"mixed-case letters", randomLetters(30_000, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")},
		{"mixed whitespace", randomLetters(30_000, " \t\n\r")},
		{"alternating whitespace", strings.Repeat(" \n", 15_000)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, _ := json.Marshal(map[string]string{"prompt": tt.text})
			for _, model := range boundModels {
				exact := tok.estimatePrompt(routeCompletions, model, body)
				bound, cheap := promptBound(routeCompletions, model, body)
				t.Logf("%s: exact %d, guess %d, bound %d", model, exact, cheap, bound)
				if cheap*3 < exact*2 || cheap > bound {
					t.Errorf("%s: guess %d, want within [%d, %d] (exact %d)", model, cheap, exact*2/3, bound, exact)
				}
			}
		})
	}
}

// TestLongRunReservedAtAdmission: requests of 30,000 random letters (about 15,500 prompt
// tokens each, bound 30,010) are held in flight against a 100,000-token limit. Their bound
// fits, so the limiter reserves the guess: at 8 tokens a request it admitted every one of them
// (30 held, 465,990 charged); now the reservations fill the limit after about 6.
func TestLongRunReservedAtAdmission(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 64)
	var tok tokenizers
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		prompt := tok.estimatePrompt(routeChat, "gpt-4o", b) // the upstream's usage: the exact count
		arrived <- struct{}{}
		<-release
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"c","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":%d,"completion_tokens":1,"total_tokens":%d}}`, prompt, prompt+1)
	}))
	t.Cleanup(up.Close)
	store := newMapStore()
	const limit = 100_000
	e := newEnv(t, Config{Upstreams: []Upstream{{Name: "oa", URL: up.URL, Timeout: time.Minute}}}, newRealLimiter(t, store, limit, 0))
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free)

	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + randomLetters(30_000, "abcdefghijklmnopqrstuvwxyz") + `"}]}`
	exact := tok.estimatePrompt(routeChat, "gpt-4o", []byte(body))
	var wg sync.WaitGroup
	admitted, refused := 0, 0
	for admitted < 30 && refused == 0 {
		status := make(chan *http.Response, 1)
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodPost, e.srv.URL+routeChat, strings.NewReader(body))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("user", "mallory")
			resp, err := e.client.Do(req)
			if err != nil {
				t.Error(err)
				status <- nil
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			status <- resp
		})
		select {
		case <-arrived:
			admitted++
		case resp := <-status:
			if resp == nil {
				t.FailNow()
			}
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("status %d before the upstream saw the request, want 429", resp.StatusCode)
			}
			refused++
		case <-time.After(10 * time.Second):
			t.Fatal("no answer and no upstream call within 10s")
		}
	}
	free()
	wg.Wait()
	e.idle(t)
	got := store.total("tokens", "mallory")
	t.Logf("exact %d tokens a request: %d admitted while in flight, then %d refused; charged %d of %d", exact, admitted, refused, got, limit)
	if refused == 0 || got > limit*12/10 {
		t.Errorf("admitted %d requests of %d tokens at once, %d charged: want refusals before 1.2x the %d limit", admitted, exact, got, limit)
	}
}

// TestChoicesRefusedAtAdmission: a chat request for n = 8 choices of up to 200 tokens can cost
// 1,600 completion tokens; a 1,000-token limit refuses it at admission as larger than the
// limit, where max_tokens counted once (200) admitted it. The same request with n = 1 runs.
func TestChoicesRefusedAtAdmission(t *testing.T) {
	up := newFakeLLM(t)
	store := newMapStore()
	e := newEnv(t, upstreams(up), newRealLimiter(t, store, 1000, 0))
	resp, b := e.post(t, routeChat, `{"model":"gpt-4o","max_tokens":200,"n":8,"messages":[{"role":"user","content":"hi"}]}`, "user", "mallory")
	if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("x-should-retry") != "false" {
		t.Errorf("n 8: status %d, x-should-retry %q (body %.200s): want 429, false", resp.StatusCode, resp.Header.Get("x-should-retry"), b)
	}
	if n := up.hits.Load(); n != 0 {
		t.Errorf("n 8: upstream calls: got %d, want 0", n)
	}
	if resp, b := e.post(t, routeChat, `{"model":"gpt-4o","max_tokens":200,"n":1,"messages":[{"role":"user","content":"hi"}]}`, "user", "mallory"); resp.StatusCode != http.StatusOK {
		t.Errorf("n 1: status %d (body %.200s), want 200", resp.StatusCode, b)
	}
}
