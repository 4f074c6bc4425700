package cluster

import (
	"fmt"
	"testing"
	"time"
)

// TestAntiEntropyHealsManyKeys: during a partition each side writes
// thousands of keys (deltas to the other side are lost); after it heals,
// push/pull digests and pulls in many small chunks bring every node to the
// exact same totals on every key.
func TestAntiEntropyHealsManyKeys(t *testing.T) {
	t.Parallel()
	nw := newNetwork()
	nodes := startCluster(t, 3, func(i int, c *Config) {
		c.NodeName = fmt.Sprintf("ae%d", i)
		c.Transport = nw.newTransport(t, c.NodeName)
		c.chunkRaw = 4 << 10 // a hundred slots a chunk
	})
	w := window()
	nw.partition([]string{"ae0", "ae1"}, []string{"ae2"})
	waitFor(t, waitLong, "each side declares the other dead", func() bool {
		return nodes[0].LiveReplicas() == 2 && nodes[2].LiveReplicas() == 1
	})
	const keys = 3000
	for u := range keys {
		nodes[u%3].Store().Add("l", fmt.Sprintf("user-%d", u), w, minute, int64(u+1))
		nodes[(u+1)%3].Store().Add("l", fmt.Sprintf("user-%d", u), w, minute, 1)
	}
	nw.heal()
	waitFor(t, waitLong, "every key everywhere with its exact total", func() bool {
		for _, n := range nodes {
			if n.Store().Len() != keys {
				return false
			}
		}
		for u := range keys {
			if !allEqual(sums(nodes, "l", fmt.Sprintf("user-%d", u), w, minute), int64(u+2)) {
				return false
			}
		}
		return true
	})
	ds := [3][]bucketDigest{}
	for i, n := range nodes {
		ds[i] = make([]bucketDigest, numBuckets)
		n.Store().digests(ds[i])
	}
	for b := range numBuckets {
		if ds[0][b] != ds[1][b] || ds[0][b] != ds[2][b] {
			t.Fatalf("bucket %d digests differ after convergence: %+v %+v %+v", b, ds[0][b], ds[1][b], ds[2][b])
		}
	}
}

// TestDigestsFollowSlots: a bucket's digest depends only on the slots it
// holds, not on the order they were learnt in, and expiry takes a key's
// slots out of it.
func TestDigestsFollowSlots(t *testing.T) {
	clk := newFakeClock(t0)
	a, b := NewStore("a/1", clk.Now), NewStore("b/1", clk.Now)
	ds := []slotDelta{
		{"l", "u", t0, minute, "x/1", 5, 1},
		{"l", "u", t0, minute, "y/1", 7, 0},
		{"l", "v", t0 - minute, minute, "x/1", 2, 0},
		{"m", "u", t0, 2 * minute, "z/1", 9, 9},
	}
	for i := range ds {
		a.merge([]slotDelta{ds[i]}, t0)
		b.merge([]slotDelta{ds[len(ds)-1-i]}, t0)
	}
	a.merge([]slotDelta{{"l", "u", t0, minute, "x/1", 3, 0}}, t0) // older: no change
	da, db := make([]bucketDigest, numBuckets), make([]bucketDigest, numBuckets)
	a.digests(da)
	b.digests(db)
	slots := 0
	for i := range da {
		if da[i] != db[i] {
			t.Fatalf("bucket %d: %+v vs %+v for the same slots", i, da[i], db[i])
		}
		slots += int(da[i].count)
	}
	if slots != len(ds) {
		t.Errorf("slots counted in digests = %d, want %d", slots, len(ds))
	}
	b.merge([]slotDelta{{"l", "u", t0, minute, "x/1", 6, 1}}, t0)
	b.digests(db)
	differ := 0
	for i := range da {
		if da[i] != db[i] {
			differ++
		}
	}
	if differ != 1 {
		t.Errorf("one slot grew: %d buckets differ, want 1", differ)
	}
	clk.advance(90 * time.Second) // the window of t0-minute expires
	if got := a.sweep(); got != 1 {
		t.Fatalf("sweep dropped %d, want 1", got)
	}
	a.digests(da)
	slots = 0
	for _, d := range da {
		slots += int(d.count)
	}
	if slots != len(ds)-1 {
		t.Errorf("slots in digests after expiry = %d, want %d", slots, len(ds)-1)
	}
}

// TestNameTablesCompact: names no key uses any more are forgotten once the
// tables pass their soft caps, and keys created afterwards work.
func TestNameTablesCompact(t *testing.T) {
	clk := newFakeClock(t0)
	s := NewStore("a/1", clk.Now)
	for i := range replicaSoftCap + 10 {
		s.merge([]slotDelta{{fmt.Sprintf("limit-%d", i), "u", t0, minute, fmt.Sprintf("r/%d", i), 1, 0}}, t0)
	}
	s.Add("keep", "u", t0+2*minute, minute, 4)
	clk.advance(2 * time.Minute)
	s.sweep()
	if got := s.series.len(); got != 1 {
		t.Errorf("series after compaction = %d, want 1", got)
	}
	if got := s.replicas.len(); got != 1 {
		t.Errorf("replicas after compaction = %d, want 1 (our own)", got)
	}
	s.merge([]slotDelta{{"limit-3", "u", t0 + 2*minute, minute, "r/3", 6, 0}}, clk.ms.Load())
	if got := s.Sum("limit-3", "u", t0+2*minute, minute); got != 6 {
		t.Errorf("Sum of a key with a name forgotten and learnt again = %d, want 6", got)
	}
	if got := s.Sum("keep", "u", t0+2*minute, minute); got != 4 {
		t.Errorf("Sum of a kept key = %d, want 4", got)
	}
}

// TestJoinerReadyAfterEveryChunk: a joiner turns Ready only once every
// chunk of its seed's answer is merged, however many chunks it takes.
func TestJoinerReadyAfterEveryChunk(t *testing.T) {
	t.Parallel()
	seed := startNode(t, func() Config {
		c := testConfig("chunks-seed")
		c.chunkRaw = 2 << 10 // about fifty slots a chunk
		return c
	}())
	w := window()
	const keys = 2000
	for u := range keys {
		seed.Store().Add("l", fmt.Sprintf("user-%d", u), w, minute, int64(u+1))
	}
	cfg := testConfig("chunks-joiner")
	cfg.Join = []string{seed.addr()}
	cfg.PushPullInterval = 30 * time.Second
	j := startNode(t, cfg)
	waitFor(t, waitLong, "joiner ready", j.Ready)
	if got := j.Store().Len(); got != keys {
		t.Fatalf("joiner keys at Ready = %d, want %d", got, keys)
	}
	if got := j.Store().Sum("l", "user-1999", w, minute); got != keys {
		t.Errorf("joiner Sum at Ready = %d, want %d", got, keys)
	}
}
