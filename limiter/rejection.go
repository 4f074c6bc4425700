package limiter

import (
	"fmt"
	"strings"
	"time"
)

// Rejection is the error Admit returns when a limit refuses a request (HTTP 429). It carries
// what the proxy needs for the OpenAI-style body and the Retry-After and x-ratelimit-* headers.
// A Rejection is immutable once returned.
type Rejection struct {
	Limit  string // name of the limit that refused
	Metric Metric
	Type   string // "requests" for a requests limit, else "tokens"

	// LimitValue and Remaining are in the metric's unit: tokens, requests, or nano-dollars for
	// MetricCostUSD (USD converts).
	LimitValue int64 // the limit
	Remaining  int64 // max(0, limit - used), used as this replica sees it
	// Reset is how long until the sliding usage is fully released if nothing more is added
	// (x-ratelimit-reset-*); it may be 0 when the refusal is not about usage.
	Reset time.Duration
	// RetryAfter is the earliest time from now at which this same request would be admitted if
	// nothing more were added, solved from the window arithmetic, and at least one second. For a
	// request that can never be admitted (larger than the whole limit, or than the share of a
	// replica in a cluster) it is the window length: a client retrying blindly then backs off a
	// whole window, while the message says that retrying will not help.
	RetryAfter time.Duration
	Message    string // OpenAI-style; names the user, the limit and the figures, never a secret
	// Never is set when waiting cannot cure the refusal: the request is
	// larger than the whole limit, or than a replica's share of it.
	Never bool
}

// Error returns the message.
func (r *Rejection) Error() string { return r.Message }

// refusalKind says why a limit refused.
type refusalKind int

const (
	refusedReached   refusalKind = iota + 1 // the plain rule: used + need > limit
	refusedTooLarge                         // need > limit: never fits
	refusedShare                            // the escrow rule: need > the replica's share
	refusedShareSize                        // need > any share the escrow rule allows: never fits
)

// refusal is one limit's refusal, before it becomes a Rejection.
type refusal struct {
	lim       *climit
	kind      refusalKind
	cur, prev int64
	s         span
	used      int64
	need      int64
	out       int64 // the request's maximum output, 0 if not given
	replicas  int
	wait      time.Duration // RetryAfter before clamping
}

// never reports whether the request can never be admitted.
func (f *refusal) never() bool { return f.kind == refusedTooLarge || f.kind == refusedShareSize }

// worse reports whether f should be reported rather than g: a refusal that never clears first,
// then the one that lasts longest, so RetryAfter is a useful lower bound for every limit.
func (f *refusal) worse(g *refusal) bool {
	if f.never() != g.never() {
		return f.never()
	}
	return f.wait > g.wait
}

// rejection builds the error for user.
func (f *refusal) rejection(user string) *Rejection {
	c := f.lim
	r := &Rejection{
		Limit:      c.name,
		Metric:     c.metric,
		Type:       "tokens",
		LimitValue: c.limit,
		Remaining:  max(c.limit-f.used, 0),
		Reset:      time.Duration(resetAfter(f.cur, f.prev, f.s)) * time.Millisecond,
		RetryAfter: max(f.wait, time.Second),
		Never:      f.never(),
	}
	if c.metric == MetricRequests {
		r.Type = "requests"
	}
	// n formats an amount with its unit: "40 tokens", "3 requests", "$0.25".
	n := func(v int64) string {
		switch c.metric {
		case MetricCostUSD:
			return c.amount(v)
		case MetricRequests:
			return fmt.Sprintf("%d requests", v)
		}
		return fmt.Sprintf("%d tokens", v)
	}
	needs, reduce := "needs", "Reduce the prompt."
	switch c.metric {
	case MetricCostUSD:
		needs, reduce = "may cost", "Reduce the prompt or max_tokens, or use a cheaper model."
	case MetricCompletionTokens, MetricTotalTokens:
		if f.out > 0 {
			reduce = "Reduce the prompt or max_tokens."
		}
	}
	var b strings.Builder
	switch f.kind {
	case refusedTooLarge:
		fmt.Fprintf(&b, "Request too large for user %s on limit %s (%s): it %s %s but the whole limit is %s per %s, so it can never be admitted. %s",
			user, c.name, c.metric, needs, n(f.need), c.amount(c.limit), c.windowText(), reduce)
	case refusedShareSize:
		fmt.Fprintf(&b, "Request too large for user %s on limit %s (%s): it %s %s but with %d replicas sharing the limit a single request may use at most %s of its %s per %s, so it cannot be admitted. %s",
			user, c.name, c.metric, needs, n(f.need), f.replicas, c.amount(max(c.escrowAt, ceilDiv(c.limit, int64(f.replicas)))), c.amount(c.limit), c.windowText(), reduce)
	case refusedShare:
		fmt.Fprintf(&b, "Rate limit nearly reached for user %s on limit %s (%s): limit %s, used %s, requested %s; near the limit each of %d replicas may admit at most %s per request. Please try again in %s.",
			user, c.name, c.metric, c.amount(c.limit), c.amount(f.used), c.amount(f.need), f.replicas, n(escrowShare(c, f.used, f.replicas)), retryText(r.RetryAfter))
	default:
		what := "Rate limit"
		if c.metric == MetricCostUSD {
			what = "Budget"
		}
		fmt.Fprintf(&b, "%s reached for user %s on limit %s (%s): limit %s, used %s", what, user, c.name, c.metric, c.amount(c.limit), c.amount(f.used))
		if f.need > 0 || !c.open(f.need) {
			fmt.Fprintf(&b, ", requested %s", c.amount(f.need))
		}
		fmt.Fprintf(&b, ". Please try again in %s.", retryText(r.RetryAfter))
	}
	r.Message = b.String()
	return r
}

// retryText formats d rounded up to whole seconds, as the Retry-After header will say it.
func retryText(d time.Duration) string {
	return formatWindow((d + time.Second - 1).Truncate(time.Second))
}

// formatWindow formats d as a Go duration without zero trailing units: "1h", "1m", "30s",
// "1h30m", "250ms" rather than "1h0m0s".
func formatWindow(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}
