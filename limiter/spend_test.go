package limiter

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// testPrices are list prices of two model families, USD per million tokens.
var testPrices = []Price{
	{Models: []string{"gpt-4o-mini*"}, Input: 0.15, CachedInput: 0.075, Output: 0.60},
	{Models: []string{"gpt-4o*"}, Input: 2.50, CachedInput: 1.25, Output: 10.00},
	{Models: []string{"claude-sonnet-*"}, Input: 3.00, CachedInput: 0.30, CacheWrite: 3.75, Output: 15.00},
}

func TestNanoUSDAndFormat(t *testing.T) {
	for _, tt := range []struct {
		usd  float64
		want int64
	}{
		{0, 0}, {-1, 0}, {math.NaN(), 0}, {math.Inf(-1), 0}, {math.Inf(1), maxNanos}, {2e9, maxNanos},
		{0.15, 150_000_000}, {50, 50_000_000_000}, {1e-9, 1}, {0.4e-9, 0}, {MaxLimitUSD, maxNanos},
	} {
		if got := NanoUSD(tt.usd); got != tt.want {
			t.Errorf("NanoUSD(%v) = %d, want %d", tt.usd, got, tt.want)
		}
	}
	for _, tt := range []struct {
		nanos int64
		want  string
	}{
		{0, "0"}, {1, "0.000000001"}, {150_000_000, "0.15"}, {50_000_000_000, "50"},
		{12_345_678_901, "12.345678901"}, {-2_500_000_000, "-2.5"}, {math.MinInt64, "-9223372036.854775808"},
	} {
		if got := formatUSD(tt.nanos); got != tt.want {
			t.Errorf("formatUSD(%d) = %q, want %q", tt.nanos, got, tt.want)
		}
	}
}

func TestTokenCost(t *testing.T) {
	for _, tt := range []struct {
		name          string
		n, perMillion int64
		want          int64
	}{
		{"a million at $0.15", 1_000_000, NanoUSD(0.15), 150_000_000},
		{"one token at $0.15/M is 150 nano-dollars", 1, NanoUSD(0.15), 150},
		{"rounded up", 1, 1, 1},
		{"zero tokens", 0, NanoUSD(10), 0},
		{"negative tokens count as 0", -5, NanoUSD(10), 0},
		{"negative price counts as 0", 5, -1, 0},
		{"the largest count at the largest price is clamped", math.MaxInt64, NanoUSD(MaxPriceUSD), maxNanos},
		{"2^53 tokens at $1/M", 1 << 53, NanoUSD(1), maxNanos},
		{"a billion tokens at $10,000/M", 1e9, NanoUSD(MaxPriceUSD), 10_000_000 * 1e9},
	} {
		if got := tokenCost(tt.n, tt.perMillion); got != tt.want {
			t.Errorf("%s: tokenCost(%d, %d) = %d, want %d", tt.name, tt.n, tt.perMillion, got, tt.want)
		}
	}
}

// TestCost: the proxy's pricing function: cached tokens at their price, first matching glob
// wins, an unpriced model costs 0 and is logged once, hostile counts stay bounded, and it works
// with limiting off.
func TestCost(t *testing.T) {
	var logs bytes.Buffer
	l, err := New(Policy{Prices: testPrices}, newMapStore(), Options{}, zerolog.New(&logs), nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name       string
		model      string
		u          Usage
		want       float64
		wantPriced bool
	}{
		// 600 uncached * 0.15 + 400 cached * 0.075 + 200 out * 0.60, per million; Claude: 1000*3 + 9000*0.30 + 1000*15
		{"mini with cache", "gpt-4o-mini-2024-07-18", Usage{PromptTokens: 1000, CachedPromptTokens: 400, CompletionTokens: 200}, 0.00024, true},
		{"first glob wins: gpt-4o", "gpt-4o-2024-08-06", Usage{PromptTokens: 1_000_000, CompletionTokens: 1_000_000}, 12.5, true},
		{"anthropic cache reads", "claude-sonnet-4-5", Usage{PromptTokens: 10_000, CachedPromptTokens: 9_000, CompletionTokens: 1_000}, 0.0207, true},
		// 1000 uncached * 3 + 9000 cached * 0.30 + 2000 written * 3.75 + 1000 out * 15, per million
		{"anthropic cache reads and writes", "claude-sonnet-4-5", Usage{PromptTokens: 12_000, CachedPromptTokens: 9_000, CacheWritePromptTokens: 2_000, CompletionTokens: 1_000}, 0.0282, true},
		{"written over prompt less cached is clamped", "claude-sonnet-4-5", Usage{PromptTokens: 10_000, CachedPromptTokens: 9_000, CacheWritePromptTokens: 1e9}, 0.00645, true},
		{"cache writes of a model without a write price cost nothing", "gpt-4o-mini", Usage{PromptTokens: 1000, CacheWritePromptTokens: 1000}, 0, true},
		{"cached over prompt is clamped to the prompt", "gpt-4o", Usage{PromptTokens: 100, CachedPromptTokens: 1e6}, 0.000125, true},
		{"negative counts are 0", "gpt-4o", Usage{PromptTokens: -100, CachedPromptTokens: -5, CompletionTokens: -1}, 0, true},
		{"hostile counts are bounded", "gpt-4o", Usage{PromptTokens: math.MaxInt64, CompletionTokens: math.MaxInt64}, MaxLimitUSD, true},
		{"unpriced", "llama-3-70b", Usage{PromptTokens: 1000, CompletionTokens: 1000}, 0, false},
		{"unpriced again", "llama-3-70b", Usage{PromptTokens: 1000}, 0, false},
	}
	for _, tt := range tests {
		got, priced := l.Cost(tt.model, tt.u)
		if math.Abs(got-tt.want) > 1e-12 || priced != tt.wantPriced {
			t.Errorf("%s: Cost = %v, %v; want %v, %v", tt.name, got, priced, tt.want, tt.wantPriced)
		}
	}
	if n := strings.Count(logs.String(), "model has no price"); n != 1 || !strings.Contains(logs.String(), `"model":"llama-3-70b"`) {
		t.Errorf("unpriced model logged %d times, want once naming it:\n%s", n, logs.String())
	}
}

func TestUnpricedLogIsBounded(t *testing.T) {
	var logs bytes.Buffer
	log := zerolog.New(&logs)
	var u unpricedLog
	for i := range 3 * maxUnpriced {
		u.report(log, strings.Repeat("m", i%7)+string(rune('a'+i%26))+strings.Repeat("x", i))
	}
	if n := strings.Count(logs.String(), "model has no price"); n != maxUnpriced {
		t.Errorf("named %d models, want %d", n, maxUnpriced)
	}
	if n := strings.Count(logs.String(), "more unpriced models"); n != 1 {
		t.Errorf("overflow logged %d times, want once", n)
	}
	if len(u.seen) != maxUnpriced+1 {
		t.Errorf("remembers %d models, want %d", len(u.seen), maxUnpriced+1)
	}
}

// TestBudgetRefusedAtTheRightRequest: a $1 budget of requests that each truly cost $0.10 admits
// exactly ten; the eleventh is refused though it is estimated at a hundredth of a cent, and the
// refusal says dollars.
func TestBudgetRefusedAtTheRightRequest(t *testing.T) {
	st := newMapStore()
	p := policy(Limit{Name: "budget", Metric: MetricCostUSD, Limit: NanoUSD(1), Window: time.Hour})
	p.Prices = []Price{{Models: []string{"m"}, Input: 1, CachedInput: 1, Output: 10}}
	l := newTest(t, p, st, Options{Now: newClock(t0).Now})
	admittedN := 0
	for i := range 12 {
		r, err := l.Admit("u", "m", Tokens(100)) // $0.0001 estimated
		if err != nil {
			var rej *Rejection
			if !errors.As(err, &rej) {
				t.Fatal(err)
			}
			if i != 10 {
				t.Fatalf("request %d refused, want the 11th (index 10) first: %v", i, err)
			}
			want := "Budget reached for user u on limit budget (cost_usd): limit $1, used $1, requested $0.0001. Please try again in 1h0m1s."
			if rej.Message != want || rej.LimitValue != NanoUSD(1) || rej.Remaining != 0 || rej.Type != "tokens" {
				t.Errorf("rejection %+v\nwant message %q, limit 1e9 nano-dollars, remaining 0", rej, want)
			}
			break
		}
		admittedN++
		r.Settle(Usage{PromptTokens: 100, CompletionTokens: 9990}) // 0.0001 + 0.0999
	}
	if admittedN != 10 {
		t.Errorf("admitted %d, want 10", admittedN)
	}
	if got := st.get("budget", "u", t0, hour); got != NanoUSD(1) {
		t.Errorf("counter = %d nano-dollars, want %d", got, NanoUSD(1))
	}
}

// TestMaxOutputEstimates: the requested maximum output counts at admission for total_tokens,
// completion_tokens and cost_usd limits, and settlement lowers the reservation to the truth.
func TestMaxOutputEstimates(t *testing.T) {
	prices := []Price{{Models: []string{"*"}, Input: 1, CachedInput: 0.5, Output: 10}} // per million
	tests := []struct {
		name         string
		lim          Limit
		seed         int64
		prompt, out  int64
		wantAdmitted bool
		wantReserved int64 // counter after admission
		settle       Usage
		wantSettled  int64
	}{
		// The case: a total_tokens limit of 100 and max_tokens 1000.
		{"total: max output too large for the limit", Limit{Name: "t", Metric: MetricTotalTokens, Limit: 100, Window: time.Hour}, 0, 10, 1000, false, 0, Usage{}, 0},
		{"total: prompt + max output fits", Limit{Name: "t", Metric: MetricTotalTokens, Limit: 100, Window: time.Hour}, 0, 10, 90, true, 100,
			Usage{PromptTokens: 10, CompletionTokens: 20}, 30},
		{"total: no max output counts the prompt", Limit{Name: "t", Metric: MetricTotalTokens, Limit: 100, Window: time.Hour}, 50, 10, 0, true, 60,
			Usage{PromptTokens: 10, CompletionTokens: 70}, 130},
		{"completion: max output reserved", Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 100, Window: time.Hour}, 0, 10, 60, true, 60,
			Usage{PromptTokens: 10, CompletionTokens: 5}, 5},
		{"completion: max output over the remaining", Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 100, Window: time.Hour}, 60, 10, 60, false, 60, Usage{}, 60},
		{"completion: no max output admits while used < limit", Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 100, Window: time.Hour}, 99, 10, 0, true, 99,
			Usage{CompletionTokens: 50}, 149},
		{"completion: no max output at the limit", Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 100, Window: time.Hour}, 100, 10, 0, false, 100, Usage{}, 100},
		{"prompt limit ignores max output", Limit{Name: "p", Metric: MetricPromptTokens, Limit: 100, Window: time.Hour}, 0, 10, 1e6, true, 10,
			Usage{PromptTokens: 12, CompletionTokens: 1e6}, 12},
		// 1000 in at $1/M + 100,000 out at $10/M = $0.001 + $1 reserved; settles to 1000 in
		// (800 cached) and 500 out: 200*1 + 800*0.5 + 500*10 = 5600 micro-dollars.
		{"cost: max output priced and settled down", Limit{Name: "$", Metric: MetricCostUSD, Limit: NanoUSD(5), Window: time.Hour}, 0, 1000, 100_000, true, NanoUSD(1.001),
			Usage{PromptTokens: 1000, CachedPromptTokens: 800, CompletionTokens: 500}, NanoUSD(0.0056)},
		{"cost: max output over the budget", Limit{Name: "$", Metric: MetricCostUSD, Limit: NanoUSD(5), Window: time.Hour}, NanoUSD(4.5), 1000, 100_000, false, NanoUSD(4.5), Usage{}, NanoUSD(4.5)},
		{"cost: hostile max output is too large, not a wrap", Limit{Name: "$", Metric: MetricCostUSD, Limit: NanoUSD(5), Window: time.Hour}, 0, 1, math.MaxInt64, false, 0, Usage{}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			st.Add(tt.lim.Name, "u", t0, hour, tt.seed)
			p := policy(tt.lim)
			p.Prices = prices
			l := newTest(t, p, st, Options{Now: newClock(t0 + 1000).Now})
			r, err := l.Admit("u", "gpt-4o", Estimate{Cheap: tt.prompt, MaxOutput: tt.out})
			if got := admitted(t, err); got != tt.wantAdmitted {
				t.Fatalf("admitted = %v (%v), want %v", got, err, tt.wantAdmitted)
			}
			if got := st.get(tt.lim.Name, "u", t0, hour); got != tt.wantReserved {
				t.Errorf("after admission: counter = %d, want %d", got, tt.wantReserved)
			}
			r.Settle(tt.settle)
			if got := st.get(tt.lim.Name, "u", t0, hour); got != tt.wantSettled {
				t.Errorf("after settlement: counter = %d, want %d", got, tt.wantSettled)
			}
		})
	}
}

// TestMaxOutputWithBound: a bound that fits decides without the tokenizer even with an output
// maximum; one that does not fit because of the output asks for the exact count.
func TestMaxOutputWithBound(t *testing.T) {
	l := newTest(t, policy(Limit{Name: "t", Metric: MetricTotalTokens, Limit: 1000, Window: time.Hour}), newMapStore(),
		Options{Now: newClock(t0).Now})
	calls := 0
	exact := func() int64 { calls++; return 100 }
	if _, err := l.Admit("u", "m", Estimate{Bound: 400, Cheap: 100, Exact: exact, MaxOutput: 500}); err != nil || calls != 0 {
		t.Fatalf("bound 400 + 500 out of 1000: err %v, Exact called %d times; want admitted without it", err, calls)
	}
	// The first reserved Cheap + MaxOutput = 600, so 400 are left: the bound (400 + 300) does
	// not fit, the exact count (100 + 300) does.
	if _, err := l.Admit("u", "m", Estimate{Bound: 400, Cheap: 100, Exact: exact, MaxOutput: 300}); err != nil || calls != 1 {
		t.Fatalf("bound 400 + 300 over the 400 left, exact 100 + 300 fits: err %v, Exact called %d times; want admitted after one call", err, calls)
	}
}

// TestUnpricedModelUnderABudget: a model without a price costs 0: admitted while the budget is
// not spent, refused once it is, and logged once.
func TestUnpricedModelUnderABudget(t *testing.T) {
	var logs bytes.Buffer
	st := newMapStore()
	p := policy(Limit{Name: "$", Metric: MetricCostUSD, Limit: NanoUSD(1), Window: time.Hour})
	p.Prices = testPrices
	l, err := New(p, st, Options{Now: newClock(t0).Now}, zerolog.New(&logs), nil)
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	for range 3 {
		r, err := l.Admit("u", "llama-3", est(1_000_000, &calls))
		if err != nil {
			t.Fatalf("unpriced model under an unspent budget: %v", err)
		}
		r.Settle(Usage{PromptTokens: 1_000_000, CompletionTokens: 1_000_000})
	}
	if got := st.get("$", "u", t0, hour); got != 0 {
		t.Errorf("counter = %d, want 0: an unpriced model costs nothing", got)
	}
	if calls != 0 {
		t.Errorf("tokenizer called %d times for an unpriced model, want 0", calls)
	}
	if n := strings.Count(logs.String(), "model has no price"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}
	st.Add("$", "u", t0, hour, NanoUSD(1))
	if _, err := l.Admit("u", "llama-3", Tokens(1)); admitted(t, err) {
		t.Error("unpriced model admitted under a spent budget")
	}
}

func TestSpendPolicyValidation(t *testing.T) {
	good := Limit{Name: "$", Metric: MetricCostUSD, Limit: NanoUSD(50), Calendar: CalendarMonth}
	tests := []struct {
		name string
		p    Policy
		want []string
	}{
		{"valid", Policy{Enabled: true, Limits: []Limit{good}, Prices: testPrices}, nil},
		{"prices checked with limiting off", Policy{Prices: []Price{{Models: []string{"m"}, Input: math.NaN()}}}, []string{"prices[0].input"}},
		{"every price problem", Policy{Prices: []Price{
			{Models: nil, Input: 1},
			{Models: []string{"a[", ""}, Input: -1, CachedInput: math.Inf(1), Output: MaxPriceUSD + 1},
		}}, []string{"prices[0].models: empty", "prices[1].models[0]", "prices[1].models[1]", "prices[1].input", "prices[1].cached_input", "prices[1].output"}},
		{"cost limit over the maximum", Policy{Enabled: true, Limits: []Limit{{Name: "$", Metric: MetricCostUSD, Limit: maxNanos + 1, Window: time.Hour}}}, []string{"limits[0].limit"}},
		{"calendar with a window", Policy{Enabled: true, Limits: []Limit{{Name: "d", Metric: MetricRequests, Limit: 1, Window: time.Hour, Calendar: CalendarDay}}}, []string{"limits[0].window"}},
		{"unknown calendar", Policy{Enabled: true, Limits: []Limit{{Name: "d", Metric: MetricRequests, Limit: 1, Calendar: "calendar_week"}}}, []string{"limits[0].calendar"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.p, newMapStore(), Options{}, zerolog.Nop(), nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("got %v, want valid", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got valid, want errors naming %v", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not name %q", err, w)
				}
			}
			if got := len(strings.Split(err.Error(), "\n")); got != len(tt.want) {
				t.Errorf("%d problems, want %d:\n%v", got, len(tt.want), err)
			}
		})
	}
}

// TestSpendHeadroomAndUsage: a cost_usd limit is no token limit in Tightest; TightestCost and
// /usage report it, /usage in dollars.
func TestSpendHeadroomAndUsage(t *testing.T) {
	st := newMapStore()
	st.Add("$", "u", t0, hour, NanoUSD(12.5))
	p := policy(
		Limit{Name: "$", Metric: MetricCostUSD, Limit: NanoUSD(50), Window: time.Hour},
		Limit{Name: "t", Metric: MetricTotalTokens, Limit: 1_000_000, Window: time.Hour},
	)
	p.Prices = testPrices
	l := newTest(t, p, st, Options{Now: newClock(t0 + 1000).Now})
	r, err := l.Admit("u", "gpt-4o", Estimate{Cheap: 1000, MaxOutput: 1000}) // $0.0025 + $0.01
	if err != nil {
		t.Fatal(err)
	}
	tok, _, tokOK, _ := r.Tightest()
	if !tokOK || tok.Limit != 1_000_000 || tok.Remaining != 998_000 {
		t.Errorf("Tightest tokens = %+v (%v), want the total_tokens limit with 998000 left", tok, tokOK)
	}
	cost, ok := r.TightestCost()
	if !ok || cost.Limit != NanoUSD(50) || cost.Remaining != NanoUSD(50-12.5-0.0125) {
		t.Errorf("TightestCost = %+v (%v), want limit 50e9, remaining %d", cost, ok, NanoUSD(50-12.5-0.0125))
	}
	body, err := json.Marshal(l.Usage("u"))
	if err != nil {
		t.Fatal(err)
	}
	want := `[{"name":"$","metric":"cost_usd","window":"1h","limit":50,"used":12.5125,"remaining":37.4875,"reset_seconds":7199},` +
		`{"name":"t","metric":"total_tokens","window":"1h","limit":1000000,"used":2000,"remaining":998000,"reset_seconds":7199}]`
	if string(body) != want {
		t.Errorf("usage\n got %s\nwant %s", body, want)
	}
	var none *Reservation
	if _, ok := none.TightestCost(); ok {
		t.Error("a nil reservation reports a cost headroom")
	}
}

// TestCostReloadKeepsReservedPrice: a reservation settles at the price it was admitted with,
// even if a reload changes prices before the response ends.
func TestCostReloadKeepsReservedPrice(t *testing.T) {
	st := newMapStore()
	p := policy(Limit{Name: "$", Metric: MetricCostUSD, Limit: NanoUSD(100), Window: time.Hour})
	p.Prices = []Price{{Models: []string{"m"}, Input: 1, CachedInput: 1, Output: 1}}
	l := newTest(t, p, st, Options{Now: newClock(t0).Now})
	r, err := l.Admit("u", "m", Tokens(1_000_000))
	if err != nil {
		t.Fatal(err)
	}
	p.Prices[0].Input = 3
	if err := l.SetPolicy(p); err != nil {
		t.Fatal(err)
	}
	r.Settle(Usage{PromptTokens: 2_000_000})
	if got := st.get("$", "u", t0, hour); got != NanoUSD(2) {
		t.Errorf("counter = %d, want %d (2M tokens at the admission price of $1/M)", got, NanoUSD(2))
	}
	if usd, _ := l.Cost("m", Usage{PromptTokens: 2_000_000}); usd != 6 {
		t.Errorf("Cost after the reload = %v, want 6", usd)
	}
}

// TestMaxOutputEscrowed: near a completion_tokens limit, a requested maximum output must fit in
// this replica's share of what remains, as prompts do near token limits; without one the share
// rule has nothing to share.
func TestMaxOutputEscrowed(t *testing.T) {
	st := newMapStore()
	st.Add("c", "u", t0, hour, 900) // past 0.8 of 1000: 100 left, a share of 34 among 3 replicas
	l := newTest(t, policy(Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 1000, Window: time.Hour}), st,
		Options{Now: newClock(t0).Now, Replicas: func() int { return 3 }})
	_, err := l.Admit("u", "m", Estimate{MaxOutput: 35})
	var rej *Rejection
	if !errors.As(err, &rej) || !strings.Contains(rej.Message, "each of 3 replicas may admit at most 34 tokens") {
		t.Fatalf("max output 35 over a share of 34: got %v, want an escrow refusal", err)
	}
	if _, err := l.Admit("u", "m", Estimate{MaxOutput: 34}); err != nil {
		t.Errorf("max output 34 within the share: %v", err)
	}
	if _, err := l.Admit("u", "m", Estimate{}); err != nil {
		t.Errorf("no max output below the limit: %v", err)
	}
}

// FuzzCost: whatever the usage and the prices, a cost is in [0, MaxLimitUSD] in nano-dollars,
// never falls when a count grows, and the estimate never wraps.
func FuzzCost(f *testing.F) {
	f.Add(int64(1000), int64(400), int64(200), 0.15, 0.075, 0.6)
	f.Add(int64(math.MaxInt64), int64(-1), int64(math.MinInt64), 10000.0, 0.0, 10000.0)
	f.Add(int64(1<<53), int64(1<<53), int64(1<<53), 1e-9, 5e-10, 9999.999999999)
	f.Fuzz(func(t *testing.T, prompt, cached, completion int64, in, cin, out float64) {
		ps, errs := compilePrices([]Price{{Models: []string{"*"}, Input: in, CachedInput: cin, Output: out}})
		if len(errs) > 0 {
			if len(ps) != 0 {
				t.Fatalf("an invalid price compiled: %v", errs)
			}
			return // refused: nothing to price
		}
		p := ps[0]
		u := Usage{PromptTokens: prompt, CachedPromptTokens: cached, CompletionTokens: completion}
		c := p.cost(u)
		if c < 0 || c > maxNanos {
			t.Fatalf("cost(%+v) = %d, out of [0, %d]", u, c, int64(maxNanos))
		}
		more := u
		more.CompletionTokens = clampTokens(completion) + 1
		if p.cost(more) < c {
			t.Fatalf("one more completion token lowered the cost: %d < %d", p.cost(more), c)
		}
		more = u
		more.PromptTokens = clampTokens(prompt) + 1
		if p.cost(more) < c {
			t.Fatalf("one more prompt token lowered the cost: %d < %d", p.cost(more), c)
		}
		if e := p.estimate(clampTokens(prompt), clampTokens(completion)); e < 0 || e > maxNanos {
			t.Fatalf("estimate = %d, out of range", e)
		}
	})
}
