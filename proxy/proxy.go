// Package proxy is the gateway's HTTP edge: it routes OpenAI-compatible
// requests to upstreams, streams their responses back, meters tokens per
// user and model, asks the rate limiter before forwarding, and exports the
// traffic metrics.
//
// The proxy port runs on fasthttp's server and HostClient; their types stay
// in the files that touch the wire (server.go, forward.go, passthrough.go,
// upstream.go). Routing, metering and limiting take plain values.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/limiter"
	"github.com/genai-gateway/genai-gateway/proxy/auth"
	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// Metered routes: POST requests to these paths are metered and limited.
const (
	routeChat        = "/v1/chat/completions"
	routeCompletions = "/v1/completions"
	routeEmbeddings  = "/v1/embeddings"
	routeResponses   = "/v1/responses"
	routeMessages    = "/v1/messages"              // Anthropic's Messages API
	routeCountTokens = "/v1/messages/count_tokens" // routed by model, not metered
	routeOther       = "other"                     // route label of every other path
)

// Defaults applied by New to zero Config fields.
const (
	DefaultMaxBodyBytes         = 10 << 20
	DefaultMaxUsers             = 10000
	DefaultMaxSeries            = 100000
	DefaultUserIdle             = time.Hour
	DefaultBodyReadTimeout      = 30 * time.Second
	DefaultMaxInflightBodyBytes = 256 << 20
	DefaultMaxConnections       = 10000
	// MaxUserBytes is the longest user value accepted (400 past it), so
	// every accepted user fits a gossip message and a metric label.
	MaxUserBytes = 256
)

// Providers: the API an Upstream speaks.
const (
	ProviderOpenAI    = "openai"    // any OpenAI-compatible API (the default)
	ProviderAnthropic = "anthropic" // Anthropic's Messages API
	ProviderAzure     = "azure"     // Azure OpenAI's deployment URLs
)

// Upstream is one model endpoint.
type Upstream struct {
	Name string
	// URL is the base URL; the request path is appended to its path
	// (https://host/openai + /v1/chat/completions).
	URL string
	// Models are path.Match globs of the models it serves; none = every model.
	Models []string
	// APIKey, when set, replaces the client's credential: sent as
	// Authorization: Bearer (openai), x-api-key (anthropic) or api-key
	// (azure).
	APIKey string
	// Timeout bounds a whole exchange, streams included; 0 = none.
	Timeout time.Duration
	// Provider is ProviderOpenAI (or ""), ProviderAnthropic or
	// ProviderAzure.
	Provider string
	// Deployments maps model names to Azure deployment names (azure); a
	// model not in it is its own deployment.
	Deployments map[string]string
	// APIVersion is Azure's api-version (azure); "" keeps the client's, or
	// provider.DefaultAzureAPIVersion.
	APIVersion string
	// Weight is its share of its pools under the weighted strategy; < 1
	// counts as 1.
	Weight int
	// MaxInFlight caps the requests in flight on it (streams included);
	// a full upstream is skipped like a cooling one. 0 = no cap.
	MaxInFlight int
}

// Routing is the policy over the pool of upstreams that serve a model.
type Routing struct {
	// Strategy is route.NamePriority (or ""), route.NameWeighted or
	// route.NameLeastBusy.
	Strategy string
	// Retries is how many further upstreams a request may try after a
	// failure, while nothing has reached the client; 0 = none.
	Retries int
	// RetryOn lists the outcomes retried (route.RetryOnValues); nil =
	// none.
	RetryOn []string
	// Cooldown is how long a failing upstream is skipped; 0 = 30s.
	Cooldown time.Duration
	// Fallbacks lists, by requested model, the models tried in order once
	// the requested model's whole pool has failed (on RetryOn outcomes,
	// retries spent, nothing sent to the client). The answer is metered
	// under the model that answered, limited by the limits of both.
	Fallbacks map[string][]string
}

// Config configures a Proxy.
type Config struct {
	// Upstreams in order: those whose Models match a metered request's
	// model form its pool, routed by Routing; every other /v1/ request
	// goes to the first.
	Upstreams []Upstream
	// Routing is the policy over each pool (see SetRouting); the zero
	// value is priority without retries.
	Routing Routing
	// MaxBodyBytes bounds metered request bodies (413 past it); 0 = 10 MiB.
	// Unmetered requests (uploads) stream through unbounded.
	MaxBodyBytes int64
	// MaxInflightBodyBytes caps the memory all metered request bodies may
	// hold together; past it a request gets 503 with Retry-After.
	// 0 = 256 MiB.
	MaxInflightBodyBytes int64
	// BodyReadTimeout bounds reading one request, head and body; 0 = 30s.
	BodyReadTimeout time.Duration
	// MaxConnections caps the open client connections; 0 = 10000.
	MaxConnections int
	// UserHeader names the header that identifies the user for the metrics
	// `user` label and the limiter; "" = no user.
	UserHeader string
	// MaxUsers caps the distinct `user` label values; 0 = 10000.
	MaxUsers int
	// MaxSeries caps the (user, model) series; 0 = 100000.
	MaxSeries int
	// UserIdle is how long an idle user's series are kept; 0 = 1h.
	UserIdle time.Duration
	// Ready is an extra readiness gate for /readyz (cluster); nil = ready.
	Ready func() bool
	// TLSConfig, when set, is used for https upstreams (tests: a private
	// CA); nil = the system roots.
	TLSConfig *tls.Config
	// Auth, when set, authenticates every request of the proxy port (see
	// SetAuthenticator); nil = callers are trusted and the user header names
	// the user.
	Auth *auth.Authenticator
	// MaxClientWait is the longest Retry-After a 429 asks clients to wait;
	// longer ones carry x-should-retry: false. 0 = 60s.
	MaxClientWait time.Duration
}

// Limiter admits requests before they are forwarded; *limiter.Limiter
// satisfies it. Admit calls est.Exact at most once, lazily, on the calling
// goroutine, and only when est.Bound cannot decide. It must be safe for
// concurrent use.
type Limiter interface {
	Admit(user, model string, est limiter.Estimate) (*limiter.Reservation, error)
	// Fallback extends a reservation to the limits of the model a model
	// fallback sends the request to (see limiter.Limiter.Fallback).
	Fallback(r *limiter.Reservation, user, model string, est limiter.Estimate) (*limiter.Reservation, error)
	// Usage reports the user's limits, for GET /usage and the
	// x-gateway-ratelimit-* headers.
	Usage(user string) []limiter.LimitUsage
}

// coster prices usage by the configured prices; *limiter.Limiter is one.
// Optional: a Limiter without it prices nothing (cost 0).
type coster interface {
	Cost(model string, u limiter.Usage) (usd float64, priced bool)
}

// Proxy is the gateway's proxy port. It is safe for concurrent use; two
// Proxies in one process share nothing.
type Proxy struct {
	cfg      Config
	router   atomic.Pointer[router] // swapped whole by SetUpstreams and SetRouting
	upsMu    sync.Mutex             // serialises SetUpstreams and SetRouting
	routing  route.Config           // the policy the router was built with; under upsMu
	lim      Limiter
	cost     coster // lim, when it prices usage
	log      zerolog.Logger
	m        *metrics
	tok      tokenizers
	bufs     sync.Pool // *streamBufs
	bodyBufs sync.Pool // *[]byte, request bodies
	bodies   bodyBudget
	auth     atomic.Pointer[auth.Authenticator]
	ids      *requestIDs

	draining atomic.Bool
	inflight tracker
}

// New builds a Proxy. lim may be nil (no limiting). It registers the
// proxy's metrics on reg.
func New(cfg Config, lim Limiter, log zerolog.Logger, reg prometheus.Registerer) (*Proxy, error) {
	if len(cfg.Upstreams) == 0 {
		return nil, errors.New("proxy: no upstreams")
	}
	setDefault(&cfg.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&cfg.MaxInflightBodyBytes, max(DefaultMaxInflightBodyBytes, cfg.MaxBodyBytes))
	setDefault(&cfg.BodyReadTimeout, DefaultBodyReadTimeout)
	setDefault(&cfg.MaxConnections, DefaultMaxConnections)
	setDefault(&cfg.MaxUsers, DefaultMaxUsers)
	setDefault(&cfg.MaxSeries, DefaultMaxSeries)
	setDefault(&cfg.UserIdle, DefaultUserIdle)
	setDefault(&cfg.MaxClientWait, time.Minute)
	if l, ok := lim.(*limiter.Limiter); ok && l == nil {
		lim = nil // a typed nil means no limiting too
	}
	p := &Proxy{cfg: cfg, lim: lim, log: log.With().Str("component", "proxy").Logger()}
	var err error
	p.cost, _ = lim.(coster)
	p.bodies.max = cfg.MaxInflightBodyBytes
	p.ids = newRequestIDs()
	p.auth.Store(cfg.Auth)
	if p.routing, err = routeConfig(cfg.Routing); err != nil {
		return nil, err
	}
	ups, err := p.newUpstreams(cfg.Upstreams, nil)
	if err != nil {
		return nil, err
	}
	p.router.Store(newRouter(ups, p.routing))
	m, err := newMetrics(reg, metricsOptions{MaxUsers: cfg.MaxUsers, MaxSeries: cfg.MaxSeries, UserIdle: cfg.UserIdle, Now: time.Now})
	if err != nil {
		return nil, err
	}
	p.m = m
	p.m.setUpstreams(upstreamProviders(ups))
	if err := reg.Register(newRouteCollector(p)); err != nil {
		return nil, fmt.Errorf("register proxy metrics: %w", err)
	}
	p.bufs.New = func() any { return newStreamBufs() }
	p.bodyBufs.New = func() any { b := make([]byte, 0, initialBodyBuf); return &b }
	return p, nil
}

func setDefault[T int | int64 | time.Duration](v *T, def T) {
	if *v <= 0 {
		*v = def
	}
}

// newUpstreams prepares the upstreams of cfgs, reusing those of old whose
// configuration is unchanged (and their connection pools).
func (p *Proxy) newUpstreams(cfgs []Upstream, old []*upstream) ([]*upstream, error) {
	if len(cfgs) == 0 {
		return nil, errors.New("proxy: no upstreams")
	}
	ups := make([]*upstream, 0, len(cfgs))
	for i, u := range cfgs {
		if j := slices.IndexFunc(old, func(o *upstream) bool { return sameUpstream(o.Upstream, u) }); j >= 0 {
			ups = append(ups, old[j])
			continue
		}
		up, err := newUpstream(i, u, p.cfg.TLSConfig)
		if err != nil {
			return nil, err
		}
		ups = append(ups, up)
	}
	return ups, nil
}

func sameUpstream(a, b Upstream) bool {
	return a.Name == b.Name && a.URL == b.URL && slices.Equal(a.Models, b.Models) && a.APIKey == b.APIKey &&
		a.Timeout == b.Timeout && a.Provider == b.Provider && maps.Equal(a.Deployments, b.Deployments) && a.APIVersion == b.APIVersion &&
		max(a.Weight, 1) == max(b.Weight, 1) && max(a.MaxInFlight, 0) == max(b.MaxInFlight, 0)
}

// SetUpstreams replaces the upstreams for new requests, atomically: a
// request routes on one set from start to end, so requests in flight
// finish on the upstreams they started with. Upstreams whose settings are
// unchanged keep their connections; the idle connections of those that
// left are closed now, and those still busy close once idle (after
// idleConnTimeout at most). On error (an invalid upstream) nothing
// changes. An unchanged upstream keeps its health (a cooling one stays
// cooling); a changed one starts healthy. Safe for concurrent use.
func (p *Proxy) SetUpstreams(cfgs []Upstream) error {
	p.upsMu.Lock()
	defer p.upsMu.Unlock()
	old := p.ups()
	ups, err := p.newUpstreams(cfgs, old)
	if err != nil {
		return err
	}
	p.router.Store(newRouter(ups, p.routing))
	p.m.setUpstreams(upstreamProviders(ups))
	for _, o := range old {
		if !slices.Contains(ups, o) {
			o.client.CloseIdleConnections()
		}
	}
	return nil
}

// upstreamProviders lists the name and provider of each upstream.
func upstreamProviders(ups []*upstream) [][2]string {
	out := make([][2]string, len(ups))
	for i, u := range ups {
		out[i] = [2]string{u.Name, u.kind.String()}
	}
	return out
}

// SetRouting replaces the routing policy for new requests, atomically, as
// SetUpstreams replaces the upstreams; the upstreams keep their health and
// connections. On error (an unknown strategy or retry_on value) nothing
// changes. Safe for concurrent use.
func (p *Proxy) SetRouting(r Routing) error {
	rc, err := routeConfig(r)
	if err != nil {
		return err
	}
	p.upsMu.Lock()
	defer p.upsMu.Unlock()
	p.routing = rc
	p.router.Store(newRouter(p.ups(), rc))
	return nil
}

// routeConfig parses a Routing.
func routeConfig(r Routing) (route.Config, error) {
	s, err := route.ParseStrategy(r.Strategy)
	if err != nil {
		return route.Config{}, fmt.Errorf("proxy: %w", err)
	}
	on, err := route.ParseRetryOn(r.RetryOn)
	if err != nil {
		return route.Config{}, fmt.Errorf("proxy: routing %w", err)
	}
	if r.Retries < 0 || r.Cooldown < 0 {
		return route.Config{}, errors.New("proxy: routing retries and cooldown must not be negative")
	}
	fb := make(map[string][]string, len(r.Fallbacks))
	for model, to := range r.Fallbacks {
		if model == "" || slices.Contains(to, "") || slices.Contains(to, model) {
			return route.Config{}, fmt.Errorf("proxy: routing fallbacks of %q: model names must be non-empty and differ from the model", model)
		}
		fb[model] = slices.Clone(to)
	}
	return route.Config{Strategy: s, Retries: r.Retries, RetryOn: on, Cooldown: r.Cooldown, Fallbacks: fb}, nil
}

// router is one set of upstreams with the routing table over them. A
// request holds the router it started with to its end.
type router struct {
	ups   []*upstream
	table *route.Table
}

func newRouter(ups []*upstream, rc route.Config) *router {
	members := make([]route.Member, len(ups))
	for i, u := range ups {
		members[i] = route.Member{Node: u.node, Models: u.Models}
	}
	return &router{ups: ups, table: route.NewTable(rc, members)}
}

// ups returns the current upstreams; the slice must not be changed.
func (p *Proxy) ups() []*upstream { return p.router.Load().ups }

// SetDraining turns /readyz to 503 so load balancers stop sending new
// requests; requests in flight continue. Safe for concurrent use.
func (p *Proxy) SetDraining() { p.draining.Store(true) }

// Wait blocks until no request or stream is in flight, or ctx is done (its
// error is returned then). Once drained it closes the idle upstream
// connections. Call it after the server has stopped accepting. Safe for
// concurrent use.
func (p *Proxy) Wait(ctx context.Context) error {
	if err := p.inflight.wait(ctx); err != nil {
		return err
	}
	for _, up := range p.ups() {
		up.client.CloseIdleConnections()
	}
	return nil
}

// tracker counts requests in flight and lets Wait block until none are.
// add and done are one atomic operation each (no allocation per request);
// the channel exists only while someone waits.
type tracker struct {
	n    atomic.Int64
	mu   sync.Mutex
	idle chan struct{} // closed when n drops to 0; made by wait
}

func (t *tracker) add() { t.n.Add(1) }

func (t *tracker) done() {
	if t.n.Add(-1) != 0 {
		return
	}
	t.mu.Lock()
	// Re-checked under the lock: a request may have started since.
	if t.idle != nil && t.n.Load() == 0 {
		close(t.idle)
		t.idle = nil
	}
	t.mu.Unlock()
}

func (t *tracker) wait(ctx context.Context) error {
	t.mu.Lock()
	if t.n.Load() == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wait for requests in flight: %w", ctx.Err())
	}
}

// bodyBudget caps the bytes all metered request bodies hold together, so
// slow or stalled uploads cannot pin the replica's memory. Safe for
// concurrent use.
type bodyBudget struct {
	max  int64
	used atomic.Int64
}

// take reserves n bytes, or reports false when that would pass max.
func (b *bodyBudget) take(n int64) bool {
	if b.used.Add(n) > b.max {
		b.used.Add(-n)
		return false
	}
	return true
}

func (b *bodyBudget) give(n int64) { b.used.Add(-n) }
