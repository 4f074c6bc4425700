package route

import (
	"sync/atomic"
	"time"
)

// Node is the routing state of one upstream: its weight and cap, the
// requests in flight on it, its health and its attempts by outcome. A Node
// outlives the Tables built over it (a reload keeps an unchanged upstream's
// Node, and so its health). Safe for concurrent use.
type Node struct {
	name        string
	weight      int64
	maxInFlight int64 // 0 = unlimited

	inflight atomic.Int64
	// until is the end of the cool-down (Unix nanoseconds); 0 = healthy.
	// Once it has passed the node is half-open: one request at a time
	// probes it until one succeeds (healthy) or fails (cooling again).
	until atomic.Int64
	// probe is when the current half-open probe started (Unix
	// nanoseconds), 0 = none. A probe older than the cool-down is taken
	// for lost, so a bug can never shut a node out for good.
	probe    atomic.Int64
	fails    atomic.Int32 // failures in a row
	attempts [NumOutcomes]atomic.Uint64
}

// NewNode returns the state of an upstream named name, healthy and idle.
// weight < 1 counts as 1; maxInFlight <= 0 means no cap.
func NewNode(name string, weight, maxInFlight int) *Node {
	return &Node{name: name, weight: int64(max(weight, 1)), maxInFlight: int64(max(maxInFlight, 0))}
}

// Name is the upstream's name.
func (n *Node) Name() string { return n.name }

// InFlight is the number of requests holding a slot on n.
func (n *Node) InFlight() int64 { return n.inflight.Load() }

// Cooling reports whether n is cooling down or half-open (not yet proven
// healthy again).
func (n *Node) Cooling() bool { return n.until.Load() != 0 }

// Attempts is the number of attempts that ended with o.
func (n *Node) Attempts(o Outcome) uint64 { return n.attempts[o].Load() }

// full reports whether n has no free slot.
func (n *Node) full() bool { return n.maxInFlight > 0 && n.inflight.Load() >= n.maxInFlight }

// take takes a slot on n, and the half-open probe when probe is set; it
// fails when n is full or the probe is taken.
func (n *Node) take(probe bool, now int64, cooldown time.Duration) bool {
	if v := n.inflight.Add(1); n.maxInFlight > 0 && v > n.maxInFlight {
		n.inflight.Add(-1)
		return false
	}
	if probe {
		p := n.probe.Load()
		if (p != 0 && now-p < int64(cooldown)) || !n.probe.CompareAndSwap(p, now) {
			n.inflight.Add(-1)
			return false
		}
	}
	return true
}

// cool starts (or extends) a cool-down of d from now.
func (n *Node) cool(now int64, d time.Duration) {
	end := now + int64(d)
	for {
		u := n.until.Load()
		if u >= end || n.until.CompareAndSwap(u, end) {
			break
		}
	}
	n.fails.Store(0)
	n.probe.Store(0)
}

// report records an attempt's outcome and updates n's health.
func (n *Node) report(o Outcome, retryAfter time.Duration, now func() int64, cooldown time.Duration) {
	n.attempts[o].Add(1)
	switch {
	case o == OK:
		// Loads first: the healthy path writes nothing shared.
		if n.until.Load() != 0 || n.fails.Load() != 0 || n.probe.Load() != 0 {
			n.until.Store(0)
			n.fails.Store(0)
			n.probe.Store(0)
		}
	case o == Status429:
		n.cool(now(), max(cooldown, min(retryAfter, MaxCooldown)))
	default:
		t := now()
		if u := n.until.Load(); u != 0 && t >= u {
			n.cool(t, cooldown) // the half-open probe failed
			return
		}
		if n.fails.Add(1) >= FailuresToCool {
			n.cool(t, cooldown)
		}
	}
}
