package cluster

import (
	"encoding/binary"

	"github.com/hashicorp/memberlist"
)

// defaultDirectMax is the largest cluster (members, self included) to which
// a node sends its deltas directly, one UDP packet per peer per batch. Above
// it deltas go through memberlist's gossip queue, O(log N) per node instead of
// O(N). Direct sending converges within milliseconds, and within a gossip
// interval for a peer that lost a packet; the queue needs several gossip
// rounds (see BenchmarkDissemination: at 32 and 64 nodes the queue's p99 is
// seconds; BenchmarkGossipBandwidth measures the direct sends' bytes and
// packets at 10,000 requests/s). Every node receives every change either way; what
// direct sending adds is the N-1 packets at the sender.
const defaultDirectMax = 64

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
		n.flushLocked(false) // put what changed since the last tick on this packet too
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
// tick is set on the gossip interval's flush, which also sends, a second
// time, every value sent directly since the previous tick.
func (n *Node) flush(tick bool) {
	n.flushMu.Lock()
	defer n.flushMu.Unlock()
	n.flushLocked(tick)
}

func (n *Node) flushLocked(tick bool) {
	ml := n.ml.Load()
	if ml == nil {
		return
	}
	fresh := n.store.takeDirty(n.dirtyBuf[:0])
	defer func() { clear(fresh); n.dirtyBuf = fresh[:0] }()
	if len(fresh) == 0 && (!tick || len(n.again)+len(n.again2) == 0) {
		return
	}
	peers := n.members.peers(n.cfg.NodeName)
	switch {
	case len(peers) == 0:
		n.again, n.again2 = n.again[:0], n.again2[:0]
	case n.direct(len(peers) + 1):
		// Every value sent directly goes out three times: at once, and again
		// with each of the next two gossip intervals' batches (one packet
		// per peer per interval, however many values it repeats). A packet
		// lost on the way to one peer (1 % is common) is then repaired
		// within an interval or two instead of at a push/pull seconds later
		// (all three lost: one in a million), for the price of bytes more
		// than packets.
		if !tick {
			n.sendDirect(ml, peers, fresh)
			n.again = append(n.again, fresh...)
			return
		}
		n.sendDirect(ml, peers, n.withAgain(fresh))
		sentTwice := n.again // now sent twice: once more at the next tick
		n.again = append(n.again2[:0], fresh...)
		n.again2 = sentTwice
	default:
		n.enqueue(fresh)
		n.again, n.again2 = n.again[:0], n.again2[:0]
	}
}

// withAgain returns fresh plus the values to send again that fresh does not
// update (the newest of each); fresh's storage is reused when it has room.
func (n *Node) withAgain(fresh []slotDelta) []slotDelta {
	if len(n.again)+len(n.again2) == 0 {
		return fresh
	}
	type slotKey struct {
		limit, user string
		start, size int64
	}
	seen := make(map[slotKey]struct{}, len(fresh))
	for _, d := range fresh {
		seen[slotKey{d.Limit, d.User, d.Start, d.Size}] = struct{}{}
	}
	out := fresh
	for _, again := range [][]slotDelta{n.again, n.again2} { // newest first
		for i := len(again) - 1; i >= 0; i-- {
			d := again[i]
			k := slotKey{d.Limit, d.User, d.Start, d.Size}
			if _, ok := seen[k]; !ok {
				seen[k] = struct{}{}
				out = append(out, d)
			}
		}
	}
	return out
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
