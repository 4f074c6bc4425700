package cluster

import (
	"flag"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
)

var bwTransport = flag.String("cluster.bwtransport", "bench",
	"BenchmarkGossipBandwidth: the transport: bench (the benchmark's own, reading as -cluster.lean says), "+
		"lean (the production default, leanTransport) or net (memberlist's NetTransport), the last two under metering and loss")

// newMeasuredTransport returns the transport -cluster.bwtransport names for
// a BenchmarkGossipBandwidth node, losing loss of the UDP packets it sends,
// and the counts of what it carries.
func newMeasuredTransport(b *testing.B, loss float64) (memberlist.NodeAwareTransport, *linkCounts) {
	b.Helper()
	var inner memberlist.NodeAwareTransport
	switch *bwTransport {
	case "bench":
		tr := newBenchTransport(b, loss, *bwLean)
		return tr, &tr.c
	case "lean":
		tr, err := newLeanTransport("127.0.0.1", 0, newStdLogger(testLogger(), nil, nil))
		if err != nil {
			b.Fatalf("lean transport: %v", err)
		}
		inner = tr
	case "net":
		for try := 0; inner == nil; try++ {
			nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
				BindAddrs: []string{"127.0.0.1"}, Logger: newStdLogger(testLogger(), nil, nil)})
			if err != nil {
				if try < 10 && strings.Contains(err.Error(), "address already in use") { // by UDP, on the port TCP got
					continue
				}
				b.Fatalf("net transport: %v", err)
			}
			inner = nt
		}
	default:
		b.Fatalf("-cluster.bwtransport %q: want bench, lean or net", *bwTransport)
	}
	m := &meteredTransport{NodeAwareTransport: inner, loss: loss,
		packetCh: make(chan *memberlist.Packet), streamCh: make(chan net.Conn), done: make(chan struct{})}
	m.wg.Add(2)
	go m.forwardPackets()
	go m.forwardStreams()
	return m, &m.c
}

// meteredTransport is a real transport (leanTransport or NetTransport)
// counting, at the node's side, what it carries as benchTransport does, and
// losing a share of the UDP packets it sends. Received packets and accepted
// streams pass through one more goroutine each, whichever the transport.
type meteredTransport struct {
	memberlist.NodeAwareTransport
	loss     float64
	c        linkCounts
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn
	done     chan struct{} // closed at Shutdown, after the inner transport's
	downOnce sync.Once
	wg       sync.WaitGroup
}

func (m *meteredTransport) forwardPackets() {
	defer m.wg.Done()
	for {
		select {
		case p := <-m.NodeAwareTransport.PacketCh():
			m.c.udpRecvPkts.Add(1)
			m.c.udpRecvBytes.Add(int64(len(p.Buf)))
			select {
			case m.packetCh <- p:
			case <-m.done:
				return
			}
		case <-m.done:
			return
		}
	}
}

func (m *meteredTransport) forwardStreams() {
	defer m.wg.Done()
	for {
		select {
		case c := <-m.NodeAwareTransport.StreamCh():
			m.c.tcpConns.Add(1)
			select {
			case m.streamCh <- &meteredConn{Conn: c, c: &m.c}:
			case <-m.done:
				_ = c.Close()
				return
			}
		case <-m.done:
			return
		}
	}
}

func (m *meteredTransport) PacketCh() <-chan *memberlist.Packet { return m.packetCh }

func (m *meteredTransport) StreamCh() <-chan net.Conn { return m.streamCh }

func (m *meteredTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	m.c.udpSentPkts.Add(1)
	m.c.udpSentBytes.Add(int64(len(b)))
	if rand.Float64() < m.loss {
		return time.Now(), nil // lost on the wire
	}
	return m.NodeAwareTransport.WriteToAddress(b, a)
}

func (m *meteredTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return m.WriteToAddress(b, memberlist.Address{Addr: addr})
}

func (m *meteredTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	c, err := m.NodeAwareTransport.DialAddressTimeout(a, timeout)
	if err != nil {
		return nil, err
	}
	m.c.tcpConns.Add(1)
	return &meteredConn{Conn: c, c: &m.c}, nil
}

func (m *meteredTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return m.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// Shutdown shuts the inner transport down while the forwarders still take
// its packets (NetTransport's reader cannot be interrupted in a handoff),
// then stops them.
func (m *meteredTransport) Shutdown() error {
	var err error
	m.downOnce.Do(func() {
		err = m.NodeAwareTransport.Shutdown()
		close(m.done)
		m.wg.Wait()
	})
	return err
}
