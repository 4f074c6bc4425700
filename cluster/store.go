package cluster

import (
	"sync"
	"sync/atomic"
	"time"
)

const (
	numShards = 64
	// numBuckets is how many anti-entropy buckets the keys are hashed into
	// (antientropy.go); bucket b lives in shard b % numShards, so a bucket's
	// digest changes under one shard lock.
	numBuckets      = 4096
	bucketsPerShard = numBuckets / numShards
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

	// Interned names: past the soft cap a sweep forgets the names no key
	// uses; past the hard cap new names are refused (a peer making up
	// limits or replicas by the thousand).
	seriesSoftCap, seriesHardCap   = 1024, 1 << 16
	replicaSoftCap, replicaHardCap = 1024, 1 << 16
)

// key names one counter: a user, a window start and a series (its limit and
// window size, interned).
type key struct {
	user   string
	start  int64
	series uint32
}

// bucketDigest summarises one anti-entropy bucket: the sum of the slotHash
// of its slots and their count.
type bucketDigest struct {
	sum   uint64
	count uint32
}

type shard struct {
	mu    sync.RWMutex
	m     map[key]*PNCounter // a counter's mark is 1 while it sits in dirty
	dirty []key              // keys whose own slot changed since the last takeDirty
	dig   [bucketsPerShard]bucketDigest
}

// Store holds the (limit, user, window) counters of this replica as
// PN-counters: this replica writes only its own slot (Add) and learns the
// others' slots by merging gossip. Windows expire two sizes after their
// start: keys are then dropped and deltas for them refused, so they never
// come back. Every key hashes to one of numBuckets buckets whose digest the
// store keeps up to date, for anti-entropy.
//
// A Store is safe for concurrent use. Add and Sum on an existing key take one
// shard lock, do not allocate and do not read the clock.
type Store struct {
	replica string
	rid     uint32 // this replica's ID in replicas (never forgotten)
	rh      uint64 // replicaHash(replica)
	now     func() time.Time
	track   bool // record dirty own slots for gossip; set before first use

	shards [numShards]shard
	keys   atomic.Int64
	dirty  atomic.Bool   // some own slot is dirty (cheap check before takeDirty)
	wake   chan struct{} // signalled when an own slot turns dirty (nil: nobody listens)

	// namesMu is held for reading by code that stores a series or replica ID
	// in a new key or slot, and for writing by a compaction of the tables.
	namesMu  sync.RWMutex
	series   *internTable[series]
	replicas *internTable[string]

	hw     atomic.Int64 // highest clock reading seen (unix ms): time never runs back for expiry
	nextGC atomic.Int64
}

// NewStore returns an empty store whose own slot is replicaID. now (nil =
// time.Now) decides which windows have expired. A store used alone (cluster
// disabled) sweeps expired keys itself as Add creates new ones.
func NewStore(replicaID string, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	s := &Store{
		replica:  replicaID,
		rh:       replicaHash(replicaID),
		now:      now,
		series:   newInternTable(nil, func(v series) int { return len(v.limit) ^ int(v.size/1000) }, seriesHardCap),
		replicas: newInternTable(replicaHash, nil, replicaHardCap),
	}
	s.rid = s.replicas.intern(replicaID)
	for i := range s.shards {
		s.shards[i].m = make(map[key]*PNCounter)
	}
	return s
}

// ReplicaID returns the ID of this store's own slot.
func (s *Store) ReplicaID() string { return s.replica }

// Len returns the number of counter keys held.
func (s *Store) Len() int { return int(s.keys.Load()) }

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
	kh := keyHash(limit, user, start, size)
	b := bucketOf(kh)
	sh := &s.shards[b%numShards]
	if id := s.series.lookup(series{limit, size}); id != 0 {
		k := key{user, start, id}
		sh.mu.Lock()
		if c := sh.m[k]; c != nil {
			s.addLocked(sh, k, c, b, kh, delta, urgent)
			sh.mu.Unlock()
			return
		}
		sh.mu.Unlock()
	}
	now := s.nowMs()
	if !validWindow(start, size) || expired(start, size, now) {
		return
	}
	s.namesMu.RLock()
	id := s.series.intern(series{limit, size})
	if id == 0 { // a full table: thousands of limits made up by peers
		s.namesMu.RUnlock()
		return
	}
	k := key{user, start, id}
	sh.mu.Lock()
	c := sh.m[k]
	if c == nil {
		c = new(PNCounter)
		sh.m[k] = c
		s.keys.Add(1)
	}
	s.addLocked(sh, k, c, b, kh, delta, urgent)
	sh.mu.Unlock()
	s.namesMu.RUnlock()
	if next := s.nextGC.Load(); now >= next && s.nextGC.CompareAndSwap(next, now+gcEveryMs) {
		s.gc(now)
	}
}

// addLocked adds delta to the own slot of c (key k in bucket b), keeps the
// bucket's digest and marks the slot dirty; sh must be locked.
func (s *Store) addLocked(sh *shard, k key, c *PNCounter, b int, kh uint64, delta int64, urgent bool) {
	before, after := c.Add(s.rid, delta)
	sh.update(b, kh, s.rh, before, after)
	if !s.track {
		return
	}
	if c.mark == 0 {
		c.mark = 1
		sh.dirty = append(sh.dirty, k)
		s.dirty.Store(true)
	}
	if urgent && s.wake != nil {
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// update moves bucket b's digest from slot value before to after; sh must
// be locked.
func (sh *shard) update(b int, kh, rh uint64, before, after Slot) {
	d := &sh.dig[b/numShards]
	if !before.zero() {
		d.sum -= slotHash(kh, rh, before.P, before.N)
		d.count--
	}
	if !after.zero() {
		d.sum += slotHash(kh, rh, after.P, after.N)
		d.count++
	}
}

// Sum returns the key's cluster-wide total as this replica sees it: the sum of
// every replica's slot (0 for an unknown key).
func (s *Store) Sum(limit, user string, start, size int64) int64 {
	id := s.series.lookup(series{limit, size})
	if id == 0 {
		return 0
	}
	sh := &s.shards[bucketOf(keyHash(limit, user, start, size))%numShards]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	if c := sh.m[key{user, start, id}]; c != nil {
		return c.Value()
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
		for _, k := range sh.dirty {
			if c := sh.m[k]; c != nil { // else dropped by gc
				c.mark = 0
				if ser, ok := s.series.get(k.series); ok {
					sl := c.Get(s.rid)
					buf = append(buf, slotDelta{ser.v.limit, k.user, k.start, ser.v.size, s.replica, sl.P, sl.N})
				}
			}
		}
		clear(sh.dirty)
		sh.dirty = sh.dirty[:0]
		sh.mu.Unlock()
	}
	return buf
}

// merge folds peers' slot values into the store at now. It keeps, in place,
// the deltas that raised a slot (for passing on) and counts those refused
// for an unacceptable window (or a name the tables have no room for).
func (s *Store) merge(ds []slotDelta, now int64) (applied []slotDelta, refused int) {
	applied = ds[:0]
	s.namesMu.RLock()
	defer s.namesMu.RUnlock()
	for _, d := range ds {
		if !acceptable(d.Start, d.Size, now) {
			refused++
			continue
		}
		if d.P == 0 && d.N == 0 {
			continue
		}
		id := s.series.intern(series{d.Limit, d.Size})
		rid := s.replicas.intern(d.Replica)
		if id == 0 || rid == 0 {
			refused++
			continue
		}
		rn, _ := s.replicas.get(rid)
		kh := keyHash(d.Limit, d.User, d.Start, d.Size)
		b := bucketOf(kh)
		sh := &s.shards[b%numShards]
		k := key{d.User, d.Start, id}
		sh.mu.Lock()
		c := sh.m[k]
		if c == nil {
			c = new(PNCounter)
			sh.m[k] = c
			s.keys.Add(1)
		}
		before, changed := c.MergeSlot(Slot{d.P, d.N, rid})
		if changed {
			sh.update(b, kh, rn.hash, before, c.Get(rid))
		}
		sh.mu.Unlock()
		if changed {
			applied = append(applied, d)
		}
	}
	return applied, refused
}

// digests copies every bucket's digest into dst (numBuckets long).
func (s *Store) digests(dst []bucketDigest) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for j, d := range sh.dig {
			dst[j*numShards+i] = d
		}
		sh.mu.RUnlock()
	}
}

// bucketDigestOf returns bucket b's digest.
func (s *Store) bucketDigestOf(b int) bucketDigest {
	sh := &s.shards[b%numShards]
	sh.mu.RLock()
	defer sh.mu.RUnlock()
	return sh.dig[b/numShards]
}

// buckets yields every slot of every key in the buckets want reports, a
// shard at a time (each yielded slice is only valid until the next one),
// stopping when yield returns false.
func (s *Store) buckets(want func(b int) bool, yield func([]slotDelta) bool) {
	var buf []slotDelta
	var slots []Slot
	for i := range s.shards {
		wanted := false
		for j := range bucketsPerShard {
			if want(j*numShards + i) {
				wanted = true
				break
			}
		}
		if !wanted {
			continue
		}
		sh := &s.shards[i]
		buf = buf[:0]
		sh.mu.RLock()
		// Loaded under the lock: every ID in the shard was interned before
		// its key or slot went in.
		ser, rep := s.series.cur.Load(), s.replicas.cur.Load()
		for k, c := range sh.m {
			sn, ok := ser.names[k.series]
			if !ok || !want(bucketOf(keyHash(sn.v.limit, k.user, k.start, sn.v.size))) {
				continue
			}
			slots = c.AppendSlots(slots[:0])
			for _, sl := range slots {
				if rn, ok := rep.names[sl.Replica]; ok {
					buf = append(buf, slotDelta{sn.v.limit, k.user, k.start, sn.v.size, rn.v, sl.P, sl.N})
				}
			}
		}
		sh.mu.RUnlock()
		if len(buf) > 0 && !yield(buf) {
			return
		}
	}
}

// gc drops every key whose window expired at now and returns how many; when
// the name tables have grown past their soft caps, it forgets the names no
// key uses any more.
func (s *Store) gc(now int64) int {
	dropped := 0
	var slots []Slot
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		ser, rep := s.series.cur.Load(), s.replicas.cur.Load()
		for k, c := range sh.m {
			sn, ok := ser.names[k.series]
			if !ok || !expired(k.start, sn.v.size, now) {
				continue
			}
			kh := keyHash(sn.v.limit, k.user, k.start, sn.v.size)
			b := bucketOf(kh)
			slots = c.AppendSlots(slots[:0])
			for _, sl := range slots {
				sh.update(b, kh, rep.names[sl.Replica].hash, sl, Slot{})
			}
			delete(sh.m, k)
			dropped++
		}
		sh.mu.Unlock()
	}
	s.keys.Add(-int64(dropped))
	if s.series.len() > seriesSoftCap || s.replicas.len() > replicaSoftCap {
		s.compactNames()
	}
	return dropped
}

// compactNames forgets the series and replica IDs no key uses.
func (s *Store) compactNames() {
	s.namesMu.Lock()
	defer s.namesMu.Unlock()
	usedSeries := map[uint32]bool{}
	usedReplicas := map[uint32]bool{s.rid: true}
	var slots []Slot
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for k, c := range sh.m {
			usedSeries[k.series] = true
			for _, sl := range c.AppendSlots(slots[:0]) {
				usedReplicas[sl.Replica] = true
			}
		}
		sh.mu.RUnlock()
	}
	s.series.retain(func(id uint32) bool { return usedSeries[id] })
	s.replicas.retain(func(id uint32) bool { return usedReplicas[id] })
}

// sweep drops expired keys at the current time.
func (s *Store) sweep() int { return s.gc(s.nowMs()) }
