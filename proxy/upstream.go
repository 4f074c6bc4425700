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
	up.client = &fasthttp.HostClient{
		Addr:                          addr,
		IsTLS:                         isTLS,
		TLSConfig:                     tlsCfg,
		Dial:                          dialer(base, isTLS),
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

// dialer dials the upstream, through the HTTP proxy that HTTP_PROXY,
// HTTPS_PROXY and NO_PROXY name for it if any (CONNECT), and wraps the
// connection so that every reuse first checks it (see checkedConn).
func dialer(base *url.URL, isTLS bool) fasthttp.DialFunc {
	dial := func(addr string) (net.Conn, error) {
		return (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).Dial("tcp", addr)
	}
	probe := &http.Request{Method: http.MethodPost, URL: base, Header: http.Header{}}
	if pu, err := http.ProxyFromEnvironment(probe); err == nil && pu != nil {
		dial = fasthttpproxy.FasthttpHTTPDialerTimeout(pu.String(), dialTimeout)
	}
	return func(addr string) (net.Conn, error) {
		c, err := dial(addr)
		if err != nil {
			return nil, err
		}
		return newCheckedConn(c, isTLS), nil
	}
}

// checkedConn is an upstream TCP connection that, when a new request starts
// on it (a write after reads), peeks without blocking at what the upstream
// sent since the last response. Bytes there were never asked for (an
// upstream that answered twice, or injected data): reading them as the next
// response would hand one caller's answer to the next, so the connection is
// refused and closed. EOF means the upstream closed the idle connection. In
// both cases the write fails with errStaleConn before any byte is sent, so
// the request may safely go out on a fresh connection.
//
// TLS connections are checked for EOF only: a TLS 1.3 server may send
// session tickets after the handshake, which are not stray bytes.
type checkedConn struct {
	net.Conn
	tls     bool
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
