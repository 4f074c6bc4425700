package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestDefault(t *testing.T) {
	d := Default()
	checks := []struct {
		name      string
		got, want any
	}{
		{"listen", d.Listen, ":8080"},
		{"metrics_listen", d.MetricsListen, ":9090"},
		{"log", d.Log, Log{Level: "info", Format: "json"}},
		{"max_body_bytes", d.MaxBodyBytes, int64(10485760)},
		{"drain_timeout", d.DrainTimeout, 30 * time.Second},
		{"metrics.max_users", d.Metrics.MaxUsers, 10000},
		{"upstreams", d.Upstreams, []Upstream{{Name: "openai", URL: "https://api.openai.com", Timeout: 10 * time.Minute, Weight: 1}}},
		{"rate_limit", d.RateLimit, RateLimit{UserHeader: "user", MissingUser: "reject", MaxClientWait: time.Minute}},
		{"metrics.max_series", d.Metrics.MaxSeries, 100000},
		{"body_read_timeout", d.BodyReadTimeout, 30 * time.Second},
		{"max_inflight_body_bytes", d.MaxInflightBodyBytes, int64(256 << 20)},
		{"max_connections", d.MaxConnections, 10000},
		{"debug.pprof", d.Debug.Pprof, false},
		{"cluster", d.Cluster, Cluster{Bind: "0.0.0.0:7946", GossipInterval: 100 * time.Millisecond}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("Default().%s: got %+v, want %+v", c.name, c.got, c.want)
		}
	}
	if err := d.Validate(); err != nil {
		t.Errorf("Default().Validate(): got %v, want nil", err)
	}
	d.Upstreams[0].Name = "changed"
	if Default().Upstreams[0].Name != "openai" {
		t.Error("Default() shares its upstreams slice between calls")
	}
}

func TestLoadNoFile(t *testing.T) {
	cfg, warnings, err := Load("", nil, nil)
	if err != nil || len(warnings) != 0 {
		t.Fatalf("Load(\"\", nil, nil): got warnings %q, error %v; want none", warnings, err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("got %+v, want Default() %+v", cfg, Default())
	}
}

func TestLoadReadsNoProcessEnvironment(t *testing.T) {
	t.Setenv("GENAI_GATEWAY_LISTEN", ":1111")
	t.Setenv("HTTP_PROXY_PORT", "2222")
	t.Setenv("LISTEN", ":3333")
	cfg, _ := mustLoad(t, writeConfig(t, "metrics_listen: ${LISTEN:-:9999}\n"), nil)
	if cfg.Listen != ":8080" || cfg.MetricsListen != ":9999" {
		t.Errorf("got listen %q metrics_listen %q, want \":8080\" and \":9999\" (process env must be ignored)", cfg.Listen, cfg.MetricsListen)
	}
}

func TestLoadFull(t *testing.T) {
	const key = "sk-test-0123456789"
	cfg, warnings := mustLoad(t, "testdata/full.yaml", []string{"OPENAI_API_KEY=" + key})
	if len(warnings) != 0 {
		t.Errorf("got warnings %q, want none", warnings)
	}
	want := Default()
	want.RateLimit = RateLimit{
		Enabled: true, UserHeader: "user", MissingUser: "reject", MaxClientWait: time.Minute,
		Limits: []Limit{
			{Name: "prompt-hourly", Metric: "prompt_tokens", Limit: 1000, Window: time.Hour},
			{Name: "total-minute", Metric: "total_tokens", Limit: 20000, Window: time.Minute, Models: []string{"gpt-4o*"}},
			{Name: "req-minute", Metric: "requests", Limit: 60, Window: time.Minute},
		},
		Overrides: map[string][]Limit{
			"alice": {{Name: "prompt-hourly", Metric: "prompt_tokens", Limit: 50000, Window: time.Hour}},
		},
	}
	want.Upstreams = []Upstream{
		{Name: "openai", URL: "https://api.openai.com", Models: []string{"gpt-*", "o*", "text-embedding-*"}, APIKey: key, Timeout: 10 * time.Minute, Weight: 1},
		{Name: "local", URL: "http://127.0.0.1:8000", Models: []string{"llama-*", "qwen*"}, Timeout: 10 * time.Minute, Weight: 1},
	}
	want.Cluster.Enabled = true
	want.Cluster.Insecure = true
	want.Cluster.Join = []string{"10.0.0.2:7946", "gateway-headless.default.svc:7946"}
	if !reflect.DeepEqual(cfg, want) {
		t.Errorf("got\n%+v\nwant\n%+v", cfg, want)
	}
	if got := cfg.Upstreams[0].APIKey.Value(); got != key {
		t.Errorf("api_key: got %q, want %q", got, key)
	}

	_, warnings = mustLoad(t, "testdata/full.yaml", nil)
	wantWarning(t, warnings, "upstreams[0].api_key", "${OPENAI_API_KEY}", "not set")
}

func TestLoadFixtures(t *testing.T) {
	for _, name := range []string{"minimal.yaml", "empty.yaml", "overrides.yaml", "merge.yaml"} {
		t.Run(name, func(t *testing.T) {
			cfg, _ := mustLoad(t, "testdata/"+name, nil)
			if err := cfg.Validate(); err != nil {
				t.Errorf("Validate after Load: got %v, want nil", err)
			}
		})
	}
}

func TestPrecedence(t *testing.T) {
	file := writeConfig(t, `
listen: ":1001"
metrics_listen: ":1002"
log: {level: warn}
rate_limit: {enabled: false, user_header: x-file}
upstreams: [{name: file, url: "http://file:1"}]
`)
	type layer struct {
		file bool
		env  []string
		args []string
	}
	tests := []struct {
		name string
		get  func(Config) any
		// want for: default, file, file+env, file+env+flag
		layers [4]layer
		want   [4]any
	}{
		{
			name: "listen",
			get:  func(c Config) any { return c.Listen },
			layers: [4]layer{{}, {file: true}, {file: true, env: []string{"GENAI_GATEWAY_LISTEN=:2001"}},
				{file: true, env: []string{"GENAI_GATEWAY_LISTEN=:2001"}, args: []string{"--http-proxy-port=3001"}}},
			want: [4]any{":8080", ":1001", ":2001", ":3001"},
		},
		{
			name: "listen via Rust variable",
			get:  func(c Config) any { return c.Listen },
			layers: [4]layer{{}, {file: true}, {file: true, env: []string{"HTTP_PROXY_PORT=2001"}},
				{file: true, env: []string{"HTTP_PROXY_PORT=2001"}, args: []string{"--http-proxy-port=3001"}}},
			want: [4]any{":8080", ":1001", ":2001", ":3001"},
		},
		{
			name: "metrics_listen",
			get:  func(c Config) any { return c.MetricsListen },
			layers: [4]layer{{}, {file: true}, {file: true, env: []string{"GENAI_GATEWAY_METRICS_LISTEN=:2002"}},
				{file: true, env: []string{"GENAI_GATEWAY_METRICS_LISTEN=:2002"}, args: []string{"--http-proxy-metrics-port", "3002"}}},
			want: [4]any{":9090", ":1002", ":2002", ":3002"},
		},
		{
			name: "rate_limit.enabled",
			get:  func(c Config) any { return c.RateLimit.Enabled },
			layers: [4]layer{{}, {file: true}, {file: true, env: []string{"GENAI_GATEWAY_RATE_LIMIT_ENABLED=true"}},
				{file: true, env: []string{"GENAI_GATEWAY_RATE_LIMIT_ENABLED=true"}, args: []string{"--enable-rate-limiting=false"}}},
			want: [4]any{false, false, true, false},
		},
		{
			name: "rate_limit.user_header",
			get:  func(c Config) any { return c.RateLimit.UserHeader },
			layers: [4]layer{{}, {file: true}, {file: true, env: []string{"GENAI_GATEWAY_RATE_LIMIT_USER_HEADER=x-env"}},
				{file: true, env: []string{"GENAI_GATEWAY_RATE_LIMIT_USER_HEADER=x-env"}, args: []string{"--rate-limiting-user-header-key=x-flag"}}},
			want: [4]any{"user", "x-file", "x-env", "x-flag"},
		},
		{
			name: "upstreams",
			get:  func(c Config) any { return c.Upstreams[0].Name + " " + c.Upstreams[0].URL },
			layers: [4]layer{{}, {file: true}, {file: true, env: []string{`GENAI_GATEWAY_UPSTREAMS=[{name: env, url: "http://env:2"}]`}},
				{file: true, env: []string{`GENAI_GATEWAY_UPSTREAMS=[{name: env, url: "http://env:2"}]`}, args: []string{"--openai-domain=flag.example"}}},
			want: [4]any{"openai https://api.openai.com", "file http://file:1", "env http://env:2", "openai https://flag.example:443"},
		},
		{
			name: "log.level",
			get:  func(c Config) any { return c.Log.Level },
			layers: [4]layer{{}, {file: true}, {file: true, env: []string{"GENAI_GATEWAY_LOG_LEVEL=debug"}},
				{file: true, env: []string{"GENAI_GATEWAY_LOG_LEVEL=error"}}},
			want: [4]any{"info", "warn", "debug", "error"},
		},
	}
	tiers := [4]string{"default", "file", "env", "flag"}
	for _, tt := range tests {
		for i, l := range tt.layers {
			t.Run(tt.name+"/"+tiers[i], func(t *testing.T) {
				path := ""
				if l.file {
					path = file
				}
				cfg, _ := mustLoad(t, path, l.env, l.args...)
				if got := tt.get(cfg); got != tt.want[i] {
					t.Errorf("got %v, want %v", got, tt.want[i])
				}
			})
		}
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "alpha", "EMPTY": "", "B_2": "beta"}
	tests := []struct{ in, want, unset string }{
		{"plain", "plain", ""},
		{"${A}", "alpha", ""},
		{"x-${A}-${B_2}-y", "x-alpha-beta-y", ""},
		{"${MISSING}", "", "MISSING"},
		{"${EMPTY}", "", ""},
		{"${MISSING:-fallback}", "fallback", ""},
		{"${EMPTY:-fallback}", "fallback", ""},
		{"${A:-fallback}", "alpha", ""},
		{"${MISSING:-}", "", ""}, // deploy/examples/single.yaml: an optional key, no warning
		{"${A:-}", "alpha", ""},
		{"$${A}", "${A}", ""},
		{"$A and $", "$A and $", ""},
		{"${1BAD}", "${1BAD}", ""},
		{"${A", "${A", ""},
		{"cost: $5 ${A}", "cost: $5 alpha", ""},
	}
	for _, tt := range tests {
		var unset []string
		got := expand(tt.in, vars, func(n string) { unset = append(unset, n) })
		if got != tt.want {
			t.Errorf("expand(%q): got %q, want %q", tt.in, got, tt.want)
		}
		if want := []string{tt.unset}; tt.unset != "" && !slices.Equal(unset, want) || tt.unset == "" && len(unset) > 0 {
			t.Errorf("expand(%q): got unset %q, want %q", tt.in, unset, tt.unset)
		}
	}
}

func TestExpandInFile(t *testing.T) {
	path := writeConfig(t, `
listen: "${HOST}:${PORT}"
max_body_bytes: ${BODY}
upstreams:
  - {name: u, url: "${URL}", api_key: "${KEY}", models: ["${MODEL}-*"]}
cluster: {join: ["${PEER}:7946"], secret_key: "${GOSSIP_KEY}"}
`)
	env := []string{"HOST=127.0.0.1", "PORT=18080", "BODY=2048", "URL=http://up:8000", "KEY=sk-expanded-key",
		"MODEL=llama", "PEER=10.1.2.3", "GOSSIP_KEY=MDEyMzQ1Njc4OWFiY2RlZg=="}
	cfg, warnings := mustLoad(t, path, env)
	if len(warnings) != 0 {
		t.Errorf("got warnings %q, want none", warnings)
	}
	got := []any{cfg.Listen, cfg.MaxBodyBytes, cfg.Upstreams[0].URL, cfg.Upstreams[0].APIKey.Value(),
		cfg.Upstreams[0].Models[0], cfg.Cluster.Join[0], cfg.Cluster.SecretKey.Value()}
	want := []any{"127.0.0.1:18080", int64(2048), "http://up:8000", "sk-expanded-key", "llama-*", "10.1.2.3:7946", "MDEyMzQ1Njc4OWFiY2RlZg=="}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	// Keys are never expanded, and an expanded value cannot inject keys.
	path = writeConfig(t, "log: {level: \"${LEVEL}\"}\n")
	_, _, err := Load(path, []string{"LEVEL=debug\nlisten: :1"}, nil)
	wantProblem(t, err, "log.level", "must be one of")
}

func TestUnknownKeys(t *testing.T) {
	tests := []struct {
		file string
		keys []string
	}{
		{"testdata/unknown_top.yaml", []string{"listn"}},
		{"testdata/unknown_nested.yaml", []string{"rate_limit.limts", "rate_limit.limits[0].model", "cluster.gossip"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			_, _, err := Load(tt.file, nil, nil)
			if got := len(errLines(err)); got != len(tt.keys) {
				t.Errorf("got %d problems\n%v\nwant %d", got, err, len(tt.keys))
			}
			for _, k := range tt.keys {
				wantProblem(t, err, k, "unknown key")
			}
		})
	}
	_, _, err := Load("testdata/unknown_top.yaml", nil, nil)
	wantProblem(t, err, "listn", "did you mean listen?")
}

func TestTypeErrorsNameTheirKey(t *testing.T) {
	_, _, err := Load("testdata/type_errors.yaml", nil, nil)
	want := map[string]string{
		"max_body_bytes":             `"lots" is not an integer`,
		"drain_timeout":              "no unit",
		"metrics.max_users":          "got a list",
		"upstreams[0].timeout":       `"soon" is not a duration`,
		"rate_limit.enabled":         `"perhaps" is not a boolean`,
		"rate_limit.limits[0].limit": `"abc" is not a number`,
		"cluster":                    "must be a mapping",
	}
	for k, frag := range want {
		wantProblem(t, err, k, frag)
	}
	// A key that failed to decode gets no second message from validation.
	if got := len(errLines(err)); got != len(want) {
		t.Errorf("got %d problems\n%v\nwant %d", got, err, len(want))
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct{ name, content, key, fragment string }{
		{"duplicate key", "listen: \":1\"\nlisten: \":2\"\n", "listen", "more than once"},
		{"top level not a mapping", "- a\n- b\n", "<file>", "must be a mapping"},
		{"syntax error", "listen: [\n", "<file>", "yaml:"},
		{"two documents", "listen: \":1\"\n---\nlisten: \":2\"\n", "<file>", "more than one document"},
		{"list of strings given a mapping", "cluster: {join: {a: b}}\n", "cluster.join", "must be a list, got a mapping"},
		{"null in a list of strings", "cluster: {join: [~]}\n", "cluster.join[0]", "got null"},
		{"list given a value", "upstreams: openai\n", "upstreams", "must be a list"},
		{"overrides not a mapping", "rate_limit: {overrides: [a]}\n", "rate_limit.overrides", "must be a mapping"},
		{"override list given a value", "rate_limit: {overrides: {bob: x}}\n", "rate_limit.overrides.bob", "must be a list"},
		{"mapping key not a string", "? [a]\n: b\n", "<file>", "keys must be plain strings"},
		{"merge of a value", "log:\n  <<: 5\n", "log", "merge key (<<) must refer to a mapping"},
		{"window without unit", "rate_limit: {limits: [{name: a, metric: requests, limit: 1, window: 60}]}\n", "rate_limit.limits[0].window", "no unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.content)
			_, _, err := Load(path, nil, nil)
			key := strings.ReplaceAll(tt.key, "<file>", path)
			wantProblem(t, err, key, tt.fragment)
		})
	}
}

// TestYAMLErrorLines: a syntax error names the line at fault. yaml.v3
// names the line where the enclosing block starts, or none at all.
func TestYAMLErrorLines(t *testing.T) {
	for _, tt := range []struct {
		doc, want string
	}{
		{"listen: \":1\"\nupstreams:\n  - name: a\n    url: http://x:1\n  - name: b\n    url: http://y:1\n   models: [x]\n", "yaml: line 7: did not find expected '-' indicator"},
		{"log:\n   level: info\n  format: json\n", "yaml: line 3: did not find expected key"},
		{"upstreams:\n  - {name: a, url: http://a, api_key: ${KEY}}\n", "yaml: line 2: did not find expected ',' or '}'"},
		{"upstreams: [{name: a,\n  url: \"http://a\"}]\nlog:\n  level: info\n   format: json\n", "yaml: line 5: mapping values are not allowed in this context"},
	} {
		_, _, err := Load(writeConfig(t, tt.doc), nil, nil)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.doc, err, tt.want)
		}
	}
}

func TestLoadFileErrors(t *testing.T) {
	_, _, err := Load("testdata/does-not-exist.yaml", nil, nil)
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want an error wrapping os.ErrNotExist", err)
	}
}

func TestNullKeepsDefault(t *testing.T) {
	cfg, _ := mustLoad(t, writeConfig(t, "listen:\nlog: ~\ncluster:\n  bind:\n"), nil)
	if cfg.Listen != ":8080" || cfg.Log.Level != "info" || cfg.Cluster.Bind != "0.0.0.0:7946" {
		t.Errorf("got listen %q, log %+v, bind %q; want the defaults", cfg.Listen, cfg.Log, cfg.Cluster.Bind)
	}
}

func TestValueForms(t *testing.T) {
	cfg, _ := mustLoad(t, writeConfig(t, `
max_body_bytes: 1_048_576
metrics: {max_users: 1e3}
rate_limit: {enabled: yes}
upstreams: [{name: a, url: "http://a", models: "gpt-*"}]
`), nil)
	if cfg.MaxBodyBytes != 1<<20 || cfg.Metrics.MaxUsers != 1000 || !cfg.RateLimit.Enabled || !slices.Equal(cfg.Upstreams[0].Models, []string{"gpt-*"}) {
		t.Errorf("got max_body_bytes %d, max_users %d, enabled %v, models %q; want 1048576, 1000, true, [gpt-*]",
			cfg.MaxBodyBytes, cfg.Metrics.MaxUsers, cfg.RateLimit.Enabled, cfg.Upstreams[0].Models)
	}
	if cfg.Upstreams[0].Timeout != 10*time.Minute {
		t.Errorf("upstream without timeout: got %s, want 10m", cfg.Upstreams[0].Timeout)
	}
}

func TestOverridesKeepCaseAndInherit(t *testing.T) {
	cfg, _ := mustLoad(t, "testdata/overrides.yaml", nil)
	want := map[string][]Limit{
		"Alice": {{Name: "prompt-hourly", Metric: "prompt_tokens", Limit: 50000, Window: time.Hour, Models: []string{"gpt-*"}}},
		"BOB@Example.com": {
			{Name: "req-minute", Metric: "requests", Limit: 60, Window: 10 * time.Second},
			{Name: "extra", Metric: "completion_tokens", Limit: 7, Window: time.Hour},
			{Name: "prompt-hourly", Metric: "prompt_tokens", Limit: 1000, Window: time.Hour, Models: []string{}},
		},
	}
	if !reflect.DeepEqual(cfg.RateLimit.Overrides, want) {
		t.Errorf("got overrides\n%#v\nwant\n%#v", cfg.RateLimit.Overrides, want)
	}
	// Resolved overrides share no memory with the default limits.
	cfg.RateLimit.Overrides["Alice"][0].Models[0] = "changed"
	if cfg.RateLimit.Limits[0].Models[0] != "gpt-*" {
		t.Error("an override shares its models slice with the default limit")
	}
}

func TestOverrideErrors(t *testing.T) {
	path := writeConfig(t, `
rate_limit:
  limits: [{name: base, metric: requests, limit: 5, window: 1m}]
  overrides:
    "a.b": [{name: nothing, limit: 5}]
    carol: [{name: base, metric: tokens}, {name: base, limit: -1}]
    "": [{name: base}]
`)
	_, _, err := Load(path, nil, nil)
	wantProblem(t, err, `rate_limit.overrides["a.b"][0]`, `no limit named "nothing"`)
	wantProblem(t, err, "rate_limit.overrides.carol[0].metric", "must be one of")
	wantProblem(t, err, "rate_limit.overrides.carol[1].limit", "must be > 0")
	wantProblem(t, err, "rate_limit.overrides.carol[1].name", "already")
	wantProblem(t, err, `rate_limit.overrides[""]`, "must not be empty")
}

func TestEnvKeys(t *testing.T) {
	tests := []struct {
		env  string
		get  func(Config) any
		want any
	}{
		{"GENAI_GATEWAY_LISTEN=127.0.0.1:1", func(c Config) any { return c.Listen }, "127.0.0.1:1"},
		{"GENAI_GATEWAY_LOG_FORMAT=console", func(c Config) any { return c.Log.Format }, "console"},
		{"GENAI_GATEWAY_MAX_BODY_BYTES=42", func(c Config) any { return c.MaxBodyBytes }, int64(42)},
		{"GENAI_GATEWAY_DRAIN_TIMEOUT=5s", func(c Config) any { return c.DrainTimeout }, 5 * time.Second},
		{"GENAI_GATEWAY_METRICS_MAX_USERS=7", func(c Config) any { return c.Metrics.MaxUsers }, 7},
		{"GENAI_GATEWAY_RATE_LIMIT_ENABLED=true", func(c Config) any { return c.RateLimit.Enabled }, true},
		{"GENAI_GATEWAY_RATE_LIMIT_MISSING_USER=anonymous", func(c Config) any { return c.RateLimit.MissingUser }, "anonymous"},
		{"GENAI_GATEWAY_CLUSTER_ENABLED=1", func(c Config) any { return c.Cluster.Enabled }, false},
		{"GENAI_GATEWAY_CLUSTER_NODE_NAME=node-a", func(c Config) any { return c.Cluster.NodeName }, "node-a"},
		{"GENAI_GATEWAY_CLUSTER_SECRET_KEY=MDEyMzQ1Njc4OWFiY2RlZg==", func(c Config) any { return c.Cluster.SecretKey.Value() }, "MDEyMzQ1Njc4OWFiY2RlZg=="},
		{"GENAI_GATEWAY_CLUSTER_GOSSIP_INTERVAL=1s", func(c Config) any { return c.Cluster.GossipInterval }, time.Second},
		{"GENAI_GATEWAY_CLUSTER_JOIN=a:1, b:2", func(c Config) any { return c.Cluster.Join }, []string{"a:1", "b:2"}},
		{`GENAI_GATEWAY_CLUSTER_JOIN=["c:3"]`, func(c Config) any { return c.Cluster.Join }, []string{"c:3"}},
		{"GENAI_GATEWAY_UPSTREAMS_0_API_KEY=sk-from-env-var", func(c Config) any { return c.Upstreams[0].APIKey.Value() }, "sk-from-env-var"},
		{"GENAI_GATEWAY_UPSTREAMS_0_MODELS=gpt-*,o*", func(c Config) any { return c.Upstreams[0].Models }, []string{"gpt-*", "o*"}},
		{`GENAI_GATEWAY_UPSTREAMS_0={name: x, url: "http://x"}`, func(c Config) any { return c.Upstreams[0].Name + c.Upstreams[0].Timeout.String() }, "x10m0s"},
		{`GENAI_GATEWAY_RATE_LIMIT_LIMITS=[{name: r, metric: requests, limit: 3, window: 1s}]`,
			func(c Config) any { return c.RateLimit.Limits }, []Limit{{Name: "r", Metric: "requests", Limit: 3, Window: time.Second}}},
		{`GENAI_GATEWAY_RATE_LIMIT={enabled: true, user_header: x-user}`, func(c Config) any { return c.RateLimit.UserHeader }, "x-user"},
		{"GENAI_GATEWAY_LISTEN=", func(c Config) any { return c.Listen }, ":8080"},
	}
	for _, tt := range tests {
		t.Run(tt.env, func(t *testing.T) {
			env := []string{tt.env}
			if strings.HasPrefix(tt.env, "GENAI_GATEWAY_CLUSTER_ENABLED") {
				env = append(env, "GENAI_GATEWAY_CLUSTER_ENABLED=false") // a later entry wins
			}
			cfg, warnings := mustLoad(t, "", env)
			if got := tt.get(cfg); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			for _, w := range warnings {
				if strings.Contains(w, "ignored") {
					t.Errorf("got warning %q, want the variable applied", w)
				}
			}
		})
	}
}

func TestEnvOverridesKeepCase(t *testing.T) {
	cfg, _ := mustLoad(t, "testdata/overrides.yaml",
		[]string{"GENAI_GATEWAY_RATE_LIMIT_OVERRIDES={MixedCase: [{name: req-minute, limit: 1}]}"})
	want := map[string][]Limit{"MixedCase": {{Name: "req-minute", Metric: "requests", Limit: 1, Window: time.Minute}}}
	if !reflect.DeepEqual(cfg.RateLimit.Overrides, want) {
		t.Errorf("got %+v, want %+v", cfg.RateLimit.Overrides, want)
	}
}

// TestEveryKeyHasAVariable walks the config types and checks that every key
// is reachable from its GENAI_GATEWAY_ variable.
func TestEveryKeyHasAVariable(t *testing.T) {
	keys := envKeys(reflect.TypeFor[Config](), "", nil, map[string]envKey{})
	var walk func(t2 reflect.Type, key, env string)
	count := 0
	walk = func(t2 reflect.Type, key, env string) {
		for i := range t2.NumField() {
			f := t2.Field(i)
			k, e := joinKey(key, tagName(f)), env+strings.ToUpper(tagName(f))
			if f.Type.Kind() == reflect.Struct {
				walk(f.Type, k, e+"_")
				continue
			}
			count++
			got, found := keys[strings.TrimPrefix(e, envPrefix)]
			if !found || strings.Join(got.path, ".") != k {
				t.Errorf("%s: got key %q (found %v), want %q", e, got.path, found, k)
			}
		}
	}
	walk(reflect.TypeFor[Config](), "", envPrefix)
	if count < 20 {
		t.Errorf("walked %d keys, want every key", count)
	}
}

func TestEnvErrorsAndWarnings(t *testing.T) {
	_, _, err := Load("", []string{
		"GENAI_GATEWAY_RATE_LIMIT_ENABLED=maybe",
		"GENAI_GATEWAY_UPSTREAMS_3_URL=http://x",
		"GENAI_GATEWAY_RATE_LIMIT_LIMITS=[{nme: x}]",
	}, nil)
	wantProblem(t, err, "rate_limit.enabled", `"maybe" is not a boolean`, "(from GENAI_GATEWAY_RATE_LIMIT_ENABLED)")
	wantProblem(t, err, "upstreams[3]", "no such element", "(from GENAI_GATEWAY_UPSTREAMS_3_URL)")
	wantProblem(t, err, "rate_limit.limits[0].nme", "unknown key", "(from GENAI_GATEWAY_RATE_LIMIT_LIMITS)")

	_, warnings := mustLoad(t, "", []string{"GENAI_GATEWAY_LISTN=:1", "GENAI_GATEWAY_CONFIG=x.yaml", "OTHER=1"})
	if len(warnings) != 1 {
		t.Errorf("got warnings %q, want exactly one", warnings)
	}
	wantWarning(t, warnings, "GENAI_GATEWAY_LISTN", "ignored")
}

func TestRoundTripThroughYAML(t *testing.T) {
	cfg, _ := mustLoad(t, "testdata/full.yaml", nil)
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := mustLoad(t, writeConfig(t, string(out)), nil)
	if got, want := fmt.Sprintf("%+v", again), fmt.Sprintf("%+v", cfg); got != want {
		t.Errorf("after a YAML round trip got\n%s\nwant\n%s", got, want)
	}
}

func TestFilePath(t *testing.T) {
	env := []string{"GENAI_GATEWAY_CONFIG=/etc/env.yaml"}
	if got := FilePath(env, flags(t, "--config", "/etc/flag.yaml")); got != "/etc/flag.yaml" {
		t.Errorf("flag and env: got %q, want the flag's", got)
	}
	if got := FilePath(env, flags(t)); got != "/etc/env.yaml" {
		t.Errorf("env only: got %q, want the variable's", got)
	}
	if got := FilePath(nil, nil); got != "" {
		t.Errorf("nothing: got %q, want \"\"", got)
	}
}

// TestDocumentBounds: aliases and merge keys fanning out into each other
// are refused as one problem, quickly, however large they would expand.
func TestDocumentBounds(t *testing.T) {
	merges := "m0: &m0 {level: info}\n"
	for i := 1; i < 30; i++ {
		merges += fmt.Sprintf("m%d: &m%d {<<: [*m%d, *m%d, *m%d]}\n", i, i, i-1, i-1, i-1)
	}
	// 200 users of 100 limits of 100 models: 2,000,000 nodes from 4 KB.
	aliases := "m: &m [" + strings.Repeat("m, ", 99) + "m]\nl: &l {name: a, models: *m}\nls: &ls [" +
		strings.Repeat("*l, ", 99) + "*l]\nrate_limit:\n  overrides:\n"
	for i := range 200 {
		aliases += fmt.Sprintf("    u%d: *ls\n", i)
	}
	tests := map[string]string{"merge keys": merges + "log: {<<: *m29}\n", "aliases": aliases}
	for name, doc := range tests {
		t.Run(name, func(t *testing.T) {
			start := time.Now()
			_, _, err := Load(writeConfig(t, doc), nil, nil)
			if n := strings.Count(err.Error(), "too large"); n != 1 {
				t.Errorf("got %d \"too large\" problems in\n%.2000v\nwant 1", n, err)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %s, want well under 20s", d)
			}
		})
	}
}
