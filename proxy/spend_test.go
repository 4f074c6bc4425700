package proxy

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/limiter"
)

// spendAnswer is a chat completion whose usage reads 1,000 prompt tokens,
// 400 of them from the prompt cache, and 500 completion tokens.
func spendAnswer() []byte {
	body := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",` +
		`"choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],` +
		`"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":400}}}`
	return []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
}

// TestSpend (issue #12): a request is priced from its usage, cached prompt
// tokens at their own price, into genai_gateway_cost_usd_total and the
// access log; a dollar budget counts the requested max_tokens at admission,
// so a request whose output alone could pass the budget is refused before
// it reaches the upstream, while a smaller one is served.
func TestSpend(t *testing.T) {
	u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := u.readRequest(br); err != nil {
				return
			}
			if _, err := c.Write(spendAnswer()); err != nil {
				return
			}
		}
	})
	pol := limiter.Policy{Enabled: true, MissingUser: limiter.MissingUserReject,
		Limits: []limiter.Limit{{Name: "budget", Metric: limiter.MetricCostUSD, Limit: limiter.NanoUSD(0.01), Window: time.Hour}},
		Prices: []limiter.Price{{Models: []string{"gpt-4o*"}, Input: 2, CachedInput: 1, Output: 8}},
	}
	lim, err := limiter.New(pol, newMapStore(), limiter.Options{}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Config{Upstreams: []Upstream{{Name: "up0", URL: u.URL, Timeout: time.Minute}}}, lim)

	// 600 uncached x $2 + 400 cached x $1 + 500 output x $8, per million.
	const want = (600*2.0 + 400*1.0 + 500*8.0) / 1e6
	resp, body := e.post(t, routeChat, `{"model":"gpt-4o","max_tokens":500,"messages":[{"role":"user","content":"hi"}]}`, "user", "ann")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("first request: %d %s", resp.StatusCode, body)
	}
	if got := testutil.ToFloat64(e.p.m.costByUserModel.WithLabelValues("ann", "gpt-4o")); math.Abs(got-want) > 1e-12 {
		t.Errorf("genai_gateway_cost_usd_total{ann,gpt-4o} = %g, want %g", got, want)
	}
	if logs := e.logs.String(); !strings.Contains(logs, `"cached_tokens":400`) || !strings.Contains(logs, fmt.Sprintf(`"cost_usd":%v`, want)) {
		t.Errorf("access log lacks cached_tokens 400 and cost_usd %v:\n%s", want, logs)
	}
	if got := resp.Header.Get("X-Gateway-Ratelimit-Limit-Usd"); got != "0.01" {
		t.Errorf("x-gateway-ratelimit-limit-usd = %q, want 0.01", got)
	}

	// $0.0044 left: 1,000 output tokens at $8 per million ($0.008) cannot fit.
	served := u.requests.Load()
	resp, body = e.post(t, routeChat, `{"model":"gpt-4o","max_completion_tokens":1000,"messages":[{"role":"user","content":"hi"}]}`, "user", "ann")
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("max_completion_tokens 1000 with $0.0044 left: got %d %s, want 429", resp.StatusCode, body)
	}
	if u.requests.Load() != served {
		t.Error("the refused request reached the upstream")
	}
	if resp.Header.Get("X-Ratelimit-Limit-Usd") != "0.01" || resp.Header.Get("X-Ratelimit-Limit-Tokens") != "" {
		t.Errorf("429 headers: limit-usd %q, limit-tokens %q; want the budget in dollars only",
			resp.Header.Get("X-Ratelimit-Limit-Usd"), resp.Header.Get("X-Ratelimit-Limit-Tokens"))
	}
	resp, body = e.post(t, routeChat, `{"model":"gpt-4o","max_tokens":10,"messages":[{"role":"user","content":"hi"}]}`, "user", "ann")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("max_tokens 10 with $0.0044 left: got %d %s, want 200", resp.StatusCode, body)
	}
}

func TestMaxOutput(t *testing.T) {
	for _, tc := range []struct {
		body string
		want int64
	}{
		{`{"model":"m"}`, 0},
		{`{"model":"m","max_tokens":16}`, 16},
		{`{"max_tokens":16,"max_completion_tokens":64}`, 64},
		{`{"max_output_tokens":2048,"input":"x"}`, 2048},
		{`{"max_tokens":-5}`, 0},
		{`{"max_tokens":1e300}`, maxUsageTokens},
		{`{"max_tokens":"many"}`, 0},
		{`{"messages":[{"max_tokens":99}]}`, 0}, // only the top level counts
		{`{"max_tok\u0065ns":500}`, 500},        // as every JSON decoder upstream reads it
		{`{"max_completion_tok\u0065ns":64,"max_tokens":16}`, 64},
		{`{"max_tokens":100,"n":4}`, 400}, // every choice can be max_tokens long
		{`{"n":4,"max_completion_tokens":100}`, 400},
		{`{"max_tokens":100,"n":1}`, 100},
		{`{"max_tokens":100,"n":0}`, 100},
		{`{"max_tokens":100,"n":-3}`, 100},
		{`{"max_tokens":100,"n":"4"}`, 100},
		{`{"max_tokens":100,"n":1e9}`, 100 * maxOutputChoices}, // n is client input: bounded
		{`{"max_tokens":1e300,"n":4}`, maxUsageTokens},         // the product clamped
		{`{"n":4}`, 0},
		{`{"messages":[{"n":4}],"max_tokens":100}`, 100}, // only the top level counts
	} {
		for _, route := range []string{routeChat, routeCompletions} {
			if got := maxOutput(route, []byte(tc.body)); got != tc.want {
				t.Errorf("maxOutput(%s, %s) = %d, want %d", route, tc.body, got, tc.want)
			}
		}
	}
	for _, tc := range []struct {
		route, body string
		want        int64
	}{
		{routeCompletions, `{"max_tokens":100,"best_of":5,"n":2}`, 500}, // best_of are generated, n returned
		{routeCompletions, `{"max_tokens":100,"best_of":2,"n":3}`, 300},
		{routeResponses, `{"max_output_tokens":100,"n":4}`, 100}, // no choices there
		{routeMessages, `{"max_tokens":100,"n":4}`, 100},
	} {
		if got := maxOutput(tc.route, []byte(tc.body)); got != tc.want {
			t.Errorf("maxOutput(%s, %s) = %d, want %d", tc.route, tc.body, got, tc.want)
		}
	}
}

func TestUsageCachedTokens(t *testing.T) {
	for _, tc := range []struct {
		body                  string
		cached, written, want int64
	}{
		{`{"usage":{"prompt_tokens":10,"completion_tokens":1,"prompt_tokens_details":{"cached_tokens":4}}}`, 4, 0, 10},
		{`{"usage":{"input_tokens":10,"output_tokens":1,"input_tokens_details":{"cached_tokens":7}}}`, 7, 0, 10},
		{`{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":99}}}`, 10, 0, 10}, // never more than the prompt
		{`{"usage":{"prompt_tokens":10,"prompt_tokens_details":{"cached_tokens":-3}}}`, 0, 0, 10},
		{`{"usage":{"prompt_tokens":10}}`, 0, 0, 10},
		// Anthropic's, as a Messages answer too large to hold is metered
		// from its tail: input_tokens leaves the cache's tokens out.
		{`{"usage":{"input_tokens":1000,"cache_creation_input_tokens":2000,"cache_read_input_tokens":9000,"output_tokens":5}}`, 9000, 2000, 12000},
		{`{"usage":{"input_tokens":1000,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":5}}`, 0, 0, 1000},
	} {
		u, ok := extractUsage([]byte(tc.body))
		if !ok || u.cached != tc.cached || u.written != tc.written || u.prompt != tc.want {
			t.Errorf("extractUsage(%s) = %+v, %v; want cached %d and written %d of prompt %d", tc.body, u, ok, tc.cached, tc.written, tc.want)
		}
		if u, ok := usageFromTail([]byte(tc.body)); !ok || u.cached != tc.cached || u.written != tc.written || u.prompt != tc.want {
			t.Errorf("usageFromTail(%s) = %+v, %v; want cached %d and written %d of prompt %d", tc.body, u, ok, tc.cached, tc.written, tc.want)
		}
	}
}

// TestSpendAnthropicCacheWrites: an Anthropic answer's prompt tokens are
// priced in three parts, those read from the prompt cache, those written to
// it (cache_creation_input_tokens, at the cache-write price) and the rest,
// on the native Messages route and on a chat request translated for an
// anthropic upstream, whole and streamed; the access log names both cache
// figures.
func TestSpendAnthropicCacheWrites(t *testing.T) {
	const usage = `"usage":{"input_tokens":1000,"cache_creation_input_tokens":2000,"cache_read_input_tokens":9000,"output_tokens":500}`
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(readAll(r), `"stream":true`) {
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, `{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","stop_sequence":null,`+usage+`}`)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		for _, ev := range []string{
			`event: message_start` + "\n" + `data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1000,"cache_creation_input_tokens":2000,"cache_read_input_tokens":9000,"output_tokens":1}}}`,
			`event: content_block_start` + "\n" + `data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`,
			`event: content_block_delta` + "\n" + `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"ok"}}`,
			`event: content_block_stop` + "\n" + `data: {"type":"content_block_stop","index":0}`,
			`event: message_delta` + "\n" + `data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":500}}`,
			`event: message_stop` + "\n" + `data: {"type":"message_stop"}`,
		} {
			io.WriteString(w, ev+"\n\n")
		}
	}))
	t.Cleanup(up.Close)
	pol := limiter.Policy{Prices: []limiter.Price{{Models: []string{"claude-*"}, Input: 3, CachedInput: 0.3, CacheWrite: 3.75, Output: 15}}}
	lim, err := limiter.New(pol, newMapStore(), limiter.Options{}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, Config{Upstreams: []Upstream{{Name: "claude", URL: up.URL, Provider: ProviderAnthropic, Timeout: time.Minute}}}, lim)
	// 1,000 uncached x $3 + 9,000 read x $0.30 + 2,000 written x $3.75 + 500 output x $15, per million.
	const each = (1000*3 + 9000*0.3 + 2000*3.75 + 500*15.0) / 1e6
	n := 0
	for _, path := range []string{routeMessages, routeChat} {
		for _, stream := range []string{"false", "true"} {
			body := `{"model":"claude-sonnet-4-5","max_tokens":500,"stream":` + stream + `,"messages":[{"role":"user","content":"hi"}]}`
			resp, got := e.post(t, path, body, "user", "ann", "anthropic-version", "2023-06-01")
			e.idle(t)
			n++
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s stream %s: %d %s", path, stream, resp.StatusCode, got)
			}
			if got := testutil.ToFloat64(e.p.m.costByUserModel.WithLabelValues("ann", "claude-sonnet-4-5")); math.Abs(got-float64(n)*each) > 1e-12 {
				t.Errorf("%s stream %s: genai_gateway_cost_usd_total = %g, want %g", path, stream, got, float64(n)*each)
			}
		}
	}
	for _, l := range logLines(t, e) {
		if l["cached_tokens"] != 9000.0 || l["cache_write_tokens"] != 2000.0 || l["prompt_tokens"] != 12000.0 || l["cost_usd"] != each {
			t.Errorf("access log: prompt %v, cached %v, cache_write %v, cost %v; want 12000, 9000, 2000, %v",
				l["prompt_tokens"], l["cached_tokens"], l["cache_write_tokens"], l["cost_usd"], each)
		}
	}
}

func readAll(r *http.Request) string {
	b, _ := io.ReadAll(r.Body)
	return string(b)
}
