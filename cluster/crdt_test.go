package cluster

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// canon returns c's slots sorted, for comparing counters.
func canon(c PNCounter) string {
	s := c.AppendSlots(nil)
	slices.SortFunc(s, func(a, b Slot) int { return cmp.Compare(a.Replica, b.Replica) })
	var b strings.Builder
	for _, sl := range s {
		fmt.Fprintf(&b, "%d:%d/%d ", sl.Replica, sl.P, sl.N)
	}
	return b.String()
}

func merged(cs ...PNCounter) PNCounter {
	var out PNCounter
	for _, c := range cs {
		out.Merge(c)
	}
	return out
}

func randomCounter(r *rand.Rand) PNCounter {
	var c PNCounter
	for range r.IntN(6) {
		c.Add(uint32(1+r.IntN(4)), r.Int64N(200)-100)
	}
	return c
}

func TestPNCounterAddValue(t *testing.T) {
	tests := []struct {
		name   string
		deltas []int64
		want   int64
	}{
		{"empty", nil, 0},
		{"increments", []int64{5, 7}, 12},
		{"settle down", []int64{100, -60}, 40},
		{"settle up", []int64{100, 25}, 125},
		{"below zero", []int64{3, -10}, -7},
		{"min int64", []int64{math.MinInt64, math.MaxInt64}, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var c PNCounter
			for _, d := range tt.deltas {
				c.Add(1, d)
			}
			if got := c.Value(); got != tt.want {
				t.Errorf("Value() = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestPNCounterMergeLaws(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		a, b, c := randomCounter(r), randomCounter(r), randomCounter(r)
		if got, want := canon(merged(a, b)), canon(merged(b, a)); got != want {
			t.Fatalf("#%d commutativity: a+b = %s, b+a = %s", i, got, want)
		}
		ab := merged(a, b)
		bc := merged(b, c)
		if got, want := canon(merged(ab, c)), canon(merged(a, bc)); got != want {
			t.Fatalf("#%d associativity: (a+b)+c = %s, a+(b+c) = %s", i, got, want)
		}
		aa := a.Clone()
		aa.Merge(a)
		if got, want := canon(aa), canon(a); got != want {
			t.Fatalf("#%d idempotence: a+a = %s, a = %s", i, got, want)
		}
	}
}

// TestPNCounterGossipSimulation has replicas add (and settle down) in their
// own slots and exchange slot values with random loss, duplication and
// reordering; after a final full exchange every replica holds the exact total.
func TestPNCounterGossipSimulation(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 7))
		const replicas = 5
		cs := make([]PNCounter, replicas)
		var want int64
		type msg struct {
			to int
			s  Slot
		}
		var inflight []msg
		for range 300 {
			i := r.IntN(replicas)
			d := r.Int64N(1000) - 300
			cs[i].Add(uint32(i+1), d)
			want += d
			s := cs[i].Get(uint32(i + 1))
			for to := range replicas {
				for range r.IntN(3) { // 0 = lost, 2 = duplicated
					inflight = append(inflight, msg{to, s})
				}
			}
			r.Shuffle(len(inflight), func(a, b int) { inflight[a], inflight[b] = inflight[b], inflight[a] })
			for k := r.IntN(len(inflight) + 1); k > 0; k-- { // deliver some, in random order
				m := inflight[len(inflight)-1]
				inflight = inflight[:len(inflight)-1]
				cs[m.to].MergeSlot(m.s)
			}
		}
		for _, m := range inflight {
			cs[m.to].MergeSlot(m.s)
		}
		all := merged(cs...) // anti-entropy
		for i := range cs {
			cs[i].Merge(all)
			if got := cs[i].Value(); got != want {
				t.Fatalf("seed %d replica %d: Value() = %d, want %d", seed, i, got, want)
			}
		}
	}
}

// FuzzPNCounterMerge checks the merge laws on counters built from fuzz bytes.
func FuzzPNCounterMerge(f *testing.F) {
	f.Add([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte{0xff, 0x80, 0x01, 0x7f, 0x00, 0x10})
	f.Fuzz(func(t *testing.T, data []byte) {
		var cs [3]PNCounter
		for i := 0; i+2 < len(data); i += 3 {
			cs[data[i]%3].Add(uint32(1+data[i+1]%4), int64(int8(data[i+2])))
		}
		a, b, c := cs[0], cs[1], cs[2]
		if canon(merged(a, b)) != canon(merged(b, a)) {
			t.Fatal("merge is not commutative")
		}
		if canon(merged(merged(a, b), c)) != canon(merged(a, merged(b, c))) {
			t.Fatal("merge is not associative")
		}
		if canon(merged(a, a)) != canon(a) {
			t.Fatal("merge is not idempotent")
		}
	})
}

// TestPNCounterWriters: slots of many writers, each found again, the first
// kept inline.
func TestPNCounterWriters(t *testing.T) {
	var c PNCounter
	for w := range uint32(32) {
		before, after := c.Add(w+1, int64(w+1))
		if !before.zero() || after.P != uint64(w+1) {
			t.Fatalf("Add(%d): before %+v after %+v, want a new slot of %d", w+1, before, after, w+1)
		}
	}
	if got := c.Writers(); got != 32 {
		t.Errorf("Writers() = %d, want 32", got)
	}
	for w := range uint32(32) {
		if got := c.Get(w + 1).P; got != uint64(w+1) {
			t.Errorf("Get(%d).P = %d, want %d", w+1, got, w+1)
		}
	}
	if got := c.Value(); got != 32*33/2 {
		t.Errorf("Value() = %d, want %d", got, 32*33/2)
	}
	if before, changed := c.MergeSlot(Slot{P: 1, Replica: 5}); changed || before.P != 5 {
		t.Errorf("MergeSlot of an older value: before %+v changed %v, want 5 and false", before, changed)
	}
	d := c.Clone()
	d.Add(7, 100)
	if c.Get(7).P != 7 {
		t.Errorf("Clone shares slots: original slot 7 = %d, want 7", c.Get(7).P)
	}
}
