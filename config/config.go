// Package config defines the gateway's configuration: its types and built-in
// defaults, loading from a YAML file, the environment and command-line flags
// (including the flags and variables of the original Rust genai-gateway), and
// validation that reports every problem at once, each naming its key.
//
// The package reads nothing from the process: the environment and the flag
// set are passed to Load, so two configurations can be loaded side by side in
// one test process.
package config

import (
	"encoding/base64"
	"fmt"
	"strings"
	"time"
)

// Config is the whole configuration of one gateway replica. The zero value is
// not useful; start from Default or Load.
type Config struct {
	// Listen is the proxy's listen address, host:port (":8080").
	Listen string `yaml:"listen" json:"listen" mapstructure:"listen"`
	// MetricsListen is the operator port serving /metrics, /cluster,
	// /usage and /debug/pprof (":9090").
	MetricsListen string `yaml:"metrics_listen" json:"metrics_listen" mapstructure:"metrics_listen"`
	// Log configures the process logger.
	Log Log `yaml:"log" json:"log" mapstructure:"log"`
	// MaxBodyBytes is the largest request body accepted; larger ones get 413.
	MaxBodyBytes int64 `yaml:"max_body_bytes" json:"max_body_bytes" mapstructure:"max_body_bytes"`
	// DrainTimeout bounds how long shutdown waits for requests and streams
	// in flight.
	DrainTimeout time.Duration `yaml:"drain_timeout" json:"drain_timeout" mapstructure:"drain_timeout"`
	// Metrics configures the traffic metrics.
	Metrics Metrics `yaml:"metrics" json:"metrics" mapstructure:"metrics"`
	// Upstreams are the model endpoints; those whose models match a
	// request's model form its pool (see Routing), and unmetered paths go
	// to the first.
	Upstreams []Upstream `yaml:"upstreams" json:"upstreams" mapstructure:"upstreams"`
	// Routing is the policy over each model's pool of upstreams: strategy,
	// retries and cool-down.
	Routing Routing `yaml:"routing" json:"routing" mapstructure:"routing"`
	// RateLimit configures per-user rate limiting.
	RateLimit RateLimit `yaml:"rate_limit" json:"rate_limit" mapstructure:"rate_limit"`
	// Cluster configures membership and counter replication between replicas.
	Cluster Cluster `yaml:"cluster" json:"cluster" mapstructure:"cluster"`
	// BodyReadTimeout bounds the time to read one request, headers and body
	// (30s); a client that sends slower gets 408 and its buffer is freed.
	BodyReadTimeout time.Duration `yaml:"body_read_timeout" json:"body_read_timeout" mapstructure:"body_read_timeout"`
	// MaxInflightBodyBytes caps the memory all request bodies being read or
	// held may take together (256 MiB); past it new requests get 503 with
	// Retry-After.
	MaxInflightBodyBytes int64 `yaml:"max_inflight_body_bytes" json:"max_inflight_body_bytes" mapstructure:"max_inflight_body_bytes"`
	// MaxConnections caps the open client connections of each port (10000).
	MaxConnections int `yaml:"max_connections" json:"max_connections" mapstructure:"max_connections"`
	// Debug configures the operator port's debugging endpoints.
	Debug Debug `yaml:"debug" json:"debug" mapstructure:"debug"`
	// Auth configures who may call the proxy port; empty = no authentication.
	Auth Auth `yaml:"auth" json:"auth" mapstructure:"auth"`
	// Prices are the models' list prices, for cost_usd limits and the spend
	// metrics; the first entry whose models match a model prices it. A model
	// none matches costs 0 (and is logged once as unpriced).
	Prices []Price `yaml:"prices" json:"prices" mapstructure:"prices"`
}

// Price is the list price of the models its globs match, in US dollars per
// million tokens. Prices change: see deploy/prices.yaml for a dated table.
type Price struct {
	// Models are path.Match glob patterns; at least one ("*" for every model).
	Models []string `yaml:"models" json:"models" mapstructure:"models"`
	// Input prices the prompt tokens not read from the provider's cache.
	Input float64 `yaml:"input" json:"input" mapstructure:"input"`
	// CachedInput prices the prompt tokens read from the provider's prompt
	// cache (OpenAI cached_tokens, Anthropic cache_read_input_tokens); nil
	// means the Input price.
	CachedInput *float64 `yaml:"cached_input" json:"cached_input" mapstructure:"cached_input"`
	// CacheWrite prices the prompt tokens written to the provider's prompt
	// cache (Anthropic cache_creation_input_tokens, billed at 1.25x the
	// input price for its 5-minute cache); nil means the Input price.
	CacheWrite *float64 `yaml:"cache_write" json:"cache_write" mapstructure:"cache_write"`
	// Output prices the completion tokens.
	Output float64 `yaml:"output" json:"output" mapstructure:"output"`
}

// EffectiveCacheWrite is CacheWrite, or Input when it is not set.
func (p Price) EffectiveCacheWrite() float64 {
	if p.CacheWrite == nil {
		return p.Input
	}
	return *p.CacheWrite
}

// EffectiveCachedInput is CachedInput, or Input when it is not set.
func (p Price) EffectiveCachedInput() float64 {
	if p.CachedInput == nil {
		return p.Input
	}
	return *p.CachedInput
}

// Debug configures the operator port's debugging endpoints.
type Debug struct {
	// Pprof serves /debug/pprof/ on the operator port (false).
	Pprof bool `yaml:"pprof" json:"pprof" mapstructure:"pprof"`
}

// Log configures the process logger.
type Log struct {
	// Level is one of trace, debug, info, warn, error ("info").
	Level string `yaml:"level" json:"level" mapstructure:"level"`
	// Format is json or console ("json").
	Format string `yaml:"format" json:"format" mapstructure:"format"`
}

// Metrics configures the traffic metrics.
type Metrics struct {
	// MaxUsers caps the distinct values of the `user` label; later users are
	// counted as "other" (10000).
	MaxUsers int `yaml:"max_users" json:"max_users" mapstructure:"max_users"`
	// MaxSeries caps the (user, model) series of the per-user metrics; past
	// it new pairs are counted under user "other" (100000).
	MaxSeries int `yaml:"max_series" json:"max_series" mapstructure:"max_series"`
	// UserIdle is how long a user's series stay after its last request
	// before they are dropped and its label slot freed (1h).
	UserIdle time.Duration `yaml:"user_idle" json:"user_idle" mapstructure:"user_idle"`
}

// Upstream is one OpenAI-compatible endpoint.
type Upstream struct {
	// Name identifies the upstream in metrics and logs; unique, not empty.
	Name string `yaml:"name" json:"name" mapstructure:"name"`
	// URL is the base URL, http or https, such as "https://api.openai.com".
	URL string `yaml:"url" json:"url" mapstructure:"url"`
	// Models are path.Match glob patterns of the models served; empty means
	// every model.
	Models []string `yaml:"models" json:"models" mapstructure:"models"`
	// APIKey, when set, replaces the client's Authorization header.
	APIKey Secret `yaml:"api_key" json:"api_key" mapstructure:"api_key"`
	// Timeout bounds a whole request to this upstream, streaming included (10m).
	Timeout time.Duration `yaml:"timeout" json:"timeout" mapstructure:"timeout"`
	// Provider is the API the upstream speaks: openai (the default: any
	// OpenAI-compatible API), anthropic (Messages API; chat completions
	// are translated) or azure (Azure OpenAI deployment URLs).
	Provider string `yaml:"provider" json:"provider" mapstructure:"provider"`
	// Deployments maps model names to Azure deployment names (azure only);
	// a model not in it is its own deployment name.
	Deployments map[string]string `yaml:"deployments" json:"deployments" mapstructure:"deployments"`
	// APIVersion is Azure's api-version query parameter (azure only;
	// default: the client's, or 2024-10-21).
	APIVersion string `yaml:"api_version" json:"api_version" mapstructure:"api_version"`
	// Weight is the upstream's share of its pools under routing.strategy
	// weighted, 1 to 1000 (1; 0 in a Config built in code means 1, in a
	// file it is refused).
	Weight int `yaml:"weight" json:"weight" mapstructure:"weight"`
	// MaxInFlight caps the requests in flight on the upstream, streams
	// included; a full upstream is skipped like a cooling one (0 = no cap).
	MaxInFlight int `yaml:"max_in_flight" json:"max_in_flight" mapstructure:"max_in_flight"`
}

// Routing is the policy over the pool of upstreams that serve a model.
type Routing struct {
	// Strategy is priority (the first healthy upstream in file order; the
	// default), weighted (smooth weighted round robin by
	// upstreams[].weight) or least_busy (fewest requests in flight).
	Strategy string `yaml:"strategy" json:"strategy" mapstructure:"strategy"`
	// Retries is how many further upstreams of the pool a request may try
	// after a failure, before any byte reached the client, 0 to 10 (2).
	Retries int `yaml:"retries" json:"retries" mapstructure:"retries"`
	// RetryOn lists the failures retried: connect, timeout, 429, 500, 502,
	// 503, 504, or 5xx for every 5xx status (all of SPEC's list).
	RetryOn []string `yaml:"retry_on" json:"retry_on" mapstructure:"retry_on"`
	// Cooldown is how long a failing upstream is skipped (30s), or for its
	// own Retry-After when longer (up to 10m); at most 1h.
	Cooldown time.Duration `yaml:"cooldown" json:"cooldown" mapstructure:"cooldown"`
	// Fallbacks lists, by requested model (exact names, case kept), the
	// models tried in order once that model's whole pool has failed.
	Fallbacks map[string][]string `yaml:"fallbacks" json:"fallbacks" mapstructure:"fallbacks"`
}

// Values of Routing.Strategy and Routing.RetryOn.
const (
	StrategyPriority  = "priority"
	StrategyWeighted  = "weighted"
	StrategyLeastBusy = "least_busy"
	maxRetries        = 10
	maxCooldown       = time.Hour
	maxWeight         = 1000
	maxFallbacks      = 10
)

// retryOnValues are the values routing.retry_on takes.
var retryOnValues = []string{"connect", "timeout", "429", "500", "502", "503", "504", "5xx"}

// Values of Upstream.Provider.
const (
	ProviderOpenAI    = "openai"
	ProviderAnthropic = "anthropic"
	ProviderAzure     = "azure"
)

// EffectiveProvider is Provider, or openai when it is empty.
func (u Upstream) EffectiveProvider() string {
	if u.Provider == "" {
		return ProviderOpenAI
	}
	return u.Provider
}

// RateLimit configures per-user rate limiting.
type RateLimit struct {
	// Enabled turns limiting on (false).
	Enabled bool `yaml:"enabled" json:"enabled" mapstructure:"enabled"`
	// UserHeader names the request header holding the user ("user"). It is
	// also the source of the metrics' `user` label, limiting on or off.
	UserHeader string `yaml:"user_header" json:"user_header" mapstructure:"user_header"`
	// MissingUser is "reject" (400, the default) or "anonymous" (one shared
	// bucket named "anonymous").
	MissingUser string `yaml:"missing_user" json:"missing_user" mapstructure:"missing_user"`
	// Limits apply to each user separately.
	Limits []Limit `yaml:"limits" json:"limits" mapstructure:"limits"`
	// Overrides maps a user name (case kept) to limits that replace the
	// default limit of the same name, or add one. After Load every entry is
	// complete: fields it leaves out are inherited from the default limit of
	// the same name.
	Overrides map[string][]Limit `yaml:"overrides" json:"overrides" mapstructure:"overrides"`
	// MaxClientWait is the longest Retry-After a client is told to wait for;
	// refusals that need longer carry x-should-retry: false (60s).
	MaxClientWait time.Duration `yaml:"max_client_wait" json:"max_client_wait" mapstructure:"max_client_wait"`
}

// Limit is one rate limit, counted per user over a sliding window or a
// calendar day or month.
type Limit struct {
	// Name identifies the limit; unique within Limits and within a user's
	// overrides.
	Name string `yaml:"name" json:"name" mapstructure:"name"`
	// Metric is one of prompt_tokens, completion_tokens, total_tokens,
	// requests, cost_usd.
	Metric string `yaml:"metric" json:"metric" mapstructure:"metric"`
	// Limit is the most a user may use within the window, > 0: a whole
	// number of tokens or requests (at most 2^62), or US dollars for
	// cost_usd (at most 10^9, counted to the nano-dollar).
	Limit float64 `yaml:"limit" json:"limit" mapstructure:"limit"`
	// Window is the sliding window, a whole number of milliseconds; > 0.
	// It is 0 when Calendar is set: the file's `window: calendar_day` or
	// `window: calendar_month` sets Calendar instead.
	Window time.Duration `yaml:"window" json:"window" mapstructure:"window"`
	// Calendar is CalendarDay or CalendarMonth for a fixed UTC calendar
	// window (reset at midnight, or on the 1st), "" for a sliding Window.
	// In the file it is written as the window (see completeStruct); the
	// key calendar itself is refused.
	Calendar string `yaml:"-" json:"calendar,omitempty" mapstructure:"calendar"`
	// Models are glob patterns of the models the limit applies to; empty
	// means every model.
	Models []string `yaml:"models" json:"models" mapstructure:"models"`
}

// Cluster configures membership and counter replication between replicas.
type Cluster struct {
	// Enabled turns clustering on (false: one replica alone).
	Enabled bool `yaml:"enabled" json:"enabled" mapstructure:"enabled"`
	// NodeName must be unique in the cluster; empty means the host name.
	NodeName string `yaml:"node_name" json:"node_name" mapstructure:"node_name"`
	// Bind is the gossip address, host:port ("0.0.0.0:7946").
	Bind string `yaml:"bind" json:"bind" mapstructure:"bind"`
	// Advertise is the host:port peers use to reach this node; optional.
	Advertise string `yaml:"advertise" json:"advertise" mapstructure:"advertise"`
	// Join lists peers as host:port or DNS name:port (every A record).
	Join []string `yaml:"join" json:"join" mapstructure:"join"`
	// SecretKey is base64 of 16, 24 or 32 bytes; when set, gossip is
	// encrypted and other packets are refused. See Key.
	SecretKey Secret `yaml:"secret_key" json:"secret_key" mapstructure:"secret_key"`
	// GossipInterval is how often changes are gossiped (100ms).
	GossipInterval time.Duration `yaml:"gossip_interval" json:"gossip_interval" mapstructure:"gossip_interval"`
	// Insecure allows gossip without SecretKey, for a trusted network only:
	// anyone who can reach the gossip port can then forge counters (false).
	Insecure bool `yaml:"insecure" json:"insecure" mapstructure:"insecure"`
}

// Metric names a Limit may count.
const (
	MetricPromptTokens     = "prompt_tokens"
	MetricCompletionTokens = "completion_tokens"
	MetricTotalTokens      = "total_tokens"
	MetricRequests         = "requests"
	MetricCostUSD          = "cost_usd"
)

// Calendar windows, the values of Limit.Calendar.
const (
	CalendarDay   = "calendar_day"
	CalendarMonth = "calendar_month"
)

// Bounds of spend figures (the limiter's MaxPriceUSD and MaxLimitUSD), so
// that no price or budget can overflow the integer nano-dollars counted.
const (
	maxPriceUSD   = 10_000 // per million tokens
	maxLimitUSD   = 1e9
	maxCountLimit = 1 << 62 // tokens or requests
	minLimitUSD   = 1e-9    // one nano-dollar
)

// Values of RateLimit.MissingUser.
const (
	MissingUserReject    = "reject"
	MissingUserAnonymous = "anonymous"
)

const (
	defaultUpstreamName    = "openai"
	defaultUpstreamURL     = "https://api.openai.com"
	defaultUpstreamTimeout = 10 * time.Minute
)

// Default returns the built-in configuration: proxy on :8080, operator port
// on :9090, one upstream https://api.openai.com serving every model, rate
// limiting off, clustering off. Each call returns a fresh value that shares
// no memory with any other.
func Default() Config {
	return Config{
		Listen:        ":8080",
		MetricsListen: ":9090",
		Log:           Log{Level: "info", Format: "json"},
		MaxBodyBytes:  10 << 20,
		DrainTimeout:  30 * time.Second,
		Metrics:       Metrics{MaxUsers: 10000, MaxSeries: 100000, UserIdle: time.Hour},
		Upstreams:     []Upstream{defaultUpstream(defaultUpstreamURL)},
		Routing: Routing{
			Strategy: StrategyPriority,
			Retries:  2,
			RetryOn:  []string{"connect", "429", "500", "502", "503", "504", "timeout"},
			Cooldown: 30 * time.Second,
		},
		RateLimit: RateLimit{
			UserHeader:    "user",
			MissingUser:   MissingUserReject,
			MaxClientWait: time.Minute,
		},
		Cluster: Cluster{
			Bind:           "0.0.0.0:7946",
			GossipInterval: 100 * time.Millisecond,
		},
		BodyReadTimeout:      30 * time.Second,
		MaxInflightBodyBytes: 256 << 20,
		MaxConnections:       10000,
	}
}

// defaultUpstream is the upstream named "openai" at url serving every model.
func defaultUpstream(url string) Upstream {
	return Upstream{Name: defaultUpstreamName, URL: url, Timeout: defaultUpstreamTimeout, Weight: 1}
}

// Key returns the decoded cluster.secret_key, or nil when it is empty. The
// error names the key and never contains the secret.
func (c Cluster) Key() ([]byte, error) {
	s := strings.TrimSpace(c.SecretKey.Value())
	if s == "" {
		return nil, nil
	}
	key, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("cluster.secret_key: not valid base64 (%v)", err)
	}
	switch len(key) {
	case 16, 24, 32:
		return key, nil
	}
	return nil, fmt.Errorf("cluster.secret_key: decodes to %d bytes, want 16, 24 or 32", len(key))
}
