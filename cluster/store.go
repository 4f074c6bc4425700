package cluster

import (
	"hash/maphash"
	"iter"
	"sync"
	"sync/atomic"
	"time"
)

const (
	numShards = 64
	// maxWindowMs bounds a window size (a year and a day).
	maxWindowMs = 366 * 24 * 3600 * 1000
	// maxStartMs bounds a window start (far past any real clock) so start +
	// 2*size never overflows.
	maxStartMs = 1 << 50
	// maxSkewMs is how far ahead of our clock a peer's window may start and
	// still be accepted (beyond one window size).
	maxSkewMs = 60_000
	// gcEveryMs is how often Add sweeps expired keys on a store used alone.
	gcEveryMs = 10_000
)

// key names one counter: a limit, a user, a window start and a window size.
type key struct {
	limit, user string
	start, size int64
}

// entry is one counter key's PN-counter plus gossip bookkeeping, guarded by
// its shard's mutex.
type entry struct {
	k     key
	c     PNCounter
	dirty bool // own slot changed since the last takeDirty
	gone  bool // dropped by gc; may still sit in a dirty list
}

type shard struct {
	mu    sync.RWMutex
	m     map[key]*entry
	dirty []*entry
}

// Store holds the (limit, user, window) counters of this replica as
// PN-counters: this replica writes only its own slot (Add) and learns the
// others' slots by merging gossip. Windows expire two sizes after their
// start: keys are then dropped and deltas for them refused, so they never come
// back.
//
// A Store is safe for concurrent use. Add and Sum on an existing key take one
// shard lock, do not allocate and do not read the clock.
type Store struct {
	replica string
	now     func() time.Time
	seed    maphash.Seed
	track   bool // record dirty own slots for gossip; set before first use

	shards [numShards]shard
	keys   atomic.Int64
	dirty  atomic.Bool   // some own slot is dirty (cheap check before takeDirty)
	wake   chan struct{} // signalled when an own slot turns dirty (nil: nobody listens)

	internMu sync.Mutex
	intern   map[string]string // replica IDs: a handful, shared by every key
	hw       atomic.Int64      // highest clock reading seen (unix ms): time never runs back for expiry
	nextGC   atomic.Int64
}

// NewStore returns an empty store whose own slot is replicaID. now (nil =
// time.Now) decides which windows have expired. A store used alone (cluster
// disabled) sweeps expired keys itself as Add creates new ones.
func NewStore(replicaID string, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	s := &Store{replica: replicaID, now: now, seed: maphash.MakeSeed(), intern: map[string]string{}}
	for i := range s.shards {
		s.shards[i].m = make(map[key]*entry)
	}
	return s
}

// ReplicaID returns the ID of this store's own slot.
func (s *Store) ReplicaID() string { return s.replica }

// Len returns the number of counter keys held.
func (s *Store) Len() int { return int(s.keys.Load()) }

func (s *Store) shard(limit, user string) *shard {
	// One user's keys share a shard: users spread the load, and hashing the
	// limit name too would cost a second hash on the hot path.
	_ = limit
	return &s.shards[maphash.String(s.seed, user)%numShards]
}

// nowMs reads the clock, never going back past an earlier reading.
func (s *Store) nowMs() int64 {
	t := s.now().UnixMilli()
	for {
		hw := s.hw.Load()
		if t <= hw {
			return hw
		}
		if s.hw.CompareAndSwap(hw, t) {
			return t
		}
	}
}

func validWindow(start, size int64) bool {
	return size > 0 && size <= maxWindowMs && start >= 0 && start <= maxStartMs
}

// expired reports whether a window no longer matters to a sliding window at
// now: it ended a whole window ago.
func expired(start, size, now int64) bool { return start+2*size <= now }

// acceptable reports whether a peer's delta for a window is taken at now:
// the window has not expired, and does not start further ahead than one
// window plus the allowed clock skew.
func acceptable(start, size, now int64) bool {
	return validWindow(start, size) && !expired(start, size, now) && start <= now+size+maxSkewMs
}

// Add adds delta (negative to settle a reservation down) to this replica's
// slot of the key (limit, user, window start in unix ms, window size in ms).
// Adds to an invalid or expired window are ignored. The change reaches peers
// with the next gossip interval's batch.
func (s *Store) Add(limit, user string, start, size, delta int64) {
	s.add(limit, user, start, size, delta, false)
}

// AddNow is Add for a change that must reach peers at once: the limiter uses
// it near a limit, where every millisecond of gossip delay lets replicas
// admit together what one would refuse. Changes sent at once are coalesced
// over at most Config.FlushGap.
func (s *Store) AddNow(limit, user string, start, size, delta int64) {
	s.add(limit, user, start, size, delta, true)
}

func (s *Store) add(limit, user string, start, size, delta int64, urgent bool) {
	if delta == 0 {
		return
	}
	k := key{limit, user, start, size}
	sh := s.shard(limit, user)
	sh.mu.Lock()
	e := sh.m[k]
	if e != nil {
		e.c.Add(s.replica, delta)
		s.markDirty(sh, e, urgent)
		sh.mu.Unlock()
		return
	}
	sh.mu.Unlock()
	now := s.nowMs()
	if !validWindow(start, size) || expired(start, size, now) {
		return
	}
	sh.mu.Lock()
	if e = sh.m[k]; e == nil {
		e = &entry{k: k}
		sh.m[k] = e
		s.keys.Add(1)
	}
	e.c.Add(s.replica, delta)
	s.markDirty(sh, e, urgent)
	sh.mu.Unlock()
	if next := s.nextGC.Load(); now >= next && s.nextGC.CompareAndSwap(next, now+gcEveryMs) {
		s.gc(now)
	}
}

// markDirty records e's own slot for the next takeDirty and, when urgent,
// wakes the sender; sh must be locked.
func (s *Store) markDirty(sh *shard, e *entry, urgent bool) {
	if !s.track {
		return
	}
	if !e.dirty {
		e.dirty = true
		sh.dirty = append(sh.dirty, e)
		s.dirty.Store(true)
	}
	if urgent && s.wake != nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// Sum returns the key's cluster-wide total as this replica sees it: the sum of
// every replica's slot (0 for an unknown key).
func (s *Store) Sum(limit, user string, start, size int64) int64 {
	sh := s.shard(limit, user)
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if e := sh.m[key{limit, user, start, size}]; e != nil {
		return e.c.Value()
	}
	return 0
}

// takeDirty appends the absolute value of every own slot changed since the
// previous call to buf and clears the dirty set.
func (s *Store) takeDirty(buf []slotDelta) []slotDelta {
	if !s.dirty.Swap(false) {
		return buf
	}
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for j, e := range sh.dirty {
			if !e.gone {
				sl := e.c.Get(s.replica)
				buf = append(buf, slotDelta{e.k.limit, e.k.user, e.k.start, e.k.size, s.replica, sl.P, sl.N})
			}
			e.dirty = false
			sh.dirty[j] = nil
		}
		sh.dirty = sh.dirty[:0]
		sh.mu.Unlock()
	}
	return buf
}

// merge folds peers' slot values into the store at now. It keeps, in place,
// the deltas that raised a slot (for passing on) and counts those refused
// for an unacceptable window.
func (s *Store) merge(ds []slotDelta, now int64) (applied []slotDelta, refused int) {
	applied = ds[:0]
	for _, d := range ds {
		if !acceptable(d.Start, d.Size, now) {
			refused++
			continue
		}
		k := key{d.Limit, d.User, d.Start, d.Size}
		sh := s.shard(d.Limit, d.User)
		sh.mu.Lock()
		e := sh.m[k]
		if e == nil {
			if d.P == 0 && d.N == 0 {
				sh.mu.Unlock()
				continue
			}
			e = &entry{k: k}
			sh.m[k] = e
			s.keys.Add(1)
		}
		changed := e.c.MergeSlot(Slot{s.internReplica(d.Replica), d.P, d.N})
		sh.mu.Unlock()
		if changed {
			applied = append(applied, d)
		}
	}
	return applied, refused
}

// internReplica returns the store's copy of replica ID r, so that the slots
// of 100k keys share a few strings instead of holding one each.
func (s *Store) internReplica(r string) string {
	s.internMu.Lock()
	defer s.internMu.Unlock()
	if c, ok := s.intern[r]; ok {
		return c
	}
	if len(s.intern) >= 4096 { // IDs of long-gone runs: let them go
		clear(s.intern)
	}
	s.intern[r] = r
	return r
}

// snapshot yields every slot of every key, one shard at a time. A yielded
// slice is only valid until the next one.
func (s *Store) snapshot() iter.Seq[[]slotDelta] {
	return func(yield func([]slotDelta) bool) {
		var buf []slotDelta
		for i := range s.shards {
			sh := &s.shards[i]
			sh.mu.RLock()
			buf = buf[:0]
			for k, e := range sh.m {
				for _, sl := range e.c.Slots() {
					buf = append(buf, slotDelta{k.limit, k.user, k.start, k.size, sl.Replica, sl.P, sl.N})
				}
			}
			sh.mu.RUnlock()
			if len(buf) > 0 && !yield(buf) {
				return
			}
		}
	}
}

// gc drops every key whose window expired at now and returns how many.
func (s *Store) gc(now int64) int {
	dropped := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for k, e := range sh.m {
			if expired(k.start, k.size, now) {
				e.gone = true
				delete(sh.m, k)
				dropped++
			}
		}
		live := sh.dirty[:0]
		for _, e := range sh.dirty {
			if !e.gone {
				live = append(live, e)
			}
		}
		clear(sh.dirty[len(live):])
		sh.dirty = live
		sh.mu.Unlock()
	}
	s.keys.Add(-int64(dropped))
	return dropped
}

// sweep drops expired keys at the current time.
func (s *Store) sweep() int { return s.gc(s.nowMs()) }
