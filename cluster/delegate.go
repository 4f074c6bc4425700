package cluster

import (
	"sync"
	"time"
)

// stateChunk is how many slots of a received full state are merged at once.
const stateChunk = 1024

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

// NotifyMsg implements memberlist.Delegate: one delta message from a peer
// (direct or gossiped). Bad messages are dropped and counted. buf is not
// retained.
func (d delegate) NotifyMsg(buf []byte) {
	n := d.n
	n.met.received(len(buf))
	h, ds, err := decodeDeltas(buf)
	if err != nil {
		reason := dropReason(err)
		n.met.drop(reason, 1) // exact, however many lines the limiter lets through
		if ok, suppressed := n.logLimit.allow("drop: " + reason); ok {
			n.log.Warn().Err(err).Str("reason", reason).Int("bytes", len(buf)).Int("suppressed", suppressed).
				Msg("drop gossip message")
		}
		return
	}
	if h.Sender == n.replica {
		return // our own message come back
	}
	now := n.store.nowMs()
	n.skew.observe(h.Sender, now-h.SentAt, now)
	applied, refused := n.store.merge(ds, now)
	n.met.drop(reasonOutOfWindow, refused)
	if h.Relay && len(applied) > 0 {
		n.enqueue(applied) // pass newer values on: gossip alone misses nodes
	}
}

// GetBroadcasts implements memberlist.Delegate: queued slots packed into one
// message.
func (d delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.n.assemble(overhead, limit)
}

// LocalState implements memberlist.Delegate: the full counter state for a
// push/pull, compressed and capped at maxStateBytes.
func (d delegate) LocalState(join bool) []byte {
	n := d.n
	h := header{SentAt: n.cfg.Now().UnixMilli(), Sender: n.replica}
	buf, truncated, err := encodeState(h, n.store.snapshot(), maxStateBytes)
	if err != nil {
		n.log.Error().Err(err).Msg("encode state")
		return nil
	}
	if truncated {
		n.met.drop(reasonTruncated, 1)
		n.log.Warn().Int("keys", n.store.Len()).Int("bytes", len(buf)).Msg("full state truncated at its size cap")
	}
	n.met.sent(len(buf))
	return buf
}

// MergeRemoteState implements memberlist.Delegate: a peer's full state from
// a push/pull. The first one from another replica makes the node Ready.
func (d delegate) MergeRemoteState(buf []byte, join bool) {
	n := d.n
	n.met.received(len(buf))
	now := n.store.nowMs()
	refused := 0
	h, err := decodeState(buf, maxStateRaw, stateChunk, func(ds []slotDelta) {
		_, r := n.store.merge(ds, now)
		refused += r
	})
	n.met.drop(reasonOutOfWindow, refused)
	if err != nil {
		reason := dropReason(err)
		n.met.drop(reason, 1)
		if ok, suppressed := n.logLimit.allow("drop state: " + reason); ok {
			n.log.Warn().Err(err).Str("reason", reason).Int("bytes", len(buf)).Bool("join", join).
				Int("suppressed", suppressed).Msg("drop remote state")
		}
		return
	}
	if h.Sender == n.replica {
		return // a push/pull with ourselves (our own address among the seeds)
	}
	n.skew.observe(h.Sender, now-h.SentAt, now)
	if !n.ready.Swap(true) {
		n.log.Info().Str("from", h.Sender).Int("keys", n.store.Len()).Msg("cluster state received: ready")
	}
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
