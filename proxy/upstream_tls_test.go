package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// testTLS is a server certificate for loopback and a client configuration
// that trusts it, taken from httptest's TLS server.
func testTLS(t testing.TB) (server, client *tls.Config) {
	t.Helper()
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.StartTLS()
	defer ts.Close()
	client = ts.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	return &tls.Config{Certificates: ts.TLS.Certificates}, client
}

// splitConn is the TCP connection under a test server's TLS: while split
// is set, a write sends its first splitAt bytes, signals sentPart, pauses
// 300ms, then sends the rest, so the client sees part of a TLS record.
type splitConn struct {
	net.Conn
	split    atomic.Bool
	sentPart chan struct{}
}

const splitAt = 20 // past the record's 5-byte header, short of its end

func (c *splitConn) Write(b []byte) (int, error) {
	if !c.split.CompareAndSwap(true, false) || len(b) <= splitAt {
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(b[:splitAt])
	close(c.sentPart)
	if err != nil {
		return n, err
	}
	time.Sleep(300 * time.Millisecond) // the upstream's own pause, not a wait in the test
	m, err := c.Conn.Write(b[splitAt:])
	return n + m, err
}

// tlsEnv is a gateway in front of a raw upstream that speaks TLS with cfg;
// handle runs per connection with the TLS connection and the TCP
// connection under it.
func tlsEnv(t *testing.T, srvTLS, cliTLS *tls.Config, handle func(u *rawUpstream, tc *tls.Conn, sc *splitConn, br *bufio.Reader)) (*env, *rawUpstream) {
	t.Helper()
	u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, _ *bufio.Reader) {
		sc := &splitConn{Conn: c, sentPart: make(chan struct{})}
		tc := tls.Server(sc, srvTLS)
		handle(u, tc, sc, bufio.NewReader(tc))
	})
	cfg := Config{Upstreams: []Upstream{{Name: "tls", URL: "https://" + u.ln.Addr().String(), Timeout: time.Minute}}, TLSConfig: cliTLS}
	return newEnv(t, cfg, nil), u
}

// TestTLSUpstreamNoLeakAcrossRequests: a TLS upstream that sends a complete
// second response after its answer to the first request (at once, 50ms
// later while the connection idles in the pool, or as a TLS record of
// which only the start has arrived when the next request is sent) must
// never have it delivered to the next caller. Over TLS the check used to
// look for EOF only, and bob got alice's answer.
func TestTLSUpstreamNoLeakAcrossRequests(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	for _, tt := range []struct {
		name  string
		delay bool // the stray response is written 50ms after the answer
		split bool // the stray response's record pauses after splitAt bytes
		extra []byte
	}{
		{name: "appended", extra: injected},
		{name: "appended 64KiB", extra: injectedSize(64 << 10)},
		{name: "after 50ms", delay: true, extra: injected},
		{name: "part of a record", delay: true, split: true, extra: injected},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var first atomic.Bool
			sent := make(chan struct{}) // the stray response (or its first part) is on the wire
			e, u := tlsEnv(t, srvTLS, cliTLS, func(u *rawUpstream, tc *tls.Conn, sc *splitConn, br *bufio.Reader) {
				for {
					_, body, err := u.readRequest(br)
					if err != nil {
						return
					}
					out := chatAnswer("answer to " + promptOf(body))
					if !first.CompareAndSwap(false, true) {
						if _, err := tc.Write(out); err != nil {
							return
						}
						continue
					}
					if !tt.delay {
						_, err = tc.Write(append(out, tt.extra...))
						close(sent)
						if err != nil {
							return
						}
						continue
					}
					if _, err := tc.Write(out); err != nil {
						close(sent)
						return
					}
					time.Sleep(50 * time.Millisecond) // the upstream's own pause, not a wait in the test
					if tt.split {
						sc.split.Store(true)
						go func() { <-sc.sentPart; close(sent) }()
					}
					_, err = tc.Write(tt.extra)
					if !tt.split {
						close(sent)
					}
					if err != nil {
						return
					}
				}
			})
			wantOwnAnswers(t, e, []string{"alice", "bob", "carol"}, sent)
			if got, want := u.requests.Load(), int64(3); got != want {
				t.Errorf("requests the upstream read: got %d, want %d", got, want)
			}
		})
	}
}

// ticketCount is a client session cache that counts the TLS 1.3 session
// tickets it is given.
type ticketCount struct {
	tls.ClientSessionCache
	puts atomic.Int64
}

func (c *ticketCount) Put(key string, cs *tls.ClientSessionState) {
	c.puts.Add(1)
	c.ClientSessionCache.Put(key, cs)
}

// TestTLSUpstreamKeepAlive: over TLS 1.3, with the session tickets servers
// send after the handshake (in the server's first flight, and after the
// client's certificate when the server asks for one), sequential requests
// all go out on one upstream connection: a clean connection is reused.
func TestTLSUpstreamKeepAlive(t *testing.T) {
	for _, tt := range []struct {
		name       string
		clientAuth tls.ClientAuthType
	}{
		{"tickets in first flight", tls.NoClientCert},
		{"tickets after client finished", tls.RequestClientCert},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := &fakeLLM{h2: true}
			up.srv = httptest.NewUnstartedServer(up)
			up.srv.EnableHTTP2 = true
			up.srv.TLS = &tls.Config{ClientAuth: tt.clientAuth}
			var conns atomic.Int64
			up.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			up.srv.StartTLS()
			t.Cleanup(up.srv.Close)
			cfg := upstreams(up)
			cfg.TLSConfig = up.srv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
			tickets := &ticketCount{ClientSessionCache: tls.NewLRUClientSessionCache(8)}
			cfg.TLSConfig.ClientSessionCache = tickets
			cfg.TLSConfig.MinVersion = tls.VersionTLS13
			e := newEnv(t, cfg, nil)
			const n = 8
			for i := 0; i < n; i++ {
				resp, body := e.post(t, routeChat, `{"model":"gpt-4o","max_tokens":2,"messages":[{"role":"user","content":"a b"}]}`, "user", "tls")
				if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("w2")) {
					t.Fatalf("request %d: got %d %s, want 200 with the answer", i, resp.StatusCode, body)
				}
				if !up.last(t).tls {
					t.Fatalf("request %d: upstream got plain HTTP, want TLS", i)
				}
			}
			if got := tickets.puts.Load(); got == 0 {
				t.Errorf("session tickets received: got 0, want some (the case under test)")
			}
			if got := conns.Load(); got != 1 {
				t.Errorf("upstream connections for %d sequential requests: got %d, want 1", n, got)
			}
		})
	}
}

// noFD hides a connection's descriptor, as a proxy tunnel's wrapper does.
type noFD struct{ net.Conn }

// TestCheckedConnWithoutDescriptor: a connection that cannot be peeked at
// (no descriptor) is still checked before reuse, plain or TLS: bytes that
// arrived unasked make the next write fail with errStaleConn, and a clean
// connection goes on working.
func TestCheckedConnWithoutDescriptor(t *testing.T) {
	srvTLS, cliTLS := testTLS(t)
	cliTLS.ServerName = "127.0.0.1"
	for _, tt := range []struct {
		name  string
		tls   bool
		stray bool
	}{
		{"plain clean", false, false},
		{"plain stray", false, true},
		{"tls clean", true, false},
		{"tls stray", true, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			done := make(chan error, 1)
			go func() {
				c, err := ln.Accept()
				if err != nil {
					done <- err
					return
				}
				defer c.Close()
				var sc net.Conn = c
				if tt.tls {
					sc = tls.Server(c, srvTLS)
				}
				buf := make([]byte, 4)
				for i := 0; i < 2; i++ {
					if _, err := io.ReadFull(sc, buf); err != nil {
						done <- err
						return
					}
					out := "pong"
					if tt.stray {
						out += "stray"
					}
					if _, err := sc.Write([]byte(out)); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			var c net.Conn
			if tt.tls {
				if c, err = tlsHandshake(noFD{raw}, cliTLS, time.Now().Add(5*time.Second)); err != nil {
					t.Fatal(err)
				}
			} else {
				c = newCheckedConn(noFD{raw})
			}
			defer c.Close()
			buf := make([]byte, 4)
			if _, err := c.Write([]byte("ping")); err != nil {
				t.Fatalf("first write: %v", err)
			}
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("first answer: got %q, %v; want pong", buf, err)
			}
			_, err = c.Write([]byte("ping"))
			if tt.stray {
				if !errors.Is(err, errStaleConn) {
					t.Errorf("write after a stray answer: got %v, want errStaleConn", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("write on a clean connection: got %v, want nil", err)
			}
			if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
				t.Fatalf("second answer: got %q, %v; want pong", buf, err)
			}
			if err := <-done; err != nil {
				t.Errorf("server: %v", err)
			}
		})
	}
}
