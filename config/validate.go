package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
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
	if c.Listen == c.MetricsListen && !strings.HasSuffix(c.Listen, ":0") {
		p.add("metrics_listen", "must differ from listen (%s)", quote(c.Listen))
	}
	if !slices.Contains([]string{"trace", "debug", "info", "warn", "error"}, c.Log.Level) {
		p.add("log.level", "must be one of trace, debug, info, warn, error; got %s", quote(c.Log.Level))
	}
	if c.Log.Format != "json" && c.Log.Format != "console" {
		p.add("log.format", "must be json or console; got %s", quote(c.Log.Format))
	}
	if c.MaxBodyBytes <= 0 {
		p.add("max_body_bytes", "must be > 0; got %d", c.MaxBodyBytes)
	}
	if c.DrainTimeout < 0 {
		p.add("drain_timeout", "must be >= 0; got %s", c.DrainTimeout)
	}
	if c.Metrics.MaxUsers <= 0 {
		p.add("metrics.max_users", "must be > 0; got %d", c.Metrics.MaxUsers)
	}
	if c.Metrics.MaxSeries <= 0 {
		p.add("metrics.max_series", "must be > 0; got %d", c.Metrics.MaxSeries)
	}
	if c.Metrics.UserIdle <= 0 {
		p.add("metrics.user_idle", "must be > 0; got %s", c.Metrics.UserIdle)
	}
	if c.BodyReadTimeout <= 0 {
		p.add("body_read_timeout", "must be > 0; got %s", c.BodyReadTimeout)
	}
	if c.MaxInflightBodyBytes < c.MaxBodyBytes {
		p.add("max_inflight_body_bytes", "must be >= max_body_bytes (%d); got %d", c.MaxBodyBytes, c.MaxInflightBodyBytes)
	}
	if c.MaxConnections <= 0 {
		p.add("max_connections", "must be > 0; got %d", c.MaxConnections)
	}
	if c.RateLimit.MaxClientWait <= 0 {
		p.add("rate_limit.max_client_wait", "must be > 0; got %s", c.RateLimit.MaxClientWait)
	}
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

func (p *problems) upstreams(ups []Upstream) {
	if len(ups) == 0 {
		p.add("upstreams", "at least one upstream is required")
	}
	seen := map[string]int{}
	for i, u := range ups {
		key := fmt.Sprintf("upstreams[%d]", i)
		switch j, dup := seen[u.Name]; {
		case u.Name == "":
			p.add(key+".name", "must not be empty")
		case dup:
			p.add(key+".name", "%s is already the name of upstreams[%d]", quote(u.Name), j)
		default:
			seen[u.Name] = i
		}
		if msg := checkURL(u.URL); msg != "" {
			p.add(key+".url", "%s", msg)
		}
		p.globs(key+".models", u.Models)
		if u.Timeout <= 0 {
			p.add(key+".timeout", "must be > 0; got %s", u.Timeout)
		}
		p.provider(key, u)
		if u.Weight < 0 || u.Weight > maxWeight { // 0: not set (1)
			p.add(key+".weight", "must be from 1 to %d; got %d", maxWeight, u.Weight)
		}
		if u.MaxInFlight < 0 {
			p.add(key+".max_in_flight", "must be >= 0 (0 = no cap); got %d", u.MaxInFlight)
		}
	}
}

// routing checks the routing section.
func (p *problems) routing(r Routing) {
	if !slices.Contains([]string{StrategyPriority, StrategyWeighted, StrategyLeastBusy}, r.Strategy) {
		p.add("routing.strategy", "must be priority, weighted or least_busy; got %s", quote(r.Strategy))
	}
	if r.Retries < 0 || r.Retries > maxRetries {
		p.add("routing.retries", "must be from 0 to %d; got %d", maxRetries, r.Retries)
	}
	for i, v := range r.RetryOn {
		if !slices.Contains(retryOnValues, v) {
			p.add(fmt.Sprintf("routing.retry_on[%d]", i), "must be one of %s; got %s", strings.Join(retryOnValues, ", "), quote(v))
		}
	}
	if r.Cooldown <= 0 || r.Cooldown > maxCooldown {
		p.add("routing.cooldown", "must be > 0 and at most %s; got %s", maxCooldown, r.Cooldown)
	}
}

// provider checks an upstream's provider and the keys only azure takes.
func (p *problems) provider(key string, u Upstream) {
	prov := u.EffectiveProvider()
	if !slices.Contains([]string{ProviderOpenAI, ProviderAnthropic, ProviderAzure}, prov) {
		p.add(key+".provider", "must be openai, anthropic or azure; got %s", quote(u.Provider))
		return
	}
	if prov != ProviderAzure {
		if len(u.Deployments) > 0 {
			p.add(key+".deployments", "applies to provider azure only (provider is %s)", prov)
		}
		if u.APIVersion != "" {
			p.add(key+".api_version", "applies to provider azure only (provider is %s)", prov)
		}
		return
	}
	for model, d := range u.Deployments {
		if model == "" || d == "" || strings.ContainsAny(d, "/?#%\\") || d == "." || d == ".." {
			p.add(key+".deployments", "%s: %s must be a non-empty deployment name without / ? # %% or \\", quote(model), quote(d))
		}
	}
	if v := u.APIVersion; v != "" && (len(v) > 64 || strings.ContainsAny(v, "&#?/ \t")) {
		p.add(key+".api_version", "must be an Azure api-version such as 2024-10-21; got %s", quote(v))
	}
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
	if !isToken(rl.UserHeader) {
		p.add("rate_limit.user_header", "must be an HTTP header name; got %s", quote(rl.UserHeader))
	}
	if rl.MissingUser != MissingUserReject && rl.MissingUser != MissingUserAnonymous {
		p.add("rate_limit.missing_user", "must be reject or anonymous; got %s", quote(rl.MissingUser))
	}
	byName := map[string]int{}
	for i, l := range rl.Limits {
		key := fmt.Sprintf("rate_limit.limits[%d]", i)
		p.limit(key, l)
		if j, dup := byName[l.Name]; dup && l.Name != "" {
			p.add(key+".name", "%s is already the name of rate_limit.limits[%d]", quote(l.Name), j)
		} else if !dup {
			byName[l.Name] = i
		}
	}
	resolved := resolveOverrides(rl.Limits, rl.Overrides)
	users := make([]string, 0, len(resolved))
	for u := range resolved {
		users = append(users, u)
	}
	slices.Sort(users)
	for _, user := range users {
		ukey := mapKey("rate_limit.overrides", user)
		if user == "" {
			p.add(ukey, "user name must not be empty")
		}
		names := map[string]int{}
		for i, l := range resolved[user] {
			key := fmt.Sprintf("%s[%d]", ukey, i)
			if _, ok := byName[l.Name]; !ok && l.Name != "" && (l.Metric == "" || l.Limit == 0 || l.Window == 0 && l.Calendar == "") {
				p.add(key, "no limit named %s in rate_limit.limits to inherit from, so metric, limit and window must all be set", quote(l.Name))
				continue
			}
			p.limit(key, l)
			if j, dup := names[l.Name]; dup && l.Name != "" {
				p.add(key+".name", "%s is already the name of %s[%d]", quote(l.Name), ukey, j)
			} else if !dup {
				names[l.Name] = i
			}
		}
	}
}

// limit checks one complete limit at key.
func (p *problems) limit(key string, l Limit) {
	if l.Name == "" {
		p.add(key+".name", "must not be empty")
	}
	switch l.Metric {
	case MetricPromptTokens, MetricCompletionTokens, MetricTotalTokens, MetricRequests, MetricCostUSD:
	default:
		p.add(key+".metric", "must be one of prompt_tokens, completion_tokens, total_tokens, requests, cost_usd; got %s", quote(l.Metric))
	}
	switch {
	case math.IsNaN(l.Limit) || l.Limit <= 0:
		p.add(key+".limit", "must be > 0; got %v", l.Limit)
	case l.Metric == MetricCostUSD && (l.Limit < minLimitUSD || l.Limit > maxLimitUSD):
		p.add(key+".limit", "must be US dollars from 0.000000001 to %g; got %v", float64(maxLimitUSD), l.Limit)
	case l.Metric != MetricCostUSD && (l.Limit != math.Trunc(l.Limit) || l.Limit > maxCountLimit):
		p.add(key+".limit", "must be a whole number from 1 to %d (only cost_usd limits take dollars and cents); got %v", int64(maxCountLimit), l.Limit)
	}
	switch {
	case l.Calendar != "":
		if l.Calendar != CalendarDay && l.Calendar != CalendarMonth {
			p.add(key+".window", "must be a duration, calendar_day or calendar_month; got %s", quote(l.Calendar))
		} else if l.Window != 0 {
			p.add(key+".window", "is %s and %s at once", l.Calendar, l.Window)
		}
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
		if len(pr.Models) == 0 {
			p.add(key+".models", "must list at least one model glob (\"*\" for every model)")
		}
		p.globs(key+".models", pr.Models)
		fields := []struct {
			name string
			usd  *float64
		}{{"input", &pr.Input}, {"cached_input", pr.CachedInput}, {"output", &pr.Output}}
		for _, f := range fields {
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
		if g == "" {
			p.add(k, "must not be empty")
		} else if _, err := path.Match(g, ""); err != nil {
			p.add(k, "%s is not a valid glob pattern (path.Match syntax)", quote(g))
		}
	}
}

func (p *problems) cluster(c Cluster) {
	p.hostPort("cluster.bind", c.Bind, true, true)
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
	if c.Enabled && !c.Insecure && strings.TrimSpace(c.SecretKey.Value()) == "" {
		p.add("cluster.secret_key", "required with cluster.enabled: without it gossip is plaintext and "+
			"anyone who can send one UDP packet to the gossip port can forge any user's counters; "+
			"make a key with `openssl rand -base64 32` (or `head -c32 /dev/urandom | base64`) and give "+
			"every replica the same one, or set cluster.insecure: true if only the replicas can reach that port")
	}
	if c.GossipInterval <= 0 {
		p.add("cluster.gossip_interval", "must be > 0; got %s", c.GossipInterval)
	}
}

// hostPort checks a host:port address. needHost refuses an empty host;
// allowZero accepts port 0 (pick a free port, for listen addresses).
func (p *problems) hostPort(key, addr string, needHost, allowZero bool) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		p.add(key, "must be host:port, as in \":8080\" or \"10.0.0.2:7946\"; got %s", quote(addr))
		return
	}
	if needHost && host == "" {
		p.add(key, "must name a host, as in \"0.0.0.0:7946\"; got %s", quote(addr))
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || (n == 0 && !allowZero) {
		p.add(key, "port must be a number from 1 to 65535; got %s", quote(addr))
	}
}

// isToken reports whether s is a valid HTTP header name (RFC 9110 token).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r >= 0x7f || r <= ' ' || strings.ContainsRune("\"(),/:;<=>?@[\\]{}", r) {
			return false
		}
	}
	return true
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
				if o.Metric == "" {
					o.Metric = base.Metric
				}
				if o.Limit == 0 {
					o.Limit = base.Limit
				}
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
