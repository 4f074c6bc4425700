package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

// The spend test's prices and budget, chosen so that every figure is an exact number of
// nano-dollars: $1,000 per million input tokens is 10^6 nano-dollars a token, $3,000 per
// million output tokens 3·10^6. chat() asks mockllm for 5 words with a prompt of 4, so one
// request costs 4·10^6 + 5·3·10^6 = 19·10^6 nano-dollars ($0.019); the budget is 150 of them.
const (
	spendModel          = "gpt-4o-mini"
	spendInputNanos     = 1_000_000 // per prompt token
	spendOutputNanos    = 3_000_000 // per completion token
	spendRequestNanos   = 4*spendInputNanos + 5*spendOutputNanos
	spendBudgetNanos    = 150 * spendRequestNanos // $2.85
	spendBudgetName     = "monthly-budget"
	spendWorkersPerNode = 8  // 24 connections across three replicas, as the README's figure
	spendRefusedInARow  = 20 // a flood worker stops after this many 429s in a row
)

// spendConfig is the YAML every replica of TestSpendBudgetAcrossReplicas runs: prices for the
// mock's model, and a monthly dollar budget that only alice has (bob has just a loose request
// limit, so the budget is seen to be hers alone).
var spendConfig = fmt.Sprintf(`prices:
  - {models: ["gpt-4o-mini*"], input: 1000, cached_input: 500, output: 3000}
rate_limit:
  enabled: true
  user_header: user
  limits:
    - {name: requests-hour, metric: requests, limit: 1000000, window: 1h}
  overrides:
    alice:
      - {name: %s, metric: cost_usd, limit: %s, window: calendar_month}
`, spendBudgetName, formatNanos(spendBudgetNanos))

// TestSpendBudgetAcrossReplicas runs one user's monthly dollar budget on three real replicas in
// a cluster, in front of mockllm, whose usage figures are known in advance:
//   - a request whose max_tokens alone would cost more than the budget has left is refused with
//     429 before it reaches the upstream (the estimate counts the requested output), while the
//     same prompt with a small max_tokens is served;
//   - 24 connections flood the three replicas until every one is refused 20 times in a row: the
//     dollars served stay within the over-admission the README states (far from the 3x of
//     replicas deciding alone) and not far below the budget;
//   - every refusal carries Retry-After, counting to the turn of the month;
//   - every replica's /usage converges to exactly the dollars served, and
//     genai_gateway_cost_usd_total summed over the replicas, and the access log lines' cost_usd,
//     add up to the same dollars.
func TestSpendBudgetAcrossReplicas(t *testing.T) {
	waitOutMonthTurn(t)
	mock := startMock(t)
	rs := startSpendCluster(t, mock)
	ctx := context.Background()

	var served spendLedger
	check429 := func(where string, err error, at time.Time) {
		t.Helper()
		var apiErr *openai.Error
		if !errors.As(err, &apiErr) || apiErr.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("%s: got %v, want 429", where, err)
		}
		if apiErr.Code != "rate_limit_exceeded" || !strings.Contains(apiErr.Message, spendBudgetName) {
			t.Errorf("%s: got code %q message %q, want rate_limit_exceeded naming %s", where, apiErr.Code, apiErr.Message, spendBudgetName)
		}
		if err := checkRetryAfter(apiErr.Response.Header, at); err != nil {
			t.Errorf("%s: %v", where, err)
		}
		// A budget is reported in dollars, never in headers an SDK reads as tokens.
		h := apiErr.Response.Header
		if got, want := h.Get("X-Ratelimit-Limit-Usd"), formatNanos(spendBudgetNanos); got != want || h.Get("X-Ratelimit-Limit-Tokens") != "" {
			t.Errorf("%s: got x-ratelimit-limit-usd %q, x-ratelimit-limit-tokens %q; want %q and none",
				where, got, h.Get("X-Ratelimit-Limit-Tokens"), want)
		}
	}

	// Half the budget, one request at a time, round the replicas.
	for i := range 75 {
		r := rs[i%len(rs)]
		resp, err := chat(ctx, client(r.proxy, "alice"), 5)
		if err != nil {
			t.Fatalf("alice's request %d through %s: %v", i+1, r.name, err)
		}
		served.add(t, resp)
	}
	half := served.nanos()
	for _, r := range rs {
		waitUsedNanos(t, r, "alice", half)
	}

	// $1.80 of output asked for, with $1.425 left: refused before the upstream sees it.
	before := clusterTokens(t, rs, "alice")
	_, err := chat(ctx, client(rs[1].proxy, "alice"), 600)
	check429("max_tokens 600 with half the budget left", err, time.Now())
	if after := clusterTokens(t, rs, "alice"); after != before {
		t.Errorf("alice's tokens_by_user_by_model_total over the replicas: got %v after the refusal, want %v: the request reached the upstream", after, before)
	}
	// The same prompt asking for 5 tokens fits.
	resp, err := chat(ctx, client(rs[1].proxy, "alice"), 5)
	if err != nil {
		t.Fatalf("max_tokens 5 after the refusal: %v", err)
	}
	served.add(t, resp)

	// The flood, on what is left.
	preFlood := served.requests()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * spendWorkersPerNode}}
	defer hc.CloseIdleConnections()
	var wg sync.WaitGroup
	var mu sync.Mutex
	type refusal struct {
		where string
		err   error
		at    time.Time
	}
	var refusals []refusal
	start := time.Now()
	for w := range spendWorkersPerNode * len(rs) {
		r := rs[w%len(rs)]
		c := openai.NewClient(option.WithBaseURL(r.proxy+"/v1/"), option.WithAPIKey("sk-e2e-client-secret"),
			option.WithMaxRetries(0), option.WithHeader("user", "alice"),
			option.WithRequestTimeout(20*time.Second), option.WithHTTPClient(hc))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for inARow := 0; inARow < spendRefusedInARow; {
				resp, err := chat(ctx, c, 5)
				if err != nil {
					if statusOf(err) != http.StatusTooManyRequests {
						t.Errorf("flood through %s: got %v, want success or 429", r.name, err)
						return
					}
					inARow++
					mu.Lock()
					refusals = append(refusals, refusal{"flood through " + r.name, err, time.Now()})
					mu.Unlock()
					continue
				}
				inARow = 0
				served.add(t, resp)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, f := range refusals {
		check429(f.where, f.err, f.at)
	}

	spent := served.nanos()
	ratio := float64(spent) / spendBudgetNanos
	t.Logf("flood of %d connections: %d requests served, %d refused, in %s; with the %d before, $%s of a $%s budget, %.3f x",
		spendWorkersPerNode*len(rs), served.requests()-preFlood, len(refusals), time.Since(start).Round(time.Millisecond), preFlood,
		formatNanos(spent), formatNanos(spendBudgetNanos), ratio)
	// Near the budget a replica refuses a request larger than its share of what is left (the
	// escrow rule), so what is served may stop short of the budget, by a few requests' estimates.
	if ratio < 0.9 {
		t.Errorf("served %.3f x the budget, want at least 0.9: the budget refused early", ratio)
	}
	// README, Spend: 1.03 x on average, 1.36 x at worst measured; 3 x is what replicas deciding
	// alone would allow. The bound here is the one TestDollarBudgetThreeReplicas holds in process.
	if ratio > 1.75 {
		t.Errorf("served %.3f x the budget, want at most 1.75 (replicas deciding alone would reach 3)", ratio)
	}

	// Every replica's /usage shows exactly the dollars served: settlement priced the true usage.
	for _, r := range rs {
		waitUsedNanos(t, r, "alice", spent)
	}
	// Prometheus and the access log say the same.
	var metric float64
	for _, r := range rs {
		v, _ := metricValue(t, r.ops, "genai_gateway_cost_usd_total", fmt.Sprintf(`{model=%q,user="alice"}`, spendModel))
		metric += v
	}
	if want := float64(spent) / 1e9; math.Abs(metric-want) > 1e-9*float64(served.requests()) {
		t.Errorf(`genai_gateway_cost_usd_total{user="alice"} summed over the replicas: got %v, want %v`, metric, want)
	}
	logged, lines := accessLogSpend(t, rs, "alice")
	if lines != served.requests() || math.Abs(logged-float64(spent)/1e9) > 1e-9*float64(lines) {
		t.Errorf("access log: got %d served lines for alice costing $%v, want %d costing $%s", lines, logged, served.requests(), formatNanos(spent))
	}

	// The budget is alice's alone: bob is served, and priced, on the replica she was last
	// refused by.
	resp, err = chat(ctx, client(rs[2].proxy, "bob"), 5)
	if err != nil {
		t.Fatalf("bob after alice's budget ran out: %v", err)
	}
	if resp.Usage.PromptTokens != 4 || resp.Usage.CompletionTokens != 5 {
		t.Fatalf("bob's usage: got %+v, want 4 prompt and 5 completion tokens (mockllm's contract)", resp.Usage)
	}
	if v, _ := metricValue(t, rs[2].ops, "genai_gateway_cost_usd_total", fmt.Sprintf(`{model=%q,user="bob"}`, spendModel)); math.Abs(v-float64(spendRequestNanos)/1e9) > 1e-12 {
		t.Errorf(`genai_gateway_cost_usd_total{user="bob"} on %s: got %v, want %s`, rs[2].name, v, formatNanos(spendRequestNanos))
	}
}

// startSpendCluster starts three replicas r1..r3 joined in one cluster, each with spendConfig,
// and waits until they are ready and see each other alive.
func startSpendCluster(t *testing.T, mock string) []*replica {
	t.Helper()
	var ports [3][3]int
	for i := range ports {
		ports[i] = [3]int{freePort(t), freePort(t), freePort(t)}
	}
	rs := make([]*replica, len(ports))
	for i := range rs {
		var join []string
		for j := range ports {
			if j != i {
				join = append(join, fmt.Sprintf("127.0.0.1:%d", ports[j][2]))
			}
		}
		rs[i] = startReplica(t, replicaSpec{name: fmt.Sprintf("r%d", i+1), upstream: mock, extra: spendConfig,
			cluster: true, join: join, ports: ports[i]})
	}
	for _, r := range rs {
		waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 30*time.Second)
		eventually(t, 20*time.Second, func() bool {
			var c struct {
				Members []struct{ State string } `json:"members"`
			}
			getJSON(t, r.ops+"/cluster", &c)
			alive := 0
			for _, m := range c.Members {
				if m.State == "alive" {
					alive++
				}
			}
			return alive == len(rs)
		}, "%d alive members in %s's /cluster", len(rs), r.name)
	}
	return rs
}

// spendLedger adds up what the upstream served, from the usage each response reports. It is
// safe for concurrent use.
type spendLedger struct {
	mu    sync.Mutex
	n     int
	total int64 // nano-dollars
}

// add records one served response, whose usage must be mockllm's for chat(ctx, c, 5).
func (l *spendLedger) add(t *testing.T, resp *openai.ChatCompletion) {
	u := resp.Usage
	if u.PromptTokens != 4 || u.CompletionTokens != 5 || u.PromptTokensDetails.CachedTokens != 0 {
		t.Errorf("usage: got %d prompt (%d cached), %d completion tokens; want 4 (0 cached), 5 (mockllm's contract)",
			u.PromptTokens, u.PromptTokensDetails.CachedTokens, u.CompletionTokens)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.n++
	l.total += u.PromptTokens*spendInputNanos + u.CompletionTokens*spendOutputNanos
}

func (l *spendLedger) nanos() int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

func (l *spendLedger) requests() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.n
}

// waitUsedNanos waits until r's /usage shows the budget used at exactly want nano-dollars.
func waitUsedNanos(t *testing.T, r *replica, user string, want int64) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var u struct {
			Limits []struct {
				Name   string      `json:"name"`
				Metric string      `json:"metric"`
				Window string      `json:"window"`
				Limit  json.Number `json:"limit"`
				Used   json.Number `json:"used"`
			} `json:"limits"`
		}
		getJSON(t, r.ops+"/usage?user="+user, &u)
		last = fmt.Sprintf("%+v", u.Limits)
		for _, l := range u.Limits {
			if l.Name != spendBudgetName {
				continue
			}
			if l.Metric != "cost_usd" || l.Window != "calendar_month" || string(l.Limit) != formatNanos(spendBudgetNanos) {
				t.Fatalf("%s /usage?user=%s: got %+v, want the cost_usd calendar_month limit of %s", r.name, user, l, formatNanos(spendBudgetNanos))
			}
			if used, err := parseNanos(string(l.Used)); err == nil && used == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s /usage?user=%s: got %s, want %s used $%s within 10s", r.name, user, last, spendBudgetName, formatNanos(want))
		}
	}
}

// clusterTokens sums user's tokens_by_user_by_model_total over the replicas.
func clusterTokens(t *testing.T, rs []*replica, user string) float64 {
	t.Helper()
	var sum float64
	for _, r := range rs {
		v, _ := metricValue(t, r.ops, "tokens_by_user_by_model_total", fmt.Sprintf(`{model=%q,user=%q}`, spendModel, user))
		sum += v
	}
	return sum
}

// accessLogSpend adds up cost_usd of the access log lines of user's served requests (status
// 200 on the chat route) in the replicas' output, and counts them.
func accessLogSpend(t *testing.T, rs []*replica, user string) (usd float64, lines int) {
	t.Helper()
	for _, r := range rs {
		sc := bufio.NewScanner(strings.NewReader(r.out.String()))
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		for sc.Scan() {
			var l struct {
				Message string   `json:"message"`
				User    string   `json:"user"`
				Path    string   `json:"path"`
				Status  int      `json:"status"`
				CostUSD *float64 `json:"cost_usd"`
			}
			if json.Unmarshal(sc.Bytes(), &l) != nil || l.Message != "request" || l.User != user ||
				l.Path != "/v1/chat/completions" || l.Status != http.StatusOK {
				continue
			}
			if l.CostUSD == nil {
				t.Errorf("%s: access log line without cost_usd: %s", r.name, sc.Text())
				continue
			}
			usd += *l.CostUSD
			lines++
		}
	}
	return usd, lines
}

// checkRetryAfter checks the headers of a refusal by the monthly budget: Retry-After in whole
// seconds, counting to the first of next month, 00:00 UTC, as seen at now.
func checkRetryAfter(h http.Header, now time.Time) error {
	ra := h.Get("Retry-After")
	secs, err := strconv.ParseInt(ra, 10, 64)
	if err != nil {
		return fmt.Errorf("Retry-After %q, want whole seconds", ra)
	}
	now = now.UTC()
	turn := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	if want := turn.Sub(now).Seconds(); math.Abs(float64(secs)-want) > 5 {
		return fmt.Errorf("Retry-After %d, want about %.0f (the turn of the month)", secs, want)
	}
	return nil
}

// waitOutMonthTurn waits, if the turn of a month in UTC is less than 90 seconds away, until it
// has passed: the budget's window must not reset while the test runs.
func waitOutMonthTurn(t *testing.T) {
	t.Helper()
	now := time.Now().UTC()
	turn := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	if d := turn.Sub(now); d < 90*time.Second {
		t.Logf("waiting %s for the turn of the month", d.Round(time.Second))
		time.Sleep(d + time.Second)
	}
}

// formatNanos writes nano-dollars as an exact decimal number of dollars without trailing zeros,
// the form of the configuration and of /usage: 2.85, 0.019, 3.
func formatNanos(n int64) string {
	s := strconv.FormatInt(n/1e9, 10)
	if frac := n % 1e9; frac != 0 {
		s += "." + strings.TrimRight(fmt.Sprintf("%09d", frac), "0")
	}
	return s
}

// parseNanos reads an exact decimal number of dollars, as /usage writes it, in nano-dollars.
func parseNanos(s string) (int64, error) {
	whole, frac, _ := strings.Cut(s, ".")
	if len(frac) > 9 {
		return 0, fmt.Errorf("%q: finer than a nano-dollar", s)
	}
	w, err := strconv.ParseInt(whole, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", s, err)
	}
	var f int64
	if frac != "" {
		if f, err = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64); err != nil {
			return 0, fmt.Errorf("%q: %w", s, err)
		}
	}
	return w*1e9 + f, nil
}
