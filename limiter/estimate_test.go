package limiter

import (
	"errors"
	"hash/maphash"
	"strings"
	"testing"
	"time"
)

// TestEstimateBound checks when Admit decides on the bound and reserves the cheap guess, and
// when it asks for the exact count.
func TestEstimateBound(t *testing.T) {
	prompt := Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}
	total := Limit{Name: "t", Metric: MetricTotalTokens, Limit: 1000, Window: time.Hour}
	requests := Limit{Name: "r", Metric: MetricRequests, Limit: 1, Window: time.Hour}
	tests := []struct {
		name      string
		limits    []Limit
		seed      map[string]int64 // already in the current window, per limit
		replicas  int
		est       Estimate // Exact is replaced by a counting func returning exact
		exact     int64
		wantCalls int
		wantOK    bool
		wantIn    map[string]int64 // current window after admission, per limit
		wantMsg   string           // part of the rejection message
	}{
		{"bound fits: cheap reserved", []Limit{prompt}, map[string]int64{"p": 100}, 0,
			Estimate{Bound: 500, Cheap: 120}, 100, 0, true, map[string]int64{"p": 220}, ""},
		{"bound fits exactly", []Limit{prompt}, map[string]int64{"p": 500}, 0,
			Estimate{Bound: 500, Cheap: 120}, 100, 0, true, map[string]int64{"p": 620}, ""},
		{"bound over, exact fits: exact reserved", []Limit{prompt}, map[string]int64{"p": 501}, 0,
			Estimate{Bound: 500, Cheap: 120}, 100, 1, true, map[string]int64{"p": 601}, ""},
		{"bound over, exact over: refused on exact", []Limit{prompt}, map[string]int64{"p": 950}, 0,
			Estimate{Bound: 500, Cheap: 120}, 100, 1, false, map[string]int64{"p": 950}, "used 950, requested 100."},
		{"bound over whole limit, exact fits", []Limit{prompt}, nil, 0,
			Estimate{Bound: 4000, Cheap: 900}, 800, 1, true, map[string]int64{"p": 800}, ""},
		{"exact over whole limit: too large on exact", []Limit{prompt}, nil, 0,
			Estimate{Bound: 4000, Cheap: 900}, 1200, 1, false, nil, "it needs 1200 tokens but the whole limit is 1000 per 1h"},
		{"one of two limits undecided: exact once, reserved in both", []Limit{prompt, total}, map[string]int64{"t": 700}, 0,
			Estimate{Bound: 400, Cheap: 100}, 90, 1, true, map[string]int64{"p": 90, "t": 790}, ""},
		{"both fit on bound", []Limit{prompt, total}, map[string]int64{"t": 600}, 0,
			Estimate{Bound: 400, Cheap: 100}, 90, 0, true, map[string]int64{"p": 100, "t": 700}, ""},
		{"escrow refuses the bound, admits exact", []Limit{prompt}, map[string]int64{"p": 850}, 3,
			Estimate{Bound: 100, Cheap: 30}, 40, 1, true, map[string]int64{"p": 890}, ""},
		{"escrow refuses exact", []Limit{prompt}, map[string]int64{"p": 850}, 3,
			Estimate{Bound: 100, Cheap: 30}, 60, 1, false, map[string]int64{"p": 850}, "requested 60; near the limit each of 3 replicas may admit at most 50"},
		{"escrow admits the bound", []Limit{prompt}, map[string]int64{"p": 850}, 3,
			Estimate{Bound: 50, Cheap: 30}, 40, 0, true, map[string]int64{"p": 880}, ""},
		{"requests refuses, bound fits: no tokenizing", []Limit{prompt, requests}, map[string]int64{"r": 1}, 0,
			Estimate{Bound: 400, Cheap: 100}, 90, 0, false, map[string]int64{"p": 0}, "limit r (requests)"},
		{"requests refuses, bound over: exact decides the report", []Limit{prompt, requests}, map[string]int64{"p": 990, "r": 1}, 0,
			Estimate{Bound: 400, Cheap: 100}, 5, 1, false, map[string]int64{"p": 990}, "limit r (requests)"},
		{"cheap above bound is clamped", []Limit{prompt}, nil, 0,
			Estimate{Bound: 50, Cheap: 70}, 40, 0, true, map[string]int64{"p": 50}, ""},
		{"negative cheap reserves nothing", []Limit{prompt}, nil, 0,
			Estimate{Bound: 50, Cheap: -5}, 40, 0, true, map[string]int64{"p": 0}, ""},
		{"no bound: exact decides", []Limit{prompt}, nil, 0,
			Estimate{Cheap: 70}, 40, 1, true, map[string]int64{"p": 40}, ""},
		{"requests only: nothing estimated", []Limit{requests}, nil, 0,
			Estimate{Bound: 50, Cheap: 70}, 40, 0, true, map[string]int64{"r": 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			for name, n := range tt.seed {
				st.Add(name, "u", t0, hour, n)
			}
			opts := Options{Now: newClock(t0).Now, EscrowThreshold: 0.8}
			if tt.replicas > 0 {
				opts.Replicas = func() int { return tt.replicas }
			}
			l := newTest(t, policy(tt.limits...), st, opts)
			calls := 0
			e := tt.est
			e.Exact = func() int64 {
				calls++
				// Never under the user's lock: another Admit for the user must be able to run.
				mu := &l.locks[maphash.String(l.seed, "u")%stripes]
				if !mu.TryLock() {
					t.Error("Exact called with the user's lock held")
				} else {
					mu.Unlock()
				}
				return tt.exact
			}
			_, err := l.Admit("u", "m", e)
			if got := admitted(t, err); got != tt.wantOK {
				t.Fatalf("admitted: got %v (%v), want %v", got, err, tt.wantOK)
			}
			if calls != tt.wantCalls {
				t.Errorf("Exact calls: got %d, want %d", calls, tt.wantCalls)
			}
			for name, want := range tt.wantIn {
				if got := st.get(name, "u", t0, hour); got != want {
					t.Errorf("window of %s: got %d, want %d", name, got, want)
				}
			}
			if tt.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Errorf("rejection: got %v, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

// TestEstimateTokens checks that Tokens(n) and the zero Estimate decide and reserve n and 0.
func TestEstimateTokens(t *testing.T) {
	tests := []struct {
		name   string
		est    Estimate
		wantOK bool
		wantIn int64
	}{
		{"zero estimate is 0 tokens", Estimate{}, true, 900},
		{"tokens fit", Tokens(100), true, 1000},
		{"tokens over", Tokens(101), false, 900},
		{"a bound without Exact is not used", Estimate{Bound: 5000, Cheap: 100}, true, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			st.Add("p", "u", t0, hour, 900)
			l := newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}), st, Options{Now: newClock(t0).Now})
			_, err := l.Admit("u", "m", tt.est)
			if got := admitted(t, err); got != tt.wantOK {
				t.Errorf("admitted: got %v (%v), want %v", got, err, tt.wantOK)
			}
			if got := st.get("p", "u", t0, hour); got != tt.wantIn {
				t.Errorf("current window: got %d, want %d", got, tt.wantIn)
			}
		})
	}
}

// TestEstimateRecheck checks that usage added while Exact runs is seen: the decision after
// tokenizing reads the counters again under the lock.
func TestEstimateRecheck(t *testing.T) {
	st := newMapStore()
	st.Add("p", "u", t0, hour, 800)
	l := newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}), st, Options{Now: newClock(t0).Now})
	e := Estimate{Bound: 300, Cheap: 50, Exact: func() int64 {
		st.Add("p", "u", t0, hour, 150) // another request reserved meanwhile
		return 100
	}}
	_, err := l.Admit("u", "m", e)
	var rej *Rejection
	if !errors.As(err, &rej) {
		t.Fatalf("Admit: got %v, want a *Rejection", err)
	}
	if want := "used 950, requested 100."; !strings.Contains(rej.Message, want) {
		t.Errorf("message: got %q, want it to contain %q", rej.Message, want)
	}
}
