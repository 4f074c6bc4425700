// Package proxy is the gateway's HTTP handler: it routes OpenAI-compatible
// requests to upstreams, streams their responses back, meters tokens per
// user and model, asks the rate limiter before forwarding, and exports the
// traffic metrics.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/limiter"
)

// Metered routes: POST requests to these paths are metered and limited.
const (
	routeChat        = "/v1/chat/completions"
	routeCompletions = "/v1/completions"
	routeEmbeddings  = "/v1/embeddings"
	routeResponses   = "/v1/responses"
	routeOther       = "other" // route label of every other path
)

// Defaults applied by New to zero Config fields.
const (
	DefaultMaxBodyBytes = 10 << 20
	DefaultMaxUsers     = 10000
)

// Upstream is one OpenAI-compatible endpoint.
type Upstream struct {
	Name string
	// URL is the base URL; the request path is appended to its path
	// (https://host/openai + /v1/chat/completions).
	URL string
	// Models are path.Match globs of the models it serves; none = every model.
	Models []string
	// APIKey, when set, replaces the client's Authorization header.
	APIKey string
	// Timeout bounds a whole exchange, streams included; 0 = none.
	Timeout time.Duration
}

// Config configures a Proxy.
type Config struct {
	// Upstreams in order: a metered request goes to the first whose Models
	// match; every other /v1/ request goes to the first.
	Upstreams []Upstream
	// MaxBodyBytes bounds metered request bodies (413 past it); 0 = 10 MiB.
	// Unmetered requests (uploads) stream through unbounded.
	MaxBodyBytes int64
	// UserHeader names the header that identifies the user for the metrics
	// `user` label and the limiter; "" = no user.
	UserHeader string
	// MaxUsers caps the distinct `user` label values; 0 = 10000.
	MaxUsers int
	// Ready is an extra readiness gate for /readyz (cluster); nil = ready.
	Ready func() bool
	// Transport sends upstream requests; nil = a shared keep-alive
	// http.Transport (HTTP/2 over TLS) owned by the Proxy.
	Transport http.RoundTripper
}

// Limiter admits requests before they are forwarded; *limiter.Limiter
// satisfies it. Admit calls estimate at most once, lazily, on the calling
// goroutine. It must be safe for concurrent use.
type Limiter interface {
	Admit(user, model string, estimate func() int64) (*limiter.Reservation, error)
}

// Proxy is the gateway's http.Handler. It is safe for concurrent use; two
// Proxies in one process share nothing.
type Proxy struct {
	cfg       Config
	upstreams []*upstream
	lim       Limiter
	log       zerolog.Logger
	m         *metrics
	transport http.RoundTripper // passthrough routes
	metered   http.RoundTripper // metered routes: h1 for plain-HTTP upstreams, else transport
	ownTr     *http.Transport   // closed by Wait; nil when Config.Transport is set
	h1        *h1Transport      // closed by Wait; nil when Config.Transport is set
	pass      *passthrough
	tok       tokenizers
	bufs      sync.Pool // *streamBufs
	copyBufs  sync.Pool // *[]byte of copyBufSize, raw copies

	draining atomic.Bool
	inflight tracker
}

// upstream is an Upstream with its URL parsed and header values prepared.
type upstream struct {
	Upstream
	base *url.URL
	auth []string // Authorization value when APIKey is set
}

// New builds a Proxy. lim may be nil (no limiting). It registers the
// proxy's metrics on reg.
func New(cfg Config, lim Limiter, log zerolog.Logger, reg prometheus.Registerer) (*Proxy, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("proxy: no upstreams")
	}
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.MaxUsers <= 0 {
		cfg.MaxUsers = DefaultMaxUsers
	}
	if l, ok := lim.(*limiter.Limiter); ok && l == nil {
		lim = nil // a typed nil means no limiting too
	}
	p := &Proxy{cfg: cfg, lim: lim, log: log.With().Str("component", "proxy").Logger()}
	for i, u := range cfg.Upstreams {
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
		base.Path = strings.TrimSuffix(base.Path, "/")
		base.RawPath = ""
		up := &upstream{Upstream: u, base: base}
		if u.APIKey != "" {
			up.auth = []string{"Bearer " + u.APIKey}
		}
		p.upstreams = append(p.upstreams, up)
	}
	p.transport, p.metered = cfg.Transport, cfg.Transport
	if p.transport == nil {
		p.ownTr = newTransport()
		p.transport = p.ownTr
		var direct []string
		for _, up := range p.upstreams {
			probe := &http.Request{Method: http.MethodPost, URL: up.base, Header: http.Header{}}
			if proxyURL, err := http.ProxyFromEnvironment(probe); up.base.Scheme == "http" && err == nil && proxyURL == nil {
				direct = append(direct, up.base.Host)
			}
		}
		p.h1 = newH1Transport(p.ownTr, direct)
		p.metered = p.h1
	}
	m, err := newMetrics(reg, cfg.MaxUsers)
	if err != nil {
		return nil, err
	}
	p.m = m
	p.bufs.New = func() any { return newStreamBufs() }
	p.copyBufs.New = func() any { b := make([]byte, copyBufSize); return &b }
	p.pass = newPassthrough(p)
	return p, nil
}

// ServeHTTP serves the metered routes, every other /v1/ path (forwarded
// unmetered to the first upstream), /healthz and /readyz. It is safe for
// concurrent use; a request's upstream exchange is bound to r.Context(), so
// a client that goes away cancels it.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/healthz":
		p.serveHealth(w)
		return
	case "/readyz":
		p.serveReady(w)
		return
	}
	p.inflight.add()
	p.m.inFlight.Inc()
	defer func() {
		p.m.inFlight.Dec()
		p.inflight.done()
	}()
	if route := meteredRoute(r.URL.Path); route != "" && r.Method == http.MethodPost {
		if p.serveMetered(w, r, route) {
			// The upstream broke off after the headers were sent: abort the
			// connection so the client sees a truncated response, not a
			// complete one. Bookkeeping has run; net/http recovers this.
			panic(http.ErrAbortHandler)
		}
		return
	}
	if strings.HasPrefix(r.URL.Path, "/v1/") {
		p.pass.serve(w, r)
		return
	}
	ex := exchange{start: time.Now(), route: routeOther, method: r.Method, path: r.URL.Path}
	p.reply(w, &ex, errNotFound(r.Method, r.URL.Path))
	p.finish(&ex)
}

func meteredRoute(p string) string {
	switch p {
	case routeChat, routeCompletions, routeEmbeddings, routeResponses:
		return p
	}
	return ""
}

// pick returns the first upstream that serves model, or nil.
func (p *Proxy) pick(model string) *upstream {
	for _, u := range p.upstreams {
		if len(u.Models) == 0 {
			return u
		}
		for _, g := range u.Models {
			if ok, _ := path.Match(g, model); ok {
				return u
			}
		}
	}
	return nil
}

// SetDraining turns /readyz to 503 so load balancers stop sending new
// requests; requests in flight continue. Safe for concurrent use.
func (p *Proxy) SetDraining() { p.draining.Store(true) }

// Wait blocks until no request or stream is in flight, or ctx is done (its
// error is returned then). Once drained it closes the idle upstream
// connections of the Proxy's own transport. Call it after
// http.Server.Shutdown has stopped new requests. Safe for concurrent use.
func (p *Proxy) Wait(ctx context.Context) error {
	if err := p.inflight.wait(ctx); err != nil {
		return err
	}
	if p.h1 != nil {
		p.h1.CloseIdleConnections() // and ownTr's
	}
	return nil
}

// tracker counts requests in flight and lets Wait block until none are.
type tracker struct {
	mu   sync.Mutex
	n    int
	idle chan struct{} // closed when n drops to 0; nil while n == 0
}

func (t *tracker) add() {
	t.mu.Lock()
	if t.n == 0 {
		t.idle = make(chan struct{})
	}
	t.n++
	t.mu.Unlock()
}

func (t *tracker) done() {
	t.mu.Lock()
	t.n--
	if t.n == 0 {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	idle := t.idle
	t.mu.Unlock()
	if idle == nil {
		return nil
	}
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for requests in flight: %w", ctx.Err())
	}
}
