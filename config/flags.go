package config

import (
	"cmp"
	"fmt"
	"net"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
)

// Flag names. Besides --config, they are those of the original Rust
// genai-gateway, which keep working so its users can switch without changing
// their deployment.
const (
	flagConfig             = "config"
	flagOpenAITLS          = "openai-tls"
	flagOpenAIPort         = "openai-port"
	flagOpenAIDomain       = "openai-domain"
	flagProxyPort          = "http-proxy-port"
	flagMetricsPort        = "http-proxy-metrics-port"
	flagEnableRateLimiting = "enable-rate-limiting"
	flagWindowMinutes      = "rate-limiting-window-duration-size-min"
	flagMaxPromptTokens    = "rate-limiting-max-prompt-tokens"
	flagUserHeaderKey      = "rate-limiting-user-header-key"
)

// Fallbacks of the Rust options, used when some of a group are given and
// others not: the original's defaults, except the domain (its "0.0.0.0"
// names no upstream; the default upstream's host stands in) and the port
// (80, not 443, when TLS is off).
const (
	legacyDomain           = "api.openai.com"
	legacyWindowMinutes    = 60
	legacyMaxTokens        = 1000
	legacyLimitName        = "default"
	maxLegacyWindowMinutes = 1 << 20 // keeps the window's Duration from overflowing
)

// legacyOption is one Rust-original flag and its environment variable.
type legacyOption struct {
	flag, env string
	port      bool // its variable may hold a Kubernetes service link
	ignored   bool // accepted and ignored with a warning (Redis)
}

// legacyOptions lists the Rust-original options, each flag with its variable.
func legacyOptions() []legacyOption {
	return []legacyOption{
		{flag: flagOpenAITLS, env: "OPENAI_TLS"},
		{flag: flagOpenAIPort, env: "OPENAI_PORT", port: true},
		{flag: flagOpenAIDomain, env: "OPENAI_DOMAIN"},
		{flag: flagProxyPort, env: "HTTP_PROXY_PORT", port: true},
		{flag: flagMetricsPort, env: "HTTP_PROXY_METRICS_PORT", port: true},
		{flag: flagEnableRateLimiting, env: "ENABLE_RATE_LIMITING"},
		{flag: flagWindowMinutes, env: "RATE_LIMITING_WINDOW_DURATION_SIZE_MIN"},
		{flag: flagMaxPromptTokens, env: "RATE_LIMITING_MAX_PROMPT_TOKENS"},
		{flag: flagUserHeaderKey, env: "RATE_LIMITING_USER_HEADER_KEY"},
		{flag: "redis-host", env: "REDIS_HOST", ignored: true},
		{flag: "redis-port", env: "REDIS_PORT", ignored: true},
		{flag: "rate-limiting-redis-connection-string", env: "RATE_LIMITING_REDIS_CONNECTION_STRING", ignored: true},
		{flag: "rate-limiting-redis-pool-size", env: "RATE_LIMITING_REDIS_POOL_SIZE", ignored: true},
	}
}

// RegisterFlags adds --config and the flags of the original Rust gateway to
// fs. Each Rust flag also reads its variable (--openai-port, OPENAI_PORT; a
// flag beats its variable) and maps onto the configuration: --openai-tls,
// --openai-port and --openai-domain replace the upstreams with one upstream
// "openai" at http[s]://DOMAIN:PORT; --http-proxy-port and
// --http-proxy-metrics-port set listen and metrics_listen to ":PORT";
// --enable-rate-limiting sets rate_limit.enabled, adding the limit below
// when it turns limiting on and none is configured;
// --rate-limiting-max-prompt-tokens MAX and
// --rate-limiting-window-duration-size-min MIN replace rate_limit.limits with
// {name: default, metric: total_tokens, limit: MAX, window: MIN minutes}
// (the original counted prompt plus completion tokens);
// --rate-limiting-user-header-key sets rate_limit.user_header. The Redis
// flags are accepted, hidden and ignored with a warning: counters are
// replicated by the cluster. The defaults --help shows are the fallbacks
// used when some options of a group are given; a flag left unset changes
// nothing.
func RegisterFlags(fs *pflag.FlagSet) {
	fs.String(flagConfig, "", "YAML configuration file (env GENAI_GATEWAY_CONFIG)")
	fs.Bool(flagOpenAITLS, true, "use https for the upstream built from --openai-domain/--openai-port (env OPENAI_TLS)")
	fs.Uint16(flagOpenAIPort, 443, "port of the upstream; 80 when --openai-tls=false and no port is given (env OPENAI_PORT)")
	fs.String(flagOpenAIDomain, legacyDomain, "host of the upstream; replaces the configured upstreams (env OPENAI_DOMAIN)")
	fs.Uint16(flagProxyPort, 8080, "proxy port, sets listen to :PORT (env HTTP_PROXY_PORT)")
	fs.Uint16(flagMetricsPort, 9090, "operator port, sets metrics_listen to :PORT (env HTTP_PROXY_METRICS_PORT)")
	fs.Bool(flagEnableRateLimiting, false, "sets rate_limit.enabled (env ENABLE_RATE_LIMITING)")
	fs.Uint64(flagWindowMinutes, legacyWindowMinutes, "window in minutes of the total_tokens limit named default (env RATE_LIMITING_WINDOW_DURATION_SIZE_MIN)")
	fs.Uint64(flagMaxPromptTokens, legacyMaxTokens, "total tokens per window of the limit named default (env RATE_LIMITING_MAX_PROMPT_TOKENS)")
	fs.String(flagUserHeaderKey, "user", "sets rate_limit.user_header (env RATE_LIMITING_USER_HEADER_KEY)")
	for _, o := range legacyOptions() {
		if o.ignored {
			fs.String(o.flag, "", "ignored: counters are replicated by the cluster, no Redis is needed (env "+o.env+")")
			_ = fs.MarkHidden(o.flag) // cannot fail: the flag was just defined
		}
	}
}

// legacyValue is the raw value of a Rust option and where it came from.
type legacyValue struct {
	raw    string
	source string // "--openai-port" or "OPENAI_PORT"
	flag   bool
}

// legacyValues collects the Rust options given as flags or variables, a flag
// beating its variable, and warns about the ignored ones.
func (l *loader) legacyValues(fs *pflag.FlagSet) map[string]legacyValue {
	vals := map[string]legacyValue{}
	for _, o := range legacyOptions() {
		var f *pflag.Flag
		if fs != nil {
			f = fs.Lookup(o.flag)
		}
		v := legacyValue{raw: l.env[o.env], source: o.env}
		if f != nil && f.Changed {
			v = legacyValue{raw: f.Value.String(), source: "--" + o.flag, flag: true}
		}
		switch {
		case v.raw == "" && !v.flag:
		case o.ignored:
			l.warn(v.source + " is ignored: rate-limit counters are replicated between replicas by the cluster (cluster.*), no Redis is needed")
		case o.port && !v.flag && strings.Contains(v.raw, "://"):
			l.warn(fmt.Sprintf("%s: %s looks like a Kubernetes service link, not a port number; ignored", v.source, quote(v.raw)))
		default:
			vals[o.flag] = v
		}
	}
	return vals
}

// applyLegacy maps the Rust options onto viper's layers. A group of options
// mapping onto one key applies above the environment (viper's override
// layer, as a flag would) when any of its options came from a flag, else in
// the config layer over the file; Read applies the latter before the
// GENAI_GATEWAY_ variables, which therefore beat the Rust variables. The
// values are trees rather than flag text, so they are set, not bound.
func (l *loader) applyLegacy(v *viper.Viper, vals map[string]legacyValue, flagTier bool) {
	// group names the options of names that were given, when they apply
	// at this tier; else it returns "".
	group := func(key string, names ...string) string {
		var sources []string
		anyFlag := false
		for _, n := range names {
			if val, ok := vals[n]; ok {
				sources, anyFlag = append(sources, val.source), anyFlag || val.flag
			}
		}
		if len(sources) == 0 || anyFlag != flagTier {
			return ""
		}
		if !flagTier {
			l.legacyEnvSet[key] = strings.Join(sources, ", ")
		}
		return strings.Join(sources, ", ")
	}
	set := func(key string, value any) {
		if flagTier {
			v.Set(key, value)
		} else {
			_ = v.MergeConfigMap(setPath(map[string]any{}, strings.Split(key, "."), value)) // cannot fail
		}
	}
	setLimits := func(maxTokens, windowMinutes int64) {
		l.legacyLimits = []any{toTree(reflect.ValueOf(legacyLimit(maxTokens, windowMinutes)))}
		set("rate_limit.limits", l.legacyLimits)
	}

	if src := group("upstreams", flagOpenAITLS, flagOpenAIPort, flagOpenAIDomain); src != "" {
		if url, ok := l.legacyUpstreamURL(vals); ok {
			if v.InConfig("upstreams") {
				l.warn(src + ": replaces the configured upstreams with one upstream " + quote(defaultUpstreamName) + " at " + url)
			}
			set("upstreams", []any{toTree(reflect.ValueOf(defaultUpstream(url)))})
		}
	}
	for _, o := range []struct{ key, flag string }{{"listen", flagProxyPort}, {"metrics_listen", flagMetricsPort}} {
		if group(o.key, o.flag) != "" {
			if port, ok := l.number(vals, o.flag, 0, 0, 65535, "a port number"); ok {
				set(o.key, fmt.Sprintf(":%d", port))
			}
		}
	}
	if src := group("rate_limit.limits", flagWindowMinutes, flagMaxPromptTokens); src != "" {
		window, okW := l.number(vals, flagWindowMinutes, legacyWindowMinutes, 1, maxLegacyWindowMinutes, "a whole number of minutes")
		limit, okL := l.number(vals, flagMaxPromptTokens, legacyMaxTokens, 1, 1<<62, "a whole number of tokens")
		if okW && okL {
			if hasLimits(v) && !reflect.DeepEqual(v.Get("rate_limit.limits"), l.legacyLimits) {
				l.warn(src + ": replaces the configured rate_limit.limits with one total_tokens limit named " + legacyLimitName)
			}
			setLimits(limit, window)
		}
	}
	if src := group("rate_limit.enabled", flagEnableRateLimiting); src != "" {
		if on, err := parseBool(vals[flagEnableRateLimiting].raw); err != nil {
			l.fail(src, err.Error())
		} else {
			set("rate_limit.enabled", strconv.FormatBool(on))
			if on && !hasLimits(v) {
				setLimits(legacyMaxTokens, legacyWindowMinutes)
			}
		}
	}
	if group("rate_limit.user_header", flagUserHeaderKey) != "" {
		set("rate_limit.user_header", strings.TrimSpace(vals[flagUserHeaderKey].raw))
	}
}

// hasLimits reports whether a lower layer configured any rate limit.
func hasLimits(v *viper.Viper) bool {
	limits, _ := v.Get("rate_limit.limits").([]any)
	return len(limits) > 0
}

// legacyUpstreamURL is the URL of the upstream the Rust options name.
func (l *loader) legacyUpstreamURL(vals map[string]legacyValue) (string, bool) {
	tls, err := parseBool(cmp.Or(vals[flagOpenAITLS].raw, "true"))
	if err != nil {
		l.fail(vals[flagOpenAITLS].source, err.Error())
		return "", false
	}
	scheme, port := "https", int64(443)
	if !tls {
		scheme, port = "http", 80
	}
	port, ok := l.number(vals, flagOpenAIPort, port, 1, 65535, "a port number")
	domain := legacyDomain
	if v, given := vals[flagOpenAIDomain]; given {
		if domain = strings.Trim(strings.TrimSpace(v.raw), "[]"); domain == "" || strings.ContainsAny(domain, "/@?# ") {
			l.fail(v.source, fmt.Sprintf("%s is not a host name or IP address", quote(v.raw)))
			return "", false
		}
	}
	return scheme + "://" + net.JoinHostPort(domain, strconv.FormatInt(port, 10)), ok
}

// number parses the whole number option name, from lo to hi, or returns def
// when it was not given.
func (l *loader) number(vals map[string]legacyValue, name string, def, lo, hi int64, what string) (int64, bool) {
	v, ok := vals[name]
	if !ok {
		return def, true
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v.raw), 10, 64)
	if err != nil || n < lo || n > hi {
		l.fail(v.source, fmt.Sprintf("%s is not %s from %d to %d", quote(v.raw), what, lo, hi))
		return 0, false
	}
	return n, true
}

// legacyLimit is the limit the Rust options describe.
func legacyLimit(maxTokens, windowMinutes int64) Limit {
	return Limit{Name: legacyLimitName, Metric: MetricTotalTokens, Limit: float64(maxTokens), Window: time.Duration(windowMinutes) * time.Minute}
}
