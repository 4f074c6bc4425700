package proxy

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/genai-gateway/genai-gateway/limiter"
)

// TestGatewayLimitHeadersFormat: the reset times of x-gateway-ratelimit-* on an admitted request
// are written as the 429's x-ratelimit-reset-* are, in OpenAI's format ("6m0s", "1s", "250ms",
// a Go duration to the millisecond), not in whole seconds ("114s").
func TestGatewayLimitHeadersFormat(t *testing.T) {
	now := time.UnixMilli(1_700_000_006_500) // 6.5 s into a minute: resets are not whole seconds
	pol := limiter.Policy{Enabled: true, MissingUser: limiter.MissingUserReject,
		Limits: []limiter.Limit{
			{Name: "tokens", Metric: limiter.MetricTotalTokens, Limit: 1000, Window: time.Minute},
			{Name: "reqs", Metric: limiter.MetricRequests, Limit: 10, Window: time.Minute},
			{Name: "budget", Metric: limiter.MetricCostUSD, Limit: limiter.NanoUSD(1), Window: time.Minute},
		},
		Prices: []limiter.Price{{Models: []string{"*"}, Input: 1, Output: 1}},
	}
	l, err := limiter.New(pol, newMapStore(), limiter.Options{Now: func() time.Time { return now }}, zerolog.Nop(), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Admit("alice", "gpt-4o", limiter.Estimate{Exact: func() int64 { return 10 }})
	if err != nil {
		t.Fatal(err)
	}
	tok, req, tokOK, reqOK := res.Tightest()
	cost, costOK := res.TightestCost()
	if !tokOK || !reqOK || !costOK {
		t.Fatalf("Tightest: got %v %v %v, want a token, a request and a dollar limit", tokOK, reqOK, costOK)
	}
	var h fasthttp.ResponseHeader
	setGatewayLimitHeaders(&h, res)
	for _, c := range []struct {
		header string
		reset  time.Duration
	}{
		{"X-Gateway-Ratelimit-Reset-Tokens", tok.Reset},
		{"X-Gateway-Ratelimit-Reset-Requests", req.Reset},
		{"X-Gateway-Ratelimit-Reset-Usd", cost.Reset},
	} {
		if c.reset%time.Second == 0 {
			t.Fatalf("%s: reset %v is whole seconds; the test wants a fraction", c.header, c.reset)
		}
		got := string(h.Peek(c.header))
		if want := formatReset(c.reset); got != want {
			t.Errorf("%s: got %q, want %q (as x-ratelimit-reset-* on a 429)", c.header, got, want)
		}
		if d, err := time.ParseDuration(got); err != nil || d != c.reset {
			t.Errorf("%s: %q parses to %v (%v), want %v", c.header, got, d, err, c.reset)
		}
	}
}

// TestAppendReset: the allocation-free format of x-gateway-ratelimit-reset-* is formatReset's,
// that of the 429's x-ratelimit-reset-*.
func TestAppendReset(t *testing.T) {
	ds := []time.Duration{-time.Second, 0, 1, 499 * time.Microsecond, 500 * time.Microsecond, 250 * time.Millisecond,
		999*time.Millisecond + 499*time.Microsecond, 999*time.Millisecond + 500*time.Microsecond, time.Second,
		1500 * time.Millisecond, 1020 * time.Millisecond, 1001 * time.Millisecond, 59*time.Second + 999*time.Millisecond,
		time.Minute, 6 * time.Minute, 113500 * time.Millisecond, time.Hour, time.Hour + time.Millisecond,
		31 * 24 * time.Hour, 2562047 * time.Hour}
	for i := range 10_000 { // a spread of every magnitude
		ds = append(ds, time.Duration(i)*time.Duration(i)*time.Duration(i)*7_919_113)
	}
	for _, d := range ds {
		want := "0s" // OpenAI's format: a Go duration to the millisecond, at least 1ms
		if d > 0 {
			want = max(d.Round(time.Millisecond), time.Millisecond).String()
		}
		if got := string(appendReset(nil, d)); got != want {
			t.Errorf("appendReset(%d): got %q, want %q", int64(d), got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		var b [24]byte
		_ = appendReset(b[:0], 2562047*time.Hour)
	}); n != 0 {
		t.Errorf("appendReset: got %v allocations, want 0", n)
	}
}
