package cluster

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a settable clock for tests. Safe for concurrent use.
type fakeClock struct{ ms atomic.Int64 }

func newFakeClock(ms int64) *fakeClock {
	c := &fakeClock{}
	c.ms.Store(ms)
	return c
}

func (c *fakeClock) Now() time.Time          { return time.UnixMilli(c.ms.Load()) }
func (c *fakeClock) advance(d time.Duration) { c.ms.Add(d.Milliseconds()) }

const (
	minute = int64(60_000)
	t0     = int64(1_700_000_040_000) // a whole minute
)

func TestStoreAddSum(t *testing.T) {
	s := NewStore("a/1", newFakeClock(t0).Now)
	s.Add("l", "alice", t0, minute, 100)
	s.Add("l", "alice", t0, minute, -30) // settlement below the reservation
	s.Add("l", "bob", t0, minute, 7)
	s.Add("l", "alice", t0-minute, minute, 1)
	tests := []struct {
		limit, user string
		start       int64
		want        int64
	}{
		{"l", "alice", t0, 70},
		{"l", "bob", t0, 7},
		{"l", "alice", t0 - minute, 1},
		{"l", "carol", t0, 0},
		{"other", "alice", t0, 0},
	}
	for _, tt := range tests {
		if got := s.Sum(tt.limit, tt.user, tt.start, minute); got != tt.want {
			t.Errorf("Sum(%s, %s, %d) = %d, want %d", tt.limit, tt.user, tt.start, got, tt.want)
		}
	}
	if got := s.Len(); got != 3 {
		t.Errorf("Len() = %d, want 3", got)
	}
}

func TestStoreMergeAndDirty(t *testing.T) {
	clk := newFakeClock(t0)
	a, b := NewStore("a/1", clk.Now), NewStore("b/1", clk.Now)
	a.track, b.track = true, true
	a.Add("l", "u", t0, minute, 10)
	a.Add("l", "u", t0, minute, 5)
	a.Add("l", "v", t0, minute, -2)
	ds := a.takeDirty(nil)
	if len(ds) != 2 {
		t.Fatalf("takeDirty: got %d deltas, want 2 (one per changed slot)", len(ds))
	}
	if again := a.takeDirty(nil); len(again) != 0 {
		t.Errorf("second takeDirty: got %d deltas, want 0", len(again))
	}
	b.Add("l", "u", t0, minute, 1)
	applied, refused := b.merge(append([]slotDelta(nil), ds...), clk.ms.Load())
	if len(applied) != 2 || refused != 0 {
		t.Errorf("merge: applied %d refused %d, want 2 and 0", len(applied), refused)
	}
	applied, _ = b.merge(append([]slotDelta(nil), ds...), clk.ms.Load())
	if len(applied) != 0 {
		t.Errorf("merge again: applied %d, want 0 (idempotent)", len(applied))
	}
	if got := b.Sum("l", "u", t0, minute); got != 16 {
		t.Errorf("b Sum(u) = %d, want 16", got)
	}
	if got := b.Sum("l", "v", t0, minute); got != -2 {
		t.Errorf("b Sum(v) = %d, want -2", got)
	}
	if got := b.takeDirty(nil); len(got) != 1 || got[0].Replica != "b/1" {
		t.Errorf("b takeDirty = %+v, want only its own slot", got)
	}
}

func TestStoreExpiryAndNoResurrection(t *testing.T) {
	clk := newFakeClock(t0 + 10)
	s := NewStore("a/1", clk.Now)
	s.track = true
	s.Add("l", "u", t0-minute, minute, 5) // previous window: still needed
	s.Add("l", "u", t0, minute, 3)
	late := slotDelta{"l", "u", t0 - minute, minute, "b/1", 9, 0}

	clk.advance(time.Duration(minute) * time.Millisecond) // previous window now expired
	if got := s.sweep(); got != 1 {
		t.Fatalf("sweep dropped %d keys, want 1", got)
	}
	if got := s.Sum("l", "u", t0-minute, minute); got != 0 {
		t.Errorf("Sum(expired) = %d, want 0", got)
	}
	if _, refused := s.merge([]slotDelta{late}, s.nowMs()); refused != 1 {
		t.Errorf("late delta for a dropped window: refused %d, want 1", refused)
	}
	s.Add("l", "u", t0-minute, minute, 1) // late local settlement: ignored too
	if got := s.Sum("l", "u", t0-minute, minute); got != 0 {
		t.Errorf("Sum(expired) after late writes = %d, want 0 (resurrected)", got)
	}
	if got := s.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1", got)
	}
	for _, d := range s.takeDirty(nil) {
		if d.Start != t0 {
			t.Errorf("takeDirty returned a dropped key: %+v", d)
		}
	}
	clk.ms.Store(t0) // clock jumps back: expiry does not
	if _, refused := s.merge([]slotDelta{late}, s.nowMs()); refused != 1 {
		t.Errorf("late delta after clock jump back: refused %d, want 1", refused)
	}
}

func TestAcceptable(t *testing.T) {
	now := t0 + 30_000
	tests := []struct {
		name        string
		start, size int64
		want        bool
	}{
		{"current", t0, minute, true},
		{"previous", t0 - minute, minute, true},
		{"two back", t0 - 2*minute, minute, false},
		{"next window (skewed peer)", t0 + minute, minute, true},
		{"far future", t0 + 10*minute, minute, false},
		{"zero size", t0, 0, false},
		{"negative start", -minute, minute, false},
		{"huge size", t0, 1 << 62, false},
	}
	for _, tt := range tests {
		if got := acceptable(tt.start, tt.size, now); got != tt.want {
			t.Errorf("%s: acceptable(%d, %d) = %v, want %v", tt.name, tt.start, tt.size, got, tt.want)
		}
	}
}

func TestStoreAloneSweepsItself(t *testing.T) {
	clk := newFakeClock(t0)
	s := NewStore("a/1", clk.Now)
	for i := range 100 {
		s.Add("l", fmt.Sprint(i), t0, minute, 1)
	}
	clk.advance(time.Hour)
	s.Add("l", "new", clk.ms.Load(), minute, 1) // a new key triggers the periodic sweep
	if got := s.Len(); got != 1 {
		t.Errorf("Len() = %d, want 1 after the sweep", got)
	}
}

func TestStoreConcurrent(t *testing.T) {
	s := NewStore("a/1", newFakeClock(t0).Now)
	s.track = true
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				s.Add("l", fmt.Sprint(i%10), t0, minute, 2)
				s.Add("l", fmt.Sprint(i%10), t0, minute, -1)
				_ = s.Sum("l", fmt.Sprint(g), t0, minute)
				if i%100 == 0 {
					s.takeDirty(nil)
				}
			}
		})
	}
	wg.Wait()
	for u := range 10 {
		if got := s.Sum("l", fmt.Sprint(u), t0, minute); got != 800 {
			t.Errorf("Sum(%d) = %d, want 800", u, got)
		}
	}
}

func TestStoreAddSumNoAlloc(t *testing.T) {
	s := NewStore("a/1", newFakeClock(t0).Now)
	s.track = true
	s.Add("total-minute", "alice", t0, minute, 1)
	allocs := testing.AllocsPerRun(1000, func() {
		s.Add("total-minute", "alice", t0, minute, 10)
		_ = s.Sum("total-minute", "alice", t0, minute)
	})
	if allocs != 0 {
		t.Errorf("Add+Sum on an existing key: %v allocs, want 0", allocs)
	}
}
