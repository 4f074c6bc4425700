package cluster

// Slot is one replica's contribution to a PNCounter: the monotonic totals of
// its increments (P) and of its decrements (N).
type Slot struct {
	Replica string
	P, N    uint64
}

// PNCounter is a state-based positive-negative counter CRDT: one Slot per
// replica, each only ever written by its own replica, merged by per-slot
// maximum. Merge is commutative, associative and idempotent, so replicas that
// have seen the same slots in any order, any number of times, hold the same
// Value.
//
// The zero value is an empty counter. A PNCounter is a plain value: it is not
// safe for concurrent use, and copies share their slot storage until Clone.
type PNCounter struct {
	slots []Slot // unordered; a handful of replicas, so a slice beats a map
}

// Add records delta (negative for a decrement) in replica's slot.
func (c *PNCounter) Add(replica string, delta int64) {
	if delta == 0 {
		return
	}
	s := c.slot(replica)
	if delta > 0 {
		s.P += uint64(delta)
	} else {
		s.N += uint64(-(delta + 1)) + 1 // no overflow for math.MinInt64
	}
}

// MergeSlot raises replica s.Replica's totals to at least s.P and s.N and
// reports whether either of them grew.
func (c *PNCounter) MergeSlot(s Slot) bool {
	if s.P == 0 && s.N == 0 {
		return false
	}
	cur := c.slot(s.Replica)
	changed := false
	if s.P > cur.P {
		cur.P, changed = s.P, true
	}
	if s.N > cur.N {
		cur.N, changed = s.N, true
	}
	return changed
}

// Merge folds every slot of o into c (per-slot maximum).
func (c *PNCounter) Merge(o PNCounter) {
	for _, s := range o.slots {
		c.MergeSlot(s)
	}
}

// Value is the counter's total: the sum of every P minus the sum of every N.
func (c PNCounter) Value() int64 {
	var p, n uint64
	for _, s := range c.slots {
		p += s.P
		n += s.N
	}
	return int64(p - n) // two's complement: exact whenever the total fits in int64
}

// Get returns replica's slot (zero when absent).
func (c PNCounter) Get(replica string) Slot {
	for _, s := range c.slots {
		if s.Replica == replica {
			return s
		}
	}
	return Slot{Replica: replica}
}

// Slots returns the counter's slots in no particular order. The slice is
// shared with c: do not modify it.
func (c PNCounter) Slots() []Slot { return c.slots }

// Clone returns a copy of c that shares no storage with it.
func (c PNCounter) Clone() PNCounter {
	if c.slots == nil {
		return PNCounter{}
	}
	return PNCounter{slots: append([]Slot(nil), c.slots...)}
}

// slot returns a pointer to replica's slot, creating it when absent.
func (c *PNCounter) slot(replica string) *Slot {
	for i := range c.slots {
		if c.slots[i].Replica == replica {
			return &c.slots[i]
		}
	}
	c.slots = append(c.slots, Slot{Replica: replica})
	return &c.slots[len(c.slots)-1]
}
