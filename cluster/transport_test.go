package cluster

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
	"go.uber.org/goleak"
)

// newTestLean returns a leanTransport on 127.0.0.1 with a free port, shut
// down at cleanup.
func newTestLean(t testing.TB) *leanTransport {
	t.Helper()
	tr, err := newLeanTransport("127.0.0.1", 0, newStdLogger(testLogger(), nil, nil))
	if err != nil {
		t.Fatalf("newLeanTransport: %v", err)
	}
	t.Cleanup(func() { _ = tr.Shutdown() })
	return tr
}

// recvPacket returns the next packet of tr, failing after waitLong.
func recvPacket(t testing.TB, tr memberlist.Transport) *memberlist.Packet {
	t.Helper()
	select {
	case p := <-tr.PacketCh():
		return p
	case <-time.After(waitLong):
		t.Fatal("timed out waiting for a packet")
		return nil
	}
}

// TestLeanTransportIsDefault: with no Transport configured a node's
// memberlist runs on a leanTransport, whose port replaces a bind port of 0.
func TestLeanTransportIsDefault(t *testing.T) {
	mc := memberlist.DefaultLANConfig()
	mc.Name = "default-transport"
	mc.BindAddr, mc.BindPort, mc.AdvertisePort = "127.0.0.1", 0, 0
	mc.Logger = newStdLogger(testLogger(), nil, nil)
	ml, err := createMemberlist(mc)
	if err != nil {
		t.Fatalf("createMemberlist: %v", err)
	}
	defer func() { _ = ml.Shutdown() }()
	tr, ok := mc.Transport.(*leanTransport)
	if !ok {
		t.Fatalf("transport %T, want *leanTransport", mc.Transport)
	}
	if got, want := ml.LocalNode().Address(), fmt.Sprintf("127.0.0.1:%d", tr.port()); got != want || mc.BindPort != tr.port() {
		t.Errorf("address %s, BindPort %d; want %s, %d", got, mc.BindPort, want, tr.port())
	}
}

// TestLeanTransportCluster: nodes on the default transport gossip over UDP
// (two nodes converge on a counter) and stream over TCP (a third, joining
// later, pulls what they hold by anti-entropy before it is Ready).
func TestLeanTransportCluster(t *testing.T) {
	nodes := startCluster(t, 2, nil)
	w := window()
	nodes[0].Store().AddNow("l", "u", w, minute, 3)
	nodes[1].Store().AddNow("l", "u", w, minute, 4)
	waitSums(t, "the two nodes' sums", nodes, w, 7)

	cfg := testConfig("n2")
	cfg.Join = []string{nodes[0].addr()}
	nodes = append(nodes, startNode(t, cfg))
	waitFor(t, waitLong, "the third node ready with 3 members", func() bool {
		return nodes[2].Ready() && nodes[2].LiveReplicas() == 3
	})
	if got := nodes[2].Store().Sum("l", "u", w, minute); got != 7 {
		t.Errorf("joiner's sum when ready: got %d, want 7", got)
	}
	nodes[2].Store().AddNow("l", "u", w, minute, 5)
	waitSums(t, "the three nodes' sums", nodes, w, 12)
}

// TestLeanTransportPacketBuffers: each packet handed to memberlist has its
// own buffer, the datagram's size, which the next read does not touch.
func TestLeanTransportPacketBuffers(t *testing.T) {
	a, b := newTestLean(t), newTestLean(t)
	to := memberlist.Address{Addr: fmt.Sprintf("127.0.0.1:%d", b.port())}
	first, second := []byte("first datagram"), bytes.Repeat([]byte{'x'}, 1000)
	if _, err := a.WriteToAddress(first, to); err != nil {
		t.Fatalf("WriteToAddress: %v", err)
	}
	p1 := recvPacket(t, b)
	if _, err := a.WriteTo(second, to.Addr); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	p2 := recvPacket(t, b)
	if !bytes.Equal(p1.Buf, first) || !bytes.Equal(p2.Buf, second) {
		t.Fatalf("packets %q, %q; want %q, %d x's", p1.Buf, p2.Buf[:min(len(p2.Buf), 20)], first, len(second))
	}
	if cap(p1.Buf) >= maxDatagram || cap(p2.Buf) >= maxDatagram {
		t.Errorf("buffer capacities %d, %d; want the datagrams' sizes, not %d", cap(p1.Buf), cap(p2.Buf), maxDatagram)
	}
	if got, want := p1.From.String(), fmt.Sprintf("127.0.0.1:%d", a.port()); got != want {
		t.Errorf("From %s, want %s", got, want)
	}
	if d := time.Since(p1.Timestamp); p1.Timestamp.IsZero() || d < 0 || d > waitLong {
		t.Errorf("Timestamp %v, want the time of the read", p1.Timestamp)
	}
}

// TestLeanTransportStream: a stream dialled from one transport is accepted
// by the other and carries bytes both ways.
func TestLeanTransportStream(t *testing.T) {
	a, b := newTestLean(t), newTestLean(t)
	c, err := a.DialAddressTimeout(memberlist.Address{Addr: fmt.Sprintf("127.0.0.1:%d", b.port())}, time.Second)
	if err != nil {
		t.Fatalf("DialAddressTimeout: %v", err)
	}
	defer c.Close()
	var s net.Conn
	select {
	case s = <-b.StreamCh():
	case <-time.After(waitLong):
		t.Fatal("timed out waiting for the stream")
	}
	defer s.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatalf("write: %v", err)
	}
	got := make([]byte, 4)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "ping" {
		t.Fatalf("read %q, %v; want \"ping\"", got, err)
	}
}

// TestLeanTransportShutdown: Shutdown returns with a packet and a stream
// nobody took, leaves no goroutine and may be called again.
func TestLeanTransportShutdown(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	a, err := newLeanTransport("127.0.0.1", 0, newStdLogger(testLogger(), nil, nil))
	if err != nil {
		t.Fatalf("newLeanTransport: %v", err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", a.port())
	if _, err := a.WriteTo([]byte("to myself"), addr); err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	c, err := a.DialTimeout(addr, time.Second)
	if err != nil {
		t.Fatalf("DialTimeout: %v", err)
	}
	defer c.Close()
	done := make(chan error, 1)
	go func() { done <- a.Shutdown() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatal("Shutdown blocked")
	}
	if err := a.Shutdown(); err != nil {
		t.Errorf("second Shutdown: %v, want nil", err)
	}
	if _, err := a.WriteTo([]byte("late"), addr); err == nil {
		t.Error("WriteTo after Shutdown: nil error, want one")
	}
}

// TestLeanTransportAddresses: TCP and UDP share the port picked for port 0,
// and the advertised address follows NetTransport's rules.
func TestLeanTransportAddresses(t *testing.T) {
	tr := newTestLean(t)
	if got := tr.udp.LocalAddr().(*net.UDPAddr).Port; got != tr.port() {
		t.Errorf("UDP port %d, want the TCP port %d", got, tr.port())
	}
	wild, err := newLeanTransport("0.0.0.0", 0, newStdLogger(testLogger(), nil, nil))
	if err != nil {
		t.Fatalf("newLeanTransport(0.0.0.0): %v", err)
	}
	defer func() { _ = wild.Shutdown() }()
	priv, _ := sockaddr.GetPrivateIP()

	for _, c := range []struct {
		name     string
		tr       *leanTransport
		ip       string
		port     int
		wantIP   string // "" = an error
		wantPort int
	}{
		{"given", tr, "10.1.2.3", 9000, "10.1.2.3", 9000},
		{"given v6", tr, "fd00::1", 9000, "fd00::1", 9000},
		{"bound ip", tr, "", 0, "127.0.0.1", tr.port()},
		{"bound 0.0.0.0: a private ip", wild, "", 0, priv, wild.port()},
		{"bad", tr, "not-an-ip", 9000, "", 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			ip, port, err := c.tr.FinalAdvertiseAddr(c.ip, c.port)
			if c.wantIP == "" {
				if err == nil {
					t.Errorf("got %s:%d, want an error", ip, port)
				}
				return
			}
			if err != nil || !ip.Equal(net.ParseIP(c.wantIP)) || port != c.wantPort {
				t.Errorf("got %s, %d, %v; want %s, %d, nil", ip, port, err, c.wantIP, c.wantPort)
			}
			if ip4 := ip.To4(); ip4 != nil && len(ip) != net.IPv4len {
				t.Errorf("IPv4 address %s in %d bytes, want 4", ip, len(ip))
			}
		})
	}
}

// BenchmarkTransportRecv measures what receiving one datagram costs,
// allocated bytes above all (B/op): the lean transport against memberlist's
// NetTransport, for a small gossip packet and a full one (memberlist's UDP
// buffer limit is 1,400 bytes). Allocations of the sender are included
// (the same for both).
func BenchmarkTransportRecv(b *testing.B) {
	for _, size := range []int{200, 1400} {
		for _, kind := range []string{"lean", "net"} {
			b.Run(fmt.Sprintf("transport=%s/size=%d", kind, size), func(b *testing.B) {
				var tr memberlist.Transport
				var port int
				if kind == "lean" {
					lt := newTestLean(b)
					tr, port = lt, lt.port()
				} else {
					nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
						BindAddrs: []string{"127.0.0.1"}, Logger: newStdLogger(testLogger(), nil, nil)})
					if err != nil {
						b.Fatalf("NewNetTransport: %v", err)
					}
					b.Cleanup(func() { _ = nt.Shutdown() })
					tr, port = nt, nt.GetAutoBindPort()
				}
				c, err := net.DialUDP("udp", nil, &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				msg := bytes.Repeat([]byte{'g'}, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					if _, err := c.Write(msg); err != nil {
						b.Fatal(err)
					}
					if p := <-tr.PacketCh(); len(p.Buf) != size {
						b.Fatalf("packet of %d bytes, want %d", len(p.Buf), size)
					}
				}
			})
		}
	}
}

// TestBindNeedsAnIP: a bind host that is a name is refused. The transport
// binds IPs, and a name would have it listen on every interface, not only
// the one the name stands for.
func TestBindNeedsAnIP(t *testing.T) {
	for _, bind := range []string{"localhost:0", "gossip.internal:7946", ":7946"} {
		if _, err := New(Config{NodeName: "n", Bind: bind}, testLogger(), nil); err == nil || !strings.Contains(err.Error(), "not an IP address") {
			t.Errorf("bind %q: got %v, want refused as not an IP address", bind, err)
		}
	}
}
