package cluster

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"
)

// fillSpread puts keys keys in s, each written by one of writers replicas
// (one slot per key): random 16-hex-digit users, three limits, two windows.
// The windows are an hour long and outlive the benchmark: minute windows
// expired under a run that crossed a minute's end, and the members then
// dropped the keys they were still to hold.
func fillSpread(s *Store, keys, writers int) {
	r := rand.New(rand.NewPCG(5, 6))
	const hour = 60 * minute
	now := s.nowMs()
	w := now / hour * hour
	if w+hour-now < 10*minute { // the previous hour would expire within the run
		w += hour
	}
	limits := []string{"prompt-hourly", "total-hourly", "req-hourly"}
	ds := make([]slotDelta, 0, 1<<16)
	for k := range keys {
		ds = append(ds, slotDelta{limits[k%3], fmt.Sprintf("%016x", r.Uint64()), w - int64(k%2)*hour, hour,
			fmt.Sprintf("gateway-%d/%08x", k%writers, k%writers*7919), 1 + r.Uint64N(100_000), r.Uint64N(5_000)})
		if len(ds) == cap(ds) {
			s.merge(ds, now)
			ds = ds[:0]
		}
	}
	s.merge(ds, now)
}

// BenchmarkJoinMillion: a replica joins a 3-node cluster whose members hold
// 1,000,000 live keys (goal: all of them within 10 s). One b.N is one join;
// join-s is the time from Start to Ready with every key held.
func BenchmarkJoinMillion(b *testing.B) {
	const keys = 1_000_000
	nodes := startCluster(b, 3, func(i int, c *Config) {
		c.NodeName = fmt.Sprintf("jm%d", i)
		c.GossipInterval = 100 * time.Millisecond
		c.PushPullInterval = 5 * time.Second
	})
	// The first member holds the keys; the others learn them by
	// anti-entropy, as a cluster that has been serving would have.
	fillSpread(nodes[0].Store(), keys, 3)
	waitFor(b, 2*time.Minute, "every member holds every key", func() bool {
		return nodes[1].Store().Len() == keys && nodes[2].Store().Len() == keys
	})
	var secs, recv []float64
	for i := 0; b.Loop(); i++ {
		cfg := testConfig(fmt.Sprintf("jm-joiner-%d", i))
		cfg.Join = []string{nodes[i%3].addr()}
		cfg.GossipInterval = 100 * time.Millisecond
		cfg.PushPullInterval = 5 * time.Second
		start := time.Now()
		j := startNode(b, cfg)
		waitFor(b, 60*time.Second, "the joiner holds every key", func() bool { return j.Ready() && j.Store().Len() == keys })
		secs = append(secs, time.Since(start).Seconds())
		recv = append(recv, receivedBytes(b, j.reg))
	}
	b.ReportMetric(median(secs), "join-s")
	b.ReportMetric(median(recv)/keys, "recv-B/key")
	b.ReportMetric(0, "ns/op")
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := range s {
		for j := i + 1; j < len(s); j++ {
			if s[j] < s[i] {
				s[i], s[j] = s[j], s[i]
			}
		}
	}
	return s[len(s)/2]
}
