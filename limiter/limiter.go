// Package limiter holds the rate-limit policy, the sliding-window arithmetic, admission and
// settlement of genai-gateway.
//
// Each limit counts one metric per user in sliding windows made of two fixed windows aligned to
// Unix time (see window.go), or in a fixed UTC calendar day or month (calendar.go). Metrics are
// tokens, requests, or spend: cost_usd limits count nano-dollars, pricing requests with the
// policy's prices (price.go). Admit checks every limit that applies to a request and, if all
// admit it, reserves the estimate at once in the current fixed window of each; the returned
// Reservation is settled to the true usage when the response ends. Counters live in a Store,
// in a cluster the replicated CRDT store, so limits hold cluster-wide; near a limit the escrow
// rule (escrow.go) bounds what replicas with stale views can admit together.
//
// The package imports no sibling package: it declares the Store it needs.
package limiter

import (
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Store is what the limiter needs from the counter store; *cluster.Store satisfies it. Keys
// are (limit name, user, window start in Unix ms, window size in ms). Both methods must be safe
// for concurrent use and must not block for long: Admit calls them on the request path.
type Store interface {
	// Add adds delta to this replica's own slot of the key; delta may be negative.
	Add(limit, user string, start, size, delta int64)
	// Sum returns the cluster-wide total of the key as this replica sees it; it includes this
	// replica's own adds at once.
	Sum(limit, user string, start, size int64) int64
}

// Options are the limiter's optional dependencies and tunables.
// UrgentStore is implemented by stores that can send a change to their peers at once
// (*cluster.Store). Near a limit, gossip delay is what lets replicas admit together what one
// would refuse, so changes of a user whose usage has passed Options.UrgentFraction of a limit
// go through AddNow; the others travel batched on the gossip interval.
type UrgentStore interface {
	AddNow(limit, user string, start, size, delta int64)
}

type Options struct {
	// Now is the clock windows are computed from; nil = time.Now.
	Now func() time.Time
	// Replicas returns the number of live replicas sharing the counters, for the escrow rule
	// near a limit; nil or a result <= 1 turns the rule off. It must be safe for concurrent
	// use and cheap: Admit may call it while holding a per-user lock.
	Replicas func() int
	// EscrowThreshold is the fraction of a limit above which an admission must fit in this
	// replica's share of the remaining (see escrowAllows in escrow.go). 0 means
	// DefaultEscrowThreshold (0.8); a value >= 1 turns the rule off; a negative value applies it
	// to every admission.
	EscrowThreshold float64

	// UrgentFraction is the share of a limit past which a user's changes are sent to peers at
	// once (UrgentStore.AddNow) instead of batched on the gossip interval. 0, the default,
	// sends every change at once: a user can go from idle to over a limit within one gossip
	// interval, and only fresh views stop that. A higher value saves gossip traffic for users
	// far from their limits, at that price.
	UrgentFraction float64
}

// ErrMissingUser is returned by Admit for a request without a user when the policy's
// MissingUser is "reject" (HTTP 400).
var ErrMissingUser = errors.New("missing user: the request names no user and anonymous requests are refused")

// stripes is the number of per-user locks that make check-and-reserve atomic on a replica.
const stripes = 64

// Limiter admits requests against a Policy and reserves their usage in a Store. All its
// methods are safe for concurrent use.
type Limiter struct {
	policy         atomic.Pointer[compiled]
	store          Store
	urgent         UrgentStore // store, when it can send changes at once; else nil
	urgentFraction float64
	now            func() time.Time
	replicas       func() int
	theta          float64
	metrics        *metrics
	log            zerolog.Logger
	seed           maphash.Seed
	unpriced       unpricedLog // models logged as unpriced, kept across SetPolicy
	locks          [stripes]paddedMutex
}

// paddedMutex keeps neighbouring stripe locks off one cache line.
type paddedMutex struct {
	sync.Mutex
	_ [56]byte
}

// New returns a Limiter enforcing p with counters in store. It registers its metrics on reg
// (nil = not registered) and fails if p is invalid or the metrics cannot be registered.
func New(p Policy, store Store, opts Options, log zerolog.Logger, reg prometheus.Registerer) (*Limiter, error) {
	if store == nil {
		return nil, errors.New("limiter: nil store")
	}
	m, err := newMetrics(reg)
	if err != nil {
		return nil, err
	}
	l := &Limiter{
		store:    store,
		now:      opts.Now,
		replicas: opts.Replicas,
		theta:    opts.EscrowThreshold,
		metrics:  m,
		log:      log,
		seed:     maphash.MakeSeed(),
	}
	l.urgent, _ = store.(UrgentStore)
	l.urgentFraction = min(max(opts.UrgentFraction, 0), 1)
	if l.now == nil {
		l.now = time.Now
	}
	if l.theta == 0 {
		l.theta = DefaultEscrowThreshold
	}
	if err := l.SetPolicy(p); err != nil {
		return nil, err
	}
	return l, nil
}

// SetPolicy validates p and swaps it in atomically (for a SIGHUP reload). Admissions in flight
// finish under the policy they started with; reservations settle into the keys they reserved.
// Counters are keyed by limit name and window, so a limit that keeps both keeps its usage. On
// error the current policy stays. A disabled policy is not validated.
func (l *Limiter) SetPolicy(p Policy) error {
	c, err := compile(p, l.theta, l.metrics)
	if err != nil {
		return err
	}
	l.policy.Store(c)
	l.log.Info().Bool("enabled", c.enabled).Int("limits", len(c.defaults)).
		Int("overrides", len(c.overrides)).Int("prices", len(c.prices)).Msg("rate-limit policy loaded")
	return nil
}

// Enabled reports whether the current policy limits anything.
func (l *Limiter) Enabled() bool { return l.policy.Load().enabled }

// Admit decides whether the request of user (the raw header value, "" when absent) for model
// may go upstream and, if so, reserves its usage at once. It returns:
//   - nil, nil when limiting is off or no limit applies (a nil Reservation settles to nothing);
//   - nil, ErrMissingUser when user is "" and the policy rejects anonymous requests;
//   - nil, *Rejection when a limit refuses it;
//   - the Reservation otherwise, to be settled when the response ends.
//
// est is the request's prompt tokens and requested maximum output (see Estimate); the prompt
// matters only when a prompt_tokens, total_tokens or cost_usd limit applies. When est.Bound
// fits every such limit, Admit reserves est.Cheap and never calls est.Exact; otherwise it calls
// est.Exact at most once, never under a lock, and decides on the exact count, so a refusal
// always names the exact count and a request is refused only if its exact count does not fit.
// cost_usd limits price the estimate with the first of Policy.Prices that matches model; a
// model without a price costs 0 (logged once) and is refused only once the budget is spent. Check-and-reserve is atomic among the Admits of
// one Limiter for the same user; across replicas the escrow rule bounds over-admission. Admit
// is safe for concurrent use.
func (l *Limiter) Admit(user, model string, est Estimate) (*Reservation, error) {
	return l.admit(nil, false, user, model, est)
}

// Fallback admits the request reserved as r (nil: nothing was reserved) for
// another model, the one a model fallback sends it to: it checks and
// reserves the limits that apply to model and not already to r, so a limit
// that covers both models is charged once, and from then on r prices
// cost_usd limits at model's price, the price of the model that answers. A
// cost_usd limit r already holds is checked again for what the estimate
// costs more at that price, and that much more is reserved, so a fallback
// to a dearer model cannot pass a budget the model would be refused by.
// It returns r extended (a new Reservation when r is nil), or the refusal
// of the limits of model, leaving r as the requested model left it. A
// request may go through several fallbacks: what an earlier one reserved
// is given back first, so the request stays charged only to the limits of
// the model it asked for and of the model that answers. Like Settle, it
// must not run concurrently with the reservation's other methods.
func (l *Limiter) Fallback(r *Reservation, user, model string, est Estimate) (*Reservation, error) {
	r.dropFallback()
	return l.admit(r, true, user, model, est)
}

// admit is Admit, extending r when it is not nil, or for a model fallback
// (see Fallback).
func (l *Limiter) admit(r *Reservation, fallback bool, user, model string, est Estimate) (*Reservation, error) {
	p := l.policy.Load()
	if !p.enabled {
		return r, nil
	}
	if r != nil {
		user = r.user
	}
	if user == "" {
		if !p.anonymous {
			return nil, ErrMissingUser
		}
		user = AnonymousUser
	}
	limits := p.limitsFor(user)
	var mask uint64 // bit i: limits[i] applies (i < 64; later ones are matched again below)
	applies, costs := false, false
	for i, c := range limits {
		if !c.matches(model) || r.holds(c.name) {
			continue
		}
		if i < 64 {
			mask |= 1 << i
		}
		applies = true
		costs = costs || c.metric == MetricCostUSD
	}
	heldCost := r != nil && r.costs()
	var price *cprice
	if costs || heldCost { // held cost_usd limits: settled at this model's price from now on
		if price = p.priceFor(model); price == nil {
			l.unpriced.report(l.log, model) // a budget covers it: worth a warning even with no prices
		}
	}
	if !applies && !heldCost {
		return r, nil
	}
	needEst := heldCost && price != nil // a dearer price tops the held budgets up

	for i, c := range limits {
		if needEst {
			break
		}
		needEst = (i < 64 && mask&(1<<i) != 0 || i >= 64 && c.matches(model) && !r.holds(c.name)) && c.usesPrompt(price)
	}
	var e estimate
	if needEst {
		e.start(est)
	} else {
		e.exact = true // no limit counts the prompt: nothing to refine
		e.out = clampTokens(est.MaxOutput)
	}

	from, was := 0, (*cprice)(nil)
	if r == nil {
		r = &Reservation{store: l.store, now: l.urgent, user: user}
	} else {
		from, was = len(r.entries), r.price
	}
	if fallback && !r.fell { // what the requested model reserved ends at from
		r.fell, r.base, r.basePrice = true, from, was
	}
	r.price = price
	mu := &l.locks[maphash.String(l.seed, user)%stripes]
	var worst refusal
	for {
		mu.Lock()
		var undecided bool
		worst, undecided = l.check(limits, mask, model, user, &e, r, from)
		if !undecided {
			break
		}
		mu.Unlock()
		e.refine() // the bound did not fit some limit: the exact count decides
	}
	if worst.kind == 0 {
		for _, e := range r.entries[from:] {
			if e.reserved != 0 {
				r.add(e, e.reserved)
			}
		}
	}
	mu.Unlock()
	if worst.kind != 0 {
		r.entries, r.price = r.entries[:from], was
		worst.lim.limited.Inc()
		if worst.kind == refusedShare || worst.kind == refusedShareSize {
			worst.lim.escrows.Inc()
		}
		return nil, worst.rejection(user)
	}
	return r, nil
}

// check decides every limit that applies (bit i of mask, or matched again past 64) with the
// user's stripe lock held, filling r.entries past from with what to reserve if all admit, and
// returns the refusal to report (kind 0: admitted). Extending a reservation (from > 0), it
// also decides, for each cost_usd limit held, what the estimate costs at r.price beyond what is
// held (a top-up entry). While e is not exact it decides token limits on the bound and returns
// undecided as soon as one does not fit: the caller then refines e and checks again, so a
// refusal is never reported on a bound.
func (l *Limiter) check(limits []*climit, mask uint64, model, user string, e *estimate, r *Reservation, from int) (worst refusal, undecided bool) {
	if from == 0 {
		r.entries = r.inline[:0]
	}
	r.entries = r.entries[:from]
	st := checkState{nowMs: l.now().UnixMilli()}
	for i, c := range limits {
		if i < 64 && mask&(1<<i) == 0 || i >= 64 && (!c.matches(model) || r.holdsBefore(c.name, from)) {
			continue
		}
		if l.checkOne(c, c.need(e.decide, e.out, r.price), c.need(e.reserve, e.out, r.price), false, user, e, r, &st, &worst) {
			return refusal{}, true
		}
	}
	for k := range from {
		h := r.entries[k]
		if h.lim.metric != MetricCostUSD || h.topUp {
			continue
		}
		held := r.reservedIn(h.lim.name, from)
		need := h.lim.need(e.decide, e.out, r.price) - held
		if need <= 0 {
			continue
		}
		reserve := max(h.lim.need(e.reserve, e.out, r.price)-held, 0)
		if l.checkOne(h.lim, need, reserve, true, user, e, r, &st, &worst) {
			return refusal{}, true
		}
	}
	return worst, false
}

// checkState is what one check asks once and shares across its limits.
type checkState struct {
	nowMs    int64
	replicas int // asked lazily: 0 until then
}

// checkOne decides one limit c for a request that needs need of it (on the
// estimate as decided so far) and would reserve reserve: an entry appended
// to r when it fits, else worst updated. It reports true, deciding nothing,
// when c counts the prompt, refuses, and e is not exact yet.
func (l *Limiter) checkOne(c *climit, need, reserve int64, topUp bool, user string, e *estimate, r *Reservation, st *checkState, worst *refusal) (undecided bool) {
	s := c.span(st.nowMs)
	cur := l.store.Sum(c.name, user, s.start, s.size)
	var prev int64
	if !s.fixed {
		prev = l.store.Sum(c.name, user, s.start-s.size, s.size)
	}
	used := slidingUsed(cur, prev, s)
	open := c.open(need)
	var kind refusalKind
	target := int64(0) // the largest usage at which the request would fit
	switch {
	case need > c.limit:
		kind = refusedTooLarge
	case need > c.limit-used || open && used >= c.limit:
		kind, target = refusedReached, c.limit-need
		if open {
			target = min(target, c.limit-1)
		}
	case c.escrow && used > c.escrowAt:
		if st.replicas == 0 {
			st.replicas = l.liveReplicas()
		}
		if st.replicas > 1 && !escrowAllows(c, used, need, st.replicas) {
			kind, target = refusedShare, escrowTarget(c, need, st.replicas)
			if target < 0 {
				kind = refusedShareSize
			}
		}
	}
	if kind != 0 && c.usesPrompt(r.price) && !e.exact {
		return true
	}
	if kind == 0 {
		r.entries = append(r.entries, entry{lim: c, start: s.start, size: s.size, reserved: reserve, used: used,
			resetMs: resetAfter(cur+max(reserve, 1), prev, s), topUp: topUp,
			urgent: float64(satAdd(used, need)) >= l.urgentFraction*float64(c.limit)})
		return false
	}
	f := refusal{lim: c, kind: kind, cur: cur, prev: prev, s: s, used: used, need: need, out: e.out, replicas: st.replicas}
	if f.never() {
		f.wait = time.Duration(s.size) * time.Millisecond
	} else {
		ms, _ := waitFor(cur, prev, s, target)
		f.wait = time.Duration(ms) * time.Millisecond
	}
	if worst.kind == 0 || f.worse(worst) {
		*worst = f
	}
	return false
}

// liveReplicas returns Options.Replicas(), or 1 without it.
func (l *Limiter) liveReplicas() int {
	if l.replicas == nil {
		return 1
	}
	return l.replicas()
}
