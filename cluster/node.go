// Package cluster makes gateway replicas one cluster with hashicorp/memberlist
// and replicates their rate-limit counters as CRDTs, with no shared store.
//
// Every replica holds every (limit, user, window) key as a PN-counter
// (crdt.go) in a Store (store.go). A replica writes only its own slot, named
// by node name plus a per-start nonce. Changed slots travel as absolute
// values (codec.go): every gossip interval, directly to each peer in a small
// cluster, else through memberlist's gossip queue with pass-on of newer
// values (broadcast.go). Anti-entropy (antientropy.go) runs on memberlist's
// push/pull, on join and every PushPullInterval: the two sides exchange
// digests of 4,096 buckets of keys (about 40 KB whatever the number of
// keys), then pull from each other the buckets that differ, in compressed
// chunks over memberlist's reliable stream. Nothing is ever truncated.
// Merging is a per-slot maximum, so duplicates, reordering, loss and
// partitions never double count.
//
// Figures (make bench-scale; README): a replica joining a cluster that
// holds 1,000,000 live keys holds all of them, Ready, within about 5 s on a
// loaded 2-core VM (BenchmarkJoinMillion), receiving about 20 bytes per key.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// Config configures a Node. Zero fields take the defaults documented here.
type Config struct {
	NodeName  string   // unique in the cluster; default: hostname
	Bind      string   // "host:port"; default "0.0.0.0:7946"; port 0 picks one (tests)
	Advertise string   // optional "host:port" peers use to reach this node
	Join      []string // host:port or DNS name:port (every A record); empty = first node
	SecretKey []byte   // 16, 24 or 32 bytes: AES-GCM gossip, plaintext refused; nil = none

	GossipInterval   time.Duration // delta flush and gossip period; default 100ms
	PushPullInterval time.Duration // anti-entropy (digest exchange) period; default 5s
	// FlushGap: a change added with AddNow is sent at once, then changes are
	// coalesced for this long; 0 = 5ms, negative = send only every
	// GossipInterval. Changes added with Add always wait for GossipInterval.
	FlushGap time.Duration
	Now      func() time.Time

	// Transport replaces memberlist's UDP/TCP transport (tests: partitions).
	Transport memberlist.NodeAwareTransport
	// Tune adjusts the memberlist config last (tests: fast probe timings).
	Tune func(*memberlist.Config)

	directMax int // direct-send cluster size; 0 = defaultDirectMax, <0 = always queue
	chunkRaw  int // anti-entropy chunk size before compression; 0 = chunkRaw (tests: many chunks)
}

// defaultFlushGap is how long a node coalesces its changes after sending one
// at once: at most one delta packet per peer per gap (200/s at 5ms). Packets,
// more than bytes, cost the receivers (each is decrypted and decoded; with
// memberlist's NetTransport, before leanTransport, each also cost a 64 KiB
// allocation). 5ms measured the best trade between that cost and
// over-admission (BenchmarkOverAdmission in cmd/genai-gateway).
const defaultFlushGap = 5 * time.Millisecond

// Node is one replica's cluster peer: membership, counter store and gossip.
// Its methods are safe for concurrent use.
type Node struct {
	cfg     Config
	log     zerolog.Logger
	mlLog   zerolog.Logger // memberlist's own lines
	replica string
	store   *Store
	met     *metrics
	queue   *memberlist.TransmitLimitedQueue
	members *memberTable
	skew    skewTracker

	lifeMu  sync.Mutex // serialises Start and shutdown
	ml      atomic.Pointer[memberlist.Memberlist]
	ready   atomic.Bool
	started atomic.Bool

	joinAttempts atomic.Int64   // seed join rounds tried (tests)
	logLimit     *logLimiter    // warnings and errors about gossip, one per reason per logEvery
	resync       chan resyncReq // members that joined or restarted, for resyncLoop

	flushMu  sync.Mutex
	dirtyBuf []slotDelta // guarded by flushMu
	again    []slotDelta // sent directly since the last tick, to send twice more; guarded by flushMu
	again2   []slotDelta // to send once more at the next tick; guarded by flushMu

	ae      antiEntropy  // pulls under way
	pullOut chan outPull // pulls for pullLoop to send
	answers chan answer  // peers' pulls for answerLoop

	ctx      context.Context // done at Shutdown: stops the loops
	cancel   context.CancelFunc
	wg       sync.WaitGroup
	downOnce sync.Once
	downErr  error
}

// New validates cfg, creates the node's store and registers its metrics on
// reg (nil = none). It starts nothing: see Start.
func New(cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Node, error) {
	if cfg.NodeName == "" {
		h, err := os.Hostname()
		if err != nil {
			return nil, fmt.Errorf("cluster node name: %w", err)
		}
		cfg.NodeName = h
	}
	if cfg.Bind == "" {
		cfg.Bind = "0.0.0.0:7946"
	}
	if cfg.GossipInterval <= 0 {
		cfg.GossipInterval = 100 * time.Millisecond
	}
	if cfg.PushPullInterval <= 0 {
		cfg.PushPullInterval = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if host, _, err := splitHostPort(cfg.Bind); err != nil {
		return nil, fmt.Errorf("cluster bind: %w", err)
	} else if net.ParseIP(host) == nil {
		// The transport binds IPs: a name would listen on every interface.
		return nil, fmt.Errorf("cluster bind: host %q is not an IP address (0.0.0.0 binds every interface)", host)
	}
	if cfg.Advertise != "" {
		if _, _, err := splitHostPort(cfg.Advertise); err != nil {
			return nil, fmt.Errorf("cluster advertise: %w", err)
		}
	}
	if l := len(cfg.SecretKey); l != 0 && l != 16 && l != 24 && l != 32 {
		return nil, fmt.Errorf("cluster secret key: %d bytes, want 16, 24 or 32", l)
	}
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce) // never fails (crypto/rand)
	replica := cfg.NodeName + "/" + hex.EncodeToString(nonce)
	if len(replica) > maxReplicaLen {
		return nil, fmt.Errorf("cluster node name: %d bytes, at most %d", len(cfg.NodeName), maxReplicaLen-9)
	}
	n := &Node{
		cfg:      cfg,
		log:      log.With().Str("component", "cluster").Str("node", cfg.NodeName).Logger(),
		mlLog:    log.With().Str("component", "memberlist").Str("node", cfg.NodeName).Logger(),
		replica:  replica,
		store:    NewStore(replica, cfg.Now),
		met:      newMetrics(),
		members:  &memberTable{now: cfg.Now, nodes: map[string]memberRecord{}},
		resync:   make(chan resyncReq, resyncQueue),
		pullOut:  make(chan outPull, pullQueue),
		answers:  make(chan answer, answerQueue),
		logLimit: newLogLimiter(cfg.Now, logEvery),
	}
	n.members.joined = n.memberJoined
	n.ctx, n.cancel = context.WithCancel(context.Background())
	n.store.track = true
	n.store.wake = make(chan struct{}, 1)
	n.queue = &memberlist.TransmitLimitedQueue{
		NumNodes:       func() int { return max(1, n.members.alive()) },
		RetransmitMult: memberlist.DefaultLANConfig().RetransmitMult,
	}
	if err := n.met.register(reg, n); err != nil {
		return nil, err
	}
	return n, nil
}

// Start creates the memberlist peer and starts the delta and housekeeping
// loop and, when Join is set, the background join loop (retried with backoff
// until a peer answers, so replicas start in any order). It returns once the
// peer listens; it does not wait for a join.
func (n *Node) Start() error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	if !n.started.CompareAndSwap(false, true) {
		return errors.New("cluster: node already started")
	}
	if n.ctx.Err() != nil {
		return errors.New("cluster: node shut down")
	}
	mc, err := n.memberlistConfig()
	if err != nil {
		return err
	}
	ml, err := createMemberlist(mc) // leanTransport unless cfg.Transport is set
	if err != nil {
		return fmt.Errorf("start cluster: %w", err)
	}
	n.ml.Store(ml)
	if len(n.cfg.Join) == 0 {
		n.ready.Store(true)
	}
	n.log.Info().Str("replica_id", n.replica).Str("address", ml.LocalNode().Address()).
		Strs("join", n.cfg.Join).Bool("encrypted", len(n.cfg.SecretKey) > 0).Msg("cluster started")
	n.wg.Add(5)
	go n.run()
	go n.joinLoop(ml)
	go n.resyncLoop(ml)
	go n.pullLoop(ml)
	go n.answerLoop(ml)
	return nil
}

func (n *Node) memberlistConfig() (*memberlist.Config, error) {
	mc := memberlist.DefaultLANConfig() // Local's RetransmitMult 2 loses updates
	mc.Name = n.cfg.NodeName
	host, port, _ := splitHostPort(n.cfg.Bind)
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertisePort = port
	if n.cfg.Advertise != "" {
		h, p, _ := splitHostPort(n.cfg.Advertise)
		ip, err := resolveOne(h)
		if err != nil {
			return nil, fmt.Errorf("cluster advertise: %w", err)
		}
		mc.AdvertiseAddr, mc.AdvertisePort = ip, p
	}
	mc.GossipInterval = n.cfg.GossipInterval
	mc.PushPullInterval = n.cfg.PushPullInterval
	mc.DeadNodeReclaimTime = 10 * time.Second // a restarted pod may come back on a new IP
	// Our digests are random bytes, our chunks DEFLATEd and our deltas compact varints;
	// memberlist's LZW would compress push/pull streams again, unconditionally
	// (and grow them).
	mc.EnableCompression = false
	if len(n.cfg.SecretKey) > 0 {
		kr, err := memberlist.NewKeyring(nil, n.cfg.SecretKey)
		if err != nil {
			return nil, fmt.Errorf("cluster secret key: %w", err)
		}
		mc.Keyring = kr
		mc.GossipVerifyIncoming, mc.GossipVerifyOutgoing = true, true
	}
	if n.cfg.Transport != nil {
		mc.Transport = n.cfg.Transport
	}
	mc.Delegate = delegate{n}
	mc.Events = n.members
	mc.Logger = newStdLogger(n.mlLog, n.logLimit, func() { n.met.drop(reasonUndecryptable, 1) })
	if n.cfg.Tune != nil {
		n.cfg.Tune(mc)
	}
	return mc, nil
}

// run flushes deltas every gossip interval and does housekeeping (expiry,
// queue bound) every second, until Shutdown.
func (n *Node) run() {
	defer n.wg.Done()
	flush := time.NewTicker(n.cfg.GossipInterval)
	defer flush.Stop()
	house := time.NewTicker(time.Second)
	defer house.Stop()
	gap := n.cfg.FlushGap
	if gap == 0 {
		gap = defaultFlushGap
	}
	wake := n.store.wake
	if gap < 0 {
		wake = nil // deltas leave only on the gossip interval
	}
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-wake:
			// An urgent change (AddNow) leaves at once: the sooner peers see a
			// reservation, the less replicas admit together near a limit. Changes
			// arriving within gap of it are coalesced into the next packet.
			n.flush(false)
			select {
			case <-n.ctx.Done():
				return
			case <-time.After(gap):
			}
		case <-flush.C:
			n.flush(true)
		case <-house.C:
			if d := n.store.sweep(); d > 0 {
				n.log.Debug().Int("dropped", d).Msg("expired counter keys")
			}
			n.expirePulls(time.Now())
			if q := n.queue.NumQueued(); q > maxQueued {
				n.queue.Prune(maxQueued)
			}
		}
	}
}

// Store returns the node's counter store (for the limiter).
func (n *Node) Store() *Store { return n.store }

// ReplicaID returns this run's replica ID: node name + "/" + nonce.
func (n *Node) ReplicaID() string { return n.replica }

// Ready reports whether the node has pulled from a peer every bucket in
// which the peer held more (antientropy.go), or has no peer to wait for
// (Join empty). Until then its counters may miss
// usage recorded elsewhere.
func (n *Node) Ready() bool { return n.ready.Load() }

// LiveReplicas returns the number of members not known dead or gone,
// itself included (suspects count); at least 1.
func (n *Node) LiveReplicas() int {
	if ml := n.ml.Load(); ml != nil {
		return max(1, ml.NumMembers())
	}
	return 1
}

// memberList returns the members as GET /cluster shows them.
func (n *Node) memberList() []Member { return n.members.list() }

// Shutdown sends the last deltas, leaves the cluster (bounded by ctx; 5s
// without a deadline), shuts memberlist down, then stops and waits for the
// node's loops. It is idempotent: later calls return the first result.
func (n *Node) Shutdown(ctx context.Context) error { return n.shutdown(ctx, true) }

// shutdown is Shutdown, optionally without Leave (tests: a crash).
func (n *Node) shutdown(ctx context.Context, leave bool) error {
	n.downOnce.Do(func() { n.downErr = n.stop(ctx, leave) })
	return n.downErr
}

func (n *Node) stop(ctx context.Context, leave bool) error {
	n.lifeMu.Lock()
	defer n.lifeMu.Unlock()
	var errs []error
	if ml := n.ml.Load(); ml != nil {
		n.flush(true)
		if leave {
			timeout := 5 * time.Second
			if dl, ok := ctx.Deadline(); ok {
				timeout = max(time.Until(dl), time.Millisecond) // 0 would wait forever
			}
			if err := ml.Leave(timeout); err != nil {
				errs = append(errs, fmt.Errorf("leave cluster: %w", err))
			}
		}
		if err := ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("shut down memberlist: %w", err))
		}
	}
	n.cancel()
	done := make(chan struct{})
	go func() { n.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		errs = append(errs, fmt.Errorf("stop cluster loops: %w", ctx.Err()))
	}
	n.log.Info().Msg("cluster stopped")
	return errors.Join(errs...)
}

// splitHostPort parses "host:port" with a numeric port.
func splitHostPort(hp string) (string, int, error) {
	h, p, err := net.SplitHostPort(hp)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", hp)
	}
	return h, port, nil
}
