package config

import (
	"os"
	"path"
	"reflect"
	"strings"
	"testing"
	"time"
)

func ptr[T any](v T) *T { return &v }

// TestSpendConfig: prices and cost_usd limits with calendar windows load from the file, the
// environment and overrides, which inherit the calendar window of the limit they replace.
func TestSpendConfig(t *testing.T) {
	cfg, _ := mustLoad(t, "testdata/spend.yaml", nil)
	wantPrices := []Price{
		{Models: []string{"gpt-4o-mini*"}, Input: 0.15, CachedInput: ptr(0.075), Output: 0.60},
		{Models: []string{"claude-sonnet-*", "claude-3-7-sonnet*"}, Input: 3, CacheWrite: ptr(3.75), Output: 15},
	}
	if !reflect.DeepEqual(cfg.Prices, wantPrices) {
		t.Errorf("prices = %+v, want %+v", cfg.Prices, wantPrices)
	}
	if got := cfg.Prices[1].EffectiveCachedInput(); got != 3 {
		t.Errorf("omitted cached_input = %v, want the input price 3", got)
	}
	if got, got0 := cfg.Prices[1].EffectiveCacheWrite(), cfg.Prices[0].EffectiveCacheWrite(); got != 3.75 || got0 != 0.15 {
		t.Errorf("cache_write = %v, omitted = %v; want 3.75 and the input price 0.15", got, got0)
	}
	wantLimits := []Limit{
		{Name: "monthly-budget", Metric: MetricCostUSD, Limit: 50, Calendar: CalendarMonth},
		{Name: "daily-tokens", Metric: MetricTotalTokens, Limit: 1e6, Calendar: CalendarDay},
		{Name: "cents", Metric: MetricCostUSD, Limit: 0.25, Window: time.Hour},
	}
	if !reflect.DeepEqual(cfg.RateLimit.Limits, wantLimits) {
		t.Errorf("limits = %+v, want %+v", cfg.RateLimit.Limits, wantLimits)
	}
	wantAlice := []Limit{{Name: "monthly-budget", Metric: MetricCostUSD, Limit: 12.5, Calendar: CalendarMonth}}
	if got := cfg.RateLimit.Overrides["alice"]; !reflect.DeepEqual(got, wantAlice) {
		t.Errorf("alice = %+v, want %+v (inheriting the calendar window)", got, wantAlice)
	}

	env := []string{
		`GENAI_GATEWAY_PRICES=[{models: ["m*"], input: 1, output: 2}]`,
		`GENAI_GATEWAY_RATE_LIMIT_LIMITS=[{name: b, metric: cost_usd, limit: 7.5, window: calendar_day}]`,
	}
	cfg, _ = mustLoad(t, "", env)
	if want := []Price{{Models: []string{"m*"}, Input: 1, Output: 2}}; !reflect.DeepEqual(cfg.Prices, want) {
		t.Errorf("prices from the environment = %+v, want %+v", cfg.Prices, want)
	}
	if want := []Limit{{Name: "b", Metric: MetricCostUSD, Limit: 7.5, Calendar: CalendarDay}}; !reflect.DeepEqual(cfg.RateLimit.Limits, want) {
		t.Errorf("limits from the environment = %+v, want %+v", cfg.RateLimit.Limits, want)
	}
}

// TestSpendConfigProblems: every hostile or mistaken figure is refused with its key, all at once.
func TestSpendConfigProblems(t *testing.T) {
	path := writeConfig(t, `
prices:
  - {models: [], input: 1, output: 1}
  - {models: ["gpt-[*"], input: -0.5, cached_input: .nan, output: 1e400}
  - {models: ["x"], input: 10001, output: .inf}
  - {models: ["y"], input: abc, output: 1}
rate_limit:
  enabled: true
  limits:
    - {name: a, metric: cost_usd, limit: 2e9, window: calendar_month}
    - {name: b, metric: total_tokens, limit: 12.5, window: 1h}
    - {name: c, metric: requests, limit: 1e19, window: 1h}
    - {name: d, metric: cost_usd, limit: 1e-12, window: 1h}
    - {name: e, metric: cost_usd, limit: 1, window: calendar_week}
    - {name: f, metric: requests, limit: 1, window: 1h, calendar: calendar_month}
    - {name: g, metric: cost_usd, limit: -1, window: 1h}
`)
	_, _, err := Load(path, nil, nil)
	want := map[string][]string{
		"prices[0].models":              {"at least one model glob"},
		"prices[1].models[0]":           {"not a valid glob"},
		"prices[1].input":               {"from 0 to 10000", "-0.5"},
		"prices[1].cached_input":        {"not a finite number"},
		"prices[1].output":              {"not a finite number"},
		"prices[2].input":               {"from 0 to 10000", "10001"},
		"prices[2].output":              {"not a finite number"},
		"prices[3].input":               {`"abc" is not a number`},
		"rate_limit.limits[0].limit":    {"US dollars from 0.000000001 to 1e+09"},
		"rate_limit.limits[1].limit":    {"whole number", "12.5"},
		"rate_limit.limits[2].limit":    {"whole number from 1 to 4611686018427387904"},
		"rate_limit.limits[3].limit":    {"US dollars from 0.000000001"},
		"rate_limit.limits[4].window":   {`"calendar_week" is neither a duration`, "calendar_month"},
		"rate_limit.limits[5].calendar": {"unknown key", "window: calendar_month"},
		"rate_limit.limits[6].limit":    {"> 0"},
	}
	for k, frags := range want {
		wantProblem(t, err, k, frags...)
	}
	if got := len(errLines(err)); got != len(want) {
		t.Errorf("got %d problems\n%v\nwant %d", got, err, len(want))
	}
}

// TestValidateSpend: Validate refuses what the loader cannot produce but a Go caller can.
func TestValidateSpend(t *testing.T) {
	c := Default()
	c.Prices = []Price{{Models: []string{"m"}, Input: 1, CachedInput: ptr(-1.0), CacheWrite: ptr(1e5), Output: 1}}
	c.RateLimit.Limits = []Limit{
		{Name: "a", Metric: MetricCostUSD, Limit: 1, Window: time.Hour, Calendar: CalendarDay},
		{Name: "b", Metric: MetricCostUSD, Limit: 1, Calendar: "calendar_week"},
	}
	err := c.Validate()
	wantProblem(t, err, "prices[0].cached_input", "from 0 to 10000")
	wantProblem(t, err, "prices[0].cache_write", "from 0 to 10000")
	wantProblem(t, err, "rate_limit.limits[0].window", "calendar_day and 1h0m0s at once")
	wantProblem(t, err, "rate_limit.limits[1].window", `"calendar_week"`)
	if got := len(errLines(err)); got != 4 {
		t.Errorf("got %d problems\n%v\nwant 4", got, err)
	}
}

// TestDeployPrices: the example price table is a valid configuration on its own, dated, with
// specific globs before the general ones that would shadow them.
func TestDeployPrices(t *testing.T) {
	const file = "../deploy/prices.yaml"
	cfg, _ := mustLoad(t, file, nil)
	if len(cfg.Prices) < 20 {
		t.Fatalf("%d prices, want the common OpenAI and Anthropic models", len(cfg.Prices))
	}
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(text), "Dated 20") || !strings.Contains(string(text), "VERIFY") {
		t.Error("the table must say when it was written and that operators must verify it")
	}
	// Every model named by a literal prefix must be priced by its own entry, not an earlier one.
	for i, p := range cfg.Prices {
		for _, g := range p.Models {
			model := strings.TrimSuffix(g, "*") + "-2026-01-01"
			for j := range i {
				if matchesAny(cfg.Prices[j].Models, model) {
					t.Errorf("prices[%d] %q is shadowed by prices[%d] %q", i, g, j, cfg.Prices[j].Models)
				}
			}
		}
	}
	for _, m := range []struct {
		model string
		input float64
	}{{"gpt-4o-mini-2024-07-18", 0.15}, {"gpt-4o-2024-08-06", 2.5}, {"claude-sonnet-4-5-20250929", 3}, {"o3-mini", 1.1}, {"o3", 2}} {
		for _, p := range cfg.Prices {
			if matchesAny(p.Models, m.model) {
				if p.Input != m.input {
					t.Errorf("%s priced at %v input, want %v", m.model, p.Input, m.input)
				}
				break
			}
		}
	}
}

func matchesAny(globs []string, model string) bool {
	for _, g := range globs {
		if ok, _ := path.Match(g, model); ok {
			return true
		}
	}
	return false
}
