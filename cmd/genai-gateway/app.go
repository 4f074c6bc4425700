package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
	"golang.org/x/net/netutil"

	"github.com/genai-gateway/genai-gateway/cluster"
	"github.com/genai-gateway/genai-gateway/config"
	"github.com/genai-gateway/genai-gateway/limiter"
	"github.com/genai-gateway/genai-gateway/proxy"
	"github.com/genai-gateway/genai-gateway/proxy/auth"
)

// leaveTimeout bounds the graceful leave from the cluster at shutdown.
const leaveTimeout = 3 * time.Second

// App is one replica: proxy server, operator server, limiter and (optionally) cluster
// node, all owned here. Several Apps can run in one process (no package state).
type App struct {
	cfg config.Config
	log zerolog.Logger
	reg *prometheus.Registry

	node    *cluster.Node  // nil when the cluster is disabled
	store   *cluster.Store // the node's store, or a local one
	limiter *limiter.Limiter
	proxy   *proxy.Proxy

	proxySrv           *fasthttp.Server
	metricsSrv         *http.Server
	proxyLn, metricsLn net.Listener

	// reloadMu serialises reloads; cfg is the running configuration and
	// hash its file's, both changed under it.
	reloadMu sync.Mutex
	hash     string
	metrics  reloadMetrics

	errc         chan error
	shutdownOnce sync.Once
	shutdownErr  error
	wg           sync.WaitGroup
}

// NewApp builds a replica from a validated config; nothing listens until Start.
func NewApp(cfg config.Config, log zerolog.Logger) (*App, error) {
	a := &App{cfg: cfg, log: log, reg: prometheus.NewRegistry(), errc: make(chan error, 2)}
	a.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	a.metrics = newReloadMetrics(a.reg)

	replicas := func() int { return 1 }
	var ready func() bool
	if cfg.Cluster.Enabled {
		key, err := cfg.Cluster.Key()
		if err != nil {
			return nil, fmt.Errorf("cluster.secret_key: %w", err)
		}
		if len(key) == 0 {
			log.Warn().Msg("cluster.insecure: gossip is plaintext; anyone who can reach the gossip port can forge counters")
		}
		name := cfg.Cluster.NodeName
		if name == "" {
			name, _ = os.Hostname()
		}
		node, err := cluster.New(cluster.Config{
			NodeName:       name,
			Bind:           cfg.Cluster.Bind,
			Advertise:      cfg.Cluster.Advertise,
			Join:           cfg.Cluster.Join,
			SecretKey:      key,
			GossipInterval: cfg.Cluster.GossipInterval,
		}, log, a.reg)
		if err != nil {
			return nil, fmt.Errorf("cluster: %w", err)
		}
		a.node = node
		a.store = node.Store()
		replicas = node.LiveReplicas
		ready = node.Ready
	} else {
		a.store = cluster.NewStore(localReplicaID(), time.Now)
	}

	lim, err := limiter.New(limiterPolicy(cfg.RateLimit, cfg.Prices), a.store, limiter.Options{
		Now:      time.Now,
		Replicas: replicas,
	}, log.With().Str("component", "limiter").Logger(), a.reg)
	if err != nil {
		return nil, fmt.Errorf("limiter: %w", err)
	}
	a.limiter = lim

	pcfg := proxyConfig(cfg, ready)
	if cfg.Auth.Enabled() {
		au, err := auth.New(authConfig(cfg.Auth, nil), log.With().Str("component", "auth").Logger(), a.reg)
		if err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		pcfg.Auth = au
	}
	px, err := proxy.New(pcfg, lim, log, a.reg)
	if err != nil {
		if pcfg.Auth != nil {
			pcfg.Auth.Close()
		}
		return nil, fmt.Errorf("proxy: %w", err)
	}
	a.proxy = px
	return a, nil
}

// Start opens both listeners, starts the cluster node and serves. It returns once the
// listeners are open, so the caller may read ProxyAddr and MetricsAddr.
func (a *App) Start() error {
	var err error
	if a.metricsLn, err = net.Listen("tcp", a.cfg.MetricsListen); err != nil {
		return fmt.Errorf("metrics_listen: %w", err)
	}
	if a.proxyLn, err = net.Listen("tcp", a.cfg.Listen); err != nil {
		_ = a.metricsLn.Close()
		return fmt.Errorf("listen: %w", err)
	}
	if a.node != nil {
		if err := a.node.Start(); err != nil {
			_ = a.metricsLn.Close()
			_ = a.proxyLn.Close()
			return fmt.Errorf("cluster: %w", err)
		}
	}

	errLog := newStdLogger(a.log.With().Str("component", "http").Logger())
	a.proxySrv = a.proxy.Server()
	// The operator port: bounded in time and in connections, so idle
	// keep-alive connections there cannot starve the process of files.
	a.metricsSrv = &http.Server{
		Handler:           a.operatorMux(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute, // pprof profiles take up to 60s
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          errLog,
	}
	metricsLn := netutil.LimitListener(a.metricsLn, operatorMaxConns)
	a.goServe(func() error { return a.proxySrv.Serve(a.proxyLn) })
	a.goServe(func() error {
		if err := a.metricsSrv.Serve(metricsLn); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	return nil
}

// operatorMaxConns caps the operator port's open connections: it serves a
// few scrapers and operators, never clients.
const operatorMaxConns = 64

func (a *App) goServe(serve func() error) {
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := serve(); err != nil {
			select {
			case a.errc <- err:
			default:
			}
		}
	}()
}

// operatorMux serves /metrics, /cluster, /usage and /debug/pprof/.
func (a *App) operatorMux() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.Handle("GET /usage", a.limiter.UsageHandler())
	if a.node != nil {
		mux.Handle("GET /cluster", a.node.Handler())
	} else {
		mux.HandleFunc("GET /cluster", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"node":"","replica_id":"","enabled":false,"members":[],"keys":%d}`+"\n", a.store.Len())
		})
	}
	if a.cfg.Debug.Pprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return mux
}

// Reload applies a new, valid configuration without a restart: rate limits
// (rate_limit.enabled, missing_user, limits, overrides), auth (keys, jwt),
// routing and upstreams are swapped for new requests, while requests in flight
// finish under the ones they started with; a key removed from the file stops
// working. Changes of other keys (listen, metrics_listen, cluster, ...)
// need a restart, and Reload says so in the log. On error nothing changes.
// Safe for concurrent use.
func (a *App) Reload(next config.Config) error {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()
	return a.reload(next)
}

func (a *App) reload(next config.Config) error {
	var au *auth.Authenticator
	if next.Auth.Enabled() {
		var err error
		if au, err = auth.New(authConfig(next.Auth, nil), a.log.With().Str("component", "auth").Logger(), a.reg); err != nil {
			return fmt.Errorf("auth: %w", err)
		}
	}
	if err := a.limiter.SetPolicy(limiterPolicy(next.RateLimit, next.Prices)); err != nil {
		if au != nil {
			au.Close()
		}
		return fmt.Errorf("rate_limit: %w", err)
	}
	// Routing and upstreams swap for new requests; those in flight finish
	// on theirs. Validate has checked what SetRouting and SetUpstreams
	// check, so they cannot refuse them here; if one ever did, the running
	// section stays and is named below as needing a restart.
	if err := a.proxy.SetRouting(proxyRouting(next.Routing)); err != nil {
		a.log.Error().Err(err).Msg("reload: routing refused; the running one stays")
	} else {
		a.cfg.Routing = next.Routing
	}
	if err := a.proxy.SetUpstreams(proxyUpstreams(next.Upstreams)); err != nil {
		a.log.Error().Err(err).Msg("reload: upstreams refused; the running ones stay")
	} else {
		a.cfg.Upstreams = next.Upstreams
	}
	if old := a.proxy.SetAuthenticator(au); old != nil {
		old.Close()
	}
	applied := a.cfg
	applied.Auth = next.Auth
	applied.RateLimit.Enabled, applied.RateLimit.MissingUser = next.RateLimit.Enabled, next.RateLimit.MissingUser
	applied.RateLimit.Limits, applied.RateLimit.Overrides = next.RateLimit.Limits, next.RateLimit.Overrides
	applied.Prices = next.Prices
	if keys := restartKeys(applied, next); len(keys) > 0 {
		a.log.Warn().Strs("keys", keys).Msg("reload applies rate_limit, prices, auth, routing and upstreams; these changes need a restart")
	}
	// Only what was applied changes, so readers of other keys (Shutdown
	// reads drain_timeout) never race with a reload.
	a.cfg.Auth, a.cfg.RateLimit, a.cfg.Prices = applied.Auth, applied.RateLimit, applied.Prices
	return nil
}

// Errors reports a server that stopped serving by itself.
func (a *App) Errors() <-chan error { return a.errc }

// ProxyAddr is the proxy listener's address (useful with port 0).
func (a *App) ProxyAddr() string { return a.proxyLn.Addr().String() }

// MetricsAddr is the operator listener's address.
func (a *App) MetricsAddr() string { return a.metricsLn.Addr().String() }

// Shutdown drains: /readyz turns 503, the proxy stops accepting and waits for requests
// and streams in flight (bounded by ctx), the node leaves the cluster, then the operator
// server stops. It is idempotent.
func (a *App) Shutdown(ctx context.Context) error {
	a.shutdownOnce.Do(func() {
		var errs []error
		if a.proxy != nil {
			a.proxy.SetDraining()
		}
		if a.proxySrv != nil {
			dctx, cancel := context.WithTimeout(ctx, a.cfg.DrainTimeout)
			if err := a.proxySrv.ShutdownWithContext(dctx); err != nil {
				errs = append(errs, fmt.Errorf("drain proxy: %w", err))
			}
			if err := a.proxy.Wait(dctx); err != nil {
				errs = append(errs, fmt.Errorf("drain proxy: %w", err))
			}
			if au := a.proxy.SetAuthenticator(nil); au != nil {
				au.Close()
			}
			cancel()
		}
		if a.node != nil {
			// Leaving is a courtesy that speeds up the others' view; when every replica
			// stops at once nobody may acknowledge it, so it is bounded and never fatal.
			lctx, cancel := context.WithTimeout(ctx, leaveTimeout)
			if err := a.node.Shutdown(lctx); err != nil {
				a.log.Warn().Err(err).Msg("left the cluster without acknowledgement")
			}
			cancel()
		}
		if a.metricsSrv != nil {
			if err := a.metricsSrv.Shutdown(ctx); err != nil {
				_ = a.metricsSrv.Close()
			}
		}
		a.wg.Wait()
		a.shutdownErr = errors.Join(errs...)
	})
	return a.shutdownErr
}

// localReplicaID names this process's counter slot when the cluster is disabled.
func localReplicaID() string {
	host, _ := os.Hostname()
	var b [6]byte
	_, _ = rand.Read(b[:])
	return host + "/" + hex.EncodeToString(b[:])
}

// limiterPolicy converts the config's rate_limit and prices sections. A
// cost_usd limit's dollars become nano-dollars, the unit of its counters;
// other limits are whole numbers (config.Validate).
func limiterPolicy(rl config.RateLimit, prices []config.Price) limiter.Policy {
	conv := func(in []config.Limit) []limiter.Limit {
		out := make([]limiter.Limit, 0, len(in))
		for _, l := range in {
			n := int64(l.Limit)
			if l.Metric == config.MetricCostUSD {
				n = limiter.NanoUSD(l.Limit)
			}
			out = append(out, limiter.Limit{
				Name: l.Name, Metric: limiter.Metric(l.Metric), Limit: n,
				Window: l.Window, Models: l.Models, Calendar: limiter.Calendar(l.Calendar),
			})
		}
		return out
	}
	p := limiter.Policy{Enabled: rl.Enabled, MissingUser: rl.MissingUser, Limits: conv(rl.Limits)}
	for _, pr := range prices {
		p.Prices = append(p.Prices, limiter.Price{Models: pr.Models,
			Input: pr.Input, CachedInput: pr.EffectiveCachedInput(), CacheWrite: pr.EffectiveCacheWrite(), Output: pr.Output})
	}
	if len(rl.Overrides) > 0 {
		p.Overrides = make(map[string][]limiter.Limit, len(rl.Overrides))
		for user, ls := range rl.Overrides {
			p.Overrides[user] = conv(ls)
		}
	}
	return p
}

// proxyUpstreams converts the config's upstreams.
func proxyUpstreams(in []config.Upstream) []proxy.Upstream {
	ups := make([]proxy.Upstream, 0, len(in))
	for _, u := range in {
		ups = append(ups, proxy.Upstream{
			Name: u.Name, URL: u.URL, Models: u.Models, APIKey: u.APIKey.Value(), Timeout: u.Timeout,
			Provider: u.EffectiveProvider(), Deployments: u.Deployments, APIVersion: u.APIVersion,
			Weight: u.Weight, MaxInFlight: u.MaxInFlight,
		})
	}
	return ups
}

// proxyRouting converts the config's routing section.
func proxyRouting(r config.Routing) proxy.Routing {
	return proxy.Routing{Strategy: r.Strategy, Retries: r.Retries, RetryOn: r.RetryOn, Cooldown: r.Cooldown, Fallbacks: r.Fallbacks}
}

// proxyConfig converts the config's proxy-facing keys.
func proxyConfig(cfg config.Config, ready func() bool) proxy.Config {
	return proxy.Config{
		Upstreams:            proxyUpstreams(cfg.Upstreams),
		Routing:              proxyRouting(cfg.Routing),
		MaxBodyBytes:         cfg.MaxBodyBytes,
		MaxInflightBodyBytes: cfg.MaxInflightBodyBytes,
		BodyReadTimeout:      cfg.BodyReadTimeout,
		MaxConnections:       cfg.MaxConnections,
		UserHeader:           cfg.RateLimit.UserHeader,
		MaxUsers:             cfg.Metrics.MaxUsers,
		MaxSeries:            cfg.Metrics.MaxSeries,
		UserIdle:             cfg.Metrics.UserIdle,
		MaxClientWait:        cfg.RateLimit.MaxClientWait,
		Ready:                ready,
	}
}

// authConfig converts the config's auth section.
func authConfig(c config.Auth, now func() time.Time) auth.Config {
	keys := make([]auth.Key, len(c.Keys))
	for i, k := range c.Keys {
		keys[i] = auth.Key{Name: k.Name, User: k.EffectiveUser(), SHA256: k.SHA256,
			Models: k.Models, OnBehalf: k.OnBehalf, Expires: k.Expires}
	}
	return auth.Config{Keys: keys, Now: now, JWT: auth.JWTConfig{
		Issuer: c.JWT.Issuer, Audience: c.JWT.Audience, JWKSURL: c.JWT.JWKSURL, JWKSFile: c.JWT.JWKSFile,
		UserClaim: c.JWT.EffectiveUserClaim(), ModelsClaim: c.JWT.ModelsClaim, Leeway: c.JWT.Leeway}}
}
