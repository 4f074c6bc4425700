package limiter

import (
	"math/bits"
	"sync/atomic"
	"time"
)

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
	used     int64 // the user's sliding-window usage before this request
	resetMs  int64 // time until the window forgets everything used so far, this request included
	urgent   bool  // usage was near the limit at admission: changes go to peers at once
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

// Headroom is what one limit leaves its user once a request is reserved:
// the x-gateway-ratelimit-* figures of the response.
type Headroom struct {
	Limit, Remaining int64
	Reset            time.Duration // until the window forgets everything used so far
}

// Tightest returns, among the limits the request was reserved against, the
// token limit and the requests limit with the least headroom left in
// proportion to their size (ok false: no such limit applied). It reads what
// Admit saw, so it costs no store lookup. Nil-safe.
func (r *Reservation) Tightest() (tokens, requests Headroom, tokOK, reqOK bool) {
	if r == nil {
		return
	}
	for _, e := range r.entries {
		h := Headroom{Limit: e.lim.limit, Remaining: max(e.lim.limit-e.used-e.reserved, 0),
			Reset: time.Duration(e.resetMs) * time.Millisecond}
		if e.lim.metric == MetricRequests {
			if !reqOK || tighter(h, requests) {
				requests, reqOK = h, true
			}
		} else if !tokOK || tighter(h, tokens) {
			tokens, tokOK = h, true
		}
	}
	return
}

// tighter reports whether a leaves a smaller share of its limit than b
// (limits are positive; the products fit in 128 bits, compared as such).
func tighter(a, b Headroom) bool {
	ah, al := bits.Mul64(uint64(a.Remaining), uint64(b.Limit))
	bh, bl := bits.Mul64(uint64(b.Remaining), uint64(a.Limit))
	return ah < bh || ah == bh && al < bl
}
