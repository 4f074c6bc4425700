package limiter

import (
	"errors"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// total is what s holds for limit, over every user and window.
func (s *mapStore) total(limit string) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for k, v := range s.m {
		if k.limit == limit {
			n += v
		}
	}
	return n
}

// TestFallbackChargesEachLimitOnce: a request that falls back from gpt-4o to
// gpt-4o-mini is limited by the limits of both models, a limit covering both
// is charged once, and spend is priced at the model that answered. A
// fallback its limits refuse leaves the reservation as it was.
func TestFallbackChargesEachLimitOnce(t *testing.T) {
	policy := func(miniTokens int64) Policy {
		return Policy{Enabled: true, Prices: testPrices, Limits: []Limit{
			{Name: "requests", Metric: MetricRequests, Limit: 100, Window: time.Minute},
			{Name: "4o-tokens", Metric: MetricTotalTokens, Limit: 10_000, Window: time.Minute, Models: []string{"gpt-4o"}},
			{Name: "mini-tokens", Metric: MetricTotalTokens, Limit: miniTokens, Window: time.Minute, Models: []string{"gpt-4o-mini"}},
			{Name: "budget", Metric: MetricCostUSD, Limit: NanoUSD(10), Window: time.Hour},
		}}
	}
	u := Usage{PromptTokens: 100, CompletionTokens: 50}
	miniCost := tokenCost(100, NanoUSD(0.15)) + tokenCost(50, NanoUSD(0.60))
	fourOCost := tokenCost(100, NanoUSD(2.50)) + tokenCost(50, NanoUSD(10))

	t.Run("admitted", func(t *testing.T) {
		s := newMapStore()
		l, err := New(policy(10_000), s, Options{}, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := l.Admit("alice", "gpt-4o", Tokens(100))
		if err != nil {
			t.Fatal(err)
		}
		r2, err := l.Fallback(r, "alice", "gpt-4o-mini", Tokens(100))
		if err != nil || r2 != r {
			t.Fatalf("Fallback: %v, %p (want the same reservation %p)", err, r2, r)
		}
		r.Settle(u)
		for name, want := range map[string]int64{"requests": 1, "4o-tokens": 150, "mini-tokens": 150, "budget": miniCost} {
			if got := s.total(name); got != want {
				t.Errorf("%s: charged %d, want %d", name, got, want)
			}
		}
	})

	t.Run("refused by the fallback's limits", func(t *testing.T) {
		s := newMapStore()
		l, err := New(policy(50), s, Options{}, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := l.Admit("alice", "gpt-4o", Tokens(100))
		if err != nil {
			t.Fatal(err)
		}
		_, err = l.Fallback(r, "alice", "gpt-4o-mini", Tokens(100))
		var rej *Rejection
		if !errors.As(err, &rej) || rej.Limit != "mini-tokens" {
			t.Fatalf("Fallback: got %v, want a rejection by mini-tokens", err)
		}
		r.Settle(u) // the request went on with gpt-4o's answer
		for name, want := range map[string]int64{"requests": 1, "4o-tokens": 150, "mini-tokens": 0, "budget": fourOCost} {
			if got := s.total(name); got != want {
				t.Errorf("%s: charged %d, want %d", name, got, want)
			}
		}
	})

	t.Run("nothing reserved before", func(t *testing.T) {
		s := newMapStore()
		p := policy(10_000)
		p.Limits = p.Limits[2:3] // mini-tokens only
		l, err := New(p, s, Options{}, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := l.Admit("alice", "gpt-4o", Tokens(100))
		if err != nil || r != nil {
			t.Fatalf("Admit: %v, %v; want no reservation", r, err)
		}
		if r, err = l.Fallback(nil, "alice", "gpt-4o-mini", Tokens(100)); err != nil || r == nil {
			t.Fatalf("Fallback: %v, %v", r, err)
		}
		r.Release()
		if got := s.total("mini-tokens"); got != 0 {
			t.Errorf("released: mini-tokens holds %d", got)
		}
	})
}
