package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
)

// TestAnthropicStreamCutMetered: a Messages API stream (native, or
// translated for a chat client) that the client cuts after the text but
// before message_delta is metered for the text that streamed, not for the
// output_tokens of message_start (1, as Anthropic sends it); one read to
// its end is metered exactly from message_delta.
func TestAnthropicStreamCutMetered(t *testing.T) {
	const n = 400 // words asked for: the mock reports output_tokens n
	tests := []struct {
		name  string
		route string
		delta string // in a client line carrying a word
	}{
		{"native", routeMessages, `"text_delta","text":"`},
		{"translated", routeChat, `"content":"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, cut := range []bool{true, false} {
				claude := newMockUpstream(t, mock.Options{TokenLatency: 2 * time.Millisecond})
				store := newMapStore()
				e := newEnv(t, Config{Upstreams: []Upstream{{Name: "claude", URL: claude.srv.URL, Models: []string{"claude-*"},
					Provider: ProviderAnthropic, APIKey: "k", Timeout: time.Minute}}}, newRealLimiter(t, store, 1_000_000, 0))
				deltas := readStreamCut(t, e, "claude-sonnet-4-5", tt.route, tt.delta, n, cut)
				p, c := e.tokens("cutter", "claude-sonnet-4-5")
				charged := store.total("tokens", "cutter")
				if p != 3 {
					t.Errorf("cut %v: got %v prompt tokens, want message_start's 3", cut, p)
				}
				if charged != int64(p+c) {
					t.Errorf("cut %v: limiter charged %d, metrics say %v + %v", cut, charged, p, c)
				}
				t.Logf("cut %v after %d text deltas: metered %v + %v, charged %d", cut, deltas, p, c, charged)
				logged := logLine(t, e, "cutter")
				if logged.Prompt != int64(p) || logged.Completion != int64(c) {
					t.Errorf("cut %v: access log has %d + %d, metrics %v + %v", cut, logged.Prompt, logged.Completion, p, c)
				}
				if !cut {
					if c != n {
						t.Errorf("whole stream: got %v completion tokens, want message_delta's %d", c, n)
					}
					continue
				}
				// The tokens of the text streamed: of the words the client
				// read at least, of all n at most (the gateway may have
				// read a few events more than the client).
				lo, hi := e.p.tok.count("claude-sonnet-4-5", mockWords(deltas)), e.p.tok.count("claude-sonnet-4-5", mockWords(n))
				if c < float64(lo) || c > float64(hi) {
					t.Errorf("cut after %d text deltas: got %v completion tokens, want %d to %d (their tokens)", deltas, c, lo, hi)
				}
			}
		})
	}
}

// TestReverseStreamCutEarlyUsage: a Messages request served by a chat
// completions upstream that reports usage before its text (as some
// OpenAI-compatible servers do), and a chat request served by it, are
// metered, when the client cuts the stream, for the text that streamed,
// not for the early usage's completion_tokens.
func TestReverseStreamCutEarlyUsage(t *testing.T) {
	t.Parallel()
	const n = 400
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		chunk := func(s string) {
			fmt.Fprintf(w, "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o\",%s}\n\n", s)
			fl.Flush()
		}
		chunk(`"choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}`)
		for i := 1; i <= n; i++ {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(2 * time.Millisecond):
			}
			word := fmt.Sprintf(" w%d", i)
			if i == 1 {
				word = word[1:]
			}
			chunk(`"choices":[{"index":0,"delta":{"content":"` + word + `"}}]`)
		}
		chunk(`"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]`)
		chunk(`"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":` + strconv.Itoa(n) + `,"total_tokens":` + strconv.Itoa(9+n) + `}`)
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(up.Close)
	for _, tc := range []struct{ route, delta string }{{routeMessages, `"text_delta","text":"`}, {routeChat, `"content":"`}} {
		for _, cut := range []bool{true, false} {
			streamCutEarlyUsage(t, up.URL, tc.route, tc.delta, n, cut)
		}
	}
}

func streamCutEarlyUsage(t *testing.T, url, route, delta string, n int, cut bool) {
	t.Helper()
	{
		store := newMapStore()
		e := newEnv(t, Config{Upstreams: []Upstream{{Name: "oa", URL: url, Models: []string{"gpt-*"}, Timeout: time.Minute}}},
			newRealLimiter(t, store, 1_000_000, 0))
		deltas := readStreamCut(t, e, "gpt-4o", route, delta, n, cut)
		p, c := e.tokens("cutter", "gpt-4o")
		t.Logf("cut %v after %d text deltas: metered %v + %v, charged %d", cut, deltas, p, c, store.total("tokens", "cutter"))
		if p != 9 || store.total("tokens", "cutter") != int64(p+c) {
			t.Errorf("cut %v: got %v prompt tokens, charged %d; want 9, prompt + completion", cut, p, store.total("tokens", "cutter"))
		}
		if !cut {
			if c != float64(n) {
				t.Errorf("%s whole stream: got %v completion tokens, want the final usage's %d", route, c, n)
			}
			return
		}
		lo, hi := e.p.tok.count("gpt-4o", mockWords(deltas)), e.p.tok.count("gpt-4o", mockWords(n))
		if c < float64(lo) || c > float64(hi) {
			t.Errorf("%s cut after %d text deltas: got %v completion tokens, want %d to %d (their tokens)", route, deltas, c, lo, hi)
		}
	}
}

// readStreamCut streams a request to model for n words on route
// as user "cutter" and reads it: to its end, or (cut) until n-5 lines
// with delta and a word came, then closes the connection. It returns the
// number of such lines read, after the gateway has finished the request.
func readStreamCut(t *testing.T, e *env, model, route, delta string, n int, cut bool) int {
	t.Helper()
	body := fmt.Sprintf(`{"model":%q,"max_tokens":%d,"stream":true,"messages":[{"role":"user","content":"hello there gateway"}]}`, model, n)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+route, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("user", "cutter")
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	deltas := 0
	for (!cut || deltas < n-5) && sc.Scan() {
		if strings.Contains(sc.Text(), delta+"w") || strings.Contains(sc.Text(), delta+" w") {
			deltas++
		}
	}
	if !cut && deltas != n {
		t.Errorf("whole stream: got %d text deltas, want %d", deltas, n)
	}
	cancel()
	resp.Body.Close()
	e.idle(t)
	return deltas
}

// logLine returns the token figures of the access log line of user's
// request (the last one).
func logLine(t *testing.T, e *env, user string) (l struct {
	Prompt     int64 `json:"prompt_tokens"`
	Completion int64 `json:"completion_tokens"`
}) {
	t.Helper()
	found := false
	for line := range strings.Lines(e.logs.String()) {
		if !strings.Contains(line, `"user":"`+user+`"`) || !strings.Contains(line, `"prompt_tokens"`) {
			continue
		}
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("access log line %q: %v", line, err)
		}
		found = true
	}
	if !found {
		t.Fatalf("no access log line for %s in %s", user, e.logs.String())
	}
	return l
}

// mockWords is the text of cmd/mockllm's first n words: "w1 w2 ... wn".
func mockWords(n int) []byte {
	var b []byte
	for i := 1; i <= n; i++ {
		if i > 1 {
			b = append(b, ' ')
		}
		b = fmt.Appendf(b, "w%d", i)
	}
	return b
}
