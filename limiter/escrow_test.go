package limiter

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

// escrowBound is the documented bound (escrow.go) on what N replicas admit together in one
// period of mutual invisibility starting from usage u0, with k admissions per replica at most.
// A replica whose view is at most a admits freely, so below the threshold each replica may
// also take the headroom to a plus one request of at most maxAsk.
func escrowBound(limit, u0, a, maxAsk int64, n, k int) int64 {
	r := limit - u0
	p := max(0, a-u0)
	if u0 <= a {
		p += maxAsk
	}
	rz := limit - max(u0, a)
	q := 1 - 1/float64(n)
	per := float64(p) + (1-math.Pow(q, float64(k)))*float64(rz+int64(n)-1)
	return int64(float64(n) * math.Min(float64(r), per+1e-9))
}

func TestEscrowRule(t *testing.T) {
	c := newClimit(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}, 0.8, newTestMetrics(t))
	tests := []struct {
		name       string
		used, need int64
		n          int
		want       bool
	}{
		{"below threshold after admission", 700, 100, 2, true},     // 800 <= 800
		{"below threshold, crossing it", 700, 151, 2, true},        // used 700 <= 800: free
		{"at threshold, crossing it", 800, 200, 2, true},           // used 800 <= 800: free
		{"past threshold, within share", 850, 75, 2, true},         // 75 <= ceil(150/2)
		{"past threshold, over share", 850, 76, 2, false},          // 76 > 75
		{"share rounds up", 999, 1, 3, true},                       // ceil(1/3) = 1
		{"three replicas", 850, 50, 3, true},                       // ceil(150/3) = 50
		{"three replicas over", 850, 51, 3, false},                 //
		{"zero need always", 1000, 0, 5, true},                     //
		{"fresh bucket, request above threshold", 0, 900, 2, true}, // below the threshold: free
		{"fresh bucket, request at threshold", 0, 800, 2, true},    //
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := escrowAllows(c, tt.used, tt.need, tt.n); got != tt.want {
				t.Errorf("escrowAllows(used %d, need %d, N %d) = %v, want %v", tt.used, tt.need, tt.n, got, tt.want)
			}
			// escrowTarget is the largest used at which both rules admit need.
			target := escrowTarget(c, tt.need, tt.n)
			for used := max(target-2, 0); used <= target+2 && used <= 1000; used++ {
				want := used+tt.need <= 1000 && escrowAllows(c, used, tt.need, tt.n)
				if got := used <= target; got != want {
					t.Errorf("need %d N %d: used %d <= target %d is %v, want %v", tt.need, tt.n, used, target, got, want)
				}
			}
		})
	}
}

func newTestMetrics(t *testing.T) *metrics {
	t.Helper()
	m, err := newMetrics(nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestEscrowRace is the classic race: past the threshold, each replica gets one request before
// gossip delivers the others' reservations.
func TestEscrowRace(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		theta   float64
		u0, ask int64
		wantMax int64 // most that may be admitted in all
	}{
		{"2 replicas, escrow", 2, 0, 850, 150, 150 + 1},
		{"3 replicas, escrow", 3, 0, 850, 150, 150 + 2},
		{"5 replicas, small asks", 5, 0, 990, 3, 10 + 4},
		{"2 replicas, no escrow over-admits", 2, 1, 850, 150, 300},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cl := newSimCluster(tt.n)
			cl.replica(0).Add("p", "u", t0, hour, tt.u0)
			cl.sync()
			total := int64(0)
			for i := 0; i < tt.n; i++ {
				l := newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}), cl.replica(i),
					Options{Now: newClock(t0 + 5).Now, Replicas: func() int { return tt.n }, EscrowThreshold: tt.theta})
				// Each replica takes the largest request it admits.
				for ask := tt.ask; ask > 0; ask-- {
					if _, err := l.Admit("u", "m", est(ask, nil)); err == nil {
						total += ask
						break
					}
				}
			}
			if total > tt.wantMax {
				t.Errorf("admitted %d in all, want at most %d", total, tt.wantMax)
			}
			if total < tt.wantMax-int64(tt.n) {
				t.Errorf("admitted %d in all, want close to %d: the rule should not starve", total, tt.wantMax)
			}
		})
	}
}

// TestEscrowBoundSimulation runs random bursts on N simulated replicas that see each other's
// reservations only between periods, and checks every period against the documented bound.
func TestEscrowBoundSimulation(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	overPeriods := 0 // periods that did over-admit: the simulation exercises the race
	for run := 0; run < 200; run++ {
		n := 2 + rng.IntN(3)
		limit := int64(100 + rng.IntN(5000))
		theta := []float64{0, 0.5, 0.95, -1}[rng.IntN(4)]
		cl := newSimCluster(n)
		clk := newClock(t0 + 1)
		var ls []*Limiter
		for i := 0; i < n; i++ {
			ls = append(ls, newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: limit, Window: time.Hour}), cl.replica(i),
				Options{Now: clk.Now, Replicas: func() int { return n }, EscrowThreshold: theta}))
		}
		a := ls[0].policy.Load().defaults[0].escrowAt
		maxAsk := 1 + rng.Int64N(limit/2)
		for period := 0; period < 30; period++ {
			cl.sync()
			u0 := cl.truth("p", "u", t0, hour)
			if u0 >= limit {
				break
			}
			counts := make([]int, n)
			var admitted int64
			for try := 0; try < 1+rng.IntN(12); try++ {
				i := rng.IntN(n)
				ask := 1 + rng.Int64N(maxAsk)
				if _, err := ls[i].Admit("u", "m", est(ask, nil)); err == nil {
					admitted += ask
					counts[i]++
				}
			}
			k := 0
			for _, c := range counts {
				k = max(k, c)
			}
			if admitted > limit-u0 {
				overPeriods++
			}
			if b := escrowBound(limit, u0, a, maxAsk, n, k); admitted > b {
				t.Fatalf("run %d period %d (N %d, L %d, a %d, U0 %d, k %d): admitted %d, bound %d",
					run, period, n, limit, a, u0, k, admitted, b)
			}
		}
	}
	if overPeriods == 0 {
		t.Error("no period over-admitted: the simulation does not exercise the bound")
	}
}

func TestEscrowRejection(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := newMapStore()
	st.Add("p", "bob", t0, hour, 900)
	clk := newClock(t0 + 1000)
	l, err := New(policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}), st,
		Options{Now: clk.Now, Replicas: func() int { return 2 }}, zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	rej := rejected(t, l, "bob", "m", 60) // fits the limit (960), not the share ceil(100/2)
	if rej.Type != "tokens" || rej.Remaining != 100 || rej.LimitValue != 1000 {
		t.Errorf("got %+v, want type tokens, remaining 100, limit 1000", rej)
	}
	const wantMsg = "Rate limit nearly reached for user bob on limit p (prompt_tokens): limit 1000, used 900, requested 60; near the limit each of 2 replicas may admit at most 50 tokens per request."
	if !strings.HasPrefix(rej.Message, wantMsg) {
		t.Errorf("message %q, want prefix %q", rej.Message, wantMsg)
	}
	// Admitted once usage has decayed enough: at RetryAfter, not a second before.
	clk.Advance(rej.RetryAfter - time.Second)
	if _, err := l.Admit("bob", "m", est(60, nil)); err == nil {
		t.Errorf("admitted 1s before RetryAfter %v", rej.RetryAfter)
	}
	clk.Advance(time.Second)
	if _, err := l.Admit("bob", "m", est(60, nil)); err != nil {
		t.Errorf("at RetryAfter %v: %v", rej.RetryAfter, err)
	}
	if got := testutil.ToFloat64(l.metrics.escrows.WithLabelValues("p")); got != 2 {
		t.Errorf("escrow_refusals_total{limit=p} = %v, want 2", got)
	}
	if got := testutil.ToFloat64(l.metrics.limited.WithLabelValues("p")); got != 2 {
		t.Errorf("rate_limited_requests_total{limit=p} = %v, want 2", got)
	}

	// A fresh bucket admits a large request: the rule only acts past the threshold.
	l2 := newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}), newMapStore(),
		Options{Now: clk.Now, Replicas: func() int { return 2 }})
	if _, err := l2.Admit("bob", "m", est(900, nil)); err != nil {
		t.Errorf("900 of 1000 on a fresh bucket with 2 replicas: got %v, want admitted", err)
	}
}

func TestEscrowOff(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"no Replicas func", Options{}},
		{"one replica", Options{Replicas: func() int { return 1 }}},
		{"threshold 1", Options{Replicas: func() int { return 3 }, EscrowThreshold: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			st.Add("p", "u", t0, hour, 900)
			tt.opts.Now = newClock(t0).Now
			l := newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}), st, tt.opts)
			if _, err := l.Admit("u", "m", est(100, nil)); err != nil {
				t.Errorf("got %v, want admitted by the plain rule", err)
			}
		})
	}
	// A completion limit without a maximum output needs 0, which the share rule always admits.
	st := newMapStore()
	st.Add("c", "u", t0, hour, 999)
	l := newTest(t, policy(Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 1000, Window: time.Hour}), st,
		Options{Now: newClock(t0).Now, Replicas: func() int { return 3 }, EscrowThreshold: -1})
	if _, err := l.Admit("u", "m", Estimate{}); err != nil {
		var rej *Rejection
		errors.As(err, &rej)
		t.Errorf("completion limit: got %v, want admitted", err)
	}
}
