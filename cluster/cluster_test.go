package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// window returns the current one-minute window start of the real clock.
func window() int64 { return time.Now().UnixMilli() / minute * minute }

const waitLong = 45 * time.Second

func TestConvergence(t *testing.T) {
	for _, n := range []int{3, 5} {
		t.Run(map[int]string{3: "3 nodes", 5: "5 nodes"}[n], func(t *testing.T) {
			t.Parallel()
			nodes := startCluster(t, n, nil)
			w := window()
			var want int64
			for i, nd := range nodes {
				d := int64(100*(i+1)) - 7
				nd.Store().Add("total", "alice", w, minute, d)
				want += d
			}
			nodes[1].Store().Add("total", "alice", w, minute, -50) // a settlement
			want -= 50
			waitFor(t, waitLong, "every node holds the total", func() bool {
				return allEqual(sums(nodes, "total", "alice", w, minute), want)
			})
		})
	}
}

func TestStartAloneIsReady(t *testing.T) {
	t.Parallel()
	n := startNode(t, testConfig("solo"))
	if !n.Ready() || n.LiveReplicas() != 1 {
		t.Errorf("Ready() = %v, LiveReplicas() = %d; want true, 1", n.Ready(), n.LiveReplicas())
	}
	ctx := context.Background()
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("second Shutdown: %v, want the first's nil", err)
	}
	if err := n.Start(); err == nil {
		t.Error("Start after Shutdown: nil error, want one")
	}
}

// TestJoinRetry: a node whose seed is not up yet keeps trying and becomes
// ready once it is.
func TestJoinRetry(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	_ = l.Close()
	seed := net.JoinHostPort("127.0.0.1", port)
	cfg := testConfig("late-seed-1")
	cfg.Join = []string{"localhost:" + port} // a DNS name: every address it resolves to is tried
	b := startNode(t, cfg)
	waitFor(t, waitLong, "two failed join attempts", func() bool { return b.joinAttempts.Load() >= 2 })
	if b.Ready() {
		t.Fatal("Ready() before any peer exists")
	}
	a := startNode(t, Config{NodeName: "late-seed-0", Bind: seed, GossipInterval: 20 * time.Millisecond,
		PushPullInterval: 300 * time.Millisecond, Tune: fastTune, SecretKey: testKey})
	waitFor(t, waitLong, "join after the seed came up", func() bool { return b.Ready() && a.LiveReplicas() == 2 })
}

func TestCrashKeepsCounts(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	w := window()
	for i, nd := range nodes {
		nd.Store().Add("l", "u", w, minute, int64(10*(i+1)))
	}
	waitFor(t, waitLong, "convergence", func() bool { return allEqual(sums(nodes, "l", "u", w, minute), 60) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[2].shutdown(ctx, false); err != nil { // no Leave: a crash
		t.Fatal(err)
	}
	rest := nodes[:2]
	waitFor(t, waitLong, "the crashed node is declared dead", func() bool {
		return rest[0].LiveReplicas() == 2 && rest[1].LiveReplicas() == 2
	})
	rest[0].Store().Add("l", "u", w, minute, 5)
	waitFor(t, waitLong, "counts of the dead node kept", func() bool { return allEqual(sums(rest, "l", "u", w, minute), 65) })
}

// TestRestartSameName: a node restarted under its name gets a new slot,
// learns current usage by push/pull before Ready, and nothing is counted twice.
func TestRestartSameName(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	w := window()
	nodes[2].Store().Add("l", "u", w, minute, 40)
	nodes[0].Store().Add("l", "u", w, minute, 2)
	waitFor(t, waitLong, "convergence", func() bool { return allEqual(sums(nodes, "l", "u", w, minute), 42) })
	old := nodes[2].ReplicaID()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := nodes[2].Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("n2")
	cfg.Join = []string{nodes[0].addr()}
	again := startNode(t, cfg)
	if again.ReplicaID() == old {
		t.Fatalf("restarted replica ID %q reuses the old one", old)
	}
	waitFor(t, waitLong, "restarted node ready", again.Ready)
	if got := again.Store().Sum("l", "u", w, minute); got != 42 {
		t.Errorf("restarted node Sum at Ready = %d, want 42", got)
	}
	again.Store().Add("l", "u", w, minute, 8)
	nodes = []testNode{nodes[0], nodes[1], again}
	waitFor(t, waitLong, "convergence after restart", func() bool { return allEqual(sums(nodes, "l", "u", w, minute), 50) })
}

func TestLateJoinerLearnsState(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 3, nil)
	w := window()
	for i, nd := range nodes {
		for u := range 50 {
			nd.Store().Add("l", string(rune('a'+u%26))+string(rune('a'+u/26)), w, minute, int64(i+1))
		}
	}
	waitFor(t, waitLong, "convergence", func() bool { return allEqual(sums(nodes, "l", "aa", w, minute), 6) })
	waitFor(t, waitLong, "every key everywhere", func() bool {
		return nodes[0].Store().Len() == 50 && nodes[1].Store().Len() == 50 && nodes[2].Store().Len() == 50
	})
	cfg := testConfig("late")
	cfg.Join = []string{nodes[1].addr()}
	late := startNode(t, cfg)
	waitFor(t, waitLong, "late joiner ready", late.Ready)
	if got := late.Store().Len(); got != 50 {
		t.Errorf("late joiner keys at Ready = %d, want 50", got)
	}
	if got := late.Store().Sum("l", "bb", w, minute); got != 6 {
		t.Errorf("late joiner Sum at Ready = %d, want 6", got)
	}
}

func TestPartitionHeals(t *testing.T) {
	t.Parallel()
	nw := newNetwork()
	nodes := startCluster(t, 5, func(i int, c *Config) {
		c.NodeName = "p" + string(rune('0'+i))
		c.Transport = nw.newTransport(t, c.NodeName)
	})
	w := window()
	nodes[0].Store().Add("l", "u", w, minute, 100)
	waitSums(t, "convergence", nodes, w, 100)

	nw.partition([]string{"p0", "p1", "p2"}, []string{"p3", "p4"})
	a, b := nodes[:3], nodes[3:]
	a[1].Store().Add("l", "u", w, minute, 10)
	b[0].Store().Add("l", "u", w, minute, 1)
	b[1].Store().Add("l", "u", w, minute, 2)
	waitSums(t, "side A counts its own writes", a, w, 110)
	waitSums(t, "side B counts its own writes", b, w, 103)
	waitFor(t, waitLong, "each side declares the other dead", func() bool {
		return a[0].LiveReplicas() == 3 && b[0].LiveReplicas() == 2
	})
	// Keep writing while partitioned, on both sides, on the same slots.
	a[1].Store().Add("l", "u", w, minute, 10)
	b[0].Store().Add("l", "u", w, minute, -1)
	waitSums(t, "side A still counting", a, w, 120)
	waitSums(t, "side B still counting", b, w, 102)

	nw.heal()
	waitSums(t, "exact totals everywhere after healing", nodes, w, 122)
	waitFor(t, waitLong, "membership healed", func() bool {
		for _, n := range nodes {
			if n.LiveReplicas() != 5 {
				return false
			}
		}
		return true
	})
}

func TestSecretKey(t *testing.T) {
	t.Parallel()
	key := func(b byte) []byte {
		k := make([]byte, 32)
		k[0] = b
		return k
	}
	tests := []struct {
		name      string
		joinerKey []byte
	}{
		{"wrong key", key(2)},
		{"plaintext", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testConfig("keyed-" + tt.name)
			cfg.SecretKey = key(1)
			a := startNode(t, cfg)
			cfg = testConfig("joiner-" + tt.name)
			cfg.SecretKey = tt.joinerKey
			cfg.Join = []string{a.addr()}
			b := startNode(t, cfg)
			waitFor(t, waitLong, "three join attempts", func() bool { return b.joinAttempts.Load() >= 3 })
			if b.Ready() || a.LiveReplicas() != 1 || b.LiveReplicas() != 1 {
				t.Errorf("joined: joiner ready %v, members %d and %d; want false, 1, 1", b.Ready(), a.LiveReplicas(), b.LiveReplicas())
			}
		})
	}
	t.Run("same key", func(t *testing.T) {
		t.Parallel()
		k, _ := base64.StdEncoding.DecodeString("MDEyMzQ1Njc4OWFiY2RlZg==") // 16 bytes
		nodes := startCluster(t, 2, func(i int, c *Config) { c.NodeName = "same-key-" + string(rune('0'+i)); c.SecretKey = k })
		w := window()
		nodes[0].Store().Add("l", "u", w, minute, 3)
		waitFor(t, waitLong, "encrypted convergence", func() bool { return allEqual(sums(nodes, "l", "u", w, minute), 3) })
	})
}

func counterValue(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					if m.Counter != nil {
						return m.GetCounter().GetValue()
					}
					return m.GetGauge().GetValue()
				}
			}
		}
	}
	t.Fatalf("metric %s{%s=%q} not found", name, label, value)
	return 0
}

func TestMalformedMessagesDropped(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	clk := newFakeClock(t0)
	cfg := testConfig("victim")
	cfg.Now = clk.Now
	n, err := New(cfg, testLogger(), reg)
	if err != nil {
		t.Fatal(err)
	}
	d := delegate{n}
	good, _ := packDeltas(header{SentAt: t0, Sender: "peer/1"}, []slotDelta{{"l", "u", t0, minute, "peer/1", 5, 0}}, packetBudget)
	expired, _ := packDeltas(header{SentAt: t0, Sender: "peer/1"}, []slotDelta{{"l", "u", t0 - 5*minute, minute, "peer/1", 9, 0}}, packetBudget)
	inputs := []struct {
		msg    []byte
		reason string
	}{
		{nil, reasonMalformed},
		{[]byte("garbage \x00\xff\xff"), reasonVersion},
		{[]byte{wireVersion, 0, 0xff}, reasonMalformed},
		{append([]byte{wireVersion + 1}, good[0][1:]...), reasonVersion},
		{good[0][:len(good[0])-2], reasonMalformed},
		{make([]byte, maxDeltaMsg+1), reasonTooLarge},
		{expired[0], reasonOutOfWindow},
	}
	for _, in := range inputs {
		before := counterValue(t, reg, "genai_gateway_gossip_dropped_messages_total", "reason", in.reason)
		d.NotifyMsg(in.msg)
		if got := counterValue(t, reg, "genai_gateway_gossip_dropped_messages_total", "reason", in.reason); got != before+1 {
			t.Errorf("NotifyMsg(%q): dropped{%s} = %v, want %v", in.msg[:min(len(in.msg), 12)], in.reason, got, before+1)
		}
	}
	d.MergeRemoteState([]byte("not deflate"), true)
	if n.Ready() {
		t.Error("Ready() after a malformed remote state")
	}
	d.NotifyMsg(good[0])
	if got := n.Store().Sum("l", "u", t0, minute); got != 5 {
		t.Errorf("Sum after a good message = %d, want 5", got)
	}
	if got := n.Store().Len(); got != 1 {
		t.Errorf("Len() = %d, want 1 (the expired window was not created)", got)
	}
}

func TestHandler(t *testing.T) {
	t.Parallel()
	nodes := startCluster(t, 2, func(i int, c *Config) { c.NodeName = "h" + string(rune('0'+i)) })
	nodes[0].Store().Add("l", "u", window(), minute, 1)
	rec := httptest.NewRecorder()
	nodes[0].Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/cluster", nil))
	var got Status
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("GET /cluster: %v in %s", err, rec.Body)
	}
	if got.Node != "h0" || got.ReplicaID != nodes[0].ReplicaID() || got.Keys != 1 || len(got.Members) != 2 {
		t.Errorf("GET /cluster = %+v, want node h0, its replica ID, 1 key, 2 members", got)
	}
	for _, m := range got.Members {
		if m.State != "alive" || m.Address == "" {
			t.Errorf("member %+v, want alive with an address", m)
		}
	}
	rec = httptest.NewRecorder()
	nodes[0].Handler().ServeHTTP(rec, httptest.NewRequest("POST", "/cluster", nil))
	if rec.Code != 405 {
		t.Errorf("POST /cluster: status %d, want 405", rec.Code)
	}
}

// TestGossipQueueBatching: thousands of dirty slots in gossip mode are
// packed into messages within memberlist's limit, none stuck in the queue.
func TestGossipQueueBatching(t *testing.T) {
	t.Parallel()
	cfg := testConfig("queue")
	cfg.directMax = -1
	n, err := New(cfg, testLogger(), nil)
	if err != nil {
		t.Fatal(err)
	}
	w := window()
	var ds []slotDelta
	for i := range 3000 {
		user := fmt.Sprintf("user-%d", i)
		if i%500 == 0 {
			user = strings.Repeat("x", maxUserLen-5) + fmt.Sprintf("%05d", i)
		}
		ds = append(ds, slotDelta{"total-minute", user, w, minute, n.ReplicaID(), uint64(i + 1), 0})
		ds = append(ds, slotDelta{"total-minute", user, w, minute, "peer/1", uint64(i + 1), 0}) // a pass-on
	}
	n.enqueue(ds)
	if got := n.queue.NumQueued(); got != len(ds) {
		t.Fatalf("queued %d, want %d", got, len(ds))
	}
	n.enqueue(ds[:10]) // newer values of queued slots replace them
	if got := n.queue.NumQueued(); got != len(ds) {
		t.Fatalf("after re-queueing: %d queued, want %d (one per slot)", got, len(ds))
	}
	const overhead, limit = 3, 1350
	seen := map[string]bool{}
	for msgs := 0; n.queue.NumQueued() > 0; msgs++ {
		if msgs > 10_000 {
			t.Fatalf("queue not draining: %d left", n.queue.NumQueued())
		}
		for _, m := range n.assemble(overhead, limit) {
			if len(m)+overhead > limit {
				t.Fatalf("message of %d bytes over the limit %d", len(m)+overhead, limit)
			}
			h, got, err := decodeDeltas(m)
			if err != nil || !h.Relay || h.Sender != n.ReplicaID() {
				t.Fatalf("assembled message: header %+v, err %v", h, err)
			}
			for _, d := range got {
				seen[d.Replica+"|"+d.User] = true
			}
		}
	}
	if len(seen) != len(ds) {
		t.Errorf("delivered %d distinct slots, want %d", len(seen), len(ds))
	}
}

// TestReadyWhenJoinNamesOnlyItself covers a one-replica Deployment whose headless
// Service resolves to the pod itself: it must turn ready instead of waiting forever.
func TestReadyWhenJoinNamesOnlyItself(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := testConfig("alone")
	cfg.Bind = addr
	cfg.Join = []string{addr}
	n := startNode(t, cfg)
	waitFor(t, 10*time.Second, "ready with only itself to join", n.Ready)
}
