package config

import (
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	lim := func(name, metric string, limit float64, window time.Duration, models ...string) Limit {
		return Limit{Name: name, Metric: metric, Limit: limit, Window: window, Models: models}
	}
	tests := []struct {
		name     string
		mutate   func(*Config)
		key      string
		fragment string
	}{
		{"listen not host:port", func(c *Config) { c.Listen = "8080" }, "listen", "host:port"},
		{"listen bad port", func(c *Config) { c.Listen = ":http-alt" }, "listen", "port"},
		{"listen port too large", func(c *Config) { c.Listen = ":70000" }, "listen", "port"},
		{"metrics_listen empty", func(c *Config) { c.MetricsListen = "" }, "metrics_listen", "host:port"},
		{"metrics_listen same as listen", func(c *Config) { c.MetricsListen = c.Listen }, "metrics_listen", "must differ"},
		{"log.level", func(c *Config) { c.Log.Level = "verbose" }, "log.level", "trace, debug, info, warn, error"},
		{"log.format", func(c *Config) { c.Log.Format = "xml" }, "log.format", "json or console"},
		{"max_body_bytes zero", func(c *Config) { c.MaxBodyBytes = 0 }, "max_body_bytes", "> 0"},
		{"drain_timeout negative", func(c *Config) { c.DrainTimeout = -time.Second }, "drain_timeout", ">= 0"},
		{"metrics.max_users zero", func(c *Config) { c.Metrics.MaxUsers = 0 }, "metrics.max_users", "> 0"},
		{"no upstream", func(c *Config) { c.Upstreams = nil }, "upstreams", "at least one"},
		{"upstream name empty", func(c *Config) { c.Upstreams[0].Name = "" }, "upstreams[0].name", "must not be empty"},
		{"upstream name duplicate", func(c *Config) { c.Upstreams = append(c.Upstreams, c.Upstreams[0]) }, "upstreams[1].name", "already"},
		{"upstream url empty", func(c *Config) { c.Upstreams[0].URL = "" }, "upstreams[0].url", "must not be empty"},
		{"upstream url scheme", func(c *Config) { c.Upstreams[0].URL = "ftp://x" }, "upstreams[0].url", "http:// or https://"},
		{"upstream url relative", func(c *Config) { c.Upstreams[0].URL = "api.openai.com" }, "upstreams[0].url", "http:// or https://"},
		{"upstream url no host", func(c *Config) { c.Upstreams[0].URL = "http:///v1" }, "upstreams[0].url", "host"},
		{"upstream url unparsable", func(c *Config) { c.Upstreams[0].URL = "http://a b" }, "upstreams[0].url", "not a valid URL"},
		{"upstream url query", func(c *Config) { c.Upstreams[0].URL = "http://a?x=1" }, "upstreams[0].url", "query"},
		{"upstream url port", func(c *Config) { c.Upstreams[0].URL = "http://a:0" }, "upstreams[0].url", "port"},
		{"upstream bad glob", func(c *Config) { c.Upstreams[0].Models = []string{"gpt-[*"} }, "upstreams[0].models[0]", "glob"},
		{"upstream empty glob", func(c *Config) { c.Upstreams[0].Models = []string{""} }, "upstreams[0].models[0]", "must not be empty"},
		{"upstream timeout", func(c *Config) { c.Upstreams[0].Timeout = 0 }, "upstreams[0].timeout", "> 0"},
		{"upstream provider", func(c *Config) { c.Upstreams[0].Provider = "gemini" }, "upstreams[0].provider", "openai, anthropic or azure"},
		{"deployments without azure", func(c *Config) { c.Upstreams[0].Deployments = map[string]string{"gpt-4o": "prod"} },
			"upstreams[0].deployments", "azure only"},
		{"api_version without azure", func(c *Config) {
			c.Upstreams[0].Provider, c.Upstreams[0].APIVersion = "anthropic", "2024-10-21"
		}, "upstreams[0].api_version", "azure only"},
		{"deployment with slash", func(c *Config) {
			c.Upstreams[0].Provider, c.Upstreams[0].Deployments = "azure", map[string]string{"gpt-4o": "a/../b"}
		}, "upstreams[0].deployments", "deployment name"},
		{"api_version with query", func(c *Config) {
			c.Upstreams[0].Provider, c.Upstreams[0].APIVersion = "azure", "2024-10-21&x=1"
		}, "upstreams[0].api_version", "api-version"},
		{"user_header empty", func(c *Config) { c.RateLimit.UserHeader = "" }, "rate_limit.user_header", "header name"},
		{"user_header bad", func(c *Config) { c.RateLimit.UserHeader = "x user" }, "rate_limit.user_header", "header name"},
		{"missing_user", func(c *Config) { c.RateLimit.MissingUser = "allow" }, "rate_limit.missing_user", "reject or anonymous"},
		{"limit name empty", func(c *Config) { c.RateLimit.Limits = []Limit{lim("", "requests", 1, time.Minute)} }, "rate_limit.limits[0].name", "must not be empty"},
		{"limit name duplicate", func(c *Config) {
			c.RateLimit.Limits = []Limit{lim("a", "requests", 1, time.Minute), lim("a", "requests", 2, time.Minute)}
		}, "rate_limit.limits[1].name", `"a" is already the name of rate_limit.limits[0]`},
		{"limit metric", func(c *Config) { c.RateLimit.Limits = []Limit{lim("a", "tokens", 1, time.Minute)} },
			"rate_limit.limits[0].metric", "must be one of prompt_tokens, completion_tokens, total_tokens, requests"},
		{"limit zero", func(c *Config) { c.RateLimit.Limits = []Limit{lim("a", "requests", 0, time.Minute)} }, "rate_limit.limits[0].limit", "> 0"},
		{"limit negative", func(c *Config) { c.RateLimit.Limits = []Limit{lim("a", "requests", -3, time.Minute)} }, "rate_limit.limits[0].limit", "> 0"},
		{"window zero", func(c *Config) { c.RateLimit.Limits = []Limit{lim("a", "requests", 1, 0)} }, "rate_limit.limits[0].window", "> 0"},
		{"window sub-millisecond", func(c *Config) { c.RateLimit.Limits = []Limit{lim("a", "requests", 1, time.Millisecond+1)} }, "rate_limit.limits[0].window", "milliseconds"},
		{"limit bad glob", func(c *Config) { c.RateLimit.Limits = []Limit{lim("a", "requests", 1, time.Minute, "ok-*", "[")} }, "rate_limit.limits[0].models[1]", "glob"},
		{"override incomplete", func(c *Config) { c.RateLimit.Overrides = map[string][]Limit{"bob": {{Name: "new", Limit: 5}}} },
			"rate_limit.overrides.bob[0]", "metric, limit and window must all be set"},
		{"override bad value", func(c *Config) {
			c.RateLimit.Limits = []Limit{lim("a", "requests", 1, time.Minute)}
			c.RateLimit.Overrides = map[string][]Limit{"bob": {{Name: "a", Limit: -1}}}
		}, "rate_limit.overrides.bob[0].limit", "> 0"},
		{"override bad metric", func(c *Config) {
			c.RateLimit.Overrides = map[string][]Limit{"Bob": {lim("x", "bytes", 1, time.Minute)}}
		}, "rate_limit.overrides.Bob[0].metric", "must be one of"},
		{"override bad glob", func(c *Config) {
			c.RateLimit.Overrides = map[string][]Limit{"bob": {lim("x", "requests", 1, time.Minute, "[")}}
		}, "rate_limit.overrides.bob[0].models[0]", "glob"},
		{"override duplicate", func(c *Config) {
			c.RateLimit.Overrides = map[string][]Limit{"bob": {lim("x", "requests", 1, time.Minute), lim("x", "requests", 2, time.Minute)}}
		}, "rate_limit.overrides.bob[1].name", "already"},
		{"override empty user", func(c *Config) {
			c.RateLimit.Overrides = map[string][]Limit{"": {lim("x", "requests", 1, time.Minute)}}
		}, `rate_limit.overrides[""]`, "must not be empty"},
		{"override user with dots", func(c *Config) {
			c.RateLimit.Overrides = map[string][]Limit{"bob@example.com": {lim("x", "requests", -1, time.Minute)}}
		}, `rate_limit.overrides["bob@example.com"][0].limit`, "> 0"},
		{"cluster.bind", func(c *Config) { c.Cluster.Bind = "7946" }, "cluster.bind", "host:port"},
		{"cluster.bind no host", func(c *Config) { c.Cluster.Bind = ":7946" }, "cluster.bind", "must name a host"},
		{"cluster.bind a name", func(c *Config) { c.Cluster.Bind = "localhost:7946" }, "cluster.bind", "must be an IP address"},
		{"cluster.advertise", func(c *Config) { c.Cluster.Advertise = "10.0.0.1" }, "cluster.advertise", "host:port"},
		{"cluster.join", func(c *Config) { c.Cluster.Join = []string{"10.0.0.2:7946", "peer"} }, "cluster.join[1]", "host:port"},
		{"cluster.join port 0", func(c *Config) { c.Cluster.Join = []string{"peer:0"} }, "cluster.join[0]", "port"},
		{"cluster.secret_key not base64", func(c *Config) { c.Cluster.SecretKey = "not base64 !!" }, "cluster.secret_key", "base64"},
		{"cluster.secret_key wrong size", func(c *Config) { c.Cluster.SecretKey = "c2hvcnQ=" }, "cluster.secret_key", "5 bytes, want 16, 24 or 32"},
		{"cluster.gossip_interval", func(c *Config) { c.Cluster.GossipInterval = 0 }, "cluster.gossip_interval", "> 0"},
		{"cluster enabled without a key", func(c *Config) { c.Cluster.Enabled = true }, "cluster.secret_key",
			"anyone who can send one UDP packet to the gossip port can forge"},
		{"cluster enabled with a blank key", func(c *Config) { c.Cluster.Enabled = true; c.Cluster.SecretKey = "  " }, "cluster.secret_key",
			"openssl rand -base64 32"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(&c)
			err := c.Validate()
			wantProblem(t, err, tt.key, tt.fragment)
			if n := len(errLines(err)); n != 1 {
				t.Errorf("got %d problems\n%v\nwant 1", n, err)
			}
		})
	}
}

// TestValidateGossipKey: an enabled cluster needs a key unless the operator
// says the network is trusted.
func TestValidateGossipKey(t *testing.T) {
	tests := []struct {
		name     string
		enabled  bool
		key      Secret
		insecure bool
		wantErr  bool
	}{
		{"disabled, no key", false, "", false, false},
		{"enabled, no key", true, "", false, true},
		{"enabled, key", true, "MDEyMzQ1Njc4OWFiY2RlZg==", false, false},
		{"enabled, no key, insecure", true, "", true, false},
		{"enabled, key, insecure", true, "MDEyMzQ1Njc4OWFiY2RlZg==", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.Cluster.Enabled, c.Cluster.SecretKey, c.Cluster.Insecure = tt.enabled, tt.key, tt.insecure
			err := c.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Fatalf("got error %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				wantProblem(t, err, "cluster.secret_key", "cluster.insecure: true", "head -c32 /dev/urandom | base64")
			}
		})
	}
}

func TestValidateReportsEveryProblemOnePerLine(t *testing.T) {
	c := Default()
	c.Listen = "nope"
	c.Log.Level = "loud"
	c.Upstreams[0].URL = "ftp://x"
	c.RateLimit.Limits = []Limit{{Name: "a", Metric: "bytes", Limit: 0, Window: 0}}
	c.Cluster.GossipInterval = -1
	lines := errLines(c.Validate())
	want := []string{"listen: ", "log.level: ", "upstreams[0].url: ", "rate_limit.limits[0].metric: ",
		"rate_limit.limits[0].limit: ", "rate_limit.limits[0].window: ", "cluster.gossip_interval: "}
	if len(lines) != len(want) {
		t.Fatalf("got %d lines\n%s\nwant %d", len(lines), strings.Join(lines, "\n"), len(want))
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: got %q, want it to start with %q", i, lines[i], w)
		}
	}
}

func TestValidateSameBeforeAndAfterResolution(t *testing.T) {
	c := Default()
	c.RateLimit.Limits = []Limit{{Name: "a", Metric: "requests", Limit: 5, Window: time.Minute}}
	c.RateLimit.Overrides = map[string][]Limit{"bob": {{Name: "a", Limit: 9}}}
	if err := c.Validate(); err != nil {
		t.Errorf("unresolved override naming a default limit: got %v, want nil", err)
	}
}

func TestValidateNeverPrintsSecrets(t *testing.T) {
	const secret = "sk-very-secret-value-123"
	c := Default()
	c.Upstreams[0].APIKey = secret
	c.Upstreams[0].URL = "http://user:" + secret + "@host:bad/"
	c.Cluster.SecretKey = secret
	err := c.Validate()
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("got %v, want errors without the secret", err)
	}
	wantProblem(t, err, "upstreams[0].url")
	wantProblem(t, err, "cluster.secret_key")
}
