package limiter

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Usage is the true usage of a finished request.
type Usage struct {
	PromptTokens, CompletionTokens int64
	// CachedPromptTokens are the prompt tokens read from the provider's prompt cache, a subset
	// of PromptTokens (OpenAI's prompt_tokens_details.cached_tokens, Anthropic's
	// cache_read_input_tokens), priced at the cached-input price. 0 when unknown.
	CachedPromptTokens int64
	// CacheWritePromptTokens are the prompt tokens written to the provider's prompt cache, a
	// subset of PromptTokens apart from the cached ones (Anthropic's
	// cache_creation_input_tokens), priced at the cache-write price. 0 when unknown.
	CacheWritePromptTokens int64
}

// Reservation is what Admit reserved for one request: for every limit that applied, the window
// key it reserved in and the amount. Settle adjusts those keys to the true usage. A nil
// *Reservation (limiting off, or no limit applied) is valid and settles to nothing.
// A Reservation is safe for concurrent use.
type Reservation struct {
	store   Store
	now     UrgentStore // nil when the store has no AddNow
	user    string
	price   *cprice  // the model's price at admission, for cost_usd limits; nil: unpriced
	entries []entry  // points into inline unless more than len(inline) limits applied
	inline  [4]entry // no allocation beyond the Reservation itself for up to 4 limits
	settled atomic.Bool
	// fell: a model fallback extended the reservation; the requested
	// model's entries are entries[:base], admitted at basePrice.
	fell      bool
	base      int
	basePrice *cprice
}

// dropFallback gives back what a model fallback added to r, so that a
// request moving on to a further fallback is not left charged to the
// limits of a model that did not answer. Nil-safe.
func (r *Reservation) dropFallback() {
	if r == nil || !r.fell {
		return
	}
	for _, e := range r.entries[r.base:] {
		if e.reserved != 0 {
			r.add(e, -e.reserved)
		}
	}
	r.entries, r.price = r.entries[:r.base], r.basePrice
}

// entry is one limit's reservation.
type entry struct {
	lim      *climit // immutable; outlives a SetPolicy
	start    int64   // start of the fixed window reserved in (Unix ms)
	size     int64   // its size (ms): a calendar month's varies
	reserved int64
	used     int64 // the user's sliding-window usage before this request
	resetMs  int64 // time until the window forgets everything used so far, this request included
	urgent   bool  // usage was near the limit at admission: changes go to peers at once
	// topUp marks an entry a model fallback added to a cost_usd limit already
	// held, for what the dearer price adds: its limit is settled once, by the
	// first entry, against everything the entries of that limit reserved.
	topUp bool
}

// add records delta for e in the store, at once when e is urgent.
func (r *Reservation) add(e entry, delta int64) {
	if e.urgent && r.now != nil {
		r.now.AddNow(e.lim.name, r.user, e.start, e.size, delta)
		return
	}
	r.store.Add(e.lim.name, r.user, e.start, e.size, delta)
}

// holds reports whether r reserved in a limit named name (by name: a
// reloaded policy's limit of the same name counts the same keys). Nil-safe.
func (r *Reservation) holds(name string) bool {
	return r != nil && r.holdsBefore(name, len(r.entries))
}

// holdsBefore is holds among the first n entries.
func (r *Reservation) holdsBefore(name string, n int) bool {
	for _, e := range r.entries[:n] {
		if e.lim.name == name {
			return true
		}
	}
	return false
}

// reservedIn is what the first n entries reserved in the limit named name.
func (r *Reservation) reservedIn(name string, n int) int64 {
	var sum int64
	for _, e := range r.entries[:n] {
		if e.lim.name == name {
			sum = satAdd(sum, e.reserved)
		}
	}
	return sum
}

// costs reports whether r reserved in a cost_usd limit.
func (r *Reservation) costs() bool {
	for _, e := range r.entries {
		if e.lim.metric == MetricCostUSD {
			return true
		}
	}
	return false
}

// Settle adds, to every window key the reservation was made in, the true amount minus the
// reserved one: PromptTokens for prompt_tokens limits, PromptTokens+CompletionTokens for
// total_tokens, CompletionTokens for completion_tokens, the cost of u at the model's price as
// Admit found it for cost_usd (see Limiter.Cost), nothing for requests. Token counts are
// clamped to [0, 2^53]. The delta may be negative (the counters are PN-counters). It goes to the reserved window even if the window has
// rolled over since, so usage is counted when it was admitted. Settle is nil-safe and idempotent:
// only the first call has an effect, whatever goroutines call it.
func (r *Reservation) Settle(u Usage) {
	if r == nil || !r.settled.CompareAndSwap(false, true) {
		return
	}
	for _, e := range r.entries {
		if e.topUp {
			continue // settled with its limit's first entry
		}
		reserved := e.reserved
		var actual int64
		switch e.lim.metric {
		case MetricPromptTokens:
			actual = clampTokens(u.PromptTokens)
		case MetricTotalTokens:
			actual = clampTokens(u.PromptTokens) + clampTokens(u.CompletionTokens)
		case MetricCompletionTokens:
			actual = clampTokens(u.CompletionTokens)
		case MetricCostUSD:
			actual, reserved = r.price.cost(u), r.reservedIn(e.lim.name, len(r.entries))
		default: // requests: the 1 reserved is the truth
			continue
		}
		if d := actual - reserved; d != 0 {
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
// proportion to their size (ok false: no such limit applied). cost_usd limits
// are not token limits: see TightestCost. It reads what Admit saw, so it costs
// no store lookup. Nil-safe.
func (r *Reservation) Tightest() (tokens, requests Headroom, tokOK, reqOK bool) {
	if r == nil {
		return
	}
	for _, e := range r.entries {
		h := e.headroom()
		switch e.lim.metric {
		case MetricRequests:
			if !reqOK || tighter(h, requests) {
				requests, reqOK = h, true
			}
		case MetricCostUSD:
		default:
			if !tokOK || tighter(h, tokens) {
				tokens, tokOK = h, true
			}
		}
	}
	return
}

// TightestCost returns, among the cost_usd limits the request was reserved
// against, the one with the least headroom left in proportion to its size, in
// nano-dollars (USD converts), as Tightest does for tokens; ok false: no
// cost_usd limit applied. Nil-safe.
func (r *Reservation) TightestCost() (cost Headroom, ok bool) {
	if r == nil {
		return
	}
	for _, e := range r.entries {
		if h := e.headroom(); e.lim.metric == MetricCostUSD && (!ok || tighter(h, cost)) {
			cost, ok = h, true
		}
	}
	return
}

// headroom is what e's limit leaves once the request is reserved.
func (e *entry) headroom() Headroom {
	h := Headroom{Limit: e.lim.limit, Reset: time.Duration(e.resetMs) * time.Millisecond}
	if e.used < e.lim.limit { // else 0; the test keeps limit - used from overflowing
		h.Remaining = max(e.lim.limit-e.used-e.reserved, 0)
	}
	return h
}

// tighter reports whether a leaves a smaller share of its limit than b
// (limits are positive; the products fit in 128 bits, compared as such).
func tighter(a, b Headroom) bool {
	ah, al := bits.Mul64(uint64(a.Remaining), uint64(b.Limit))
	bh, bl := bits.Mul64(uint64(b.Remaining), uint64(a.Limit))
	return ah < bh || ah == bh && al < bl
}
