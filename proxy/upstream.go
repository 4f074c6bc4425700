package proxy

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpproxy"

	"github.com/genai-gateway/genai-gateway/proxy/provider"
	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// Upstream connection settings.
const (
	dialTimeout     = 10 * time.Second
	idleConnTimeout = 90 * time.Second
	// maxConnsPerHost is not the bound on upstream connections:
	// max_connections is (a client request holds at most one upstream
	// connection). At 4096, the 4097th concurrent stream to one upstream
	// got 502 (BenchmarkHeldStreams).
	maxConnsPerHost = 1 << 16
	// maxResponseHeader bounds an upstream's response head (502 past it);
	// it is also the connection's read buffer, held while a stream is in
	// flight. Providers send heads of 1 to 3 KiB.
	maxResponseHeader = 8 << 10
	upstreamWriteBuf  = 16 << 10
)

// upstream is an Upstream with its URL parsed, its header values prepared
// and its connection pool.
type upstream struct {
	Upstream
	base   *url.URL
	host   string // Host header
	origin string // scheme://host
	prefix string // base path without a trailing slash
	// authName and auth are the credential header of the provider and
	// its value, when APIKey is set.
	authName string
	auth     []byte
	kind     providerKind
	azure    *provider.Azure // addressing of an azure upstream
	client   *fasthttp.HostClient
	node     *route.Node // health, requests in flight, attempts
}

// providerKind is an upstream's Provider, as a number for the hot path.
type providerKind uint8

const (
	kindOpenAI providerKind = iota
	kindAnthropic
	kindAzure
)

func (k providerKind) String() string {
	switch k {
	case kindAnthropic:
		return ProviderAnthropic
	case kindAzure:
		return ProviderAzure
	}
	return ProviderOpenAI
}

func newUpstream(i int, u Upstream, tlsCfg *tls.Config) (*upstream, error) {
	base, err := url.Parse(u.URL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("upstreams[%d] (%s): url must be http(s)://host[:port][/path]", i, u.Name)
	}
	if base.User != nil {
		return nil, fmt.Errorf("upstreams[%d] (%s): url must not hold credentials; use api_key", i, u.Name)
	}
	for _, g := range u.Models {
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("upstreams[%d] (%s): models: bad pattern %q: %w", i, u.Name, g, err)
		}
	}
	isTLS := base.Scheme == "https"
	addr := base.Host
	if base.Port() == "" {
		if isTLS {
			addr = net.JoinHostPort(base.Hostname(), "443")
		} else {
			addr = net.JoinHostPort(base.Hostname(), "80")
		}
	}
	up := &upstream{Upstream: u, base: base, host: base.Host, origin: base.Scheme + "://" + base.Host,
		prefix: strings.TrimSuffix(base.EscapedPath(), "/"), node: route.NewNode(u.Name, u.Weight, u.MaxInFlight)}
	switch u.Provider {
	case "", ProviderOpenAI:
		up.kind, up.authName = kindOpenAI, "Authorization"
		if u.APIKey != "" {
			up.auth = []byte("Bearer " + u.APIKey)
		}
	case ProviderAnthropic:
		up.kind, up.authName = kindAnthropic, provider.AnthropicKeyHeader
	case ProviderAzure:
		up.kind, up.authName = kindAzure, provider.AzureKeyHeader
		if base.RawQuery != "" {
			return nil, fmt.Errorf("upstreams[%d] (%s): an azure url takes no query; use api_version", i, u.Name)
		}
		up.azure = &provider.Azure{BaseURL: u.URL, APIVersion: u.APIVersion, Deployments: u.Deployments}
	default:
		return nil, fmt.Errorf("upstreams[%d] (%s): provider must be openai, anthropic or azure; got %q", i, u.Name, u.Provider)
	}
	if u.APIKey != "" && up.auth == nil {
		up.auth = []byte(u.APIKey)
	}
	if tlsCfg != nil {
		tlsCfg = tlsCfg.Clone()
	} else {
		tlsCfg = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = base.Hostname()
	}
	// The dialer does the TLS handshake itself, so that the reuse check
	// sits above TLS (tlsCheckedConn): fasthttp takes a connection with a
	// Handshake method for one already secured and does not wrap it again.
	// IsTLS stays set, as fasthttp refuses https requests without it.
	up.client = &fasthttp.HostClient{
		Addr:                          addr,
		IsTLS:                         isTLS,
		TLSConfig:                     tlsCfg,
		Dial:                          dialer(base, isTLS, tlsCfg),
		MaxConns:                      maxConnsPerHost,
		MaxIdleConnDuration:           idleConnTimeout,
		ReadBufferSize:                maxResponseHeader,
		WriteBufferSize:               upstreamWriteBuf,
		NoDefaultUserAgentHeader:      true,
		DisableHeaderNamesNormalizing: true,
		DisablePathNormalizing:        true,
		StreamResponseBody:            true,
		SecureErrorLogMessage:         true,
		// A request is sent again only when the pooled connection it was
		// about to use proved dead or dirty before a byte of it left: the
		// upstream cannot have seen it. Anything else is never replayed,
		// so a POST the upstream may have run reaches it once.
		RetryIfErr: func(_ *fasthttp.Request, _ int, err error) (bool, bool) {
			return false, errors.Is(err, errStaleConn)
		},
		MaxIdemponentCallAttempts: 4,
	}
	return up, nil
}

// fetchModels sends req (GET /v1/models, prepared by outRequest) and
// returns the body of a 200 answer, read up to maxModelsBody bytes by
// deadline.
func (u *upstream) fetchModels(req *fasthttp.Request, deadline time.Time) ([]byte, error) {
	req.Header.SetMethod(fasthttp.MethodGet)
	req.SetBody(nil)
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseResponse(resp)
	resp.StreamBody = true
	if err := u.client.DoDeadline(req, resp, deadline); err != nil {
		return nil, err
	}
	defer func() { _ = resp.CloseBodyStream() }()
	if resp.StatusCode() != fasthttp.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode())
	}
	var src io.Reader = bytes.NewReader(resp.Body())
	if s := resp.BodyStream(); s != nil {
		src = s
	}
	body, err := io.ReadAll(io.LimitReader(src, maxModelsBody+1))
	switch {
	case err != nil:
		return nil, err
	case len(body) > maxModelsBody:
		return nil, fmt.Errorf("model list larger than %d bytes", maxModelsBody)
	}
	return body, nil
}

// errStaleConn marks a pooled connection found closed by the upstream, or
// holding bytes nobody asked for, before a request was written on it.
var errStaleConn = errors.New("pooled upstream connection closed or holding unsolicited bytes")

// errWouldBlock is what a check's read returns when nothing has arrived.
// It is a temporary net.Error, so crypto/tls keeps the connection usable
// after it (as after a read deadline).
var errWouldBlock net.Error = wouldBlockError{}

type wouldBlockError struct{}

func (wouldBlockError) Error() string   { return "nothing to read yet" }
func (wouldBlockError) Timeout() bool   { return true }
func (wouldBlockError) Temporary() bool { return true }

// probeWait is how long a check waits for bytes on a connection that has
// no descriptor to peek at (probeIdle, readBriefly).
const probeWait = time.Millisecond

// dialer dials the upstream, through the HTTP proxy that HTTP_PROXY,
// HTTPS_PROXY and NO_PROXY name for it if any (CONNECT), does the TLS
// handshake with tlsCfg when isTLS (within dialTimeout of the dial's start),
// and wraps the connection so that every reuse first checks it
// (checkedConn, tlsCheckedConn).
func dialer(base *url.URL, isTLS bool, tlsCfg *tls.Config) fasthttp.DialFunc {
	dial := func(addr string) (net.Conn, error) {
		return (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).Dial("tcp", addr)
	}
	probe := &http.Request{Method: http.MethodPost, URL: base, Header: http.Header{}}
	if pu, err := http.ProxyFromEnvironment(probe); err == nil && pu != nil {
		dial = fasthttpproxy.FasthttpHTTPDialerTimeout(pu.String(), dialTimeout)
	}
	return func(addr string) (net.Conn, error) {
		deadline := time.Now().Add(dialTimeout)
		c, err := dial(addr)
		if err != nil {
			return nil, err
		}
		if !isTLS {
			return newCheckedConn(c), nil
		}
		return tlsHandshake(c, tlsCfg, deadline)
	}
}

// tlsHandshake runs the client handshake on c by deadline and returns the
// checked TLS connection; c is closed on failure.
func tlsHandshake(c net.Conn, cfg *tls.Config, deadline time.Time) (net.Conn, error) {
	w := &tlsWire{Conn: c, now: newNowReader(c)}
	tc := tls.Client(w, cfg)
	err := tc.SetDeadline(deadline)
	if err == nil {
		err = tc.Handshake()
	}
	if err == nil {
		err = tc.SetDeadline(time.Time{})
	}
	if err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("tls handshake: %w", err)
	}
	return &tlsCheckedConn{Conn: tc, wire: w}, nil
}

// checkedConn is a plain-HTTP upstream connection that, when a new request
// starts on it (a write after reads), peeks without blocking at what the
// upstream sent since the last response. Bytes there were never asked for
// (an upstream that answered twice, or injected data): reading them as the
// next response would hand one caller's answer to the next, so the
// connection is refused and closed. EOF means the upstream closed the idle
// connection. In both cases the write fails with errStaleConn before any
// byte is sent, so the request may safely go out on a fresh connection.
// A connection without a descriptor to peek at is checked by a read of at
// most probeWait (probeIdle).
type checkedConn struct {
	net.Conn
	reading bool // the last operation was a read
	peeker
}

func (c *checkedConn) Read(b []byte) (int, error) {
	c.reading = true
	return c.Conn.Read(b)
}

func (c *checkedConn) Write(b []byte) (int, error) {
	if c.reading {
		c.reading = false
		if !c.idleClean() {
			return 0, errStaleConn
		}
	}
	return c.Conn.Write(b)
}

// probeIdle reports whether nothing arrives on c within probeWait; buf
// takes what does (the connection is discarded then).
func probeIdle(c net.Conn, buf []byte) bool {
	n, err := readBriefly(c, buf)
	return n == 0 && err == errWouldBlock
}

// readBriefly reads into p what arrives on c within probeWait, or returns
// errWouldBlock; it leaves c without a read deadline, which fasthttp sets
// again before it reads a response. A net.Conn stays usable after a read
// deadline has passed.
func readBriefly(c net.Conn, p []byte) (int, error) {
	if err := c.SetReadDeadline(time.Now().Add(probeWait)); err != nil {
		return 0, err
	}
	n, err := c.Read(p)
	if derr := c.SetReadDeadline(time.Time{}); err == nil {
		err = derr
	}
	if n == 0 && isNetTimeout(err) {
		return 0, errWouldBlock
	}
	return n, err
}

// tlsCheckedConn is a TLS upstream connection checked before each reuse
// like checkedConn, but above TLS: at the TCP layer a TLS 1.3 session
// ticket or key update is indistinguishable from a stray response. The
// check is one TLS read that must not wait (tlsWire.probing): crypto/tls
// consumes post-handshake messages itself and returns application data or
// EOF, which mean the connection is dirty, or errWouldBlock, which means
// it is clean if no TLS record has arrived only in part (tlsWire.frame; a
// partial record may be the start of a stray response). fasthttp's own
// read and write deadlines are untouched by the check, save that the read
// deadline is cleared; fasthttp sets it again before reading a response.
type tlsCheckedConn struct {
	*tls.Conn
	wire    *tlsWire
	reading bool // the last operation was a read
	buf     [1]byte
}

func (c *tlsCheckedConn) Read(b []byte) (int, error) {
	c.reading = true
	return c.Conn.Read(b)
}

func (c *tlsCheckedConn) Write(b []byte) (int, error) {
	if c.reading {
		c.reading = false
		if !c.idleClean() {
			return 0, errStaleConn
		}
	}
	return c.Conn.Write(b)
}

// idleClean reports whether nothing but TLS's own messages has arrived on
// the idle connection: no application data, no alert, no EOF, and no
// record in part.
func (c *tlsCheckedConn) idleClean() bool {
	// A read deadline left by the last response may have passed; Go would
	// then not even look at the socket.
	if err := c.Conn.SetReadDeadline(time.Time{}); err != nil {
		return false
	}
	c.wire.probing = true
	n, err := c.Conn.Read(c.buf[:])
	c.wire.probing = false
	return n == 0 && err == errWouldBlock && c.wire.frame.boundary()
}

// tlsWire is the connection under a TLS upstream connection. It follows
// the TLS record framing of every byte it reads, and while probing its
// reads never wait: they return what has arrived or errWouldBlock (at
// most probeWait, without a descriptor).
type tlsWire struct {
	net.Conn
	now     *nowReader // nil: no descriptor; probes use readBriefly
	probing bool
	frame   recordFrame
}

func (w *tlsWire) Read(p []byte) (n int, err error) {
	switch {
	case !w.probing:
		n, err = w.Conn.Read(p)
	case w.now != nil:
		n, err = w.now.read(p)
	default:
		n, err = readBriefly(w.Conn, p)
	}
	w.frame.advance(p[:n])
	return n, err
}

// recordFrame follows TLS record boundaries in a byte stream: each record
// is a 5-byte header (type, version, length) and length bytes.
type recordFrame struct {
	hdr  [5]byte
	nhdr int // header bytes seen of the current record
	left int // body bytes of the current record still to come
}

func (f *recordFrame) advance(p []byte) {
	for len(p) > 0 {
		if f.left > 0 {
			k := min(f.left, len(p))
			f.left -= k
			p = p[k:]
			continue
		}
		k := copy(f.hdr[f.nhdr:], p)
		f.nhdr += k
		p = p[k:]
		if f.nhdr == len(f.hdr) {
			f.left = int(f.hdr[3])<<8 | int(f.hdr[4])
			f.nhdr = 0
		}
	}
}

// boundary reports whether the stream read so far ends with a whole record.
func (f *recordFrame) boundary() bool { return f.nhdr == 0 && f.left == 0 }
