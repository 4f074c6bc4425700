package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// h1Transport is the upstream client of metered requests to plain-HTTP
// upstreams (vLLM, Ollama, TGI, mockllm in-cluster): HTTP/1.1 with
// keep-alive, where the handler's goroutine writes the request in one write
// and reads the response itself. net/http's Transport hands every exchange
// to a write-loop and a read-loop goroutine per connection; on a busy
// replica those hand-offs cost more than the proxying. Parsing stays in the
// standard library (http.ReadResponse: status, headers, chunked and
// length-delimited bodies). TLS upstreams and anything else go through
// next, the ordinary Transport (HTTP/2 over TLS).
//
// An h1Transport is safe for concurrent use.
type h1Transport struct {
	next   http.RoundTripper
	direct map[string]bool // host:port of plain-HTTP upstreams reached without a proxy
	dialer net.Dialer

	mu   sync.Mutex
	idle map[string][]*h1Conn // by host:port, most recently used last
}

// h1Conn is one upstream connection with its reader.
type h1Conn struct {
	net.Conn
	br       *bufio.Reader
	lastUsed time.Time
}

const (
	h1BufSize    = 16 << 10 // response reader
	h1InlineBody = 64 << 10 // request bodies up to this size are copied behind the head
)

var errH1Closed = errors.New("upstream connection closed")

func newH1Transport(next http.RoundTripper, hosts []string) *h1Transport {
	t := &h1Transport{
		next:   next,
		direct: make(map[string]bool, len(hosts)),
		dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		idle:   make(map[string][]*h1Conn),
	}
	for _, h := range hosts {
		t.direct[h] = true
	}
	return t
}

// RoundTrip sends req. Requests that are not POSTs with an in-memory body
// to a plain-HTTP upstream go to next.
func (t *h1Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme != "http" || req.Method != http.MethodPost || req.GetBody == nil || !t.direct[req.URL.Host] {
		return t.next.RoundTrip(req)
	}
	ctx := req.Context()
	for attempt := 0; ; attempt++ {
		c, reused, err := t.get(ctx, req.URL.Host)
		if err != nil {
			return nil, err
		}
		resp, err := t.exchange(ctx, c, req)
		if err == nil {
			return resp, nil
		}
		c.Close()
		// A pooled connection the upstream closed while idle fails before any
		// response byte: the upstream never saw the request, so send it once more
		// on a fresh connection (as net/http does).
		if reused && attempt == 0 && ctx.Err() == nil && errors.Is(err, errH1Closed) {
			continue
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
}

// get returns an idle connection to host, or dials one.
func (t *h1Transport) get(ctx context.Context, host string) (c *h1Conn, reused bool, err error) {
	now := time.Now()
	t.mu.Lock()
	for conns := t.idle[host]; len(conns) > 0; conns = t.idle[host] {
		c = conns[len(conns)-1]
		conns[len(conns)-1] = nil
		t.idle[host] = conns[:len(conns)-1]
		if now.Sub(c.lastUsed) < idleConnTimeout {
			t.mu.Unlock()
			return c, true, nil
		}
		c.Close()
	}
	t.mu.Unlock()
	nc, err := t.dialer.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, false, err
	}
	return &h1Conn{Conn: nc, br: bufio.NewReaderSize(nc, h1BufSize)}, false, nil
}

// put returns a connection whose exchange ended cleanly to the pool.
func (t *h1Transport) put(host string, c *h1Conn) {
	c.lastUsed = time.Now()
	t.mu.Lock()
	if len(t.idle[host]) < maxIdlePerHost {
		t.idle[host] = append(t.idle[host], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes every pooled connection, and next's.
func (t *h1Transport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = make(map[string][]*h1Conn)
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.Close()
		}
	}
	if ci, ok := t.next.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// exchange writes req on c and reads the response head. The body it returns
// owns c until it is read to the end (c goes back to the pool) or closed.
func (t *h1Transport) exchange(ctx context.Context, c *h1Conn, req *http.Request) (*http.Response, error) {
	// Cancellation and the upstream timeout close the exchange by moving the
	// connection's deadline into the past; no goroutine waits for it.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Unix(1, 0)) })
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	} else {
		_ = c.SetDeadline(time.Time{})
	}
	body, err := req.GetBody()
	if err != nil {
		stop()
		return nil, err
	}
	// A small request goes out in one write; a large one (long prompts,
	// embeddings of many inputs) is streamed after its head instead of copied.
	inline := req.ContentLength <= h1InlineBody
	buf := make([]byte, 0, 512+min(req.ContentLength, h1InlineBody))
	buf = appendRequestHead(buf, req)
	if inline {
		if _, err := io.Copy(appendWriter{&buf}, body); err != nil {
			stop()
			return nil, err
		}
	}
	if _, err := c.Write(buf); err != nil {
		stop()
		return nil, closedOr(err)
	}
	if !inline {
		if _, err := io.Copy(c.Conn, body); err != nil {
			stop()
			return nil, closedOr(err)
		}
	}
	var resp *http.Response
	for {
		if resp, err = http.ReadResponse(c.br, req); err != nil {
			stop()
			return nil, closedOr(err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		_ = resp.Body.Close() // 1xx informational: the real answer follows
	}
	// ReadResponse sets Close for "Connection: close" and for bodies that end
	// when the connection does; anything else may carry the next request.
	reusable := !resp.Close
	resp.Body = &h1Body{rc: resp.Body, c: c, t: t, host: req.URL.Host, stop: stop, reusable: reusable}
	return resp, nil
}

// closedOr maps the ways a connection the upstream already closed fails
// before any response byte to errH1Closed.
func closedOr(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isConnReset(err) {
		return fmt.Errorf("%w: %w", errH1Closed, err)
	}
	return err
}

func isConnReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout() && op.Op != "dial"
}

// appendRequestHead writes the request line and headers of req.
func appendRequestHead(b []byte, req *http.Request) []byte {
	b = append(b, "POST "...)
	b = append(b, req.URL.RequestURI()...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	b = append(b, host...)
	b = append(b, "\r\n"...)
	for k, vs := range req.Header {
		if k == "Host" || k == "Content-Length" || k == "Connection" || k == "Transfer-Encoding" {
			continue
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendHeaderValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, req.ContentLength, 10)
	return append(b, "\r\n\r\n"...)
}

// appendHeaderValue appends v with CR and LF replaced by spaces, as
// net/http does, so no header value can split the request.
func appendHeaderValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c == '\r' || c == '\n' {
			c = ' '
		}
		b = append(b, c)
	}
	return b
}

// appendWriter appends to a byte slice (io.Copy from a bytes.Reader is one copy).
type appendWriter struct{ b *[]byte }

func (w appendWriter) Write(p []byte) (int, error) {
	*w.b = append(*w.b, p...)
	return len(p), nil
}

// h1Body is a response body that returns its connection to the pool once
// read to the end, and closes it otherwise.
type h1Body struct {
	rc       io.ReadCloser
	c        *h1Conn
	t        *h1Transport
	host     string
	stop     func() bool
	reusable bool
	eof      bool
	done     bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, errH1Closed
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// Close releases the connection: to the pool after a complete, reusable
// body whose deadline never fired, else closed.
func (b *h1Body) Close() error {
	if b.done {
		return nil
	}
	b.done = true
	notFired := b.stop()
	_ = b.rc.Close()
	if b.eof && b.reusable && notFired && b.c.br.Buffered() == 0 {
		_ = b.c.SetDeadline(time.Time{})
		b.t.put(b.host, b.c)
		return nil
	}
	return b.c.Close()
}
