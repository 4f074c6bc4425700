package cluster

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	bwRate    = flag.Int("cluster.rate", 10_000, "BenchmarkGossipBandwidth: admitted requests per second, cluster-wide")
	bwUsers   = flag.Int("cluster.users", 10_000, "BenchmarkGossipBandwidth: distinct users")
	bwNodes   = flag.String("cluster.nodes", "32,64", "BenchmarkGossipBandwidth: cluster sizes")
	bwWindow  = flag.Duration("cluster.window", 20*time.Second, "BenchmarkGossipBandwidth: measurement window per b.N")
	bwSettle  = flag.Duration("cluster.settleafter", 2*time.Second, "BenchmarkGossipBandwidth: a request settles this long after its admission")
	bwSample  = flag.Int("cluster.sample", 1, "BenchmarkGossipBandwidth: nodes measured, the others sending their changes only to them; 0 = all")
	bwLean    = flag.Bool("cluster.lean", true, "BenchmarkGossipBandwidth: read datagrams into a reused buffer (false: a fresh 64 KiB one each, as memberlist's NetTransport)")
	bwProfile = flag.String("cluster.bwprofile", "", "BenchmarkGossipBandwidth: write a CPU profile of each measurement window to this path prefix")
)

// linkCounts is what one node's transport carried. UDP bytes are the
// datagrams' payload as memberlist hands them over (encrypted, framed; the
// 28 bytes of IPv4 and UDP header per packet are not counted).
type linkCounts struct {
	udpSentPkts, udpSentBytes  atomic.Int64 // lost packets included: they left the node
	udpRecvPkts, udpRecvBytes  atomic.Int64
	tcpSentBytes, tcpRecvBytes atomic.Int64
	tcpConns                   atomic.Int64 // streams opened or accepted
}

type linkSnapshot struct {
	udpSentPkts, udpSentBytes, udpRecvPkts, udpRecvBytes, tcpSentBytes, tcpRecvBytes, tcpConns int64
}

func (c *linkCounts) snapshot() linkSnapshot {
	return linkSnapshot{c.udpSentPkts.Load(), c.udpSentBytes.Load(), c.udpRecvPkts.Load(), c.udpRecvBytes.Load(),
		c.tcpSentBytes.Load(), c.tcpRecvBytes.Load(), c.tcpConns.Load()}
}

func (s linkSnapshot) sub(o linkSnapshot) linkSnapshot {
	return linkSnapshot{s.udpSentPkts - o.udpSentPkts, s.udpSentBytes - o.udpSentBytes, s.udpRecvPkts - o.udpRecvPkts,
		s.udpRecvBytes - o.udpRecvBytes, s.tcpSentBytes - o.tcpSentBytes, s.tcpRecvBytes - o.tcpRecvBytes, s.tcpConns - o.tcpConns}
}

// benchTransport is a memberlist transport on 127.0.0.1 for the bandwidth
// benchmark: UDP and TCP as memberlist's NetTransport does them, losing a
// share of the UDP packets it sends (streams are TCP: never lost), and
// counting packets and bytes both ways at its own sockets, UDP and TCP
// apart. NetTransport reads every datagram into a fresh 64 KiB buffer; with
// lean set, this one reads into a reused buffer and hands memberlist a copy
// of the datagram's size, which changes nothing on the wire and cuts the
// garbage that, with N nodes in one process, a single collector must keep
// up with (see BenchmarkGossipBandwidth).
type benchTransport struct {
	loss     float64
	lean     bool
	c        linkCounts
	udp      *net.UDPConn
	tcp      *net.TCPListener
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	addrs    sync.Map // "ip:port" -> *net.UDPAddr
	down     atomic.Bool
	done     chan struct{} // closed at Shutdown
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*benchTransport)(nil)

func newBenchTransport(t testing.TB, loss float64, lean bool) *benchTransport {
	t.Helper()
	for try := 0; ; try++ {
		tcp, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatalf("bench transport: %v", err)
		}
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: tcp.Addr().(*net.TCPAddr).Port})
		if err != nil {
			_ = tcp.Close()
			if try < 10 {
				continue // the UDP port of that number is taken
			}
			t.Fatalf("bench transport: %v", err)
		}
		for size := 2 << 20; size > 0 && udp.SetReadBuffer(size) != nil; size /= 2 {
		}
		tr := &benchTransport{loss: loss, lean: lean, udp: udp, tcp: tcp,
			packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn), done: make(chan struct{})}
		tr.wg.Add(2)
		go tr.readUDP()
		go tr.accept()
		return tr
	}
}

func (tr *benchTransport) readUDP() {
	defer tr.wg.Done()
	scratch := make([]byte, 65536)
	for {
		buf := scratch
		if !tr.lean {
			buf = make([]byte, 65536) // as memberlist's NetTransport does
		}
		n, from, err := tr.udp.ReadFrom(buf)
		at := time.Now()
		if err != nil {
			if tr.down.Load() {
				return
			}
			continue
		}
		if n < 1 {
			continue
		}
		tr.c.udpRecvPkts.Add(1)
		tr.c.udpRecvBytes.Add(int64(n))
		if tr.lean {
			buf = append([]byte(nil), buf[:n]...)
		}
		select {
		case tr.packetCh <- &memberlist.Packet{Buf: buf[:n], From: from, Timestamp: at}:
		case <-tr.done:
			return
		}
	}
}

func (tr *benchTransport) accept() {
	defer tr.wg.Done()
	for {
		c, err := tr.tcp.AcceptTCP()
		if err != nil {
			if tr.down.Load() {
				return
			}
			time.Sleep(5 * time.Millisecond)
			continue
		}
		tr.c.tcpConns.Add(1)
		select {
		case tr.streamCh <- &meteredConn{Conn: c, c: &tr.c}:
		case <-tr.done:
			_ = c.Close()
			return
		}
	}
}

func (tr *benchTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		return net.ParseIP(ip).To4(), port, nil
	}
	return net.IPv4(127, 0, 0, 1).To4(), tr.tcp.Addr().(*net.TCPAddr).Port, nil
}

func (tr *benchTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	tr.c.udpSentPkts.Add(1)
	tr.c.udpSentBytes.Add(int64(len(b)))
	if rand.Float64() < tr.loss {
		return time.Now(), nil // lost on the wire
	}
	to, ok := tr.addrs.Load(a.Addr)
	if !ok {
		ua, err := net.ResolveUDPAddr("udp", a.Addr)
		if err != nil {
			return time.Time{}, err
		}
		to, _ = tr.addrs.LoadOrStore(a.Addr, ua)
	}
	_, err := tr.udp.WriteTo(b, to.(*net.UDPAddr))
	return time.Now(), err
}

func (tr *benchTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return tr.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (tr *benchTransport) PacketCh() <-chan *memberlist.Packet { return tr.packetCh }

func (tr *benchTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", a.Addr, timeout)
	if err != nil {
		return nil, err
	}
	tr.c.tcpConns.Add(1)
	return &meteredConn{Conn: c, c: &tr.c}, nil
}

func (tr *benchTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return tr.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

func (tr *benchTransport) StreamCh() <-chan net.Conn { return tr.streamCh }

func (tr *benchTransport) Shutdown() error {
	if tr.down.Swap(true) {
		return nil
	}
	close(tr.done)
	_ = tr.tcp.Close()
	_ = tr.udp.Close()
	tr.wg.Wait()
	return nil
}

// meteredConn counts a stream's bytes at one of its ends.
type meteredConn struct {
	net.Conn
	c *linkCounts
}

func (c *meteredConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.c.tcpSentBytes.Add(int64(n))
	return n, err
}

func (c *meteredConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.c.tcpRecvBytes.Add(int64(n))
	return n, err
}

// bwRequest is one admitted request waiting for its response to end.
type bwRequest struct {
	node     int
	user     string
	start    int64 // the fixed window both reservations went into
	reserved int64 // tokens reserved
	at       time.Time
}

// Limits of BenchmarkGossipBandwidth, as a gateway configured with
// `limits: [{name: tpm, metric: total_tokens, window: 1m}, {name: rpm,
// metric: requests, window: 1m}]` stores them; no request comes near them.
const (
	bwTokens   = "tpm"
	bwRequests = "rpm"
)

// admit makes on s the store calls limiter.Admit makes for a request under
// a total_tokens and a requests limit with sliding one-minute windows, far
// from both limits (the gateway's default urgent_fraction 0 sends every
// change at once): it reads the current and previous window of each, then
// reserves the estimate (prompt 800 + max output 500 tokens) and the request.
func admit(s *Store, user string, now int64) bwRequest {
	start := now / minute * minute
	for _, l := range []string{bwTokens, bwRequests} {
		_ = s.Sum(l, user, start, minute)
		_ = s.Sum(l, user, start-minute, minute)
	}
	const reserved = 1300
	s.AddNow(bwTokens, user, start, minute, reserved)
	s.AddNow(bwRequests, user, start, minute, 1)
	return bwRequest{user: user, start: start, reserved: reserved}
}

// settle makes Reservation.Settle's store call: the tokens used (800 prompt
// + 200 completion) minus those reserved, in the window reserved in.
func settle(s *Store, r bwRequest) {
	s.AddNow(bwTokens, r.user, r.start, minute, 1000-r.reserved)
}

// BenchmarkGossipBandwidth measures what a node of a 32- and a 64-node
// cluster (real memberlist nodes on 127.0.0.1, encrypted, production
// timings, 1 % of UDP packets lost) sends and receives while the cluster
// admits -cluster.rate requests per second (10,000), spread evenly over the
// nodes (round-robin balancing) and over -cluster.users users (10,000), each
// request reserving under a tokens and a requests limit and settling its
// tokens -cluster.settleafter (2 s) later: three changes sent at once, the
// store calls a gateway's limiter makes. Traffic is counted at each node's
// sockets, UDP and TCP apart, whatever it carries (deltas, memberlist's
// probes and gossip, push/pull, anti-entropy pulls).
//
// Every change goes to every node, so the cluster's work grows with the rate
// times the nodes: at 10,000 requests/s, 32 nodes exchange about 200,000
// encrypted packets a second, more than two cores can send, receive and
// decrypt. A starved process admits in bursts and flushes late, and its
// nodes then coalesce changes into fewer, larger packets than nodes with
// their own cores send: the traffic measured would be the machine's, not
// the protocol's. So by default (-cluster.sample=1) one node is measured,
// a full member: it admits its share, sends its changes to every peer and
// hears every peer's. The other nodes are full members too (they admit
// their share, are probed, gossip and push/pull) except that they send their
// changes only to the measured nodes and pull no buckets by anti-entropy
// (their stores lack one another's slots, which a pull would fetch from
// the measured nodes): what a measured node sends and receives over UDP is
// what it would in the whole cluster, for a fraction of the process's work.
// Over TCP it is the push/pull digests; the buckets a push/pull with a
// whole-cluster peer would find differing (changes in flight) are not
// pulled from these peers, whose stores hold fewer slots.
// -cluster.sample=0 measures every node of a whole cluster instead.
// -cluster.bwtransport=lean or net runs the nodes on the production
// transport (leanTransport) or memberlist's NetTransport instead of the
// benchmark's own, metered the same way (metered_transport_test.go).
//
// Meanwhile a change near a limit is made every 100 ms on a measured node
// (10 a second: a few more packets than the load alone makes)
// and timed until every node holds it: dissemination under load (p50-ms,
// p99-ms, max-ms). One b.N is one -cluster.window (20 s) after 3 s of
// warm-up: run with -benchtime=1x. cpu-cores is what the process used,
// machine-busy-cores what the machine did (other work included),
// sched-lag-p99-ms how late the load generator woke from a 1 ms sleep
// (past a few ms it admits in bursts), delta-pkts/s/peer how many delta
// packets a measured node sent each peer per second (after a change sent
// at once, the next waits 5 ms; the 100 ms interval's batch may take a few
// packets). The goroutines of each node carry the pprof label node=<index>,
// and those of the measured nodes measured=true: with -cluster.bwprofile,
// `go tool pprof -tagfocus measured=true` shows what the measured nodes
// cost, background GC aside.
func BenchmarkGossipBandwidth(b *testing.B) {
	for _, f := range strings.Split(*bwNodes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			b.Fatalf("-cluster.nodes: %v", err)
		}
		name := fmt.Sprintf("nodes=%d/rate=%d/sample=%d", n, *bwRate, *bwSample)
		if *bwTransport != "bench" {
			name += "/transport=" + *bwTransport
		} else if !*bwLean {
			name += "/netbuf"
		}
		b.Run(name, func(b *testing.B) { benchBandwidth(b, n, min(*bwSample, n)) })
	}
}

func benchBandwidth(b *testing.B, n, sample int) {
	// Runs after every node's shutdown: a probe memberlist had in flight
	// ends by its timeout (500 ms), late on a loaded machine (goleak).
	b.Cleanup(func() { time.Sleep(2 * time.Second) })
	trs := make([]*linkCounts, n)
	// Label each node's goroutines (they inherit the labels of the
	// goroutine that starts them: startCluster's, right after edit).
	defer pprof.SetGoroutineLabels(context.Background())
	nodes := startCluster(b, n, func(i int, c *Config) {
		pprof.SetGoroutineLabels(pprof.WithLabels(context.Background(),
			pprof.Labels("node", strconv.Itoa(i), "measured", strconv.FormatBool(sample == 0 || i < sample))))
		c.NodeName = fmt.Sprintf("bw%d-%d", i, n)
		c.GossipInterval = 100 * time.Millisecond
		c.PushPullInterval = 5 * time.Second
		c.Tune = nil
		c.Transport, trs[i] = newMeasuredTransport(b, *benchLoss)
	})
	pprof.SetGoroutineLabels(context.Background())
	measured := nodes
	if sample > 0 {
		measured = nodes[:sample]
		light := map[string]bool{}
		for _, nd := range nodes[sample:] {
			light[nd.cfg.NodeName] = true
		}
		for _, nd := range nodes[sample:] {
			sendOnlyTo(nd, light)
		}
	}
	users := make([]string, *bwUsers)
	for i := range users {
		users[i] = fmt.Sprintf("user-%05d", i)
	}
	time.Sleep(2 * time.Second) // let the joins settle

	// The load: one goroutine admits what is due every millisecond, node by
	// node in turn, and settles what was admitted settleafter ago.
	var admitted atomic.Int64
	var lagMu sync.Mutex
	var lags []time.Duration
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r := rand.New(rand.NewPCG(1, 2))
		var inflight []bwRequest
		t0, issued, next := time.Now(), 0, 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			woke := time.Now()
			due := int(woke.Sub(t0).Seconds() * float64(*bwRate))
			now := woke.UnixMilli()
			for ; issued < due; issued++ {
				req := admit(nodes[next].Store(), users[r.IntN(len(users))], now)
				req.node, req.at = next, woke
				inflight = append(inflight, req)
				admitted.Add(1)
				next = (next + 1) % n
			}
			i := 0
			for ; i < len(inflight) && woke.Sub(inflight[i].at) >= *bwSettle; i++ {
				settle(nodes[inflight[i].node].Store(), inflight[i])
			}
			inflight = inflight[i:]
			time.Sleep(time.Millisecond)
			lagMu.Lock()
			lags = append(lags, time.Since(woke)-time.Millisecond)
			lagMu.Unlock()
		}
	}()

	// The probes: a change near a limit every 100 ms on a measured node,
	// timed until every node holds it.
	type probe struct {
		user string
		at   time.Time
		seen []bool
		left int
	}
	var latMu sync.Mutex
	var lat []time.Duration
	var measuring atomic.Bool
	go func() {
		defer wg.Done()
		w := window()
		var pending []*probe
		next, i := time.Now(), 0
		for {
			select {
			case <-stop:
				return
			default:
			}
			now := time.Now()
			if !now.Before(next) {
				u := fmt.Sprintf("p%d", i)
				i++
				measured[rand.N(len(measured))].Store().AddNow("probe", u, w, minute, 1)
				pending = append(pending, &probe{u, now, make([]bool, n), n})
				next = now.Add(100 * time.Millisecond)
			}
			pending = slices.DeleteFunc(pending, func(p *probe) bool {
				for j, nd := range nodes {
					if !p.seen[j] && nd.Store().Sum("probe", p.user, w, minute) == 1 {
						p.seen[j] = true
						p.left--
					}
				}
				if p.left > 0 && now.Sub(p.at) < 30*time.Second {
					return false
				}
				if measuring.Load() {
					d := now.Sub(p.at)
					if p.left > 0 {
						d = time.Hour // never arrived: the worst
					}
					latMu.Lock()
					lat = append(lat, d)
					latMu.Unlock()
				}
				return true
			})
			time.Sleep(2 * time.Millisecond)
		}
	}()
	defer func() {
		close(stop)
		wg.Wait()
	}()
	time.Sleep(3 * time.Second) // warm-up: keys exist, repeats flowing

	if *bwProfile != "" {
		f, err := os.Create(fmt.Sprintf("%s-%d.prof", *bwProfile, n))
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			b.Fatal(err)
		}
		defer func() { pprof.StopCPUProfile(); f.Close() }()
	}
	before := make([]linkSnapshot, len(measured))
	msgs0 := make([]float64, len(measured))
	for i, nd := range measured {
		before[i] = trs[i].snapshot()
		msgs0[i] = gossipMessages(b, nd.reg)
	}
	drops0, busy0 := udpRcvbufErrors(), machineBusy()
	a0, cpu0, t0 := admitted.Load(), processCPU(), time.Now()
	lagMu.Lock()
	lags = lags[:0]
	lagMu.Unlock()
	measuring.Store(true)
	b.ResetTimer()
	time.Sleep(time.Duration(b.N) * *bwWindow)
	b.StopTimer()
	measuring.Store(false)
	elapsed := time.Since(t0).Seconds()
	cpu := (processCPU() - cpu0).Seconds() / elapsed
	busy := (machineBusy() - busy0) / elapsed
	drops := udpRcvbufErrors() - drops0
	achieved := float64(admitted.Load()-a0) / elapsed

	var sum linkSnapshot
	var msgs float64
	minAlive := n
	for i, nd := range measured {
		d := trs[i].snapshot().sub(before[i])
		sum = linkSnapshot{sum.udpSentPkts + d.udpSentPkts, sum.udpSentBytes + d.udpSentBytes, sum.udpRecvPkts + d.udpRecvPkts,
			sum.udpRecvBytes + d.udpRecvBytes, sum.tcpSentBytes + d.tcpSentBytes, sum.tcpRecvBytes + d.tcpRecvBytes, sum.tcpConns + d.tcpConns}
		msgs += gossipMessages(b, nd.reg) - msgs0[i]
	}
	for _, nd := range nodes {
		minAlive = min(minAlive, nd.LiveReplicas())
	}
	per := func(v int64) float64 { return float64(v) / float64(len(measured)) / elapsed }
	b.ReportMetric(achieved, "achieved-req/s")
	b.ReportMetric(per(sum.udpSentBytes), "udp-sent-B/s/node")
	b.ReportMetric(per(sum.udpRecvBytes), "udp-recv-B/s/node")
	b.ReportMetric(per(sum.udpSentPkts), "udp-sent-pkts/s/node")
	b.ReportMetric(per(sum.udpRecvPkts), "udp-recv-pkts/s/node")
	b.ReportMetric(per(sum.tcpSentBytes), "tcp-sent-B/s/node")
	b.ReportMetric(per(sum.tcpRecvBytes), "tcp-recv-B/s/node")
	b.ReportMetric(per(sum.udpSentBytes+sum.tcpSentBytes)/achieved, "sent-B/req/node")
	b.ReportMetric(msgs/float64(len(measured))/elapsed/float64(n-1), "delta-pkts/s/peer")
	b.ReportMetric(float64(drops), "udp-rcvbuf-drops")
	b.ReportMetric(float64(minAlive), "min-alive")
	b.ReportMetric(cpu, "cpu-cores")
	b.ReportMetric(busy, "machine-busy-cores")
	lagMu.Lock()
	lag := pctMs(lags, 0.99)
	lagMu.Unlock()
	b.ReportMetric(lag, "sched-lag-p99-ms")
	if lag > 20 {
		b.Logf("starved: the load generator woke %.0f ms late (p99), the process got %.2f cores while the machine was busy %.2f: "+
			"changes were admitted in bursts and coalesced, so the packets (not the bytes) understate an unstarved node's", lag, cpu, busy)
	}
	latMu.Lock()
	b.ReportMetric(pctMs(lat, 0.50), "p50-ms")
	b.ReportMetric(pctMs(lat, 0.99), "p99-ms")
	b.ReportMetric(pctMs(lat, 1), "max-ms")
	latMu.Unlock()
	b.ReportMetric(0, "ns/op")
}

// sendOnlyTo makes nd send its changes to none of the nodes named in skip
// (it lists them as left: memberlist still probes them and gossips with
// them) and pull no buckets by anti-entropy (every bucket counts as being
// pulled already).
func sendOnlyTo(nd testNode, skip map[string]bool) {
	t := nd.members
	t.mu.Lock()
	for name, r := range t.nodes {
		if skip[name] && name != nd.cfg.NodeName {
			r.state = memberlist.StateLeft
			t.nodes[name] = r
		}
	}
	t.mu.Unlock()
	a := &nd.ae
	a.mu.Lock()
	for i := range a.busy {
		a.busy[i] = true
	}
	a.mu.Unlock()
}

// pctMs returns the p-quantile of ds in milliseconds (0 for none); it sorts ds.
func pctMs(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	slices.Sort(ds)
	return float64(ds[min(len(ds)-1, int(p*float64(len(ds))))].Microseconds()) / 1000
}

// gossipMessages returns the gossip messages a node sent (deltas, one per
// peer, and its few push/pull and anti-entropy messages).
func gossipMessages(b *testing.B, reg *prometheus.Registry) float64 {
	b.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "genai_gateway_gossip_messages_total" {
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "sent" {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	b.Fatal("no genai_gateway_gossip_messages_total")
	return 0
}

// udpRcvbufErrors returns the machine's count of UDP datagrams dropped for
// a full socket receive buffer (/proc/net/snmp; 0 where unavailable).
func udpRcvbufErrors() int64 {
	f, err := os.Open("/proc/net/snmp")
	if err != nil {
		return 0
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, name := range names {
			if name == "RcvbufErrors" && i < len(fields) {
				v, _ := strconv.ParseInt(fields[i], 10, 64)
				return v
			}
		}
	}
	return 0
}

// machineBusy returns the CPU seconds the whole machine has spent not idle
// (/proc/stat; 0 where unavailable).
func machineBusy() float64 {
	f, err := os.Open("/proc/stat")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	if !sc.Scan() {
		return 0
	}
	fields := strings.Fields(sc.Text()) // cpu user nice system idle iowait irq softirq steal ...
	var busy int64
	for i, v := range fields[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return float64(busy) / 100 // USER_HZ
}
