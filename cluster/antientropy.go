package cluster

import (
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Anti-entropy by bucket digests.
//
// Every key hashes to one of numBuckets buckets, and the store keeps each
// bucket's digest (the sum of a hash of every slot value, and the slot
// count) up to date as slots change. memberlist's push/pull, on join and
// every PushPullInterval, exchanges these digests only (delegate.go): tens
// of kilobytes whatever the number of keys, never truncated. Each side then
// pulls from the other, over memberlist's reliable stream (SendReliable),
// the buckets whose digests differ, and the peer answers with their slots in
// compressed chunks of at most a few megabytes. What is sent scales with
// what differs, not with what exists.
//
// A side pulls a differing bucket only when the peer's holds at least as
// many slots as its own: a joiner pulls everything from its seed and sends
// it nothing back, and when both sides hold slots the other lacks, both
// pull. Either way each exchange leaves at least one side with the union of
// the two buckets, so repeated exchanges converge exactly. A bucket already
// being pulled from one peer is not asked of another, so a joiner resynced
// by many members at once receives each bucket about once. A pull names the
// requester's digest of each bucket; the peer skips those that have
// converged (through deltas) by the time it answers.
//
// A node is Ready once a pull completes (every chunk of the answer merged)
// or a digest exchange finds nothing to pull and no pull is under way.

const (
	// pullTimeout gives up a pull that has had no chunk for this long; its
	// buckets may then be pulled again (from the next exchange).
	pullTimeout = 15 * time.Second
	// answerQueue bounds the pulls waiting for an answer; more are dropped
	// (the requester times out and asks again).
	answerQueue = 16
	// pullQueue bounds the pulls waiting to be sent.
	pullQueue = 16
	// chunkBatch is how many slots of a chunk are merged at once.
	chunkBatch = 1024
)

// pullState is one pull under way.
type pullState struct {
	peer       string // node name of the peer asked
	buckets    []int
	got, total uint64 // chunks merged; the answer's chunk count once known
	last       time.Time
}

// antiEntropy is the node's pull bookkeeping. Safe for concurrent use.
type antiEntropy struct {
	mu     sync.Mutex
	nextID uint64
	pulls  map[uint64]*pullState
	busy   [numBuckets]bool // being pulled from some peer
}

// outPull is a pull to send to a peer.
type outPull struct {
	peer string
	id   uint64
	msg  []byte
}

// answer is a pull to answer.
type answer struct {
	peer string
	pull *pullMsg
	at   time.Time // received
}

// nodeName returns the node name of a replica ID (name + "/" + nonce).
func nodeName(replica string) string {
	if i := strings.LastIndexByte(replica, '/'); i > 0 {
		return replica[:i]
	}
	return replica
}

// compare compares a peer's digests (from a push/pull) with ours and queues
// a pull of the buckets to take from it.
func (n *Node) compare(sender string, remote []bucketDigest) {
	local := make([]bucketDigest, numBuckets)
	n.store.digests(local)
	p := &pullMsg{}
	var buckets []int
	a := &n.ae
	a.mu.Lock()
	for b := range numBuckets {
		r, l := remote[b], local[b]
		if r == l || r.count == 0 || r.count < l.count || a.busy[b] {
			continue
		}
		p.want(b)
		p.Have = append(p.Have, l)
		buckets = append(buckets, b)
	}
	if len(buckets) == 0 {
		idle := len(a.pulls) == 0
		a.mu.Unlock()
		if idle {
			n.setReady(sender)
		}
		return
	}
	a.nextID++
	p.ID = a.nextID
	for _, b := range buckets {
		a.busy[b] = true
	}
	peer := nodeName(sender)
	if a.pulls == nil {
		a.pulls = map[uint64]*pullState{}
	}
	a.pulls[p.ID] = &pullState{peer: peer, buckets: buckets, last: time.Now()}
	a.mu.Unlock()
	msg := appendPull(nil, header{SentAt: n.cfg.Now().UnixMilli(), Sender: n.replica}, p)
	select {
	case n.pullOut <- outPull{peer, p.ID, msg}:
	default:
		n.endPull(p.ID)
	}
}

// endPull forgets pull id and frees its buckets; it reports whether the
// pull was under way.
func (n *Node) endPull(id uint64) bool {
	a := &n.ae
	a.mu.Lock()
	defer a.mu.Unlock()
	st := a.pulls[id]
	if st == nil {
		return false
	}
	for _, b := range st.buckets {
		a.busy[b] = false
	}
	delete(a.pulls, id)
	return true
}

// expirePulls gives up the pulls that have waited pullTimeout for a chunk.
func (n *Node) expirePulls(now time.Time) {
	a := &n.ae
	a.mu.Lock()
	var stale []uint64
	for id, st := range a.pulls {
		if now.Sub(st.last) >= pullTimeout {
			stale = append(stale, id)
		}
	}
	a.mu.Unlock()
	for _, id := range stale {
		if n.endPull(id) {
			n.log.Debug().Uint64("pull", id).Msg("anti-entropy pull timed out")
		}
	}
}

// chunkReceived records a merged chunk of pull c.ID from sender; the last
// one completes the pull and makes the node Ready.
func (n *Node) chunkReceived(sender string, c chunkHead) {
	a := &n.ae
	a.mu.Lock()
	st := a.pulls[c.ID]
	if st == nil || st.peer != nodeName(sender) {
		a.mu.Unlock()
		return // an answer we gave up on (its slots are merged all the same)
	}
	st.got++
	st.last = time.Now()
	if c.Total != 0 {
		st.total = c.Total
	}
	done := st.total != 0 && st.got >= st.total
	a.mu.Unlock()
	if done && n.endPull(c.ID) {
		n.setReady(sender)
	}
}

// setReady makes the node Ready, logging the first time.
func (n *Node) setReady(from string) {
	if !n.ready.Swap(true) {
		n.log.Info().Str("from", from).Int("keys", n.store.Len()).Msg("cluster state received: ready")
	}
}

// peerNode returns the member named name, alive or not: a member restarted
// after its peers declared it dead pulls from them before they take it back
// (resync.go), and its address is the one they hold.
func (n *Node) peerNode(name string) (*memberlist.Node, bool) {
	if name == n.cfg.NodeName {
		return nil, false
	}
	return n.members.node(name)
}

// pullLoop sends queued pulls until Shutdown.
func (n *Node) pullLoop(ml *memberlist.Memberlist) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case p := <-n.pullOut:
			peer, ok := n.peerNode(p.peer)
			if !ok {
				n.endPull(p.id)
				continue
			}
			if err := ml.SendReliable(peer, p.msg); err != nil {
				n.log.Debug().Err(err).Str("peer", p.peer).Msg("send anti-entropy pull")
				n.endPull(p.id)
				continue
			}
			n.met.sent(len(p.msg))
		}
	}
}

// answerLoop answers queued pulls, one at a time, until Shutdown.
func (n *Node) answerLoop(ml *memberlist.Memberlist) {
	defer n.wg.Done()
	for {
		select {
		case <-n.ctx.Done():
			return
		case a := <-n.answers:
			start := time.Now()
			if start.Sub(a.at) >= pullTimeout {
				continue // the peer has given up on it and will ask again
			}
			chunks, slots, err := n.answer(ml, a)
			if err != nil {
				n.log.Debug().Err(err).Str("peer", a.peer).Msg("answer anti-entropy pull")
				continue
			}
			n.log.Debug().Str("peer", a.peer).Int("chunks", chunks).Int("slots", slots).
				Dur("took", time.Since(start)).Msg("anti-entropy pull answered")
		}
	}
}

// answer sends the slots of the buckets a.pull wants, but those that have
// converged since, to a.peer in chunks.
func (n *Node) answer(ml *memberlist.Memberlist, a answer) (chunks, slots int, err error) {
	peer, ok := n.peerNode(a.peer)
	if !ok {
		return 0, 0, errNoPeer
	}
	var want [numBuckets]bool
	i := 0
	for b := range numBuckets {
		if !a.pull.wants(b) {
			continue
		}
		cur := n.store.bucketDigestOf(b)
		want[b] = cur.count > 0 && cur != a.pull.Have[i]
		i++
	}
	h := header{SentAt: n.cfg.Now().UnixMilli(), Sender: n.replica}
	enc := chunkEncoder{sender: n.replica}
	limit := chunkRaw
	if n.cfg.chunkRaw > 0 {
		limit = min(n.cfg.chunkRaw, chunkRaw)
	}
	// Chunks leave one behind the encoder, so that the last one can say it
	// is the last.
	var pending []byte
	send := func(raw []byte, last bool) error {
		c := chunkHead{ID: a.pull.ID, Seq: uint64(chunks)}
		if last {
			c.Total = c.Seq + 1
		}
		msg, err := compressChunk(h, c, raw)
		if err != nil {
			return err
		}
		if err := ml.SendReliable(peer, msg); err != nil {
			return err
		}
		n.met.sent(len(msg))
		chunks++
		return nil
	}
	n.store.buckets(func(b int) bool { return want[b] }, func(ds []slotDelta) bool {
		for j := range ds {
			if !enc.add(&ds[j]) {
				n.met.drop(reasonUnencodable, 1)
				continue
			}
			slots++
			if len(enc.raw) < limit {
				continue
			}
			if pending != nil {
				if err = send(pending, false); err != nil {
					return false
				}
			}
			pending, enc.raw = enc.raw, pending[:0]
		}
		return true
	})
	if err != nil {
		return chunks, slots, err
	}
	if pending != nil && len(enc.raw) == 0 {
		err = send(pending, true)
		return chunks, slots, err
	}
	if pending != nil {
		if err = send(pending, false); err != nil {
			return chunks, slots, err
		}
	}
	err = send(enc.raw, true)
	return chunks, slots, err
}
