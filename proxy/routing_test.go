package proxy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// How a flaky upstream answers.
const (
	modeOK          = iota // the fake LLM's answer
	mode429                // 429 with Retry-After: 7
	mode500                // 500
	mode503                // 503
	modeHang               // nothing until the gateway gives up (timeout)
	modeDrop               // the connection closed without a response
	modeBreakHead          // a 200 head, then the connection closed before the body
	modeBreakStream        // a 200 event stream, two events, then the connection closed
	numModes
)

// flaky is a real upstream that fails the way its mode says, and answers
// as the fake LLM otherwise.
type flaky struct {
	*fakeLLM
	mode atomic.Int32
	all  atomic.Int64 // requests seen, failed ones included
	stop chan struct{}
	once sync.Once
}

// unblock ends every hung request, now and later.
func (f *flaky) unblock() { f.once.Do(func() { close(f.stop) }) }

func newFlaky(t testing.TB, mode int) *flaky {
	f := &flaky{fakeLLM: newFakeLLM(t), stop: make(chan struct{})}
	f.mode.Store(int32(mode))
	f.srv.Config.Handler = f
	t.Cleanup(f.unblock) // runs before the server closes: hung handlers return
	return f
}

func (f *flaky) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.all.Add(1)
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	switch f.mode.Load() {
	case mode429:
		w.Header().Set("Retry-After", "7")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusTooManyRequests)
		io.WriteString(w, `{"error":{"message":"slow down","type":"requests","param":null,"code":"rate_limit_exceeded"}}`)
	case mode500, mode503:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(map[int32]int{mode500: 500, mode503: 503}[f.mode.Load()])
		io.WriteString(w, `{"error":{"message":"upstream trouble","type":"server_error","param":null,"code":null}}`)
	case modeHang:
		select {
		case <-r.Context().Done():
		case <-f.stop:
		case <-time.After(10 * time.Second):
		}
	case modeDrop:
		hijackClose(w)
	case modeBreakHead:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "100")
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		hijackClose(w)
	case modeBreakStream:
		s := newSSEWriter(w)
		s.raw(`data: {"choices":[{"index":0,"delta":{"content":"hello"}}]}` + "\n\n")
		s.raw(`data: {"choices":[{"index":0,"delta":{"content":" world"}}]}` + "\n\n")
		hijackClose(w)
	default:
		f.fakeLLM.ServeHTTP(w, r)
	}
}

// chatReadErr posts body to the chat route as user and reads the answer
// whole, returning the read's error too: a stream may break after its head.
func (e *env) chatReadErr(t *testing.T, body, user string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+routeChat, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("user", user)
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, got, rerr
}

// refusedURL is the URL of a closed listener: connections are refused.
func refusedURL(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// poolConfig is a Config whose upstreams all serve every model, in order,
// with the default routing of the configuration (retries 2 on SPEC's
// retry_on) and strategy st.
func poolConfig(st string, urls ...string) Config {
	c := Config{Routing: Routing{Strategy: st, Retries: 2, RetryOn: route.DefaultRetryOn, Cooldown: 30 * time.Second}}
	for i, u := range urls {
		c.Upstreams = append(c.Upstreams, Upstream{Name: fmt.Sprintf("up%d", i), URL: u, Timeout: time.Minute})
	}
	return c
}

// logLines decodes the access log lines of the requests.
func logLines(t *testing.T, e *env) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if m["message"] == "request" {
			out = append(out, m)
		}
	}
	return out
}

const poolChat = `{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"one two three"}]}` // 3 + 5 tokens

// TestPoolFailover sends a request to a pool whose first upstream fails in
// each way, the second answering: which upstream answered, what the client
// saw, what was charged, what the log and metrics say.
func TestPoolFailover(t *testing.T) {
	tests := []struct {
		name     string
		mode     int // of the first upstream; -1: connection refused
		stream   bool
		outcome  string // the first upstream's attempt outcome
		retried  bool   // the second upstream answered
		status   int    // what the client saw
		charged  int64  // total_tokens charged
		cooling  bool   // the first upstream is cooling down after one such failure
		firstHit int64  // requests the first upstream saw
	}{
		{"refused", -1, false, "connect", true, 200, 8, false, 0},
		{"429 with Retry-After", mode429, false, "429", true, 200, 8, true, 1},
		{"500", mode500, false, "500", true, 200, 8, false, 1},
		{"503", mode503, false, "503", true, 200, 8, false, 1},
		{"hang past the timeout", modeHang, false, "timeout", true, 200, 8, false, 1},
		{"dropped connection", modeDrop, false, "connect", true, 200, 8, false, 1},
		{"broken after the head", modeBreakHead, false, "broken", false, 502, 0, false, 1},
		{"broken mid-stream", modeBreakStream, true, "ok", false, 200, -1, false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var first *flaky
			url0 := refusedURL(t)
			if tt.mode >= 0 {
				first = newFlaky(t, tt.mode)
				url0 = first.srv.URL
			}
			second := newFakeLLM(t)
			cfg := poolConfig(route.NamePriority, url0, second.srv.URL)
			cfg.Upstreams[0].Timeout = 300 * time.Millisecond
			store := newMapStore()
			e := newEnv(t, cfg, newRealLimiter(t, store, 1_000_000, 1000))
			body := poolChat
			if tt.stream {
				body = strings.Replace(body, `"max_tokens":5`, `"max_tokens":5,"stream":true`, 1)
			}
			resp, got, rerr := e.chatReadErr(t, body, "alice")
			e.idle(t)
			if resp.StatusCode != tt.status {
				t.Fatalf("status: got %d, want %d (body %s)", resp.StatusCode, tt.status, got)
			}
			if hits := second.hits.Load(); (hits == 1) != tt.retried {
				t.Errorf("second upstream: got %d requests, want retried=%v", hits, tt.retried)
			}
			if first != nil && first.all.Load() != tt.firstHit {
				t.Errorf("first upstream: got %d requests, want %d", first.all.Load(), tt.firstHit)
			}
			switch {
			case tt.stream:
				// Not replayed: the client got what came before the break.
				if rerr == nil || !strings.Contains(string(got), `" world"`) {
					t.Errorf("stream broken after its first byte: got %q (read error %v), want the events before the break, truncated", got, rerr)
				}
			case tt.status == 200:
				var out struct {
					Usage struct {
						TotalTokens int64 `json:"total_tokens"`
					} `json:"usage"`
				}
				if err := json.Unmarshal(got, &out); err != nil || out.Usage.TotalTokens != 8 {
					t.Errorf("answer: got %s, want the second upstream's chat completion", got)
				}
			default:
				apiErrorBody(t, got)
			}
			charged := store.total("tokens", "alice")
			if tt.charged >= 0 && charged != tt.charged {
				t.Errorf("charged: got %d tokens, want %d", charged, tt.charged)
			}
			if metered := int64(testutil.ToFloat64(e.p.m.tokensTotal)); tt.charged < 0 && (charged <= 0 || charged != metered) {
				t.Errorf("charged for a broken stream: got %d tokens, want what was metered until the break (%d)", charged, metered)
			}
			if reqs := store.total("reqs", "alice"); reqs != map[bool]int64{true: 1, false: 0}[tt.status == 200] {
				t.Errorf("requests charged: got %d, want %d", reqs, map[bool]int64{true: 1, false: 0}[tt.status == 200])
			}
			attempts := gathered(t, e.reg, "genai_gateway_upstream_attempts_total")
			if got := attempts["outcome="+tt.outcome+",upstream=up0"]; got != 1 {
				t.Errorf("attempts{up0,%s}: got %v, want 1 (all: %v)", tt.outcome, got, attempts)
			}
			if got := attempts["outcome=ok,upstream=up1"]; (got == 1) != tt.retried {
				t.Errorf("attempts{up1,ok}: got %v, want retried=%v", got, tt.retried)
			}
			state := gauges(t, e, "genai_gateway_upstream_state")
			if got := state["state=cooling,upstream=up0"]; (got == 1) != tt.cooling {
				t.Errorf("state{up0,cooling}: got %v, want %v", got, tt.cooling)
			}
			if inflight := gauges(t, e, "genai_gateway_upstream_in_flight"); inflight["upstream=up0"] != 0 || inflight["upstream=up1"] != 0 {
				t.Errorf("in flight after the request: got %v, want 0", inflight)
			}
			lines := logLines(t, e)
			if len(lines) != 1 {
				t.Fatalf("access log: got %d request lines, want 1", len(lines))
			}
			l := lines[0]
			wantUp, wantAttempts := "up0", 1.0
			if tt.retried {
				wantUp, wantAttempts = "up1", 2
			}
			if l["upstream"] != wantUp || l["attempts"] != wantAttempts {
				t.Errorf("log: got upstream %v, attempts %v, want %s, %v", l["upstream"], l["attempts"], wantUp, wantAttempts)
			}
			if tt.retried {
				r, _ := l["retried"].([]any)
				if len(r) != 1 || fmt.Sprint(r[0]) != fmt.Sprintf("map[outcome:%s upstream:up0]", tt.outcome) {
					t.Errorf("log retried: got %v, want [{up0 %s}]", l["retried"], tt.outcome)
				}
			}
		})
	}
}

// gauges is gathered for gauges.
func gauges(t *testing.T, e *env, name string) map[string]float64 {
	t.Helper()
	mfs, err := e.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			out[strings.Join(ls, ",")] = m.GetGauge().GetValue()
		}
	}
	return out
}
