package cluster

import (
	"sync"
	"time"
)

// delegate is the node's memberlist.Delegate. memberlist calls it from its
// own goroutines, concurrently; none of its methods blocks.
type delegate struct{ n *Node }

// NodeMeta implements memberlist.Delegate: the replica ID, so that peers
// tell a restarted node (a new ID under the same name) from one that was
// only thought dead for a while (see resync.go).
func (d delegate) NodeMeta(limit int) []byte {
	if len(d.n.replica) > limit {
		return nil
	}
	return []byte(d.n.replica)
}

// NotifyMsg implements memberlist.Delegate: one message from a peer, a
// delta (direct or gossiped, over UDP) or an anti-entropy pull or chunk
// (over memberlist's reliable stream, on the stream's own goroutine). Bad
// messages are dropped and counted. buf is not retained.
func (d delegate) NotifyMsg(buf []byte) {
	n := d.n
	n.met.received(len(buf))
	kind := byte(kindDelta)
	if len(buf) >= 2 && buf[0] == wireVersion {
		kind = buf[1] & kindMask >> kindShift
	}
	var err error
	switch kind {
	case kindPull:
		err = n.notifyPull(buf)
	case kindChunk:
		err = n.notifyChunk(buf)
	default: // a delta, or a digest where none belongs (refused by decodeDeltas)
		err = n.notifyDelta(buf)
	}
	if err != nil {
		n.dropMessage(err, len(buf), "drop gossip message")
	}
}

// dropMessage counts a message that did not decode and logs it, at most once
// per reason per logEvery.
func (n *Node) dropMessage(err error, size int, what string) {
	reason := dropReason(err)
	n.met.drop(reason, 1) // exact, however many lines the limiter lets through
	if ok, suppressed := n.logLimit.allow(what + ": " + reason); ok {
		n.log.Warn().Err(err).Str("reason", reason).Int("bytes", size).Int("suppressed", suppressed).Msg(what)
	}
}

func (n *Node) notifyDelta(buf []byte) error {
	h, ds, err := decodeDeltas(buf)
	if err != nil {
		return err
	}
	if h.Sender == n.replica {
		return nil // our own message come back
	}
	now := n.store.nowMs()
	n.skew.observe(h.Sender, now-h.SentAt, now)
	applied, refused := n.store.merge(ds, now)
	n.met.drop(reasonOutOfWindow, refused)
	if h.Relay && len(applied) > 0 {
		n.enqueue(applied) // pass newer values on: gossip alone misses nodes
	}
	return nil
}

// notifyPull queues a peer's pull for answerLoop (dropped when the queue is
// full: the peer asks again after pullTimeout).
func (n *Node) notifyPull(buf []byte) error {
	h, p, err := decodePull(buf)
	if err != nil {
		return err
	}
	if h.Sender == n.replica {
		return nil
	}
	select {
	case n.answers <- answer{peer: nodeName(h.Sender), pull: p, at: time.Now()}:
	default:
		n.log.Debug().Str("from", h.Sender).Msg("anti-entropy answers queue full: pull dropped")
	}
	return nil
}

// notifyChunk merges one chunk of the answer to our pull.
func (n *Node) notifyChunk(buf []byte) error {
	now := n.store.nowMs()
	refused := 0
	h, c, err := decodeChunk(buf, chunkBatch, func(ds []slotDelta) {
		_, r := n.store.merge(ds, now)
		refused += r
	})
	n.met.drop(reasonOutOfWindow, refused)
	if err != nil {
		return err
	}
	n.skew.observe(h.Sender, now-h.SentAt, now)
	n.chunkReceived(h.Sender, c)
	return nil
}

// GetBroadcasts implements memberlist.Delegate: queued slots packed into one
// message.
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.assemble(overhead, limit)
}

// LocalState implements memberlist.Delegate: the push/pull state, this
// node's bucket digests (antientropy.go), tens of kilobytes however many
// keys it holds.
func (d delegate) LocalState(join bool) []byte {
	n := d.n
	ds := make([]bucketDigest, numBuckets)
	n.store.digests(ds)
	buf := appendDigest(nil, header{SentAt: n.cfg.Now().UnixMilli(), Sender: n.replica}, ds)
	n.met.sent(len(buf))
	return buf
}

// MergeRemoteState implements memberlist.Delegate: a peer's digests from a
// push/pull. The buckets that differ are pulled from it in the background;
// the node turns Ready when that pull completes (or nothing differs).
func (d delegate) MergeRemoteState(buf []byte, join bool) {
	n := d.n
	n.met.received(len(buf))
	remote := make([]bucketDigest, numBuckets)
	h, err := decodeDigest(buf, remote)
	if err != nil {
		n.dropMessage(err, len(buf), "drop remote state")
		return
	}
	if h.Sender == n.replica {
		return // a push/pull with ourselves (our own address among the seeds)
	}
	now := n.store.nowMs()
	n.skew.observe(h.Sender, now-h.SentAt, now)
	n.compare(h.Sender, remote)
}

// skewWindow is how long an observed clock skew counts toward the gauge.
const skewWindow = time.Minute

// skewTracker keeps the latest clock difference seen from each peer replica.
// Safe for concurrent use.
type skewTracker struct {
	mu   sync.Mutex
	last map[string][2]int64 // replica -> {skew ms, observed at unix ms}
}

func (t *skewTracker) observe(replica string, skewMs, now int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.last == nil {
		t.last = make(map[string][2]int64)
	}
	t.last[replica] = [2]int64{skewMs, now}
}

// max returns the largest absolute skew observed within skewWindow of the
// newest observation, forgetting older ones.
func (t *skewTracker) max() time.Duration {
	t.mu.Lock()
	defer t.mu.Unlock()
	var newest int64
	for _, v := range t.last {
		newest = max(newest, v[1])
	}
	var m int64
	for r, v := range t.last {
		if newest-v[1] > skewWindow.Milliseconds() {
			delete(t.last, r)
			continue
		}
		m = max(m, v[0], -v[0])
	}
	return time.Duration(m) * time.Millisecond
}
