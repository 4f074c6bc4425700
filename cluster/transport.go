package cluster

// This file holds the node's default memberlist transport. It exists for one
// reason: memberlist's NetTransport reads every UDP datagram into a fresh
// 64 KiB buffer. Gossip packets are a few hundred bytes, but at 10,000
// admitted requests/s a node receives 5,700-7,700 of them a second, so
// NetTransport made 370-490 MB/s of garbage, and about half of the cluster's
// CPU in profiles was the collector's (BenchmarkGossipBandwidth,
// -cluster.lean=false). leanTransport reads into one buffer it keeps and
// hands memberlist a copy of the datagram's size.
//
// Otherwise it behaves as NetTransport (memberlist v0.7.0, MPL-2.0; this is
// our own code written to the same contract, not a copy): UDP packets and
// TCP streams on one address and port, port 0 picking a free port for both,
// a 2 MiB UDP receive buffer (halved until the kernel accepts it), the same
// advertise-address rules, a TCP accept loop that backs off on errors.
// Encryption, labels and compression are done by memberlist above the
// transport. Unlike NetTransport it reports nothing to go-metrics (a global
// sink nothing here reads).

import (
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sockaddr "github.com/hashicorp/go-sockaddr"
	"github.com/hashicorp/memberlist"
)

const (
	maxDatagram    = 65536                // the largest UDP payload, rounded up
	udpRecvBufSize = 2 << 20              // socket receive buffer asked for, as NetTransport
	bindTries      = 10                   // port 0: tries to find a port free for TCP and UDP
	acceptDelayMin = 5 * time.Millisecond // after a failed accept; doubled up to acceptDelayMax
	acceptDelayMax = time.Second
)

// leanTransport is a memberlist.NodeAwareTransport over UDP and TCP that
// reads datagrams into a reused buffer (see the comment at the top of this
// file). Its methods are safe for concurrent use; Shutdown stops and waits
// for its goroutines and may be called more than once.
type leanTransport struct {
	bindIP   string      // as configured: "0.0.0.0" advertises a private IP
	log      *log.Logger // memberlist's logger: "[ERR] memberlist: ..." lines
	tcp      *net.TCPListener
	udp      *net.UDPConn
	packetCh chan *memberlist.Packet
	streamCh chan net.Conn

	down     atomic.Bool   // set at Shutdown: read and accept errors are expected
	done     chan struct{} // closed at Shutdown: unblocks handoffs nobody takes
	downOnce sync.Once
	wg       sync.WaitGroup
}

var _ memberlist.NodeAwareTransport = (*leanTransport)(nil)

// createMemberlist is memberlist.Create on a leanTransport bound to
// mc.BindAddr and mc.BindPort, unless mc.Transport is set (tests inject
// theirs). As memberlist does for its own transport, a bind port of 0 is
// replaced in mc by the port picked, and the transport is shut down if the
// memberlist cannot be created.
func createMemberlist(mc *memberlist.Config) (*memberlist.Memberlist, error) {
	if mc.Transport != nil {
		return memberlist.Create(mc)
	}
	logger := mc.Logger
	if logger == nil { // memberlist's own default
		out := mc.LogOutput
		if out == nil {
			out = os.Stderr
		}
		logger = log.New(out, "", log.LstdFlags)
	}
	tr, err := newLeanTransport(mc.BindAddr, mc.BindPort, logger)
	if err != nil {
		return nil, fmt.Errorf("cluster transport: %w", err)
	}
	if mc.BindPort == 0 {
		mc.BindPort, mc.AdvertisePort = tr.port(), tr.port()
	}
	mc.Transport = tr
	ml, err := memberlist.Create(mc)
	if err != nil {
		_ = tr.Shutdown() // memberlist does not always do it
		return nil, err
	}
	return ml, nil
}

// newLeanTransport listens on bindAddr (an IP; anything else listens on
// every address, as NetTransport does) and port, over TCP and UDP, and
// starts reading. Port 0 picks a port free for both.
func newLeanTransport(bindAddr string, port int, logger *log.Logger) (*leanTransport, error) {
	ip := net.ParseIP(bindAddr)
	tries := 1
	if port == 0 {
		// The kernel picks a free TCP port, which may be taken for UDP:
		// try again, as memberlist does for its own transport.
		tries = bindTries
	}
	var tcp *net.TCPListener
	var udp *net.UDPConn
	var err error
	for range tries {
		tcp, err = net.ListenTCP("tcp", &net.TCPAddr{IP: ip, Port: port})
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				continue
			}
			return nil, fmt.Errorf("listen tcp %s port %d: %w", bindAddr, port, err)
		}
		udp, err = net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: tcp.Addr().(*net.TCPAddr).Port})
		if err == nil {
			break
		}
		_ = tcp.Close()
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("listen udp %s port %d: %w", bindAddr, port, err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("listen on %s port %d: %w", bindAddr, port, err)
	}
	if err := setRecvBuf(udp); err != nil {
		_ = tcp.Close()
		_ = udp.Close()
		return nil, fmt.Errorf("udp receive buffer: %w", err)
	}
	t := &leanTransport{
		bindIP:   bindAddr,
		log:      logger,
		tcp:      tcp,
		udp:      udp,
		packetCh: make(chan *memberlist.Packet),
		streamCh: make(chan net.Conn),
		done:     make(chan struct{}),
	}
	t.wg.Add(2)
	go t.readPackets()
	go t.acceptStreams()
	return t, nil
}

// setRecvBuf asks for a udpRecvBufSize receive buffer, halving the size
// until the socket accepts it.
func setRecvBuf(c *net.UDPConn) error {
	var err error
	for size := udpRecvBufSize; size > 0; size /= 2 {
		if err = c.SetReadBuffer(size); err == nil {
			return nil
		}
	}
	return err
}

// port returns the port the transport listens on, TCP and UDP.
func (t *leanTransport) port() int { return t.tcp.Addr().(*net.TCPAddr).Port }

// readPackets reads datagrams until Shutdown. Each is read into the same
// buffer and handed over as a copy of its own size: memberlist may hold a
// Packet's Buf in its queues long after the next datagram is read.
func (t *leanTransport) readPackets() {
	defer t.wg.Done()
	buf := make([]byte, maxDatagram)
	for {
		n, from, err := t.udp.ReadFrom(buf)
		at := time.Now() // as close to the read as can be: memberlist times probes with it
		if err != nil {
			if t.down.Load() {
				return
			}
			t.log.Printf("[ERR] memberlist: Error reading UDP packet: %v", err)
			continue
		}
		if n < 1 {
			t.log.Printf("[ERR] memberlist: UDP packet too short (%d bytes) %s", n, memberlist.LogAddress(from))
			continue
		}
		p := &memberlist.Packet{Buf: make([]byte, n), From: from, Timestamp: at}
		copy(p.Buf, buf[:n])
		select {
		case t.packetCh <- p:
		case <-t.done:
			return
		}
	}
}

// acceptStreams accepts TCP connections until Shutdown, waiting after a
// failed accept from acceptDelayMin, doubled each failure in a row, up to
// acceptDelayMax.
func (t *leanTransport) acceptStreams() {
	defer t.wg.Done()
	var delay time.Duration
	for {
		c, err := t.tcp.AcceptTCP()
		if err != nil {
			if t.down.Load() {
				return
			}
			delay = min(max(2*delay, acceptDelayMin), acceptDelayMax)
			t.log.Printf("[ERR] memberlist: Error accepting TCP connection: %v", err)
			select {
			case <-time.After(delay):
			case <-t.done:
				return
			}
			continue
		}
		delay = 0
		select {
		case t.streamCh <- c:
		case <-t.done:
			_ = c.Close()
			return
		}
	}
}

// FinalAdvertiseAddr returns the address peers are told to use, as
// NetTransport does: ip and port when ip is given; else, bound to 0.0.0.0,
// a private IP of this host; else the bound IP; with the bound port.
func (t *leanTransport) FinalAdvertiseAddr(ip string, port int) (net.IP, int, error) {
	if ip != "" {
		a := net.ParseIP(ip)
		if a == nil {
			return nil, 0, fmt.Errorf("failed to parse advertise address %q", ip)
		}
		if a4 := a.To4(); a4 != nil {
			a = a4
		}
		return a, port, nil
	}
	if t.bindIP != "0.0.0.0" {
		return t.tcp.Addr().(*net.TCPAddr).IP, t.port(), nil
	}
	priv, err := sockaddr.GetPrivateIP()
	if err != nil {
		return nil, 0, fmt.Errorf("failed to get interface addresses: %w", err)
	}
	if priv == "" {
		return nil, 0, errors.New("no private IP address found, and explicit IP not provided")
	}
	a := net.ParseIP(priv)
	if a == nil {
		return nil, 0, fmt.Errorf("failed to parse advertise address: %q", priv)
	}
	return a, t.port(), nil
}

// WriteTo sends b in one datagram to addr ("ip:port").
func (t *leanTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	return t.WriteToAddress(b, memberlist.Address{Addr: addr})
}

// WriteToAddress sends b in one datagram to a.Addr ("ip:port"). The time
// returned is taken after the write.
func (t *leanTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	to, err := net.ResolveUDPAddr("udp", a.Addr)
	if err != nil {
		return time.Time{}, err
	}
	_, err = t.udp.WriteTo(b, to)
	return time.Now(), err
}

// PacketCh returns the datagrams received; each Packet's Buf is its own.
func (t *leanTransport) PacketCh() <-chan *memberlist.Packet { return t.packetCh }

// DialTimeout opens a TCP stream to addr.
func (t *leanTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	return t.DialAddressTimeout(memberlist.Address{Addr: addr}, timeout)
}

// DialAddressTimeout opens a TCP stream to a.Addr.
func (t *leanTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	d := net.Dialer{Timeout: timeout}
	return d.Dial("tcp", a.Addr)
}

// StreamCh returns the TCP streams accepted.
func (t *leanTransport) StreamCh() <-chan net.Conn { return t.streamCh }

// Shutdown closes the sockets and waits for the read and accept loops to
// return. A datagram or stream not yet taken from PacketCh or StreamCh is
// dropped (the stream closed). Later calls wait for the first and return nil.
func (t *leanTransport) Shutdown() error {
	t.downOnce.Do(func() {
		t.down.Store(true)
		close(t.done)
		_ = t.tcp.Close()
		_ = t.udp.Close()
		t.wg.Wait()
	})
	return nil
}
