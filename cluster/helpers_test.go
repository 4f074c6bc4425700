package cluster

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"go.uber.org/goleak"
)

var verboseLog = flag.Bool("cluster.log", false, "log cluster and memberlist lines to stderr")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testLogger discards logs unless -cluster.log is given (t.Log would panic on
// memberlist lines written after a test ends).
func testLogger() zerolog.Logger {
	if *verboseLog {
		return zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).With().Timestamp().Logger()
	}
	return zerolog.New(io.Discard).Level(zerolog.Disabled)
}

// fastTune gives memberlist serf-like test timings, with margins for -race on
// a loaded 2-core machine.
func fastTune(c *memberlist.Config) {
	c.ProbeInterval = 100 * time.Millisecond
	c.ProbeTimeout = 80 * time.Millisecond
	c.SuspicionMult = 3
	c.TCPTimeout = 2 * time.Second
	c.GossipToTheDeadTime = 2 * time.Second
	c.DeadNodeReclaimTime = time.Millisecond
}

// testKey is the gossip key of test clusters: 32 bytes, AES-256-GCM.
var testKey = []byte("0123456789abcdef0123456789abcdef")

// testConfig is a fast config for a node named name on 127.0.0.1:0, with
// encrypted gossip (testKey) as in production; tests of plaintext gossip
// (cluster.insecure) clear SecretKey.
func testConfig(name string) Config {
	return Config{
		NodeName:         name,
		SecretKey:        testKey,
		Bind:             "127.0.0.1:0",
		GossipInterval:   20 * time.Millisecond,
		PushPullInterval: 300 * time.Millisecond,
		Tune:             fastTune,
	}
}

// testNode is a started node with its own registry.
type testNode struct {
	*Node
	reg *prometheus.Registry
}

func (n testNode) addr() string { return n.ml.Load().LocalNode().Address() }

// startNode starts a node from cfg and shuts it down at cleanup.
func startNode(t testing.TB, cfg Config) testNode {
	t.Helper()
	reg := prometheus.NewRegistry()
	n, err := New(cfg, testLogger(), reg)
	if err != nil {
		t.Fatalf("New(%s): %v", cfg.NodeName, err)
	}
	if err := n.Start(); err != nil {
		t.Fatalf("Start(%s): %v", cfg.NodeName, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = n.Shutdown(ctx)
	})
	return testNode{n, reg}
}

// startCluster starts n nodes (n0, n1, ...) joined to n0, with edit applied
// to each config, and waits until every node sees all n members.
func startCluster(t testing.TB, n int, edit func(i int, c *Config)) []testNode {
	t.Helper()
	nodes := make([]testNode, 0, n)
	for i := range n {
		cfg := testConfig(fmt.Sprintf("n%d", i))
		if i > 0 {
			cfg.Join = []string{nodes[0].addr()}
		}
		if edit != nil {
			edit(i, &cfg)
		}
		nodes = append(nodes, startNode(t, cfg))
	}
	deadline := time.Now().Add(waitLong)
	for {
		var state []string
		done := true
		for _, nd := range nodes {
			state = append(state, fmt.Sprintf("%s: %d members, ready %v", nd.cfg.NodeName, nd.LiveReplicas(), nd.Ready()))
			done = done && nd.LiveReplicas() == n && nd.Ready()
		}
		if done {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for a %d-node cluster: %v", waitLong, n, state)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitFor polls cond every 5ms until it holds or timeout passes.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitSums waits until every node's Sum of (l, u, w, minute) is want,
// reporting the sums seen last on timeout.
func waitSums(t testing.TB, what string, nodes []testNode, w, want int64) {
	t.Helper()
	var got []int64
	deadline := time.Now().Add(waitLong)
	for {
		if got = sums(nodes, "l", "u", w, minute); allEqual(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: sums %v, want all %d", waitLong, what, got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// sums returns every node's Sum of one key.
func sums(nodes []testNode, limit, user string, start, size int64) []int64 {
	out := make([]int64, len(nodes))
	for i, n := range nodes {
		out[i] = n.Store().Sum(limit, user, start, size)
	}
	return out
}

func allEqual(got []int64, want int64) bool {
	for _, v := range got {
		if v != want {
			return false
		}
	}
	return true
}

// network is a test network in which named nodes can be split into groups
// that cannot reach each other. Safe for concurrent use.
type network struct {
	mu     sync.RWMutex
	group  map[string]int    // node name -> group; 0 reaches everyone
	byAddr map[string]string // "ip:port" -> node name
}

func newNetwork() *network {
	return &network{group: map[string]int{}, byAddr: map[string]string{}}
}

// partition puts each listed name in group i+1 of its list; heal undoes it.
func (nw *network) partition(groups ...[]string) {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	for i, g := range groups {
		for _, name := range g {
			nw.group[name] = i + 1
		}
	}
}

func (nw *network) heal() {
	nw.mu.Lock()
	defer nw.mu.Unlock()
	clear(nw.group)
}

func (nw *network) blocked(from string, to memberlist.Address) bool {
	nw.mu.RLock()
	defer nw.mu.RUnlock()
	name := to.Name
	if name == "" {
		name = nw.byAddr[to.Addr]
	}
	a, b := nw.group[from], nw.group[name]
	return a != 0 && b != 0 && a != b
}

// transport wraps memberlist's NetTransport, dropping packets and refusing
// streams across a partition of nw.
type transport struct {
	*memberlist.NetTransport
	nw   *network
	self string
}

// newTransport returns a transport on 127.0.0.1 with a free port for node
// name, registered in nw.
func (nw *network) newTransport(t testing.TB, name string) *transport {
	t.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"},
		Logger:    newStdLogger(testLogger(), nil, nil),
	})
	if err != nil {
		t.Fatalf("net transport: %v", err)
	}
	nw.mu.Lock()
	nw.byAddr[net.JoinHostPort("127.0.0.1", fmt.Sprint(nt.GetAutoBindPort()))] = name
	nw.mu.Unlock()
	return &transport{NetTransport: nt, nw: nw, self: name}
}

func (tr *transport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if tr.nw.blocked(tr.self, addr) {
		return time.Now(), nil // lost on the wire
	}
	return tr.NetTransport.WriteToAddress(b, addr)
}

func (tr *transport) WriteTo(b []byte, addr string) (time.Time, error) {
	return tr.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (tr *transport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if tr.nw.blocked(tr.self, addr) {
		return nil, errors.New("partitioned")
	}
	c, err := tr.NetTransport.DialAddressTimeout(addr, timeout)
	if err != nil {
		return nil, err
	}
	return &conn{Conn: c, tr: tr, to: addr}, nil
}

// conn is a stream that breaks when a partition comes between its ends, as
// a push/pull in flight would on a real network.
type conn struct {
	net.Conn
	tr *transport
	to memberlist.Address
}

func (c *conn) check(n int, err error) (int, error) {
	if c.tr.nw.blocked(c.tr.self, c.to) {
		return 0, errors.New("partitioned")
	}
	return n, err
}

func (c *conn) Read(b []byte) (int, error) {
	if _, err := c.check(0, nil); err != nil {
		return 0, err
	}
	return c.check(c.Conn.Read(b))
}

func (c *conn) Write(b []byte) (int, error) {
	if _, err := c.check(0, nil); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (tr *transport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return tr.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}
