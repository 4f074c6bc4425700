package cluster

import (
	"sync"
	"sync/atomic"
)

// Interned names. A key names its limit and window size by one series ID and
// a slot names its replica by one replica ID, four bytes each instead of a
// string header (16 bytes) and a size, shared by every key.
//
// IDs are never reused: a compaction (at a sweep, once a table holds more
// than its soft cap) forgets the names no key uses, and a later sighting of
// the same name gets a new ID. So an ID read from a stale snapshot names
// either its own name or nothing.

// series is a (limit, window size) pair: the part of a key shared by all
// its users and windows.
type series struct {
	limit string
	size  int64
}

// name is an interned value and its anti-entropy hash (replicaHash for
// replicas, unused for series).
type name[K comparable] struct {
	v    K
	hash uint64
}

// table is one copy-on-write generation of an internTable.
type table[K comparable] struct {
	ids   map[K]uint32
	names map[uint32]name[K]
	next  uint32
	// hot holds some names by their cacheSlot, so that a lookup of one of
	// the few limits of a config compares a string instead of hashing it;
	// filled when the generation is built, read-only after.
	hot [hotSlots]struct {
		v  K
		id uint32
	}
}

const hotSlots = 16

// fillHot fills t.hot from t.ids with slot (nil: no cache).
func (t *table[K]) fillHot(slot func(K) int) {
	if slot == nil {
		return
	}
	for v, id := range t.ids {
		h := &t.hot[slot(v)%hotSlots]
		if h.id == 0 {
			h.v, h.id = v, id
		}
	}
}

// internTable maps names to IDs. Lookups read an immutable snapshot without
// a lock; mu serialises the writers of new snapshots. (The store's namesMu
// keeps a compaction from forgetting an ID being stored.) Safe for
// concurrent use.
type internTable[K comparable] struct {
	mu   sync.Mutex
	cur  atomic.Pointer[table[K]]
	hash func(K) uint64
	slot func(K) int // hot-cache slot of a name; nil: no cache
	max  int         // hard cap: past it, new names are refused
}

func newInternTable[K comparable](hash func(K) uint64, slot func(K) int, max int) *internTable[K] {
	t := &internTable[K]{hash: hash, slot: slot, max: max}
	t.cur.Store(&table[K]{ids: map[K]uint32{}, names: map[uint32]name[K]{}, next: 1})
	return t
}

// lookup returns v's ID, or 0 when v is not interned.
func (t *internTable[K]) lookup(v K) uint32 {
	cur := t.cur.Load()
	if t.slot != nil {
		if h := &cur.hot[t.slot(v)%hotSlots]; h.id != 0 && h.v == v {
			return h.id
		}
	}
	return cur.ids[v]
}

// get returns the name of id (ok false for an unknown or forgotten ID).
func (t *internTable[K]) get(id uint32) (name[K], bool) {
	n, ok := t.cur.Load().names[id]
	return n, ok
}

// intern returns v's ID, adding v when absent; 0 when the table is full.
func (t *internTable[K]) intern(v K) uint32 {
	if id := t.lookup(v); id != 0 {
		return id
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.cur.Load()
	id := cur.ids[v]
	if id == 0 && len(cur.ids) < t.max {
		next := &table[K]{ids: make(map[K]uint32, len(cur.ids)+1), names: make(map[uint32]name[K], len(cur.ids)+1), next: cur.next + 1}
		for k, i := range cur.ids {
			next.ids[k] = i
			next.names[i] = cur.names[i]
		}
		id = cur.next
		next.ids[v] = id
		var h uint64
		if t.hash != nil {
			h = t.hash(v)
		}
		next.names[id] = name[K]{v, h}
		next.fillHot(t.slot)
		t.cur.Store(next)
	}
	return id
}

// len returns the number of names held.
func (t *internTable[K]) len() int { return len(t.cur.Load().ids) }

// retain forgets every name whose ID keep does not report. The caller holds
// the store's namesMu for writing, so no ID is being stored meanwhile.
func (t *internTable[K]) retain(keep func(uint32) bool) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.cur.Load()
	next := &table[K]{ids: make(map[K]uint32), names: make(map[uint32]name[K]), next: cur.next}
	for k, i := range cur.ids {
		if keep(i) {
			next.ids[k] = i
			next.names[i] = cur.names[i]
		}
	}
	next.fillHot(t.slot)
	t.cur.Store(next)
	return len(cur.ids) - len(next.ids)
}
