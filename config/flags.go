package config

import (
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

// Fallbacks of the Rust-compatible options, used when some of a group are
// given and others are not. They are the Rust original's defaults, except the
// domain: the original's "0.0.0.0" names no upstream, so api.openai.com (the
// default upstream) stands in for it, and the port, which is 80 rather than
// 443 when TLS is turned off.
const (
	// legacyDomain is the upstream host when only --openai-tls or
	// --openai-port is given.
	legacyDomain = "api.openai.com"
	// legacyWindowMinutes is the window of the limit built from
	// --rate-limiting-max-prompt-tokens alone (the original's default, 60).
	legacyWindowMinutes = 60
	// legacyMaxTokens is the limit of the limit built from
	// --rate-limiting-window-duration-size-min alone, or from
	// --enable-rate-limiting when no limit is configured (the original's
	// default, 1000).
	legacyMaxTokens = 1000
	// legacyLimitName names the limit built from the Rust options.
	legacyLimitName = "default"
	// maxLegacyWindowMinutes keeps the window's Duration from overflowing.
	maxLegacyWindowMinutes = 1 << 20
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
// fs. Each Rust flag also reads its variable (--openai-port, OPENAI_PORT), a
// flag beating its variable, and maps onto the configuration:
//
//   - --openai-tls, --openai-port, --openai-domain: the upstreams become one
//     upstream "openai" at http[s]://DOMAIN:PORT serving every model; TLS is
//     on unless set to false; a missing domain is api.openai.com and a
//     missing port 443 (80 without TLS).
//   - --http-proxy-port: listen ":PORT"; --http-proxy-metrics-port:
//     metrics_listen ":PORT".
//   - --enable-rate-limiting: rate_limit.enabled; when it turns limiting on
//     and no limit is configured, the limit below is added with the
//     original's defaults.
//   - --rate-limiting-max-prompt-tokens MAX and
//     --rate-limiting-window-duration-size-min MIN: rate_limit.limits becomes
//     the one limit {name: default, metric: total_tokens, limit: MAX, window:
//     MIN minutes} (the original counted prompt plus completion tokens); a
//     missing MAX is 1000 and a missing MIN 60, the original's defaults.
//   - --rate-limiting-user-header-key: rate_limit.user_header.
//   - The Redis flags (--redis-host, --redis-port, and the original's
//     --rate-limiting-redis-connection-string and
//     --rate-limiting-redis-pool-size) are accepted and ignored with a
//     warning: counters are replicated by the cluster.
//
// The defaults shown in --help are those fallbacks; a flag left unset
// changes nothing.
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
			if port, ok := l.port(vals[o.flag], true); ok {
				set(o.key, ":"+port)
			}
		}
	}
	if src := group("rate_limit.limits", flagWindowMinutes, flagMaxPromptTokens); src != "" {
		window, okW := l.positive(vals, flagWindowMinutes, legacyWindowMinutes, maxLegacyWindowMinutes, "a whole number of minutes")
		limit, okL := l.positive(vals, flagMaxPromptTokens, legacyMaxTokens, 1<<62, "a whole number of tokens")
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
	scheme, port := "https", "443"
	if v, ok := vals[flagOpenAITLS]; ok {
		tls, err := parseBool(v.raw)
		if err != nil {
			l.fail(v.source, err.Error())
			return "", false
		}
		if !tls {
			scheme, port = "http", "80"
		}
	}
	if v, ok := vals[flagOpenAIPort]; ok {
		if port, ok = l.port(v, false); !ok {
			return "", false
		}
	}
	domain := legacyDomain
	if v, ok := vals[flagOpenAIDomain]; ok {
		domain = strings.Trim(strings.TrimSpace(v.raw), "[]")
		if domain == "" || strings.ContainsAny(domain, "/@?# ") {
			l.fail(v.source, fmt.Sprintf("%s is not a host name or IP address", quote(v.raw)))
			return "", false
		}
	}
	return scheme + "://" + net.JoinHostPort(domain, port), true
}

// port parses a port number; 0 is allowed only for listen addresses.
func (l *loader) port(v legacyValue, allowZero bool) (string, bool) {
	n, err := strconv.ParseUint(strings.TrimSpace(v.raw), 10, 16)
	if err != nil || (n == 0 && !allowZero) {
		l.fail(v.source, fmt.Sprintf("%s is not a port number (1 to 65535)", quote(v.raw)))
		return "", false
	}
	return strconv.FormatUint(n, 10), true
}

// positive parses the whole number option name, or returns def when it was
// not given.
func (l *loader) positive(vals map[string]legacyValue, name string, def, max int64, what string) (int64, bool) {
	v, ok := vals[name]
	if !ok {
		return def, true
	}
	n, err := strconv.ParseInt(strings.TrimSpace(v.raw), 10, 64)
	if err != nil || n < 1 || n > max {
		l.fail(v.source, fmt.Sprintf("%s is not %s from 1 to %d", quote(v.raw), what, max))
		return 0, false
	}
	return n, true
}

// legacyLimit is the limit the Rust options describe.
func legacyLimit(maxTokens, windowMinutes int64) Limit {
	return Limit{
		Name:   legacyLimitName,
		Metric: MetricTotalTokens,
		Limit:  float64(maxTokens),
		Window: time.Duration(windowMinutes) * time.Minute,
	}
}
