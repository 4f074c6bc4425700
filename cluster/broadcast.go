package cluster

import (
	"encoding/binary"

	"github.com/hashicorp/memberlist"
)

// defaultDirectMax is the largest cluster (members, self included) to which
// a node sends its deltas directly, one UDP packet per peer per batch. Above
// it deltas go through memberlist's gossip queue, O(log N) per node instead of
// O(N). Direct sending converges within about one gossip interval; the queue
// needs several gossip rounds (see BenchmarkConvergence).
const defaultDirectMax = 16

// maxQueued bounds the gossip queue; beyond it the oldest slots are pruned
// (push/pull repairs what they would have carried).
const maxQueued = 50_000

// slotBroadcast is one slot's absolute value in the gossip queue. It is named
// by its slot, so a newer value of the same slot replaces the queued one in
// O(1) and the queue holds at most one message per slot.
type slotBroadcast struct {
	name string // encoded slot key
	msg  []byte // encoded entry: slot key, P, N
}

func (b *slotBroadcast) Invalidates(o memberlist.Broadcast) bool {
	ob, ok := o.(*slotBroadcast)
	return ok && ob.name == b.name
}
func (b *slotBroadcast) Name() string    { return b.name }
func (b *slotBroadcast) Message() []byte { return b.msg }
func (b *slotBroadcast) Finished()       {}

// enqueue queues every delta in the gossip queue, each as its own entry.
// Entries of this replica's slots are encoded with an empty replica, which is
// right because only this node assembles them (under its own header).
func (n *Node) enqueue(ds []slotDelta) {
	for i := range ds {
		k, err := appendSlotKey(nil, &ds[i], n.replica)
		if err != nil {
			n.met.drop(reasonUnencodable, 1)
			continue
		}
		msg := binary.AppendUvarint(append(make([]byte, 0, len(k)+20), k...), ds[i].P)
		msg = binary.AppendUvarint(msg, ds[i].N)
		n.queue.QueueBroadcast(&slotBroadcast{name: string(k), msg: msg})
	}
}

// assemble packs as many queued entries as fit in limit-overhead bytes into
// one relayed message under this node's header: one message per packet,
// however many slots it carries. Called by memberlist for every gossip and
// probe packet; must not block.
func (n *Node) assemble(overhead, limit int) [][]byte {
	if n.store.dirty.Load() && !n.direct(n.members.alive()) && n.flushMu.TryLock() {
		n.flushLocked() // put what changed since the last tick on this packet too
		n.flushMu.Unlock()
	}
	if n.queue.NumQueued() == 0 {
		return nil
	}
	hdr := appendHeader(make([]byte, 0, limit), header{Relay: true, SentAt: n.cfg.Now().UnixMilli(), Sender: n.replica})
	avail := limit - overhead - len(hdr)
	if avail <= 0 {
		return nil
	}
	parts := n.queue.GetBroadcasts(0, avail)
	if len(parts) == 0 {
		return nil
	}
	msg := hdr
	for _, p := range parts {
		msg = append(msg, p...)
	}
	n.met.sent(len(msg))
	return [][]byte{msg}
}

// sendDirect sends ds to every peer as packets of at most packetBudget
// bytes, unrelayed: each peer hears it from the source.
func (n *Node) sendDirect(ml *memberlist.Memberlist, peers []*memberlist.Node, ds []slotDelta) {
	msgs, skipped := packDeltas(header{SentAt: n.cfg.Now().UnixMilli(), Sender: n.replica}, ds, packetBudget)
	n.met.drop(reasonUnencodable, skipped)
	for _, msg := range msgs {
		for _, p := range peers {
			if err := ml.SendBestEffort(p, msg); err != nil {
				n.log.Debug().Err(err).Str("peer", p.Name).Msg("send delta")
				continue
			}
			n.met.sent(len(msg))
		}
	}
}

// flush sends this replica's slots changed since the previous flush:
// directly to every peer in a small cluster, else through the gossip queue.
// With no peer the changes are dropped: a joiner learns them by push/pull.
func (n *Node) flush() {
	n.flushMu.Lock()
	defer n.flushMu.Unlock()
	n.flushLocked()
}

func (n *Node) flushLocked() {
	ml := n.ml.Load()
	if ml == nil {
		return
	}
	ds := n.store.takeDirty(n.dirtyBuf[:0])
	defer func() { clear(ds); n.dirtyBuf = ds[:0] }()
	if len(ds) == 0 {
		return
	}
	peers := n.members.peers(n.cfg.NodeName)
	switch {
	case len(peers) == 0:
	case n.direct(len(peers) + 1):
		n.sendDirect(ml, peers, ds)
	default:
		n.enqueue(ds)
	}
}

// direct reports whether a cluster of members nodes gets deltas directly.
func (n *Node) direct(members int) bool { return members <= n.directMaxOrDefault() }

// directMaxOrDefault is the largest cluster that gets deltas directly.
func (n *Node) directMaxOrDefault() int {
	if n.cfg.directMax == 0 {
		return defaultDirectMax
	}
	return n.cfg.directMax
}
