package limiter

import "sync/atomic"

// Usage is the true usage of a finished request.
type Usage struct {
	PromptTokens, CompletionTokens int64
}

// Reservation is what Admit reserved for one request: for every limit that applied, the window
// key it reserved in and the amount. Settle adjusts those keys to the true usage. A nil
// *Reservation (limiting off, or no limit applied) is valid and settles to nothing.
// A Reservation is safe for concurrent use.
type Reservation struct {
	store   Store
	now     UrgentStore // nil when the store has no AddNow
	user    string
	entries []entry  // points into inline unless more than len(inline) limits applied
	inline  [4]entry // no allocation beyond the Reservation itself for up to 4 limits
	settled atomic.Bool
}

// entry is one limit's reservation.
type entry struct {
	lim      *climit // immutable; outlives a SetPolicy
	start    int64   // start of the fixed window reserved in (Unix ms)
	reserved int64
	urgent   bool // usage was near the limit at admission: changes go to peers at once
}

// add records delta for e in the store, at once when e is urgent.
func (r *Reservation) add(e entry, delta int64) {
	if e.urgent && r.now != nil {
		r.now.AddNow(e.lim.name, r.user, e.start, e.lim.size, delta)
		return
	}
	r.store.Add(e.lim.name, r.user, e.start, e.lim.size, delta)
}

// Settle adds, to every window key the reservation was made in, the true amount minus the
// reserved one: PromptTokens for prompt_tokens limits, PromptTokens+CompletionTokens for
// total_tokens, CompletionTokens for completion_tokens, nothing for requests. The delta may be
// negative (the counters are PN-counters). It goes to the reserved window even if the window has
// rolled over since, so usage is counted when it was admitted. Settle is nil-safe and idempotent:
// only the first call has an effect, whatever goroutines call it.
func (r *Reservation) Settle(u Usage) {
	if r == nil || !r.settled.CompareAndSwap(false, true) {
		return
	}
	for _, e := range r.entries {
		var actual int64
		switch e.lim.metric {
		case MetricPromptTokens:
			actual = u.PromptTokens
		case MetricTotalTokens:
			actual = u.PromptTokens + u.CompletionTokens
		case MetricCompletionTokens:
			actual = u.CompletionTokens
		default: // requests: the 1 reserved is the truth
			continue
		}
		if d := max(actual, 0) - e.reserved; d != 0 {
			r.add(e, d)
		}
	}
}

// Release gives back everything the reservation took, the request itself
// included: for a request the gateway or the upstream failed, which is not
// charged. It is nil-safe and, like Settle, only the first of the two calls
// has an effect.
func (r *Reservation) Release() {
	if r == nil || !r.settled.CompareAndSwap(false, true) {
		return
	}
	for _, e := range r.entries {
		if e.reserved != 0 {
			r.add(e, -e.reserved)
		}
	}
}
