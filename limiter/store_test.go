package limiter

import (
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// key is a counter key of the test stores.
type key struct {
	limit, user string
	start, size int64
}

// mapStore is a one-replica Store.
type mapStore struct {
	mu   sync.Mutex
	m    map[key]int64
	adds int // number of Add calls
}

func newMapStore() *mapStore { return &mapStore{m: map[key]int64{}} }

func (s *mapStore) Add(limit, user string, start, size, delta int64) {
	s.mu.Lock()
	s.m[key{limit, user, start, size}] += delta
	s.adds++
	s.mu.Unlock()
}

func (s *mapStore) Sum(limit, user string, start, size int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[key{limit, user, start, size}]
}

func (s *mapStore) get(limit, user string, start, size int64) int64 {
	return s.Sum(limit, user, start, size)
}

// simCluster simulates replicas with delayed visibility: each replica sees its own adds at
// once and the other replicas' adds only as of the last sync, as gossip would deliver them.
type simCluster struct {
	mu    sync.Mutex
	own   []map[key]int64   // own[i]: replica i's slot
	seen  [][]map[key]int64 // seen[i][j]: replica j's slot as replica i last saw it
	total map[key]int64     // the truth
}

func newSimCluster(n int) *simCluster {
	c := &simCluster{total: map[key]int64{}}
	for i := 0; i < n; i++ {
		c.own = append(c.own, map[key]int64{})
		row := make([]map[key]int64, n)
		for j := range row {
			row[j] = map[key]int64{}
		}
		c.seen = append(c.seen, row)
	}
	return c
}

// sync delivers every replica's slot to every other replica.
func (c *simCluster) sync() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.seen {
		for j := range c.seen[i] {
			clear(c.seen[i][j])
			for k, v := range c.own[j] {
				c.seen[i][j][k] = v
			}
		}
	}
}

// replica returns replica i's view as a Store.
func (c *simCluster) replica(i int) Store { return simReplica{c, i} }

func (c *simCluster) truth(limit, user string, start, size int64) int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total[key{limit, user, start, size}]
}

type simReplica struct {
	c *simCluster
	i int
}

func (r simReplica) Add(limit, user string, start, size, delta int64) {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	k := key{limit, user, start, size}
	r.c.own[r.i][k] += delta
	r.c.total[k] += delta
}

func (r simReplica) Sum(limit, user string, start, size int64) int64 {
	r.c.mu.Lock()
	defer r.c.mu.Unlock()
	k := key{limit, user, start, size}
	sum := r.c.own[r.i][k]
	for j, m := range r.c.seen[r.i] {
		if j != r.i {
			sum += m[k]
		}
	}
	return sum
}

// fakeClock is a settable clock, safe for concurrent use.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(ms int64) *fakeClock { return &fakeClock{t: time.UnixMilli(ms)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(ms int64) {
	c.mu.Lock()
	c.t = time.UnixMilli(ms)
	c.mu.Unlock()
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newTest returns a limiter on store with clock and no metrics registry.
func newTest(t testing.TB, p Policy, store Store, opts Options) *Limiter {
	t.Helper()
	l, err := New(p, store, opts, zerolog.Nop(), nil)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

// est returns an Estimate of n tokens without a bound, so Exact always decides; calls, if not
// nil, counts the calls to Exact.
func est(n int64, calls *int) Estimate {
	return Estimate{Exact: func() int64 {
		if calls != nil {
			*calls++
		}
		return n
	}}
}

// policy returns an enabled, rejecting policy with limits.
func policy(limits ...Limit) Policy {
	return Policy{Enabled: true, MissingUser: MissingUserReject, Limits: limits}
}
