package route

import (
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxCachedPools bounds the models whose pools a Table remembers: model
// names come from clients, so past it a pool is built per request (its
// weighted round robin then starts afresh each time).
const maxCachedPools = 4096

// maxPoolMembers is the most members of a pool that are considered: tried
// members are a 64-bit set.
const maxPoolMembers = 64

// Config is the routing policy of a Table.
type Config struct {
	Strategy Strategy
	// Retries is how many further members a request may try after a
	// failure, before any byte reached the client.
	Retries int
	// RetryOn are the outcomes retried.
	RetryOn OutcomeSet
	// Cooldown is how long a failing member is skipped (DefaultCooldown
	// when 0), or its own Retry-After when longer (up to MaxCooldown).
	Cooldown time.Duration
	// Fallbacks lists, by requested model, the models a request goes on
	// to, in order, once its own model's pool has failed.
	Fallbacks map[string][]string
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Member is one upstream of a Table: its state and the models it serves
// (path.Match globs; none = every model).
type Member struct {
	Node   *Node
	Models []string
}

// Table routes over one set of upstreams with one Config. It is immutable
// but for the pools it caches and the Nodes' state; the proxy builds a new
// one when the upstreams or the policy change.
type Table struct {
	cfg     Config
	members []Member
	mu      sync.Mutex                // serialises cache inserts
	pools   atomic.Pointer[poolCache] // copy on write
}

type poolCache struct {
	byModel map[string]*Pool
	bySet   map[string]*Pool // by member list, so models with one pool share its rotation
}

// NewTable returns a Table over members, in file order.
func NewTable(cfg Config, members []Member) *Table {
	if cfg.Cooldown <= 0 {
		cfg.Cooldown = DefaultCooldown
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Retries = max(cfg.Retries, 0)
	t := &Table{cfg: cfg, members: members}
	t.pools.Store(&poolCache{byModel: map[string]*Pool{}, bySet: map[string]*Pool{}})
	return t
}

// Config is the table's policy, defaults applied.
func (t *Table) Config() Config { return t.cfg }

func (t *Table) now() int64 { return t.cfg.Now().UnixNano() }

// serves reports whether member i serves model.
func (t *Table) serves(i int, model string) bool {
	globs := t.members[i].Models
	if len(globs) == 0 {
		return true
	}
	for _, g := range globs {
		if ok, _ := path.Match(g, model); ok {
			return true
		}
	}
	return false
}

// Pool returns the pool of model: every member that serves it, in file
// order; nil when none does.
func (t *Table) Pool(model string) *Pool {
	if p := t.pools.Load().byModel[model]; p != nil {
		return p
	}
	var idx []int
	for i := range t.members {
		if t.serves(i, model) {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return nil
	}
	if len(idx) > maxPoolMembers {
		idx = idx[:maxPoolMembers]
	}
	var key strings.Builder
	for _, i := range idx {
		key.WriteString(strconv.Itoa(i))
		key.WriteByte(',')
	}
	set := key.String()
	t.mu.Lock()
	defer t.mu.Unlock()
	old := t.pools.Load()
	if p := old.byModel[model]; p != nil {
		return p
	}
	p := old.bySet[set]
	if p == nil {
		p = &Pool{t: t, idx: idx, cw: make([]int64, len(idx))}
	}
	if len(old.byModel) >= maxCachedPools {
		return p
	}
	next := &poolCache{byModel: make(map[string]*Pool, len(old.byModel)+1), bySet: old.bySet}
	for k, v := range old.byModel {
		next.byModel[k] = v
	}
	next.byModel[strings.Clone(model)] = p
	if old.bySet[set] == nil {
		next.bySet = make(map[string]*Pool, len(old.bySet)+1)
		for k, v := range old.bySet {
			next.bySet[k] = v
		}
		next.bySet[set] = p
	}
	t.pools.Store(next)
	return p
}

// Retryable reports whether an attempt that ended with o may be followed
// by another, attempts having been made so far.
func (t *Table) Retryable(o Outcome, attempts int) bool {
	return attempts <= t.cfg.Retries && t.cfg.RetryOn.Has(o)
}

// Fallbacks returns the models a request for model goes on to once its
// pool has failed (Config.Fallbacks); the slice must not be changed.
func (t *Table) Fallbacks(model string) []string { return t.cfg.Fallbacks[model] }

// Fails reports whether an attempt that ended with o failed in a way
// routing retries: after the last retry, a model fallback takes over.
func (t *Table) Fails(o Outcome) bool { return t.cfg.RetryOn.Has(o) }

// Slot is an attempt's hold on a member: a request in flight on it, and
// perhaps its half-open probe. The zero Slot holds nothing.
type Slot struct {
	// Pos is the member's position in the pool, Index its position in
	// the Table (the upstream's index in file order).
	Pos, Index int
	held       bool
	probe      bool // it took the half-open probe
}

// Held reports whether s holds a member.
func (s Slot) Held() bool { return s.held }

// Report records how the attempt on s ended: the member's attempts by
// outcome and its health (a 429 cools it for the longer of the cool-down
// and retryAfter, up to MaxCooldown; FailuresToCool failures in a row, or
// one failed half-open probe, cool it for the cool-down; an OK makes it
// healthy). The slot stays held until Release.
func (t *Table) Report(s Slot, o Outcome, retryAfter time.Duration) {
	if !s.held || o >= NumOutcomes {
		return
	}
	t.members[s.Index].Node.report(o, retryAfter, t.now, t.cfg.Cooldown)
}

// Release gives the slot back: the request no longer runs on the member
// (and a probe it took but never reported, say for a request the rate
// limiter refused, is free for the next request).
func (t *Table) Release(s Slot) {
	if !s.held {
		return
	}
	n := t.members[s.Index].Node
	n.inflight.Add(-1)
	if s.probe {
		n.probe.Store(0)
	}
}

// Pool is the members that serve one model, in file order. Safe for
// concurrent use.
type Pool struct {
	t   *Table
	idx []int // table indexes
	mu  sync.Mutex
	cw  []int64 // current weights of the smooth weighted round robin
}

// Len is the number of members.
func (p *Pool) Len() int { return len(p.idx) }

// Index is the table index (the upstream) of the member at pos.
func (p *Pool) Index(pos int) int { return p.idx[pos] }

// Has reports whether the pool holds the member of table index i.
func (p *Pool) Has(i int) bool {
	for _, j := range p.idx {
		if j == i {
			return true
		}
	}
	return false
}

// Mask returns the set of pool positions (bit i = position i) whose table
// index skip reports true for, to pass to Pick as already tried.
func (p *Pool) Mask(skip func(index int) bool) uint64 {
	var m uint64
	for pos, i := range p.idx {
		if skip(i) {
			m |= 1 << pos
		}
	}
	return m
}

// Pick chooses the member for the next attempt among those whose pool
// position is not in tried, and takes a slot on it. Members cooling down
// or full are skipped; when every untried member that has room is cooling
// down, the one whose cool-down ends first is taken anyway, so a pool
// never refuses for being unhealthy. ok is false when every untried
// member is full (or none is left).
func (p *Pool) Pick(tried uint64) (s Slot, ok bool) {
	t := p.t
	var now int64 // read once, only when some member is cooling
	for {
		best, bestProbe := -1, false
		fallback, fallbackEnd := -1, int64(0)
		var total int64
		weighted := t.cfg.Strategy == Weighted
		if weighted {
			p.mu.Lock()
		}
		for pos, i := range p.idx {
			if tried&(1<<pos) != 0 {
				continue
			}
			n := t.members[i].Node
			if n.full() {
				continue
			}
			probe := false
			if u := n.until.Load(); u != 0 {
				if now == 0 {
					now = t.now()
				}
				if now < u || n.probing(now, t.cfg.Cooldown) {
					if fallback < 0 || u < fallbackEnd {
						fallback, fallbackEnd = pos, u
					}
					continue
				}
				probe = true
			}
			switch t.cfg.Strategy {
			case Priority:
				best, bestProbe = pos, probe
			case LeastBusy:
				if best < 0 || n.inflight.Load() < t.members[p.idx[best]].Node.inflight.Load() {
					best, bestProbe = pos, probe
				}
				continue
			case Weighted:
				p.cw[pos] += n.weight
				total += n.weight
				if best < 0 || p.cw[pos] > p.cw[best] {
					best, bestProbe = pos, probe
				}
				continue
			}
			break
		}
		if weighted {
			if best >= 0 {
				p.cw[best] -= total
			}
			p.mu.Unlock()
		}
		force := false
		if best < 0 {
			if fallback < 0 {
				return Slot{}, false
			}
			best, force = fallback, true
		}
		i := p.idx[best]
		if now == 0 && bestProbe {
			now = t.now()
		}
		probe := bestProbe && !force
		if t.members[i].Node.take(probe, now, t.cfg.Cooldown) {
			return Slot{Pos: best, Index: i, held: true, probe: probe}, true
		}
		// Full, or its probe taken, since it was looked at: look again
		// without it.
		tried |= 1 << best
	}
}

// probing reports whether a half-open probe is in flight on n.
func (n *Node) probing(now int64, cooldown time.Duration) bool {
	p := n.probe.Load()
	return p != 0 && now-p < int64(cooldown)
}
