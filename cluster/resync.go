package cluster

import (
	"math/rand/v2"
	"time"

	"github.com/hashicorp/memberlist"
)

// Resync after a join.
//
// A node sends its deltas only to the members it holds alive (members.go). A
// member that joins, or comes back under its name after a crash, learns the
// current state from the seed it joins, by push/pull, and turns Ready; but
// every other node goes on treating it as absent (dead, or unknown) until
// memberlist's gossip of its alive message reaches it, a gossip interval or
// more later. A delta a node sends in that gap skips the joiner, and carries
// only the slots that changed: the joiner stays stale on them until they
// change again or until the next periodic push/pull, 5 s later by default.
// (A restart right after a crash is the common case: the peers declared the
// old run dead, and ignore the new one's alive message until it refutes
// that, after its join.)
//
// So when a member turns alive, and this node was ready before, the node
// runs an anti-entropy exchange with it at once: what changed before the
// node knew of the joiner differs between their digests, taken after, and is
// pulled; what changes afterwards goes to the joiner as deltas.

// resyncQueue bounds the joins waiting for a push/pull; more are dropped
// (the periodic push/pull repairs them).
const resyncQueue = 64

// resyncFanout is how many members, about, resync a joiner.
const resyncFanout = 16

// resyncReq is a member to run an anti-entropy exchange with.
type resyncReq struct {
	addr    string // ip:port
	replica string // its replica ID (memberlist metadata); "" from an older node
}

// memberJoined is the member table's join hook: it queues a push/pull with
// a member that turned alive or restarted. Called with memberlist's lock
// held; it never blocks.
func (n *Node) memberJoined(name, addr, replica string) {
	if name == n.cfg.NodeName || !n.ready.Load() {
		return // ourselves, or our own join, whose push/pull is under way
	}
	select {
	case n.resync <- resyncReq{addr, replica}:
	default:
	}
}

// resyncLoop runs the push/pulls memberJoined queues, one at a time, until
// Shutdown. Every new run of a member (a new replica ID) is resynced at once;
// one run that flaps (dead, alive, dead...) under load is resynced at most
// once per PushPullInterval, the periodic exchange covering the rest. In a
// cluster of more than resyncFanout members, a node resyncs a joiner with
// probability resyncFanout/members, so that a joiner gets about resyncFanout
// exchanges, not one per member (64 members joining one another would
// otherwise make 2,000 of them); the others learn of the joiner by
// memberlist's gossip within a few intervals, and what they sent it in the
// meantime reaches it again with their next interval's batch (broadcast.go).
func (n *Node) resyncLoop(ml *memberlist.Memberlist) {
	defer n.wg.Done()
	last := map[resyncReq]time.Time{} // run -> its last resync
	for {
		select {
		case <-n.ctx.Done():
			return
		case req := <-n.resync:
			start := time.Now()
			for r, t := range last {
				if start.Sub(t) >= n.cfg.PushPullInterval {
					delete(last, r)
				}
			}
			if _, ok := last[req]; ok {
				continue
			}
			if alive := n.members.alive(); alive > resyncFanout && rand.N(alive) >= resyncFanout {
				continue
			}
			last[req] = start
			addr := req.addr
			if _, err := ml.Join([]string{addr}); err != nil {
				delete(last, req) // a later event of this run may retry
				n.log.Debug().Err(err).Str("address", addr).Msg("anti-entropy exchange with a joined member")
				continue
			}
			n.log.Debug().Str("address", addr).Dur("took", time.Since(start)).Msg("anti-entropy exchange with a joined member done")
		}
	}
}
