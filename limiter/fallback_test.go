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

	// A request through two fallbacks (gpt-4o fails, then
	// claude-sonnet-4-5, then gpt-4o-mini answers) is charged to the limits
	// of the model it asked for and of the one that answered, not to the
	// middle one's: what that fallback reserved, its limits and what it
	// topped the budget up by, is given back when the request moves on,
	// and also when the next fallback is refused.
	t.Run("through two fallbacks", func(t *testing.T) {
		for _, tc := range []struct {
			name      string
			reqTokens int64 // 0: no limit applies to the requested model
			miniLimit int64
		}{
			{"the last answers", 10_000, 10_000},
			{"the last is refused", 10_000, 50},
			{"nothing reserved for the requested model", 0, 10_000},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := newMapStore()
				p := policy(tc.miniLimit)
				if tc.reqTokens == 0 {
					p.Limits = p.Limits[2:3:3] // mini-tokens: nothing applies to gpt-4o
				}
				p.Limits = append(p.Limits, Limit{Name: "claude-tokens", Metric: MetricTotalTokens, Limit: 10_000, Window: time.Minute, Models: []string{"claude-*"}})
				l, err := New(p, s, Options{}, zerolog.Nop(), nil)
				if err != nil {
					t.Fatal(err)
				}
				r, err := l.Admit("alice", "gpt-4o", Tokens(100))
				if err != nil {
					t.Fatal(err)
				}
				if r, err = l.Fallback(r, "alice", "claude-sonnet-4-5", Tokens(100)); err != nil || r == nil {
					t.Fatalf("Fallback to claude-sonnet-4-5: %v, %v", r, err)
				}
				if s.total("claude-tokens") == 0 {
					t.Fatal("the first fallback reserved nothing in claude-tokens")
				}
				r2, err := l.Fallback(r, "alice", "gpt-4o-mini", Tokens(100))
				if got := s.total("claude-tokens"); got != 0 {
					t.Errorf("claude-tokens holds %d once the request moved on, want 0", got)
				}
				want := map[string]int64{"claude-tokens": 0, "mini-tokens": 150}
				if tc.reqTokens != 0 {
					want["requests"], want["4o-tokens"], want["budget"] = 1, 150, miniCost
				}
				if tc.miniLimit == 50 {
					var rej *Rejection
					if !errors.As(err, &rej) || rej.Limit != "mini-tokens" {
						t.Fatalf("Fallback to gpt-4o-mini: %v, want refused by mini-tokens", err)
					}
					// As the requested model left it: gpt-4o's reservation only.
					for name, want := range map[string]int64{"requests": 1, "4o-tokens": 100, "mini-tokens": 0, "budget": tokenCost(100, NanoUSD(2.5))} {
						if got := s.total(name); got != want {
							t.Errorf("after the refusal %s holds %d, want %d", name, got, want)
						}
					}
					r.Release() // no model answered
					want = map[string]int64{"requests": 0, "4o-tokens": 0, "mini-tokens": 0, "claude-tokens": 0, "budget": 0}
				} else {
					if err != nil || r2 != r {
						t.Fatalf("Fallback to gpt-4o-mini: %v, %p (want %p)", err, r2, r)
					}
					r.Settle(u)
				}
				for name, want := range want {
					if got := s.total(name); got != want {
						t.Errorf("%s: charged %d, want %d", name, got, want)
					}
				}
			})
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

// TestFallbackTopsUpHeldBudget: a dollar budget the request already holds
// is checked again when a fallback prices it dearer: a fallback to a model
// the budget would refuse is refused, and an admitted one is settled once,
// at the answering model's price.
func TestFallbackTopsUpHeldBudget(t *testing.T) {
	newLimiter := func(t *testing.T) (*Limiter, *mapStore) {
		s := newMapStore()
		l, err := New(Policy{Enabled: true, Prices: testPrices, Limits: []Limit{
			{Name: "budget", Metric: MetricCostUSD, Limit: NanoUSD(10), Window: time.Hour},
		}}, s, Options{}, zerolog.Nop(), nil)
		if err != nil {
			t.Fatal(err)
		}
		return l, s
	}
	t.Run("refused when the dearer estimate does not fit", func(t *testing.T) {
		l, s := newLimiter(t)
		spent, err := l.Admit("alice", "gpt-4o", Tokens(1))
		if err != nil {
			t.Fatal(err)
		}
		spent.Settle(Usage{PromptTokens: 3_960_000}) // $9.90 at $2.50 per million
		if _, err := l.Admit("alice", "gpt-4o", Tokens(100_000)); err == nil {
			t.Fatal("gpt-4o for $0.25 admitted with $0.10 left")
		}
		r, err := l.Admit("alice", "gpt-4o-mini", Tokens(100_000)) // $0.015
		if err != nil {
			t.Fatal(err)
		}
		var rej *Rejection
		if _, err := l.Fallback(r, "alice", "gpt-4o", Tokens(100_000)); !errors.As(err, &rej) || rej.Limit != "budget" {
			t.Fatalf("Fallback to gpt-4o ($0.25, $0.10 left): got %v, want refused by budget", err)
		}
		r.Release()
		if got, want := s.total("budget"), NanoUSD(9.90); got != want {
			t.Errorf("budget holds %d nano-dollars after the release, want %d", got, want)
		}
	})
	t.Run("admitted and settled once", func(t *testing.T) {
		l, s := newLimiter(t)
		r, err := l.Admit("alice", "gpt-4o-mini", Tokens(100_000))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Fallback(r, "alice", "gpt-4o", Tokens(100_000)); err != nil {
			t.Fatal(err)
		}
		if got, want := s.total("budget"), tokenCost(100_000, NanoUSD(2.5)); got != want {
			t.Errorf("reserved %d nano-dollars, want gpt-4o's estimate %d", got, want)
		}
		if c, ok := r.TightestCost(); !ok || c.Remaining != NanoUSD(10)-tokenCost(100_000, NanoUSD(2.5)) {
			t.Errorf("headroom %+v, want what gpt-4o's estimate leaves", c)
		}
		u := Usage{PromptTokens: 80_000, CompletionTokens: 1000}
		r.Settle(u)
		if got, want := s.total("budget"), tokenCost(80_000, NanoUSD(2.5))+tokenCost(1000, NanoUSD(10)); got != want {
			t.Errorf("settled %d nano-dollars, want gpt-4o's price of the usage %d", got, want)
		}
	})
}
