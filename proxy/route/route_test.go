package route

import (
	"math"
	"sync"
	"testing"
	"time"
)

// clock is a settable clock for exact cool-downs.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTable builds a table over nodes that all serve every model, and
// returns it with its nodes and clock.
func newTable(cfg Config, nodes ...*Node) (*Table, *clock) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	cfg.Now = c.now
	members := make([]Member, len(nodes))
	for i, n := range nodes {
		members[i] = Member{Node: n}
	}
	return NewTable(cfg, members), c
}

// pickOK picks and fails the test when nothing can be picked.
func pickOK(t *testing.T, p *Pool, tried uint64) Slot {
	t.Helper()
	s, ok := p.Pick(tried)
	if !ok {
		t.Fatalf("Pick(%b): got nothing, want a member", tried)
	}
	return s
}

func TestWeightedSpread(t *testing.T) {
	weights := []int{5, 3, 1, 1}
	var nodes []*Node
	for i, w := range weights {
		nodes = append(nodes, NewNode(string(rune('a'+i)), w, 0))
	}
	tab, _ := newTable(Config{Strategy: Weighted}, nodes...)
	p := tab.Pool("gpt-4o")
	const picks = 10000
	got := make([]int, len(weights))
	for range picks {
		s := pickOK(t, p, 0)
		got[s.Index]++
		tab.Report(s, OK, 0)
		tab.Release(s)
	}
	for i, w := range weights {
		want := float64(picks) * float64(w) / 10
		if math.Abs(float64(got[i])-want) > 0.05*want {
			t.Errorf("member %d (weight %d): got %d picks, want %.0f ± 5%%", i, w, got[i], want)
		}
	}
	// Smooth: the heaviest never takes more than its share in a row.
	tab2, _ := newTable(Config{Strategy: Weighted}, NewNode("a", 5, 0), NewNode("b", 1, 0), NewNode("c", 1, 0))
	p2 := tab2.Pool("m")
	var seq []int
	for range 7 {
		s := pickOK(t, p2, 0)
		seq = append(seq, s.Index)
		tab2.Release(s)
	}
	want := []int{0, 0, 1, 0, 2, 0, 0} // nginx's sequence for 5, 1, 1
	for i := range want {
		if seq[i] != want[i] {
			t.Fatalf("smooth weighted order: got %v, want %v", seq, want)
		}
	}
}

func TestPriorityAndCooldown(t *testing.T) {
	a, b := NewNode("a", 1, 0), NewNode("b", 1, 0)
	tab, clk := newTable(Config{Strategy: Priority, Cooldown: 30 * time.Second}, a, b)
	p := tab.Pool("m")
	use := func(want int, o Outcome, ra time.Duration) {
		t.Helper()
		s := pickOK(t, p, 0)
		if s.Index != want {
			t.Fatalf("got member %d, want %d", s.Index, want)
		}
		tab.Report(s, o, ra)
		tab.Release(s)
	}
	use(0, OK, 0)
	// Failures below the threshold keep a.
	for range FailuresToCool - 1 {
		use(0, Status500, 0)
	}
	use(0, OK, 0) // a success resets the count
	for range FailuresToCool {
		use(0, Connect, 0)
	}
	if !a.Cooling() {
		t.Fatal("a after failures in a row: got healthy, want cooling")
	}
	use(1, OK, 0)
	clk.add(29 * time.Second)
	use(1, OK, 0)
	clk.add(time.Second)
	// Half-open: one probe at a time goes to a; others to b meanwhile.
	probe := pickOK(t, p, 0)
	if probe.Index != 0 {
		t.Fatalf("after the cool-down: got member %d, want the probe to a", probe.Index)
	}
	other := pickOK(t, p, 0)
	if other.Index != 1 {
		t.Fatalf("while a probe is in flight: got member %d, want b", other.Index)
	}
	tab.Release(other)
	tab.Report(probe, Status503, 0) // the probe fails: cooling again at once
	tab.Release(probe)
	if !a.Cooling() {
		t.Fatal("a after a failed probe: got healthy, want cooling")
	}
	use(1, OK, 0)
	clk.add(30 * time.Second)
	use(0, OK, 0) // the probe succeeds
	if a.Cooling() {
		t.Fatal("a after a good probe: got cooling, want healthy")
	}
	use(0, OK, 0)

	// A 429 cools at once, for its Retry-After when longer, bounded.
	use(0, Status429, 90*time.Second)
	clk.add(60 * time.Second)
	use(1, OK, 0)
	clk.add(30 * time.Second)
	use(0, OK, 0)
	use(0, Status429, time.Hour*24)
	clk.add(MaxCooldown)
	use(0, OK, 0)
	use(0, Status429, 0) // no Retry-After: the cool-down
	clk.add(30 * time.Second)
	use(0, OK, 0)
	if got := a.Attempts(Status429); got != 3 {
		t.Errorf("a's 429 attempts: got %d, want 3", got)
	}
}

func TestAllCoolingStillServes(t *testing.T) {
	a, b, c := NewNode("a", 1, 0), NewNode("b", 1, 0), NewNode("c", 1, 0)
	tab, clk := newTable(Config{Strategy: Priority, Cooldown: 30 * time.Second}, a, b, c)
	p := tab.Pool("m")
	for i, ra := range []time.Duration{50 * time.Second, 40 * time.Second, 45 * time.Second} {
		s := pickOK(t, p, 0)
		if s.Index != i {
			t.Fatalf("got member %d, want %d", s.Index, i)
		}
		tab.Report(s, Status429, ra)
		tab.Release(s)
	}
	clk.add(time.Second)
	// All cooling: the one whose cool-down ends first (b), then c, then a.
	var order []int
	var tried uint64
	for range 3 {
		s := pickOK(t, p, tried)
		order = append(order, s.Index)
		tried |= 1 << s.Pos
		tab.Release(s)
	}
	if order[0] != 1 || order[1] != 2 || order[2] != 0 {
		t.Errorf("all cooling: got order %v, want [1 2 0]", order)
	}
	if _, ok := p.Pick(tried); ok {
		t.Error("every member tried: got a pick, want none")
	}
}

func TestMaxInFlight(t *testing.T) {
	a, b := NewNode("a", 1, 2), NewNode("b", 1, 1)
	tab, _ := newTable(Config{Strategy: Priority}, a, b)
	p := tab.Pool("m")
	var held []Slot
	for _, want := range []int{0, 0, 1} {
		s := pickOK(t, p, 0)
		if s.Index != want {
			t.Fatalf("got member %d, want %d", s.Index, want)
		}
		held = append(held, s)
	}
	if _, ok := p.Pick(0); ok {
		t.Fatal("every member full: got a pick, want none")
	}
	tab.Release(held[0])
	if s := pickOK(t, p, 0); s.Index != 0 {
		t.Fatalf("after a release: got member %d, want 0", s.Index)
	}
	// A full member is skipped even when the others are cooling.
	b2 := NewNode("b", 1, 0)
	tab2, _ := newTable(Config{Strategy: Priority}, NewNode("a", 1, 1), b2)
	p2 := tab2.Pool("m")
	s := pickOK(t, p2, 0)
	tab2.Report(pickOK(t, p2, 1), Status429, 0)
	if got := pickOK(t, p2, 0); got.Index != 1 || !b2.Cooling() {
		t.Fatalf("a full, b cooling: got member %d (b cooling %v), want b", got.Index, b2.Cooling())
	}
	tab2.Release(s)
}

func TestLeastBusy(t *testing.T) {
	a, b, c := NewNode("a", 1, 0), NewNode("b", 1, 0), NewNode("c", 1, 0)
	tab, _ := newTable(Config{Strategy: LeastBusy}, a, b, c)
	p := tab.Pool("m")
	// Idle: file order; then the least loaded.
	var held []Slot
	for _, want := range []int{0, 1, 2, 0, 1} {
		s := pickOK(t, p, 0)
		if s.Index != want {
			t.Fatalf("got member %d, want %d (in flight %d %d %d)", s.Index, want, a.InFlight(), b.InFlight(), c.InFlight())
		}
		held = append(held, s)
	}
	tab.Release(held[0])
	tab.Release(held[3]) // a is idle again
	if s := pickOK(t, p, 0); s.Index != 0 {
		t.Fatalf("got member %d, want a (idle)", s.Index)
	}
}

func TestPoolsByModel(t *testing.T) {
	tab := NewTable(Config{}, []Member{
		{Node: NewNode("a", 1, 0), Models: []string{"gpt-4o*"}},
		{Node: NewNode("b", 1, 0), Models: []string{"claude-*"}},
		{Node: NewNode("c", 1, 0), Models: []string{"gpt-*"}},
	})
	p := tab.Pool("gpt-4o-mini")
	if p.Len() != 2 || p.Index(0) != 0 || p.Index(1) != 2 {
		t.Fatalf("pool of gpt-4o-mini: got %v, want members 0 and 2", p.idx)
	}
	if tab.Pool("gpt-4o-mini") != p || tab.Pool("gpt-4o") != p {
		t.Error("pools of one member set: got distinct pools, want one shared")
	}
	if tab.Pool("llama") != nil {
		t.Error("a model nobody serves: got a pool, want nil")
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		ms, secs string
		want     time.Duration
	}{
		{"", "", 0},
		{"", "7", 7 * time.Second},
		{"1500", "2", 1500 * time.Millisecond},
		{"", " 3 ", 3 * time.Second},
		{"", "99999999999999999999", 0}, // too long to be a number we read
		{"", "9999999", MaxCooldown},
		{"", "-5", 0},
		{"", "1.5", 0},
		{"abc", "4", 4 * time.Second},
		{"", now.Add(40 * time.Second).Format(time.RFC1123), 40 * time.Second},
		{"", now.Add(-time.Hour).Format(time.RFC1123), 0},
		{"", now.Add(48 * time.Hour).Format(time.RFC1123), MaxCooldown},
	}
	for _, tt := range tests {
		if got := RetryAfter([]byte(tt.ms), []byte(tt.secs), now); got != tt.want {
			t.Errorf("RetryAfter(%q, %q): got %s, want %s", tt.ms, tt.secs, got, tt.want)
		}
	}
}

func TestRetryOn(t *testing.T) {
	s, err := ParseRetryOn(DefaultRetryOn)
	if err != nil {
		t.Fatal(err)
	}
	for o := range NumOutcomes {
		want := o != OK && o != Status5xx && o != Broken
		if s.Has(o) != want {
			t.Errorf("default retry_on has %s: got %v, want %v", o, s.Has(o), want)
		}
	}
	if s, _ := ParseRetryOn([]string{"5xx"}); !s.Has(Status5xx) || !s.Has(Status503) || s.Has(Status429) {
		t.Errorf("5xx: got %b", s)
	}
	if _, err := ParseRetryOn([]string{"418"}); err == nil {
		t.Error("418: got no error, want one")
	}
	tab := NewTable(Config{Retries: 2, RetryOn: s}, nil)
	if !tab.Retryable(Status503, 2) || tab.Retryable(Status503, 3) || tab.Retryable(Broken, 1) {
		t.Error("Retryable: got the wrong answer for 2 retries")
	}
}

func TestConcurrentPicks(t *testing.T) {
	for _, st := range []Strategy{Priority, Weighted, LeastBusy} {
		a, b := NewNode("a", 2, 3), NewNode("b", 1, 3)
		tab, _ := newTable(Config{Strategy: st}, a, b)
		p := tab.Pool("m")
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 500 {
					if s, ok := p.Pick(0); ok {
						if n := tab.members[s.Index].Node.InFlight(); n > 3 {
							t.Errorf("%s: in flight %d over max_in_flight 3", st, n)
						}
						tab.Report(s, OK, 0)
						tab.Release(s)
					}
				}
			})
		}
		wg.Wait()
		if a.InFlight() != 0 || b.InFlight() != 0 {
			t.Errorf("%s: in flight after all released: got %d, %d, want 0", st, a.InFlight(), b.InFlight())
		}
	}
}

// BenchmarkPick is the routing decision alone: pick, report, release, for
// one member and for three under each strategy.
func BenchmarkPick(b *testing.B) {
	for _, bc := range []struct {
		name string
		st   Strategy
		n    int
	}{{"one", Priority, 1}, {"three/priority", Priority, 3}, {"three/weighted", Weighted, 3}, {"three/least_busy", LeastBusy, 3}} {
		b.Run(bc.name, func(b *testing.B) {
			var nodes []*Node
			for i := range bc.n {
				nodes = append(nodes, NewNode(string(rune('a'+i)), i+1, 0))
			}
			tab, _ := newTable(Config{Strategy: bc.st}, nodes...)
			b.ReportAllocs()
			for b.Loop() {
				p := tab.Pool("gpt-4o")
				s, _ := p.Pick(0)
				tab.Report(s, OK, 0)
				tab.Release(s)
			}
		})
	}
}

// FuzzRetryAfter: whatever an upstream sends as retry-after-ms and
// Retry-After, the cool-down read from them is within [0, MaxCooldown].
func FuzzRetryAfter(f *testing.F) {
	for _, s := range [][2]string{{"", "7"}, {"1500", ""}, {"", "Wed, 21 Oct 2015 07:28:00 GMT"}, {"-1", "1e9"}, {"99999999999", "9999999"}} {
		f.Add(s[0], s[1])
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ms, secs string) {
		if d := RetryAfter([]byte(ms), []byte(secs), now); d < 0 || d > MaxCooldown {
			t.Errorf("RetryAfter(%q, %q): got %s, want within [0, %s]", ms, secs, d, MaxCooldown)
		}
	})
}
