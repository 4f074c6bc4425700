package limiter

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// TestUnpricedWarning: "model has no price" is logged for a model that none of the configured
// prices match, or that a cost_usd limit covers, once per model for the Limiter's life: a
// reload (SetPolicy) does not log it again. Without prices and budgets nothing is logged, since
// nothing is priced and nothing is missing.
func TestUnpricedWarning(t *testing.T) {
	tokens := Limit{Name: "tokens", Metric: MetricTotalTokens, Limit: 1_000_000, Window: time.Hour}
	budget := Limit{Name: "$", Metric: MetricCostUSD, Limit: NanoUSD(1), Window: time.Hour}
	withPrices := func(p Policy, prices []Price) Policy { p.Prices = prices; return p }
	tests := []struct {
		name     string
		policies []Policy // the first to New, the rest through SetPolicy, each followed by the requests
		want     int      // "model has no price" lines for llama-3
	}{
		{"no prices, limits off", []Policy{{}}, 0},
		{"no prices, token limit", []Policy{policy(tokens)}, 0},
		{"no prices, reloaded", []Policy{policy(tokens), policy(tokens), {}}, 0},
		{"prices, limits off", []Policy{{Prices: testPrices}}, 1},
		{"prices, token limit", []Policy{withPrices(policy(tokens), testPrices)}, 1},
		{"no prices, a budget covers it", []Policy{policy(budget)}, 1},
		{"prices, reloaded unchanged", []Policy{{Prices: testPrices}, {Prices: testPrices}, {Prices: testPrices}}, 1},
		{"prices, reloaded with other prices", []Policy{{Prices: testPrices}, {Prices: testPrices[:1]}, withPrices(policy(budget), testPrices[1:])}, 1},
		{"prices added by a reload", []Policy{{}, {Prices: testPrices}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			l, err := New(tt.policies[0], newMapStore(), Options{Now: newClock(t0).Now}, zerolog.New(&logs), nil)
			if err != nil {
				t.Fatal(err)
			}
			for i, p := range tt.policies {
				if i > 0 {
					if err := l.SetPolicy(p); err != nil {
						t.Fatalf("SetPolicy #%d: %v", i, err)
					}
				}
				for range 2 {
					r, err := l.Admit("u", "llama-3", est(10, nil))
					if err != nil {
						t.Fatalf("Admit: got %v, want admitted", err)
					}
					r.Settle(Usage{PromptTokens: 10, CompletionTokens: 10})
					if usd, priced := l.Cost("llama-3", Usage{PromptTokens: 10}); usd != 0 || priced {
						t.Errorf("Cost: got %v, %v; want 0, false", usd, priced)
					}
				}
			}
			if n := strings.Count(logs.String(), "model has no price"); n != tt.want {
				t.Errorf("got %d warnings, want %d:\n%s", n, tt.want, logs.String())
			}
			if tt.want > 0 && !strings.Contains(logs.String(), `"model":"llama-3"`) {
				t.Errorf("got\n%s\nwant the warning to name llama-3", logs.String())
			}
		})
	}
}
