package cluster

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// logBuffer collects log lines. Safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// count returns how many lines contain every fragment.
func (b *logBuffer) count(fragments ...string) int {
	c := 0
	for _, line := range strings.Split(b.String(), "\n") {
		ok := line != ""
		for _, f := range fragments {
			ok = ok && strings.Contains(line, f)
		}
		if ok {
			c++
		}
	}
	return c
}

// startLoggedNode starts a node from cfg whose log (info and up) goes to the
// returned buffer; it is shut down at cleanup.
func startLoggedNode(t *testing.T, cfg Config) (testNode, *logBuffer) {
	t.Helper()
	lb := &logBuffer{}
	reg := prometheus.NewRegistry()
	n, err := New(cfg, zerolog.New(lb).Level(zerolog.InfoLevel), reg)
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
	return testNode{n, reg}, lb
}

// memberlistUserMsg is memberlist's message type for a delegate's message
// (userMsg in memberlist's net.go): a plaintext packet of this byte and a
// delta message is what NotifyMsg receives.
const memberlistUserMsg = 8

// forgedPacket is what an attacker sends: one plaintext UDP packet holding a
// delta, built with the cluster's own codec, that gives user "victim" a
// huge usage in the current window under a made-up replica.
func forgedPacket(t *testing.T, w int64) []byte {
	t.Helper()
	msgs, skipped := packDeltas(header{SentAt: time.Now().UnixMilli(), Sender: "evil/1"},
		[]slotDelta{{"tokens-minute", "victim", w, minute, "evil/1", 1 << 40, 0}}, packetBudget)
	if len(msgs) != 1 || skipped != 0 {
		t.Fatalf("packDeltas: %d messages, %d skipped; want 1, 0", len(msgs), skipped)
	}
	return append([]byte{memberlistUserMsg}, msgs[0]...)
}

func sendUDP(t *testing.T, addr string, pkt []byte) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(pkt); err != nil {
		t.Fatal(err)
	}
}

// TestForgedDeltaDropped: one forged plaintext packet to the gossip port
// sets any user's counter on a node without a key (the attack of issue #7);
// a node with a key drops it and its counters stay unchanged.
func TestForgedDeltaDropped(t *testing.T) {
	t.Parallel()
	w := window()
	pkt := forgedPacket(t, w)
	if len(pkt) > 100 {
		t.Fatalf("forged packet of %d bytes, want a small one (the issue's was 76)", len(pkt))
	}

	// Without a key (cluster.insecure) the packet is a valid forgery.
	open := startNode(t, Config{NodeName: "forge-open", Bind: "127.0.0.1:0", GossipInterval: 20 * time.Millisecond,
		PushPullInterval: 300 * time.Millisecond, Tune: fastTune})
	sendUDP(t, open.addr(), pkt)
	waitFor(t, waitLong, "the open node to take the forged counter", func() bool {
		return open.Store().Sum("tokens-minute", "victim", w, minute) == 1<<40
	})

	// With a key it is refused before it reaches the counters.
	cfg := testConfig("forge-keyed")
	cfg.SecretKey = testKey
	keyed, logs := startLoggedNode(t, cfg)
	keyed.Store().Add("tokens-minute", "victim", w, minute, 7)
	received := counterValue(t, keyed.reg, "genai_gateway_gossip_messages_total", "direction", "received")
	sendUDP(t, keyed.addr(), pkt)
	waitFor(t, waitLong, "the keyed node to refuse the packet", func() bool {
		return logs.count("gossip refused", "from=127.0.0.1:") == 1
	})
	if got := keyed.Store().Sum("tokens-minute", "victim", w, minute); got != 7 {
		t.Errorf("victim's usage after the forged packet: got %d, want 7", got)
	}
	if got := keyed.Store().Len(); got != 1 {
		t.Errorf("keys after the forged packet: got %d, want 1", got)
	}
	if got := counterValue(t, keyed.reg, "genai_gateway_gossip_messages_total", "direction", "received"); got != received {
		t.Errorf("gossip messages received: got %v, want %v (the packet never reaches the delegate)", got, received)
	}
}

// TestJunkGossipLogRateLimited: a flood of junk writes one log line per
// reason per logEvery, with the count of suppressed lines, while the
// dropped-messages metric counts every message.
func TestJunkGossipLogRateLimited(t *testing.T) {
	t.Parallel()
	const junk = 200
	t.Run("undecodable deltas", func(t *testing.T) {
		t.Parallel()
		clk := newFakeClock(t0)
		cfg := testConfig("junk-delegate")
		cfg.Now = clk.Now
		lb := &logBuffer{}
		reg := prometheus.NewRegistry()
		n, err := New(cfg, zerolog.New(lb), reg)
		if err != nil {
			t.Fatal(err)
		}
		d := delegate{n}
		before := counterValue(t, reg, "genai_gateway_gossip_dropped_messages_total", "reason", reasonMalformed)
		for range junk {
			d.NotifyMsg([]byte{wireVersion, 0, 0xff})
		}
		if got, want := counterValue(t, reg, "genai_gateway_gossip_dropped_messages_total", "reason", reasonMalformed), before+junk; got != want {
			t.Errorf("dropped{malformed}: got %v, want %v", got, want)
		}
		if got := lb.count("drop gossip message"); got != 1 {
			t.Errorf("log lines for %d junk messages: got %d, want 1\n%s", junk, got, lb)
		}
		clk.advance(logEvery)
		d.NotifyMsg([]byte{wireVersion, 0, 0xff})
		if got, want := lb.count("drop gossip message", fmt.Sprintf(`"suppressed":%d`, junk-1)), 1; got != want {
			t.Errorf("lines after %v with the suppressed count %d: got %d, want %d\n%s", logEvery, junk-1, got, want, lb)
		}
	})
	t.Run("undecryptable packets", func(t *testing.T) {
		t.Parallel()
		cfg := testConfig("junk-udp")
		cfg.SecretKey = testKey
		n, logs := startLoggedNode(t, cfg)
		for i := range junk {
			sendUDP(t, n.addr(), []byte(fmt.Sprintf("junk %d \x00\xff", i)))
		}
		// A last packet of another kind shows that the junk before it was read.
		sendUDP(t, n.addr(), forgedPacket(t, window()))
		waitFor(t, waitLong, "the junk to be read", func() bool { return logs.count("gossip refused") >= 1 })
		if got := logs.count("gossip refused"); got != 1 {
			t.Errorf("log lines for %d undecryptable packets: got %d, want 1\n%s", junk+1, got, logs)
		}
		if got := logs.count(`"level":"error"`); got != 0 {
			t.Errorf("error lines: got %d, want 0 (a refused packet is a warning)\n%s", got, logs)
		}
	})
}

// TestWrongKeyWarns: a replica whose key differs from its seed's says so at
// warn, at most once per logEvery, and so does the seed, naming the peer's
// address; neither ever logs a key.
func TestWrongKeyWarns(t *testing.T) {
	t.Parallel()
	other := []byte("fedcba9876543210fedcba9876543210")
	seedCfg := testConfig("wrongkey-seed")
	seedCfg.SecretKey = testKey
	seed, seedLogs := startLoggedNode(t, seedCfg)
	cfg := testConfig("wrongkey-joiner")
	cfg.SecretKey = other
	cfg.Join = []string{seed.addr()}
	joiner, joinerLogs := startLoggedNode(t, cfg)
	waitFor(t, waitLong, "three join attempts", func() bool { return joiner.joinAttempts.Load() >= 3 })

	tests := []struct {
		name     string
		logs     *logBuffer
		fragment string
	}{
		{"joiner", joinerLogs, "cluster.secret_key must be the same on every replica"},
		{"seed", seedLogs, "does not share our cluster.secret_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.logs.count(`"level":"warn"`, tt.fragment, "127.0.0.1:"); got != 1 {
				t.Errorf("warnings %q naming an address: got %d, want 1\n%s", tt.fragment, got, tt.logs)
			}
			out := tt.logs.String()
			for _, k := range [][]byte{testKey, other} {
				if strings.Contains(out, string(k)) || strings.Contains(out, base64.StdEncoding.EncodeToString(k)) {
					t.Errorf("the log holds a gossip key:\n%s", out)
				}
			}
		})
	}
}

func TestLogLimiter(t *testing.T) {
	clk := newFakeClock(t0)
	l := newLogLimiter(clk.Now, 10*time.Second)
	steps := []struct {
		advance        time.Duration
		reason         string
		ok             bool
		wantSuppressed int
	}{
		{0, "a", true, 0},
		{time.Second, "a", false, 0},
		{time.Second, "a", false, 0},
		{0, "b", true, 0}, // reasons are independent
		{8 * time.Second, "a", true, 2},
		{0, "a", false, 0},
		{10 * time.Second, "a", true, 1},
		{10 * time.Second, "a", true, 0},
	}
	for i, s := range steps {
		clk.advance(s.advance)
		ok, sup := l.allow(s.reason)
		if ok != s.ok || sup != s.wantSuppressed {
			t.Errorf("step %d: allow(%q) = %v, %d; want %v, %d", i, s.reason, ok, sup, s.ok, s.wantSuppressed)
		}
	}
	// Reasons a peer can vary share one budget past maxLogReasons.
	l = newLogLimiter(clk.Now, 10*time.Second)
	allowed := 0
	for i := range 10 * maxLogReasons {
		if ok, _ := l.allow(fmt.Sprintf("reason %d", i)); ok {
			allowed++
		}
	}
	if allowed != maxLogReasons+1 {
		t.Errorf("distinct reasons allowed: got %d, want %d", allowed, maxLogReasons+1)
	}
	if ok, _ := (*logLimiter)(nil).allow("x"); !ok {
		t.Error("nil limiter: got false, want true")
	}
}
