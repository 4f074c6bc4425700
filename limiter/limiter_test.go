package limiter

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"
)

const (
	hour = int64(time.Hour / time.Millisecond)
	t0   = 1_700_000_000_000 / hour * hour // a window boundary for every window that divides 1h
)

// admitted reports whether err is nil and fails on anything but nil or a *Rejection.
func admitted(t *testing.T, err error) bool {
	t.Helper()
	var rej *Rejection
	if err != nil && !errors.As(err, &rej) {
		t.Fatalf("Admit: unexpected error %v", err)
	}
	return err == nil
}

func TestAdmitPerMetric(t *testing.T) {
	tests := []struct {
		name   string
		lim    Limit
		seed   int64 // already in the current window
		est    int64
		want   bool
		wantIn int64 // current window after admission
	}{
		{"prompt fits exactly", Limit{Name: "p", Metric: MetricPromptTokens, Limit: 100, Window: time.Hour}, 60, 40, true, 100},
		{"prompt over by one", Limit{Name: "p", Metric: MetricPromptTokens, Limit: 100, Window: time.Hour}, 61, 40, false, 61},
		{"total fits", Limit{Name: "t", Metric: MetricTotalTokens, Limit: 100, Window: time.Hour}, 0, 100, true, 100},
		{"total over", Limit{Name: "t", Metric: MetricTotalTokens, Limit: 100, Window: time.Hour}, 1, 100, false, 1},
		{"completion below limit admits", Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 100, Window: time.Hour}, 99, 1000, true, 99},
		{"completion at limit refuses", Limit{Name: "c", Metric: MetricCompletionTokens, Limit: 100, Window: time.Hour}, 100, 0, false, 100},
		{"requests fits", Limit{Name: "r", Metric: MetricRequests, Limit: 3, Window: time.Hour}, 2, 500, true, 3},
		{"requests full", Limit{Name: "r", Metric: MetricRequests, Limit: 3, Window: time.Hour}, 3, 0, false, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			st.Add(tt.lim.Name, "u", t0, hour, tt.seed)
			l := newTest(t, policy(tt.lim), st, Options{Now: newClock(t0 + 1000).Now})
			_, err := l.Admit("u", "gpt-4o", est(tt.est, nil))
			if got := admitted(t, err); got != tt.want {
				t.Errorf("admitted = %v (%v), want %v", got, err, tt.want)
			}
			if got := st.get(tt.lim.Name, "u", t0, hour); got != tt.wantIn {
				t.Errorf("current window = %d, want %d", got, tt.wantIn)
			}
		})
	}
}

func TestAdmitSlidingAtEdges(t *testing.T) {
	// prompt limit 1000 per 1m; the window before t0 holds 800, the one from t0 holds 100;
	// asking for 101 fits while the sliding usage is at most 899.
	const w = int64(60_000)
	tests := []struct {
		name string
		now  int64
		want bool
	}{
		{"exactly on boundary: previous weighs 1", t0, false},        // 100 + 800
		{"1ms after boundary", t0 + 1, false},                        // 100 + ceil(799.987)
		{"last ms before it fits", t0 + 74, false},                   // 100 + ceil(800*59926/60000) = 900
		{"first ms it fits", t0 + 75, true},                          // 100 + 799
		{"halfway", t0 + w/2, true},                                  // 100 + 400
		{"1ms before next boundary", t0 + w - 1, true},               // 100 + ceil(0.013)
		{"1ms before t0: 800 is current", t0 - 1, true},              // 800 + 0
		{"next boundary: current becomes previous", t0 + w, true},    // 0 + 100
		{"two windows later everything is gone", t0 + 2*w + 1, true}, // 0
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			st.Add("p", "u", t0-w, w, 800)
			st.Add("p", "u", t0, w, 100)
			l := newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Minute}), st,
				Options{Now: newClock(tt.now).Now})
			_, err := l.Admit("u", "m", est(101, nil))
			if got := admitted(t, err); got != tt.want {
				t.Errorf("admitted = %v (%v), want %v", got, err, tt.want)
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	p := policy(
		Limit{Name: "prompt-hourly", Metric: MetricPromptTokens, Limit: 100, Window: time.Hour},
		Limit{Name: "req-minute", Metric: MetricRequests, Limit: 60, Window: time.Minute},
	)
	p.Overrides = map[string][]Limit{
		"alice": {{Name: "prompt-hourly", Metric: MetricPromptTokens, Limit: 5000, Window: time.Hour}},          // replaces
		"bob":   {{Name: "completion-daily", Metric: MetricCompletionTokens, Limit: 7, Window: 24 * time.Hour}}, // adds
		"Carol": {{Name: "prompt-hourly", Metric: MetricPromptTokens, Limit: 10, Window: time.Hour}},            // case kept
	}
	l := newTest(t, p, newMapStore(), Options{Now: newClock(t0).Now})
	tests := []struct {
		user string
		want string // name:limit of every limit in order
	}{
		{"alice", "prompt-hourly:5000 req-minute:60"},
		{"bob", "prompt-hourly:100 req-minute:60 completion-daily:7"},
		{"Carol", "prompt-hourly:10 req-minute:60"},
		{"carol", "prompt-hourly:100 req-minute:60"},
		{"dave", "prompt-hourly:100 req-minute:60"},
	}
	for _, tt := range tests {
		t.Run(tt.user, func(t *testing.T) {
			var got []string
			for _, u := range l.Usage(tt.user) {
				got = append(got, fmt.Sprintf("%s:%d", u.Name, u.Limit))
			}
			if g := strings.Join(got, " "); g != tt.want {
				t.Errorf("limits of %s = %q, want %q", tt.user, g, tt.want)
			}
		})
	}
	// The replaced limit is what admission enforces.
	if _, err := l.Admit("alice", "m", est(1000, nil)); err != nil {
		t.Errorf("alice 1000 tokens: got %v, want admitted", err)
	}
	if _, err := l.Admit("dave", "m", est(1000, nil)); err == nil {
		t.Errorf("dave 1000 tokens: got admitted, want refused")
	}
}

func TestModelGlobs(t *testing.T) {
	p := policy(
		Limit{Name: "gpt4", Metric: MetricPromptTokens, Limit: 10, Window: time.Hour, Models: []string{"gpt-4o*", "o1"}},
		Limit{Name: "all", Metric: MetricRequests, Limit: 100, Window: time.Hour},
	)
	tests := []struct {
		model     string
		wantLimit bool // the 10-token limit applies
	}{
		{"gpt-4o", true},
		{"gpt-4o-mini", true},
		{"o1", true},
		{"o1-mini", false},
		{"gpt-3.5-turbo", false},
		{"", false},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			st := newMapStore()
			l := newTest(t, p, st, Options{Now: newClock(t0).Now})
			calls := 0
			r, err := l.Admit("u", tt.model, est(50, &calls))
			if got := err != nil; got != tt.wantLimit {
				t.Errorf("refused = %v (%v), want %v", got, err, tt.wantLimit)
			}
			if got := calls == 1; got != tt.wantLimit {
				t.Errorf("estimate calls = %d, want %d", calls, map[bool]int{true: 1}[tt.wantLimit])
			}
			if !tt.wantLimit && (r == nil || len(r.entries) != 1 || r.entries[0].lim.name != "all") {
				t.Errorf("reservation = %+v, want one entry for limit all", r)
			}
		})
	}
}

func TestMissingUser(t *testing.T) {
	tests := []struct {
		name, mode, user string
		wantErr          error
		wantBucket       string
	}{
		{"reject", MissingUserReject, "", ErrMissingUser, ""},
		{"empty mode rejects", "", "", ErrMissingUser, ""},
		{"anonymous", MissingUserAnonymous, "", nil, AnonymousUser},
		{"named user in anonymous mode", MissingUserAnonymous, "bob", nil, "bob"},
		{"named user in reject mode", MissingUserReject, "bob", nil, "bob"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := policy(Limit{Name: "r", Metric: MetricRequests, Limit: 5, Window: time.Hour})
			p.MissingUser = tt.mode
			st := newMapStore()
			l := newTest(t, p, st, Options{Now: newClock(t0).Now})
			r, err := l.Admit(tt.user, "m", Estimate{})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				if r != nil || st.adds != 0 {
					t.Errorf("reservation %v and %d adds, want none", r, st.adds)
				}
				return
			}
			if got := st.get("r", tt.wantBucket, t0, hour); got != 1 {
				t.Errorf("bucket %q = %d, want 1", tt.wantBucket, got)
			}
		})
	}
}

func TestDisabled(t *testing.T) {
	st := newMapStore()
	// A disabled policy is not validated: the bad limit does not matter.
	l := newTest(t, Policy{Limits: []Limit{{Name: "bad"}}}, st, Options{})
	r, err := l.Admit("", "m", Estimate{Exact: func() int64 { t.Fatal("estimate called"); return 0 }})
	if r != nil || err != nil || l.Enabled() || st.adds != 0 {
		t.Errorf("got %v, %v, enabled %v, %d adds; want nil, nil, false, 0", r, err, l.Enabled(), st.adds)
	}
	r.Settle(Usage{PromptTokens: 5}) // nil-safe
	if got := l.Usage("u"); len(got) != 0 {
		t.Errorf("Usage = %v, want empty", got)
	}
}

func TestEstimateLaziness(t *testing.T) {
	tests := []struct {
		name      string
		limits    []Limit
		wantCalls int
	}{
		{"requests only", []Limit{{Name: "r", Metric: MetricRequests, Limit: 5, Window: time.Hour}}, 0},
		{"completion only", []Limit{{Name: "c", Metric: MetricCompletionTokens, Limit: 5, Window: time.Hour}}, 0},
		{"requests and completion", []Limit{{Name: "r", Metric: MetricRequests, Limit: 5, Window: time.Hour}, {Name: "c", Metric: MetricCompletionTokens, Limit: 5, Window: time.Hour}}, 0},
		{"prompt limit of another model", []Limit{{Name: "p", Metric: MetricPromptTokens, Limit: 5, Window: time.Hour, Models: []string{"x-*"}}}, 0},
		{"prompt", []Limit{{Name: "p", Metric: MetricPromptTokens, Limit: 5, Window: time.Hour}}, 1},
		{"prompt and total: once", []Limit{{Name: "p", Metric: MetricPromptTokens, Limit: 50, Window: time.Hour}, {Name: "t", Metric: MetricTotalTokens, Limit: 50, Window: time.Minute}}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := newTest(t, policy(tt.limits...), newMapStore(), Options{Now: newClock(t0).Now})
			calls := 0
			_, _ = l.Admit("u", "m", est(1, &calls))
			if calls != tt.wantCalls {
				t.Errorf("estimate calls = %d, want %d", calls, tt.wantCalls)
			}
		})
	}
}

func TestSettle(t *testing.T) {
	const w = int64(60_000)
	limits := []Limit{
		{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Minute},
		{Name: "t", Metric: MetricTotalTokens, Limit: 1000, Window: time.Minute},
		{Name: "c", Metric: MetricCompletionTokens, Limit: 1000, Window: time.Minute},
		{Name: "r", Metric: MetricRequests, Limit: 1000, Window: time.Minute},
	}
	tests := []struct {
		name       string
		usage      Usage
		advance    time.Duration // before settling
		wantWindow int64         // window the counters land in
		want       map[string]int64
	}{
		{"up", Usage{PromptTokens: 150, CompletionTokens: 30}, 0, t0, map[string]int64{"p": 150, "t": 180, "c": 30, "r": 1}},
		{"down (PN)", Usage{PromptTokens: 40, CompletionTokens: 5}, 0, t0, map[string]int64{"p": 40, "t": 45, "c": 5, "r": 1}},
		{"exact", Usage{PromptTokens: 100, CompletionTokens: 0}, 0, t0, map[string]int64{"p": 100, "t": 100, "c": 0, "r": 1}},
		{"after roll-over: reserved window", Usage{PromptTokens: 70, CompletionTokens: 20}, 90 * time.Second, t0, map[string]int64{"p": 70, "t": 90, "c": 20, "r": 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newMapStore()
			clk := newClock(t0 + 10)
			l := newTest(t, policy(limits...), st, Options{Now: clk.Now})
			r, err := l.Admit("u", "m", est(100, nil))
			if err != nil {
				t.Fatal(err)
			}
			clk.Advance(tt.advance)
			r.Settle(tt.usage)
			r.Settle(Usage{PromptTokens: 999, CompletionTokens: 999}) // no-op
			for name, want := range tt.want {
				if got := st.get(name, "u", tt.wantWindow, w); got != want {
					t.Errorf("%s in window %d = %d, want %d", name, tt.wantWindow, got, want)
				}
				if got := st.get(name, "u", tt.wantWindow+w, w); got != 0 {
					t.Errorf("%s in the next window = %d, want 0", name, got)
				}
			}
		})
	}
}

func TestSettleConcurrentOnce(t *testing.T) {
	st := newMapStore()
	l := newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour}), st, Options{Now: newClock(t0).Now})
	r, err := l.Admit("u", "m", est(100, nil))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() { r.Settle(Usage{PromptTokens: 10}) })
	}
	wg.Wait()
	if got := st.get("p", "u", t0, hour); got != 10 {
		t.Errorf("after 8 concurrent settles: got %d, want 10", got)
	}
}

func TestManyLimitsReservation(t *testing.T) {
	var limits []Limit
	for i := 0; i < 70; i++ { // past the inline array and the 64-bit mask
		limits = append(limits, Limit{Name: fmt.Sprintf("l%d", i), Metric: MetricPromptTokens, Limit: 1000, Window: time.Hour})
	}
	limits = append(limits, Limit{Name: "other-model", Metric: MetricPromptTokens, Limit: 1, Window: time.Hour, Models: []string{"x"}})
	st := newMapStore()
	l := newTest(t, policy(limits...), st, Options{Now: newClock(t0).Now})
	r, err := l.Admit("u", "m", est(10, nil))
	if err != nil {
		t.Fatal(err)
	}
	r.Settle(Usage{PromptTokens: 3})
	for i := 0; i < 70; i++ {
		if got := st.get(fmt.Sprintf("l%d", i), "u", t0, hour); got != 3 {
			t.Fatalf("l%d = %d, want 3", i, got)
		}
	}
	if got := st.get("other-model", "u", t0, hour); got != 0 {
		t.Errorf("other-model = %d, want 0", got)
	}
}

func TestAdmitAtomicPerUser(t *testing.T) {
	st := newMapStore()
	l := newTest(t, policy(Limit{Name: "r", Metric: MetricRequests, Limit: 50, Window: time.Hour}), st, Options{Now: newClock(t0).Now})
	var mu sync.Mutex
	ok := 0
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Go(func() {
			for j := 0; j < 20; j++ {
				if _, err := l.Admit("u", "m", Estimate{}); err == nil {
					mu.Lock()
					ok++
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if ok != 50 {
		t.Errorf("admitted %d of 160 concurrent requests, want exactly 50", ok)
	}
}

func TestSetPolicyConcurrentWithAdmit(t *testing.T) {
	st := newMapStore()
	small := policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1_000_000, Window: time.Hour})
	big := policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 1_000_000, Window: time.Hour}, Limit{Name: "r", Metric: MetricRequests, Limit: 1_000_000, Window: time.Minute})
	l := newTest(t, small, st, Options{Now: time.Now})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r, err := l.Admit(fmt.Sprint("u", i), "m", est(1, nil))
				if err != nil {
					t.Errorf("Admit: %v", err)
					return
				}
				r.Settle(Usage{PromptTokens: 1})
				_ = l.Usage("u0")
			}
		})
	}
	for i := 0; i < 200; i++ {
		p := small
		if i%2 == 0 {
			p = big
		}
		if err := l.SetPolicy(p); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
}

func TestPolicyValidation(t *testing.T) {
	good := Limit{Name: "p", Metric: MetricPromptTokens, Limit: 10, Window: time.Hour}
	tests := []struct {
		name string
		p    Policy
		want []string // substrings of the error; none = valid
	}{
		{"valid", policy(good), nil},
		{"bad metric", policy(Limit{Name: "p", Metric: "tokens", Limit: 10, Window: time.Hour}), []string{"limits[0].metric"}},
		{"zero limit", policy(Limit{Name: "p", Metric: MetricRequests, Limit: 0, Window: time.Hour}), []string{"limits[0].limit"}},
		{"sub-ms window", policy(Limit{Name: "p", Metric: MetricRequests, Limit: 1, Window: time.Microsecond}), []string{"limits[0].window"}},
		{"bad glob", policy(Limit{Name: "p", Metric: MetricRequests, Limit: 1, Window: time.Hour, Models: []string{"gpt-["}}), []string{"limits[0].models[0]"}},
		{"no name", policy(Limit{Name: "", Metric: MetricRequests, Limit: 1, Window: time.Hour}), []string{"limits[0].name: empty"}},
		{"duplicate", policy(good, good), []string{`limits[1].name: duplicate limit "p"`}},
		{"missing_user", Policy{Enabled: true, MissingUser: "ignore"}, []string{"missing_user"}},
		{"every problem", Policy{Enabled: true, Limits: []Limit{{Name: "a", Metric: "x", Limit: 0, Window: 0}},
			Overrides: map[string][]Limit{"bob": {{Name: "b", Metric: MetricRequests, Limit: -1, Window: time.Hour}}, "": {good}}},
			[]string{"limits[0].metric", "limits[0].limit", "limits[0].window", "overrides[bob][0].limit", "overrides: empty user"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.p, newMapStore(), Options{}, zerolog.Nop(), nil)
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("got %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("got nil error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// A failed SetPolicy keeps the current policy.
	l := newTest(t, policy(good), newMapStore(), Options{Now: newClock(t0).Now})
	if err := l.SetPolicy(policy(Limit{Name: "p", Metric: "bad", Limit: 1, Window: time.Hour})); err == nil {
		t.Fatal("SetPolicy(bad): got nil error")
	}
	if got := l.Usage("u"); len(got) != 1 || got[0].Limit != 10 {
		t.Errorf("after failed SetPolicy: %v, want the old limit", got)
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	st := newMapStore()
	l, err := New(policy(Limit{Name: "r", Metric: MetricRequests, Limit: 1, Window: time.Hour}), st, Options{Now: newClock(t0).Now}, zerolog.Nop(), reg)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		_, _ = l.Admit("u", "m", Estimate{})
	}
	if got := testutil.ToFloat64(l.metrics.limited.WithLabelValues("r")); got != 2 {
		t.Errorf("rate_limited_requests_total{limit=r} = %v, want 2", got)
	}
	if _, err := New(policy(), st, Options{}, zerolog.Nop(), reg); err == nil {
		t.Error("second New on the same registry: got nil error, want a registration error")
	}
	if n, err := testutil.GatherAndCount(reg, "genai_gateway_rate_limited_requests_total", "genai_gateway_rate_limit_escrow_refusals_total"); err != nil || n != 2 {
		t.Errorf("series = %d (%v), want 2 (both pre-created for limit r)", n, err)
	}
}

func TestGlobMatchesPathMatch(t *testing.T) {
	patterns := []string{"gpt-4o*", "gpt-4o", "o1", "*", "", "a/*", "llama-*-8b", "gpt-?", "[ab]*", `x\*`, "qwen*"}
	models := []string{"gpt-4o", "gpt-4o-mini", "gpt-4o/x", "o1", "o1-mini", "", "a/b", "a/b/c", "llama-3-8b",
		"gpt-4", "apple", "banana", "x*", "xy", "qwen", "qwen2.5", "Qwen"}
	for _, p := range patterns {
		g := newGlob(p)
		for _, m := range models {
			want, _ := path.Match(p, m)
			if got := g.match(m); got != want {
				t.Errorf("glob %q (kind %d) match %q = %v, want %v (path.Match)", p, g.kind, m, got, want)
			}
		}
	}
}

// urgentRecorder is a map store that also records which adds were sent at once.
type urgentRecorder struct {
	*mapStore
	now, later int
}

func (u *urgentRecorder) AddNow(limit, user string, start, size, delta int64) {
	u.now++
	u.mapStore.Add(limit, user, start, size, delta)
}

func (u *urgentRecorder) Add(limit, user string, start, size, delta int64) {
	u.later++
	u.mapStore.Add(limit, user, start, size, delta)
}

func TestUrgentChangesNearTheLimit(t *testing.T) {
	for _, tt := range []struct {
		name      string
		fraction  float64
		wantLater int // admissions (and settlements) batched before usage reaches the fraction
	}{
		{"default: every change at once", 0, 0},
		{"half: batched below 50 of 100", 0.5, 2 * 4},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st := &urgentRecorder{mapStore: newMapStore()}
			clk := newClock(t0 + 1)
			l := newTest(t, policy(Limit{Name: "p", Metric: MetricPromptTokens, Limit: 100, Window: time.Hour}), st,
				Options{Now: clk.Now, UrgentFraction: tt.fraction})
			for i := 0; i < 8; i++ { // 8 requests of 10, each settled to 12
				r, err := l.Admit("u", "m", est(10, nil))
				if err != nil {
					t.Fatalf("admit %d: %v", i, err)
				}
				r.Settle(Usage{PromptTokens: 12})
			}
			if st.later != tt.wantLater || st.now != 16-tt.wantLater {
				t.Errorf("got %d batched and %d at once, want %d and %d", st.later, st.now, tt.wantLater, 16-tt.wantLater)
			}
		})
	}
}
