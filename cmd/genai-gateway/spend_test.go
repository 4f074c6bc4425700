package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/cluster"
	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
	"github.com/genai-gateway/genai-gateway/config"
	"github.com/genai-gateway/genai-gateway/limiter"
)

func TestLimiterPolicySpend(t *testing.T) {
	cached, write := 0.3, 3.75
	rl := config.RateLimit{Enabled: true, MissingUser: config.MissingUserReject,
		Limits: []config.Limit{
			{Name: "budget", Metric: config.MetricCostUSD, Limit: 12.5, Calendar: config.CalendarMonth},
			{Name: "daily", Metric: config.MetricTotalTokens, Limit: 1 << 62, Calendar: config.CalendarDay},
		},
		Overrides: map[string][]config.Limit{"alice": {{Name: "budget", Metric: config.MetricCostUSD, Limit: 0.000000001, Window: time.Hour}}},
	}
	prices := []config.Price{
		{Models: []string{"claude-*"}, Input: 3, CachedInput: &cached, CacheWrite: &write, Output: 15},
		{Models: []string{"gpt-*"}, Input: 2.5, Output: 10},
	}
	p := limiterPolicy(rl, prices)
	wantLimits := []limiter.Limit{
		{Name: "budget", Metric: limiter.MetricCostUSD, Limit: 12_500_000_000, Calendar: limiter.CalendarMonth},
		{Name: "daily", Metric: limiter.MetricTotalTokens, Limit: 1 << 62, Calendar: limiter.CalendarDay},
	}
	if fmt.Sprint(p.Limits) != fmt.Sprint(wantLimits) {
		t.Errorf("limits = %+v, want %+v", p.Limits, wantLimits)
	}
	if got := p.Overrides["alice"][0].Limit; got != 1 {
		t.Errorf("one nano-dollar = %d, want 1", got)
	}
	wantPrices := []limiter.Price{
		{Models: []string{"claude-*"}, Input: 3, CachedInput: 0.3, CacheWrite: 3.75, Output: 15},
		{Models: []string{"gpt-*"}, Input: 2.5, CachedInput: 2.5, CacheWrite: 2.5, Output: 10}, // cached_input, cache_write omitted
	}
	if fmt.Sprint(p.Prices) != fmt.Sprint(wantPrices) {
		t.Errorf("prices = %+v, want %+v", p.Prices, wantPrices)
	}
	if _, err := limiter.New(p, cluster.NewStore("r", nil), limiter.Options{}, zerolog.Nop(), nil); err != nil {
		t.Errorf("the converted policy is refused: %v", err)
	}
}

// TestCalendarKeysCollected: calendar windows go through the store's (start, size) keys, so the
// cluster store drops them as it drops sliding windows (two sizes after their start, swept when
// a lone store creates a key): a month's key is held while it counts and gone within a month
// after, a day's within a day after.
func TestCalendarKeysCollected(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2027, 1, 31, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	set := func(t time.Time) { mu.Lock(); now = t; mu.Unlock() }
	st := cluster.NewStore("r", clock)
	l, err := limiter.New(limiter.Policy{Enabled: true, Limits: []limiter.Limit{
		{Name: "month", Metric: limiter.MetricRequests, Limit: 100, Calendar: limiter.CalendarMonth},
		{Name: "day", Metric: limiter.MetricRequests, Limit: 100, Calendar: limiter.CalendarDay},
	}}, st, limiter.Options{Now: clock}, zerolog.Nop(), nil)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		at   time.Time
		keys int // after one admission at that instant
	}{
		{time.Date(2027, 1, 31, 12, 0, 0, 0, time.UTC), 2},  // January, Jan 31
		{time.Date(2027, 2, 1, 0, 0, 0, 0, time.UTC), 4},    // + February, Feb 1 (Jan 31 kept: a day after its start)
		{time.Date(2027, 2, 2, 1, 0, 0, 0, time.UTC), 4},    // Jan 31 gone (two days after its start), + Feb 2
		{time.Date(2027, 3, 5, 0, 0, 0, 0, time.UTC), 3},    // January gone (62 days after its start), Feb 1 and 2 gone; + March, Mar 5; February kept
		{time.Date(2027, 4, 1, 0, 0, 0, 10e6, time.UTC), 3}, // February gone (56 days), Mar 5 gone; + April, Apr 1
	}
	for _, s := range steps {
		set(s.at)
		if _, err := l.Admit("u", "m", limiter.Estimate{}); err != nil {
			t.Fatalf("%s: %v", s.at, err)
		}
		if got := st.Len(); got != s.keys {
			t.Errorf("%s: %d keys held, want %d", s.at.Format(time.RFC3339), got, s.keys)
		}
	}
}

// spendCluster starts n replicas joined in a cluster with the given limits and prices.
func spendCluster(tb testing.TB, n int, upstream string, limits []config.Limit, prices []config.Price) []*App {
	tb.Helper()
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = freeAddr(tb)
	}
	apps := make([]*App, n)
	for i := range apps {
		cfg := config.Default()
		cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Log.Level = "error"
		cfg.DrainTimeout = 5 * time.Second
		cfg.Upstreams = []config.Upstream{{Name: "mock", URL: upstream, Timeout: 10 * time.Second}}
		cfg.RateLimit.Enabled = true
		cfg.RateLimit.Limits = limits
		cfg.Prices = prices
		cfg.Cluster.Enabled = true
		cfg.Cluster.NodeName = fmt.Sprintf("node%d", i)
		cfg.Cluster.Bind = gossip[i]
		cfg.Cluster.Join = append(append([]string{}, gossip[:i]...), gossip[i+1:]...)
		cfg.Cluster.SecretKey = config.Secret("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
		apps[i] = startApp(tb, cfg)
	}
	for _, a := range apps {
		waitReady(tb, a)
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range apps {
		for a.node.LiveReplicas() < n {
			if time.Now().After(deadline) {
				tb.Fatalf("cluster did not form: %d live", a.node.LiveReplicas())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return apps
}

// Each request of flood costs exactly $0.009: the mock counts 4 prompt words and answers
// max_tokens (5) words, and the model is priced $1,000 per million tokens both ways.
const (
	spendPerRequest = 0.009
	spendBudget     = 2.70 // 300 requests, as the request limit of BenchmarkOverAdmission
)

var spendPrices = []config.Price{{Models: []string{"spend-*"}, Input: 1000, Output: 1000}}

// flood sends chat requests for model as user (4 prompt and 5 completion tokens at the mock)
// from 24 workers spread over the replicas until every worker has been refused 20 times in a
// row, and returns the requests served.
func flood(tb testing.TB, apps []*App, user, model string) int64 {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	body := fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":"hello there general kenobi"}],"max_tokens":5}`, model)
	var ok atomic.Int64
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			url := "http://" + apps[w%len(apps)].ProxyAddr() + "/v1/chat/completions"
			for refused := 0; refused < 20; {
				req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
				req.Header.Set("user", user)
				resp, err := client.Do(req)
				if err != nil {
					tb.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				switch resp.StatusCode {
				case http.StatusOK:
					ok.Add(1)
					refused = 0
				case http.StatusTooManyRequests:
					refused++
				default:
					tb.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		}()
	}
	wg.Wait()
	return ok.Load()
}

// usedUSD returns the budget's used figure in /usage on a's operator port.
func usedUSD(tb testing.TB, a *App, user string) float64 {
	resp, err := http.Get("http://" + a.MetricsAddr() + "/usage?user=" + user)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		Limits []struct {
			Name   string  `json:"name"`
			Metric string  `json:"metric"`
			Window string  `json:"window"`
			Limit  float64 `json:"limit"`
			Used   float64 `json:"used"`
		} `json:"limits"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		tb.Fatal(err)
	}
	if len(doc.Limits) != 1 || doc.Limits[0].Metric != "cost_usd" || doc.Limits[0].Window != "calendar_month" || doc.Limits[0].Limit != spendBudget {
		tb.Fatalf("/usage = %+v, want the monthly budget of $%v", doc.Limits, spendBudget)
	}
	return doc.Limits[0].Used
}

// TestDollarBudgetThreeReplicas: one user's monthly dollar budget holds across a cluster of
// three replicas flooded at once: what is served stays within the over-admission the README
// states, far from the 3x that replicas deciding alone would allow, and every replica's
// /usage converges to exactly the dollars served (settlement prices the true usage).
func TestDollarBudgetThreeReplicas(t *testing.T) {
	upstream := httptest.NewServer(mock.NewHandler(mock.Options{}))
	t.Cleanup(upstream.Close)
	apps := spendCluster(t, 3, upstream.URL, []config.Limit{
		{Name: "monthly-budget", Metric: config.MetricCostUSD, Limit: spendBudget, Calendar: config.CalendarMonth},
	}, spendPrices)
	served := flood(t, apps, "spender", "spend-model")
	spent := float64(served) * spendPerRequest
	ratio := spent / spendBudget
	t.Logf("served %d requests: $%.3f of a $%.2f budget, %.3f x the budget", served, spent, spendBudget, ratio)
	if served < int64(spendBudget/spendPerRequest)*9/10 {
		t.Errorf("served %d requests, want about %d: the budget refused early", served, int64(spendBudget/spendPerRequest))
	}
	// Measured 1.03 on average, 1.36 at worst on a loaded machine (README, Figures); 3 would be
	// replicas deciding alone.
	if ratio > 1.75 {
		t.Errorf("spent %.3f x the budget, want at most 1.75", ratio)
	}
	deadline := time.Now().Add(10 * time.Second)
	for i, a := range apps {
		for {
			used := usedUSD(t, a, "spender")
			if math.Abs(used-spent) < 1e-9 {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("replica %d: /usage says $%v used, want the $%v served", i, used, spent)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// BenchmarkDollarBudgetOverAdmission measures, as BenchmarkOverAdmission does for tokens and
// requests, how far three replicas flooded at once overshoot one user's dollar budget: dollars
// served / budget, with the proxy's estimate counting the prompt and the request's max_tokens
// (priced at the input and output prices) and settlement pricing the true usage.
//
//	go test -run '^$' -bench DollarBudget -benchtime=5x ./cmd/genai-gateway/
func BenchmarkDollarBudgetOverAdmission(b *testing.B) {
	upstream := httptest.NewServer(mock.NewHandler(mock.Options{}))
	b.Cleanup(upstream.Close)
	apps := spendCluster(b, 3, upstream.URL, []config.Limit{
		{Name: "monthly-budget", Metric: config.MetricCostUSD, Limit: spendBudget, Calendar: config.CalendarMonth},
	}, spendPrices)
	var sum, worst float64
	n := 0
	for b.Loop() {
		r := float64(flood(b, apps, fmt.Sprintf("spender-%d", n), "spend-model")) * spendPerRequest / spendBudget
		sum += r
		worst = max(worst, r)
		n++
	}
	b.ReportMetric(sum/float64(n), "dollars-admitted/budget")
	b.ReportMetric(worst, "dollars-max-admitted/budget")
}
