package config

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestLegacyOptions(t *testing.T) {
	upstream := func(url string) func(*Config) {
		return func(c *Config) {
			c.Upstreams = []Upstream{{Name: "openai", URL: url, Timeout: 10 * time.Minute, Weight: 1}}
		}
	}
	limit := func(max float64, window time.Duration) []Limit {
		return []Limit{{Name: "default", Metric: "total_tokens", Limit: max, Window: window}}
	}
	tests := []struct {
		name string
		args []string
		env  []string
		want func(*Config) // applied to Default()
	}{
		{"--openai-domain", []string{"--openai-domain", "llm.example"}, nil, upstream("https://llm.example:443")},
		{"OPENAI_DOMAIN", nil, []string{"OPENAI_DOMAIN=llm.example"}, upstream("https://llm.example:443")},
		{"--openai-port", []string{"--openai-port=8443"}, nil, upstream("https://api.openai.com:8443")},
		{"OPENAI_PORT", nil, []string{"OPENAI_PORT=8443"}, upstream("https://api.openai.com:8443")},
		{"--openai-tls=false", []string{"--openai-tls=false"}, nil, upstream("http://api.openai.com:80")},
		{"OPENAI_TLS=false", nil, []string{"OPENAI_TLS=false"}, upstream("http://api.openai.com:80")},
		{"--openai-tls", []string{"--openai-tls"}, nil, upstream("https://api.openai.com:443")},
		{"all three as variables", nil, []string{"OPENAI_TLS=false", "OPENAI_PORT=8000", "OPENAI_DOMAIN=mockllm"}, upstream("http://mockllm:8000")},
		{"all three as flags", []string{"--openai-tls=false", "--openai-port=8000", "--openai-domain=127.0.0.1"}, nil, upstream("http://127.0.0.1:8000")},
		{"IPv6 domain", []string{"--openai-domain=::1"}, nil, upstream("https://[::1]:443")},
		{"flag beats its variable", []string{"--openai-domain=flag.example"}, []string{"OPENAI_DOMAIN=env.example", "OPENAI_PORT=1234"}, upstream("https://flag.example:1234")},
		{"--http-proxy-port", []string{"--http-proxy-port=7000"}, nil, func(c *Config) { c.Listen = ":7000" }},
		{"HTTP_PROXY_PORT", nil, []string{"HTTP_PROXY_PORT=7000"}, func(c *Config) { c.Listen = ":7000" }},
		{"--http-proxy-metrics-port", []string{"--http-proxy-metrics-port=7001"}, nil, func(c *Config) { c.MetricsListen = ":7001" }},
		{"HTTP_PROXY_METRICS_PORT", nil, []string{"HTTP_PROXY_METRICS_PORT=7001"}, func(c *Config) { c.MetricsListen = ":7001" }},
		{"--enable-rate-limiting", []string{"--enable-rate-limiting"}, nil, func(c *Config) {
			c.RateLimit.Enabled = true
			c.RateLimit.Limits = limit(1000, time.Hour)
		}},
		{"ENABLE_RATE_LIMITING=true", nil, []string{"ENABLE_RATE_LIMITING=true"}, func(c *Config) {
			c.RateLimit.Enabled = true
			c.RateLimit.Limits = limit(1000, time.Hour)
		}},
		{"ENABLE_RATE_LIMITING=false", nil, []string{"ENABLE_RATE_LIMITING=false"}, func(c *Config) {}},
		{"--rate-limiting-max-prompt-tokens", []string{"--rate-limiting-max-prompt-tokens=5000"}, nil, func(c *Config) {
			c.RateLimit.Limits = limit(5000, time.Hour)
		}},
		{"RATE_LIMITING_MAX_PROMPT_TOKENS", nil, []string{"RATE_LIMITING_MAX_PROMPT_TOKENS=5000"}, func(c *Config) {
			c.RateLimit.Limits = limit(5000, time.Hour)
		}},
		{"--rate-limiting-window-duration-size-min", []string{"--rate-limiting-window-duration-size-min=5"}, nil, func(c *Config) {
			c.RateLimit.Limits = limit(1000, 5*time.Minute)
		}},
		{"RATE_LIMITING_WINDOW_DURATION_SIZE_MIN", nil, []string{"RATE_LIMITING_WINDOW_DURATION_SIZE_MIN=5"}, func(c *Config) {
			c.RateLimit.Limits = limit(1000, 5*time.Minute)
		}},
		{"window and max from both sources", []string{"--rate-limiting-window-duration-size-min=2", "--enable-rate-limiting"},
			[]string{"RATE_LIMITING_MAX_PROMPT_TOKENS=300", "RATE_LIMITING_WINDOW_DURATION_SIZE_MIN=9"}, func(c *Config) {
				c.RateLimit.Enabled = true
				c.RateLimit.Limits = limit(300, 2*time.Minute)
			}},
		{"--rate-limiting-user-header-key", []string{"--rate-limiting-user-header-key=x-user"}, nil, func(c *Config) { c.RateLimit.UserHeader = "x-user" }},
		{"RATE_LIMITING_USER_HEADER_KEY", nil, []string{"RATE_LIMITING_USER_HEADER_KEY=x-user"}, func(c *Config) { c.RateLimit.UserHeader = "x-user" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warnings := mustLoad(t, "", tt.env, tt.args...)
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(cfg, want) {
				t.Errorf("got\n%+v\nwant\n%+v", cfg, want)
			}
			if len(want.RateLimit.Limits) > 0 && !want.RateLimit.Enabled {
				// A limit without ENABLE_RATE_LIMITING limits nothing, as in the original.
				if len(warnings) != 1 {
					t.Errorf("got warnings %q, want exactly one", warnings)
				}
				wantWarning(t, warnings, "rate_limit.limits is set, but rate_limit.enabled is false")
			} else if len(warnings) != 0 {
				t.Errorf("got warnings %q, want none", warnings)
			}
		})
	}
}

func TestLegacyEnableKeepsConfiguredLimits(t *testing.T) {
	cfg, _ := mustLoad(t, "testdata/minimal.yaml", []string{"ENABLE_RATE_LIMITING=true"})
	if len(cfg.RateLimit.Limits) != 1 || cfg.RateLimit.Limits[0].Name != "tokens" {
		t.Errorf("got limits %+v, want the file's limit kept", cfg.RateLimit.Limits)
	}
}

func TestLegacyAgainstNativeVariables(t *testing.T) {
	file := writeConfig(t, "listen: \":1000\"\n")
	tests := []struct {
		name    string
		env     []string
		args    []string
		want    string
		warning string
	}{
		{"Rust variable beats the file", []string{"HTTP_PROXY_PORT=2000"}, nil, ":2000", ""},
		{"GENAI_GATEWAY_ variable beats the Rust variable", []string{"HTTP_PROXY_PORT=2000", "GENAI_GATEWAY_LISTEN=:3000"}, nil, ":3000", "GENAI_GATEWAY_LISTEN: overrides HTTP_PROXY_PORT"},
		{"Rust flag beats both", []string{"HTTP_PROXY_PORT=2000", "GENAI_GATEWAY_LISTEN=:3000"}, []string{"--http-proxy-port=4000"}, ":4000", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, warnings := mustLoad(t, file, tt.env, tt.args...)
			if cfg.Listen != tt.want {
				t.Errorf("listen: got %q, want %q", cfg.Listen, tt.want)
			}
			if tt.warning != "" {
				wantWarning(t, warnings, tt.warning)
			}
		})
	}
	// Indexed variables refine the upstream the Rust variables build.
	cfg, warnings := mustLoad(t, "", []string{"OPENAI_DOMAIN=llm.example", "GENAI_GATEWAY_UPSTREAMS_0_API_KEY=sk-indexed-key"})
	if cfg.Upstreams[0].URL != "https://llm.example:443" || cfg.Upstreams[0].APIKey.Value() != "sk-indexed-key" {
		t.Errorf("got %+v, want the Rust upstream with the variable's key", cfg.Upstreams[0])
	}
	if len(warnings) != 0 {
		t.Errorf("got warnings %q, want none", warnings)
	}
}

func TestLegacyReplacesConfiguredValuesWithWarning(t *testing.T) {
	cfg, warnings := mustLoad(t, "testdata/full.yaml", []string{"OPENAI_API_KEY=sk-must-not-follow", "OPENAI_DOMAIN=llm.example"})
	if len(cfg.Upstreams) != 1 || cfg.Upstreams[0].URL != "https://llm.example:443" || cfg.Upstreams[0].APIKey != "" {
		t.Errorf("got upstreams %+v, want only the Rust upstream, with no api_key", cfg.Upstreams)
	}
	wantWarning(t, warnings, "OPENAI_DOMAIN", "replaces the configured upstreams")

	cfg, warnings = mustLoad(t, "testdata/minimal.yaml", nil, "--rate-limiting-max-prompt-tokens=10")
	if want := []Limit{legacyLimit(10, 60)}; !reflect.DeepEqual(cfg.RateLimit.Limits, want) {
		t.Errorf("got limits %+v, want %+v", cfg.RateLimit.Limits, want)
	}
	wantWarning(t, warnings, "--rate-limiting-max-prompt-tokens", "replaces the configured rate_limit.limits")
	// alice's override named a limit that is gone and is incomplete.
	_, _, err := Load("testdata/full.yaml", []string{"RATE_LIMITING_MAX_PROMPT_TOKENS=10"}, nil)
	wantProblem(t, err, "rate_limit.overrides.alice[0]", `no limit named "prompt-hourly"`)
}

func TestLegacyErrors(t *testing.T) {
	tests := []struct {
		env  []string
		args []string
		key  string
	}{
		{[]string{"OPENAI_PORT=abc"}, nil, "OPENAI_PORT"},
		{[]string{"OPENAI_PORT=0"}, nil, "OPENAI_PORT"},
		{nil, []string{"--openai-port=0"}, "--openai-port"},
		{[]string{"OPENAI_TLS=maybe"}, nil, "OPENAI_TLS"},
		{[]string{"OPENAI_DOMAIN=https://api.openai.com"}, nil, "OPENAI_DOMAIN"},
		{[]string{"HTTP_PROXY_PORT=99999"}, nil, "HTTP_PROXY_PORT"},
		{[]string{"HTTP_PROXY_METRICS_PORT=x"}, nil, "HTTP_PROXY_METRICS_PORT"},
		{[]string{"ENABLE_RATE_LIMITING=sure"}, nil, "ENABLE_RATE_LIMITING"},
		{[]string{"RATE_LIMITING_WINDOW_DURATION_SIZE_MIN=0"}, nil, "RATE_LIMITING_WINDOW_DURATION_SIZE_MIN"},
		{nil, []string{"--rate-limiting-max-prompt-tokens=0"}, "--rate-limiting-max-prompt-tokens"},
		{[]string{"RATE_LIMITING_MAX_PROMPT_TOKENS=-5"}, nil, "RATE_LIMITING_MAX_PROMPT_TOKENS"},
		{[]string{"RATE_LIMITING_USER_HEADER_KEY=bad header"}, nil, "rate_limit.user_header"},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			_, _, err := Load("", tt.env, flags(t, tt.args...))
			wantProblem(t, err, tt.key)
		})
	}
}

func TestRedisOptionsIgnoredWithWarning(t *testing.T) {
	tests := []struct {
		env    []string
		args   []string
		source string
	}{
		{nil, []string{"--redis-host=redis"}, "--redis-host"},
		{nil, []string{"--redis-port=6379"}, "--redis-port"},
		{[]string{"REDIS_HOST=redis"}, nil, "REDIS_HOST"},
		{[]string{"REDIS_PORT=6379"}, nil, "REDIS_PORT"},
		{nil, []string{"--rate-limiting-redis-connection-string=redis://r:6379/0"}, "--rate-limiting-redis-connection-string"},
		{[]string{"RATE_LIMITING_REDIS_POOL_SIZE=5"}, nil, "RATE_LIMITING_REDIS_POOL_SIZE"},
	}
	for _, tt := range tests {
		t.Run(tt.source, func(t *testing.T) {
			cfg, warnings := mustLoad(t, "", tt.env, tt.args...)
			wantWarning(t, warnings, tt.source, "ignored", "replicated", "cluster")
			if !reflect.DeepEqual(cfg, Default()) {
				t.Errorf("got %+v, want Default()", cfg)
			}
		})
	}
}

func TestKubernetesServiceLinkIgnored(t *testing.T) {
	cfg, warnings := mustLoad(t, "", []string{"OPENAI_PORT=tcp://10.0.0.1:443", "HTTP_PROXY_PORT=tcp://10.0.0.2:80"})
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("got %+v, want Default()", cfg)
	}
	wantWarning(t, warnings, "OPENAI_PORT", "Kubernetes service link")
	wantWarning(t, warnings, "HTTP_PROXY_PORT", "Kubernetes service link")
}

func TestRegisterFlagsHelp(t *testing.T) {
	fs := pflag.NewFlagSet("gw", pflag.ContinueOnError)
	RegisterFlags(fs)
	var help bytes.Buffer
	fs.SetOutput(&help)
	fs.PrintDefaults()
	for _, o := range legacyOptions() {
		if fs.Lookup(o.flag) == nil {
			t.Errorf("--%s: not registered", o.flag)
		}
		if !o.ignored && !strings.Contains(help.String(), "env "+o.env+")") {
			t.Errorf("--%s: help does not name %s", o.flag, o.env)
		}
	}
	if fs.Lookup("config") == nil || !strings.Contains(help.String(), "GENAI_GATEWAY_CONFIG") {
		t.Errorf("--config: missing or its help does not name GENAI_GATEWAY_CONFIG:\n%s", help.String())
	}
	if strings.Contains(help.String(), "redis") {
		t.Errorf("the ignored Redis flags show in --help:\n%s", help.String())
	}
}

func TestLoadWithForeignFlagSet(t *testing.T) {
	fs := pflag.NewFlagSet("other", pflag.ContinueOnError)
	fs.Bool("verbose", false, "")
	if _, _, err := Load("", nil, fs); err != nil {
		t.Errorf("flag set without RegisterFlags: got %v, want nil", err)
	}
}
