package cluster

// Slot is one replica's contribution to a PNCounter: the monotonic totals of
// its increments (P) and of its decrements (N). Replica is an interned
// replica ID (names.go): four bytes in every slot instead of a string.
type Slot struct {
	P, N    uint64
	Replica uint32 // 0 names no replica
}

// zero reports whether the slot holds nothing (a slot never seen).
func (s Slot) zero() bool { return s.P == 0 && s.N == 0 }

// PNCounter is a state-based positive-negative counter CRDT: one Slot per
// replica, each only ever written by its own replica, merged by per-slot
// maximum. Merge is commutative, associative and idempotent, so replicas that
// have seen the same slots in any order, any number of times, hold the same
// Value.
//
// It is laid out for a million of them: the first slot inline and the
// others, when more than one replica writes the counter, behind one pointer
// (32 bytes with one writer). The zero value is an empty counter. A
// PNCounter is a plain value: it is not safe for concurrent use, and copies
// share their extra slots until Clone.
type PNCounter struct {
	p, n uint64 // the first slot's totals
	more *[]Slot
	rid  uint32 // the first slot's replica; 0 in an empty counter
	// mark is free for the holder's bookkeeping (the store's dirty bit): no
	// part of the counter, it fills what would be padding.
	mark uint32
}

// Add records delta (negative for a decrement) in replica's slot and returns
// the slot before and after. replica must not be 0.
func (c *PNCounter) Add(replica uint32, delta int64) (before, after Slot) {
	p, n := c.slot(replica)
	before = Slot{*p, *n, replica}
	switch {
	case delta > 0:
		*p += uint64(delta)
	case delta < 0:
		*n += uint64(-(delta + 1)) + 1 // no overflow for math.MinInt64
	}
	return before, Slot{*p, *n, replica}
}

// MergeSlot raises slot o.Replica's totals to at least o.P and o.N. It
// returns the slot as it was and whether either total grew.
func (c *PNCounter) MergeSlot(o Slot) (before Slot, changed bool) {
	if o.zero() || o.Replica == 0 {
		return Slot{Replica: o.Replica}, false
	}
	p, n := c.slot(o.Replica)
	before = Slot{*p, *n, o.Replica}
	if o.P > *p {
		*p, changed = o.P, true
	}
	if o.N > *n {
		*n, changed = o.N, true
	}
	return before, changed
}

// Merge folds every slot of o into c (per-slot maximum).
func (c *PNCounter) Merge(o PNCounter) {
	for _, s := range o.AppendSlots(nil) {
		c.MergeSlot(s)
	}
}

// Value is the counter's total: the sum of every P minus the sum of every N.
func (c *PNCounter) Value() int64 {
	p, n := c.p, c.n
	if c.more != nil {
		for _, s := range *c.more {
			p += s.P
			n += s.N
		}
	}
	return int64(p - n) // two's complement: exact whenever the total fits in int64
}

// Get returns replica's slot (zero when absent).
func (c *PNCounter) Get(replica uint32) Slot {
	if c.rid == replica {
		return Slot{c.p, c.n, replica}
	}
	if c.more != nil {
		for _, s := range *c.more {
			if s.Replica == replica {
				return s
			}
		}
	}
	return Slot{Replica: replica}
}

// AppendSlots appends the counter's non-empty slots to dst, in no particular
// order.
func (c *PNCounter) AppendSlots(dst []Slot) []Slot {
	if c.rid != 0 && (c.p != 0 || c.n != 0) {
		dst = append(dst, Slot{c.p, c.n, c.rid})
	}
	if c.more != nil {
		for _, s := range *c.more {
			if !s.zero() {
				dst = append(dst, s)
			}
		}
	}
	return dst
}

// Writers returns the number of slots.
func (c *PNCounter) Writers() int {
	n := 0
	if c.rid != 0 {
		n = 1
	}
	if c.more != nil {
		n += len(*c.more)
	}
	return n
}

// Clone returns a copy of c that shares no storage with it.
func (c PNCounter) Clone() PNCounter {
	if c.more != nil {
		more := append([]Slot(nil), *c.more...)
		c.more = &more
	}
	return c
}

// slot returns pointers to replica's totals, creating its slot when absent.
func (c *PNCounter) slot(replica uint32) (p, n *uint64) {
	if c.rid == replica {
		return &c.p, &c.n
	}
	if c.rid == 0 {
		c.rid = replica
		return &c.p, &c.n
	}
	if c.more == nil {
		c.more = new([]Slot)
	}
	m := *c.more
	for i := range m {
		if m[i].Replica == replica {
			return &m[i].P, &m[i].N
		}
	}
	*c.more = append(m, Slot{Replica: replica})
	s := &(*c.more)[len(*c.more)-1]
	return &s.P, &s.N
}
