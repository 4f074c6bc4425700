package config

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Validate checks c and returns every problem found, joined with
// errors.Join (one per line when printed), or nil. Each message starts with
// the key it concerns, such as "upstreams[1].url: ..." or
// "rate_limit.limits[0].metric: ...", and never contains a secret. Overrides
// are checked as Load resolves them, so Validate gives the same answer for a
// Config before and after resolution.
func (c Config) Validate() error { return errors.Join(c.problems()...) }

// problems lists every problem of c, each a *problem.
func (c Config) problems() []error {
	var p problems
	p.hostPort("listen", c.Listen, false, true)
	p.hostPort("metrics_listen", c.MetricsListen, false, true)
	p.when(c.Listen == c.MetricsListen && !strings.HasSuffix(c.Listen, ":0"), "metrics_listen", "must differ from listen (%s)", quote(c.Listen))
	p.oneOf("log.level", c.Log.Level, "trace", "debug", "info", "warn", "error")
	p.oneOf("log.format", c.Log.Format, "json", "console")
	p.when(c.MaxBodyBytes <= 0, "max_body_bytes", "must be > 0; got %d", c.MaxBodyBytes)
	p.when(c.DrainTimeout < 0, "drain_timeout", "must be >= 0; got %s", c.DrainTimeout)
	p.when(c.Metrics.MaxUsers <= 0, "metrics.max_users", "must be > 0; got %d", c.Metrics.MaxUsers)
	p.when(c.Metrics.MaxSeries <= 0, "metrics.max_series", "must be > 0; got %d", c.Metrics.MaxSeries)
	p.when(c.Metrics.UserIdle <= 0, "metrics.user_idle", "must be > 0; got %s", c.Metrics.UserIdle)
	p.when(c.BodyReadTimeout <= 0, "body_read_timeout", "must be > 0; got %s", c.BodyReadTimeout)
	p.when(c.MaxInflightBodyBytes < c.MaxBodyBytes, "max_inflight_body_bytes", "must be >= max_body_bytes (%d); got %d", c.MaxBodyBytes, c.MaxInflightBodyBytes)
	p.when(c.MaxConnections <= 0, "max_connections", "must be > 0; got %d", c.MaxConnections)
	p.when(c.RateLimit.MaxClientWait <= 0, "rate_limit.max_client_wait", "must be > 0; got %s", c.RateLimit.MaxClientWait)
	p.upstreams(c.Upstreams)
	p.routing(c.Routing)
	p.rateLimit(c.RateLimit)
	p.prices(c.Prices)
	p.cluster(c.Cluster)
	p.auth(c.Auth)
	return p.errs
}

// problems collects *problem values.
type problems struct{ errs []error }

func (p *problems) add(key, format string, args ...any) {
	p.errs = append(p.errs, &problem{key: key, msg: fmt.Sprintf(format, args...)})
}

// when adds the problem when bad.
func (p *problems) when(bad bool, key, format string, args ...any) {
	if bad {
		p.add(key, format, args...)
	}
}

// oneOf adds a problem when v is not among values, and reports whether it is.
func (p *problems) oneOf(key, v string, values ...string) bool {
	list := strings.Join(values[:len(values)-1], ", ") + " or " + values[len(values)-1]
	if len(values) > 3 {
		list = "one of " + strings.Join(values, ", ")
	}
	p.when(!slices.Contains(values, v), key, "must be %s; got %s", list, quote(v))
	return slices.Contains(values, v)
}

// unique adds a problem when name is not empty and already in seen (by
// index), else records it.
func (p *problems) unique(seen map[string]int, name string, i int, key, what string) {
	if j, dup := seen[name]; dup && name != "" {
		p.add(key, "%s is already the name of %s[%d]", quote(name), what, j)
	} else if !dup {
		seen[name] = i
	}
}

func (p *problems) upstreams(ups []Upstream) {
	p.when(len(ups) == 0, "upstreams", "at least one upstream is required")
	seen := map[string]int{}
	for i, u := range ups {
		key := fmt.Sprintf("upstreams[%d]", i)
		p.when(u.Name == "", key+".name", "must not be empty")
		p.unique(seen, u.Name, i, key+".name", "upstreams")
		if msg := checkURL(u.URL); msg != "" {
			p.add(key+".url", "%s", msg)
		}
		p.globs(key+".models", u.Models)
		p.when(u.Timeout <= 0, key+".timeout", "must be > 0; got %s", u.Timeout)
		p.provider(key, u)
		p.when(u.Weight < 0 || u.Weight > maxWeight, key+".weight", "must be from 1 to %d; got %d", maxWeight, u.Weight) // 0: not set (1)
		p.when(u.MaxInFlight < 0, key+".max_in_flight", "must be >= 0 (0 = no cap); got %d", u.MaxInFlight)
	}
}

// routing checks the routing section.
func (p *problems) routing(r Routing) {
	p.oneOf("routing.strategy", r.Strategy, StrategyPriority, StrategyWeighted, StrategyLeastBusy)
	p.when(r.Retries < 0 || r.Retries > maxRetries, "routing.retries", "must be from 0 to %d; got %d", maxRetries, r.Retries)
	for i, v := range r.RetryOn {
		p.oneOf(fmt.Sprintf("routing.retry_on[%d]", i), v, retryOnValues...)
	}
	p.when(r.Cooldown <= 0 || r.Cooldown > maxCooldown, "routing.cooldown", "must be > 0 and at most %s; got %s", maxCooldown, r.Cooldown)
	for model, to := range r.Fallbacks {
		key := "routing.fallbacks." + model
		p.when(model == "", "routing.fallbacks", "a model name must not be empty")
		p.when(len(to) == 0 || len(to) > maxFallbacks, key, "must list 1 to %d models; got %d", maxFallbacks, len(to))
		for i, m := range to {
			p.when(m == "" || m == model || slices.Contains(to[:i], m), fmt.Sprintf("%s[%d]", key, i),
				"must be a model name other than %s and the earlier fallbacks; got %s", quote(model), quote(m))
		}
	}
}

// provider checks an upstream's provider and the keys only azure takes.
func (p *problems) provider(key string, u Upstream) {
	prov := u.EffectiveProvider()
	if !p.oneOf(key+".provider", prov, ProviderOpenAI, ProviderAnthropic, ProviderAzure) {
		return
	}
	if prov != ProviderAzure {
		p.when(len(u.Deployments) > 0, key+".deployments", "applies to provider azure only (provider is %s)", prov)
		p.when(u.APIVersion != "", key+".api_version", "applies to provider azure only (provider is %s)", prov)
		return
	}
	for model, d := range u.Deployments {
		p.when(model == "" || d == "" || strings.ContainsAny(d, "/?#%\\") || d == "." || d == "..",
			key+".deployments", "%s: %s must be a non-empty deployment name without / ? # %% or \\", quote(model), quote(d))
	}
	v := u.APIVersion
	p.when(v != "" && (len(v) > 64 || strings.ContainsAny(v, "&#?/ \t")), key+".api_version", "must be an Azure api-version such as 2024-10-21; got %s", quote(v))
}

// checkURL returns what is wrong with an upstream URL, or "". The message
// never repeats the URL, which might hold credentials.
func checkURL(s string) string {
	if s == "" {
		return "must not be empty"
	}
	u, err := url.Parse(s)
	if err != nil {
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Sprintf("not a valid URL: %v", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be an absolute http:// or https:// URL"
	case u.Host == "" || u.Hostname() == "":
		return "must include a host"
	case u.User != nil:
		return "must not hold credentials; use api_key"
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return "must not have a query or fragment"
	}
	if port := u.Port(); port != "" {
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "port must be from 1 to 65535"
		}
	}
	return ""
}

func (p *problems) rateLimit(rl RateLimit) {
	p.when(!httpguts.ValidHeaderFieldName(rl.UserHeader), "rate_limit.user_header", "must be an HTTP header name; got %s", quote(rl.UserHeader))
	p.oneOf("rate_limit.missing_user", rl.MissingUser, MissingUserReject, MissingUserAnonymous)
	byName := map[string]int{}
	for i, l := range rl.Limits {
		key := fmt.Sprintf("rate_limit.limits[%d]", i)
		p.limit(key, l)
		p.unique(byName, l.Name, i, key+".name", "rate_limit.limits")
	}
	resolved := resolveOverrides(rl.Limits, rl.Overrides)
	for _, user := range slices.Sorted(maps.Keys(resolved)) {
		ukey := mapKey("rate_limit.overrides", user)
		p.when(user == "", ukey, "user name must not be empty")
		names := map[string]int{}
		for i, l := range resolved[user] {
			key := fmt.Sprintf("%s[%d]", ukey, i)
			if _, ok := byName[l.Name]; !ok && l.Name != "" && (l.Metric == "" || l.Limit == 0 || l.Window == 0 && l.Calendar == "") {
				p.add(key, "no limit named %s in rate_limit.limits to inherit from, so metric, limit and window must all be set", quote(l.Name))
				continue
			}
			p.limit(key, l)
			p.unique(names, l.Name, i, key+".name", ukey)
		}
	}
}

// limit checks one complete limit at key.
func (p *problems) limit(key string, l Limit) {
	p.when(l.Name == "", key+".name", "must not be empty")
	p.oneOf(key+".metric", l.Metric, MetricPromptTokens, MetricCompletionTokens, MetricTotalTokens, MetricRequests, MetricCostUSD)
	switch {
	case math.IsNaN(l.Limit) || l.Limit <= 0:
		p.add(key+".limit", "must be > 0; got %v", l.Limit)
	case l.Metric == MetricCostUSD && (l.Limit < minLimitUSD || l.Limit > maxLimitUSD):
		p.add(key+".limit", "must be US dollars from 0.000000001 to %g; got %v", float64(maxLimitUSD), l.Limit)
	case l.Metric != MetricCostUSD && (l.Limit != math.Trunc(l.Limit) || l.Limit > maxCountLimit):
		p.add(key+".limit", "must be a whole number from 1 to %d (only cost_usd limits take dollars and cents); got %v", int64(maxCountLimit), l.Limit)
	}
	switch {
	case l.Calendar != "" && l.Calendar != CalendarDay && l.Calendar != CalendarMonth:
		p.add(key+".window", "must be a duration, calendar_day or calendar_month; got %s", quote(l.Calendar))
	case l.Calendar != "":
		p.when(l.Window != 0, key+".window", "is %s and %s at once", l.Calendar, l.Window)
	case l.Window <= 0:
		p.add(key+".window", "must be > 0; got %s", l.Window)
	case l.Window%time.Millisecond != 0:
		p.add(key+".window", "must be a whole number of milliseconds; got %s", l.Window)
	}
	p.globs(key+".models", l.Models)
}

// prices checks the prices section: models to match, and prices that are
// finite, not negative and below a bound that catches misplaced decimals.
func (p *problems) prices(prices []Price) {
	for i, pr := range prices {
		key := fmt.Sprintf("prices[%d]", i)
		p.when(len(pr.Models) == 0, key+".models", "must list at least one model glob (\"*\" for every model)")
		p.globs(key+".models", pr.Models)
		for _, f := range []struct {
			name string
			usd  *float64
		}{{"input", &pr.Input}, {"cached_input", pr.CachedInput}, {"cache_write", pr.CacheWrite}, {"output", &pr.Output}} {
			if f.usd != nil && (math.IsNaN(*f.usd) || *f.usd < 0 || *f.usd > maxPriceUSD) {
				p.add(key+"."+f.name, "must be US dollars per million tokens from 0 to %d; got %v", maxPriceUSD, *f.usd)
			}
		}
	}
}

// globs checks model patterns (path.Match syntax).
func (p *problems) globs(key string, patterns []string) {
	for i, g := range patterns {
		k := fmt.Sprintf("%s[%d]", key, i)
		if _, err := path.Match(g, ""); g == "" {
			p.add(k, "must not be empty")
		} else if err != nil {
			p.add(k, "%s is not a valid glob pattern (path.Match syntax)", quote(g))
		}
	}
}

func (p *problems) cluster(c Cluster) {
	p.hostPort("cluster.bind", c.Bind, true, true)
	if host, _, err := net.SplitHostPort(c.Bind); err == nil && host != "" && net.ParseIP(host) == nil {
		p.add("cluster.bind", "host must be an IP address, as in \"0.0.0.0:7946\" (every interface) or \"10.0.0.2:7946\"; got %s, and gossip binds IPs: a name would listen on every interface", quote(c.Bind))
	}
	if c.Advertise != "" {
		p.hostPort("cluster.advertise", c.Advertise, true, false)
	}
	for i, j := range c.Join {
		p.hostPort(fmt.Sprintf("cluster.join[%d]", i), j, true, false)
	}
	if _, err := c.Key(); err != nil {
		key, msg, _ := strings.Cut(err.Error(), ": ")
		p.add(key, "%s; make a key with `openssl rand -base64 32`", msg)
	}
	p.when(c.Enabled && !c.Insecure && strings.TrimSpace(c.SecretKey.Value()) == "", "cluster.secret_key",
		"required with cluster.enabled: without it gossip is plaintext and "+
			"anyone who can send one UDP packet to the gossip port can forge any user's counters; "+
			"make a key with `openssl rand -base64 32` (or `head -c32 /dev/urandom | base64`) and give "+
			"every replica the same one, or set cluster.insecure: true if only the replicas can reach that port")
	p.when(c.GossipInterval <= 0, "cluster.gossip_interval", "must be > 0; got %s", c.GossipInterval)
}

// hostPort checks a host:port address. needHost refuses an empty host;
// allowZero accepts port 0 (pick a free port, for listen addresses).
func (p *problems) hostPort(key, addr string, needHost, allowZero bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(key, "must be host:port, as in \":8080\" or \"10.0.0.2:7946\"; got %s", quote(addr))
		return
	}
	p.when(needHost && host == "", key, "must name a host, as in \"0.0.0.0:7946\"; got %s", quote(addr))
	n, err := strconv.Atoi(port)
	p.when(err != nil || n < 0 || n > 65535 || (n == 0 && !allowZero), key, "port must be a number from 1 to 65535; got %s", quote(addr))
}

// resolveOverrides returns overrides with every entry complete: a field an
// entry leaves out (empty metric, zero limit or window, nil models) is
// inherited from the default limit of the same name. An entry naming no
// default limit is kept as it is (Validate reports it when incomplete). The
// result shares no slices with its inputs; nil stays nil.
func resolveOverrides(limits []Limit, overrides map[string][]Limit) map[string][]Limit {
	if overrides == nil {
		return nil
	}
	out := make(map[string][]Limit, len(overrides))
	for user, entries := range overrides {
		resolved := make([]Limit, len(entries))
		for i, o := range entries {
			if j := slices.IndexFunc(limits, func(l Limit) bool { return l.Name == o.Name }); j >= 0 && o.Name != "" {
				base := limits[j]
				o.Metric = cmp.Or(o.Metric, base.Metric)
				o.Limit = cmp.Or(o.Limit, base.Limit)
				if o.Window == 0 && o.Calendar == "" {
					o.Window, o.Calendar = base.Window, base.Calendar
				}
				if o.Models == nil {
					o.Models = base.Models
				}
			}
			o.Models = slices.Clone(o.Models)
			resolved[i] = o
		}
		out[user] = resolved
	}
	return out
}
