package cluster

import (
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// forgetAfter is how long a dead or departed member stays listed (and, when
// dead, is retried by the reconnect loop).
const forgetAfter = 15 * time.Minute

// Member is one cluster member as GET /cluster shows it.
type Member struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"` // alive | dead | left (memberlist reports no suspicion: see memberTable)
}

type memberRecord struct {
	node  memberlist.Node // copied under memberlist's lock: its own may change under us
	state memberlist.NodeStateType
	since time.Time
}

// memberTable is the node's memberlist.EventDelegate: every member ever
// seen, with dead and departed ones kept for forgetAfter. memberlist calls
// it with its node lock held, so it never calls back into memberlist, and
// copies each node then: the *Node that Members returns is memberlist's own
// and races with its updates. memberlist reports no event for suspicion, so
// a suspect member shows as alive until it is declared dead. Safe for
// concurrent use.
type memberTable struct {
	mu    sync.Mutex
	now   func() time.Time
	nodes map[string]memberRecord
	// joined, when set, is called (without t.mu, with memberlist's lock
	// held) for every member that turns alive (new, or back from dead or
	// left) or comes back as a new run (its metadata, the replica ID,
	// changed). It must not block or call into memberlist.
	joined func(name, addr, replica string)
}

func (t *memberTable) set(n *memberlist.Node, state memberlist.NodeStateType) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.nodes[n.Name] = memberRecord{node: *n, state: state, since: t.now()}
}

// NotifyJoin implements memberlist.EventDelegate. memberlist calls it for a
// new member and for one back from dead or left, such as a replica restarted
// under its name.
func (t *memberTable) NotifyJoin(n *memberlist.Node) {
	t.set(n, memberlist.StateAlive)
	if t.joined != nil {
		t.joined(n.Name, n.Address(), string(n.Meta))
	}
}

// NotifyUpdate implements memberlist.EventDelegate. memberlist calls it when
// a member's metadata changes: a node restarted under its name before its
// peers noticed it was gone announces its new replica ID.
func (t *memberTable) NotifyUpdate(n *memberlist.Node) {
	t.set(n, memberlist.StateAlive)
	if t.joined != nil {
		t.joined(n.Name, n.Address(), string(n.Meta))
	}
}

// NotifyLeave implements memberlist.EventDelegate: n.State tells a
// graceful leave (left) from a failure (dead).
func (t *memberTable) NotifyLeave(n *memberlist.Node) {
	state := memberlist.StateDead
	if n.State == memberlist.StateLeft {
		state = memberlist.StateLeft
	}
	t.set(n, state)
}

// alive counts members not known to be dead or gone (suspects count).
func (t *memberTable) alive() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := 0
	for _, r := range t.nodes {
		if r.state == memberlist.StateAlive {
			c++
		}
	}
	return c
}

// dead returns the addresses of members that failed (not left) within
// forgetAfter, forgetting older ones.
func (t *memberTable) dead() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	now := t.now()
	for name, r := range t.nodes {
		if r.state == memberlist.StateAlive {
			continue
		}
		if now.Sub(r.since) > forgetAfter {
			delete(t.nodes, name)
			continue
		}
		if r.state == memberlist.StateDead {
			out = append(out, r.node.Address())
		}
	}
	return out
}

// list returns every member sorted by name.
func (t *memberTable) list() []Member {
	t.mu.Lock()
	out := make([]Member, 0, len(t.nodes))
	for name, r := range t.nodes {
		out = append(out, Member{Name: name, Address: r.node.Address(), State: stateName(r.state)})
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// node returns a copy of the member named name, in any state.
func (t *memberTable) node(name string) (*memberlist.Node, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.nodes[name]
	if !ok {
		return nil, false
	}
	n := r.node
	return &n, true
}

// peers returns copies of the alive members other than self.
func (t *memberTable) peers(self string) []*memberlist.Node {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []*memberlist.Node
	for name, r := range t.nodes {
		if name != self && r.state == memberlist.StateAlive {
			n := r.node
			out = append(out, &n)
		}
	}
	return out
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateLeft:
		return "left"
	default:
		return "dead"
	}
}
