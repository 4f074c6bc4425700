// Package deploy_test checks the deployment kit in deploy/: every file parses, the files agree
// with each other and with the gateway's configuration (ports, paths, names), the configuration
// files pass `genai-gateway check-config`, and — with a real Prometheus scraping a real
// three-replica cluster (live_test.go) — every query of the dashboard and of the alert rules
// works against what the gateway exports.
package deploy_test

import (
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	code := m.Run()
	httpClient.CloseIdleConnections()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// contractMetrics are the metric names of /work/contract.md ("Metric names"): the dashboard and
// the rules may read these (histograms through _bucket, _sum and _count), the Go and process
// collectors' go_* and process_*, and Prometheus' own up.
var contractMetrics = map[string]string{ // name -> type
	"prompt_tokens_total":                            "counter",
	"completion_tokens_total":                        "counter",
	"tokens_total":                                   "counter",
	"prompt_tokens_by_model_total":                   "counter",
	"completion_tokens_by_model_total":               "counter",
	"tokens_by_model_total":                          "counter",
	"prompt_tokens_by_user_by_model_total":           "counter",
	"completion_tokens_by_user_by_model_total":       "counter",
	"tokens_by_user_by_model_total":                  "counter",
	"genai_gateway_requests_total":                   "counter",
	"genai_gateway_request_duration_seconds":         "histogram",
	"genai_gateway_time_to_first_token_seconds":      "histogram",
	"genai_gateway_upstream_errors_total":            "counter",
	"genai_gateway_requests_in_flight":               "gauge",
	"genai_gateway_rate_limited_requests_total":      "counter",
	"genai_gateway_rate_limit_escrow_refusals_total": "counter",
	"genai_gateway_cluster_members":                  "gauge",
	"genai_gateway_gossip_messages_total":            "counter",
	"genai_gateway_gossip_bytes_total":               "counter",
	"genai_gateway_gossip_dropped_messages_total":    "counter",
	"genai_gateway_counter_keys":                     "gauge",
	"genai_gateway_gossip_queue_depth":               "gauge",
	"genai_gateway_clock_skew_seconds":               "gauge",
	"genai_gateway_cost_usd_total":                   "counter",
}

// prometheusBuiltins are series Prometheus makes itself, not read from a target.
var prometheusBuiltins = map[string]bool{"up": true, "scrape_duration_seconds": true, "ALERTS": true}

// inContract reports whether a metric name read by an expression is one the gateway promises.
func inContract(name string) bool {
	if prometheusBuiltins[name] || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_") {
		return true
	}
	if typ, ok := contractMetrics[name]; ok {
		return typ != "histogram" // a histogram is read through its series
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && contractMetrics[base] == "histogram" {
			return true
		}
	}
	return false
}

// --- every file parses --------------------------------------------------------------------

func TestYAMLFilesParse(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if ext := filepath.Ext(p); !d.IsDir() && (ext == ".yaml" || ext == ".yml") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("got %d YAML files under deploy/, want at least 15: %v", len(files), files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			docs, err := yamlDocs(readFile(t, f))
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(docs) == 0 {
				t.Fatalf("%s: no YAML document", f)
			}
		})
	}
	t.Run("grafana/genai-gateway.json", func(t *testing.T) {
		var v map[string]any
		if err := json.Unmarshal(readFile(t, "grafana/genai-gateway.json"), &v); err != nil {
			t.Fatalf("dashboard JSON: %v", err)
		}
	})
	t.Run("configmap config.yaml", func(t *testing.T) {
		if _, err := yamlDocs([]byte(k8sGatewayConfig(t))); err != nil {
			t.Fatalf("config.yaml of the ConfigMap: %v", err)
		}
	})
}

func TestDemoScriptSyntax(t *testing.T) {
	out, err := exec.Command("bash", "-n", "demo.sh").CombinedOutput()
	if err != nil {
		t.Fatalf("bash -n deploy/demo.sh: %v\n%s", err, out)
	}
	if fi, err := os.Stat("demo.sh"); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("deploy/demo.sh: got %v (err %v), want an executable file", fi.Mode(), err)
	}
}

// --- the configuration files pass check-config ----------------------------------------------

func TestConfigsPassCheckConfig(t *testing.T) {
	gateway, _ := binaries(t)
	dir := t.TempDir()
	k8sFile := filepath.Join(dir, "configmap-config.yaml")
	if err := os.WriteFile(k8sFile, []byte(k8sGatewayConfig(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	examples, err := filepath.Glob("examples/*.yaml")
	if err != nil || len(examples) < 5 {
		t.Fatalf("got examples %v (err %v), want single, rate-limits and demo-cluster-1..3", examples, err)
	}

	// The pod's environment once the operator has put a real key in secret.yaml.
	pod := podEnv(t)
	pod["GENAI_GATEWAY_CLUSTER_SECRET_KEY"] = testGossipKey
	tests := []struct {
		name string
		file string
		env  map[string]string
	}{
		{"compose/config.yaml as gateway-1", "compose/config.yaml", composeEnv(t, "gateway-1", map[string]string{"GOSSIP_KEY": testGossipKey})},
		{"kubernetes ConfigMap with the pod's environment", k8sFile, pod},
	}
	for _, e := range examples {
		tests = append(tests, struct {
			name string
			file string
			env  map[string]string
		}{e, e, map[string]string{"GOSSIP_KEY": testGossipKey}}) // as demo.sh runs them
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := checkConfig(t, gateway, tt.file, tt.env)
			if code != 0 {
				t.Errorf("check-config %s: got exit %d, want 0:\n%s", tt.file, code, out)
			}
		})
	}

	// check-config must actually check: a broken copy of the ConfigMap's file is refused.
	t.Run("a broken file is refused", func(t *testing.T) {
		broken := filepath.Join(dir, "broken.yaml")
		b := strings.Replace(k8sGatewayConfig(t), "drain_timeout:", "drain_timout:", 1)
		if err := os.WriteFile(broken, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out := checkConfig(t, gateway, broken, podEnv(t)); code != 2 {
			t.Errorf("check-config of a file with an unknown key: got exit %d, want 2:\n%s", code, out)
		}
	})
}

// testGossipKey is a gossip key as an operator makes one: base64 of 32 bytes.
const testGossipKey = "dGVzdC1nb3NzaXAta2V5LTAxMjM0NTY3ODlhYmNkZWY="

// composeEnv is the environment docker-compose.yml gives a gateway service when compose runs
// with the variables vars: ${VAR:-word} and ${VAR:?message} take VAR from vars, else word
// (or fail the test, as compose would fail).
func composeEnv(t *testing.T, service string, vars map[string]string) map[string]string {
	t.Helper()
	svc := composeServices(t)[service]
	env := map[string]string{}
	ref := regexp.MustCompile(`\$\{([A-Za-z_]+)(:-|:\?)([^}]*)\}`)
	for k, v := range asMap(svc["environment"]) {
		env[k] = ref.ReplaceAllStringFunc(fmt.Sprint(v), func(m string) string {
			g := ref.FindStringSubmatch(m)
			if val := vars[g[1]]; val != "" {
				return val
			}
			if g[2] == ":?" {
				t.Fatalf("%s: compose refuses to start without %s (%s)", service, g[1], g[3])
			}
			return g[3]
		})
	}
	return env
}

// TestGossipKeyRequired: no deployment file lets a cluster gossip without a key. Compose
// stops without GOSSIP_KEY, the committed Kubernetes Secret holds a placeholder that stops
// every pod, and the demo's examples are refused without the key demo.sh makes.
func TestGossipKeyRequired(t *testing.T) {
	gateway, _ := binaries(t)
	t.Run("compose requires GOSSIP_KEY", func(t *testing.T) {
		for _, g := range []string{"gateway-1", "gateway-2", "gateway-3"} {
			v := fmt.Sprint(asMap(composeServices(t)[g]["environment"])["GENAI_GATEWAY_CLUSTER_SECRET_KEY"])
			if !strings.HasPrefix(v, "${GOSSIP_KEY:?") {
				t.Errorf("%s: GENAI_GATEWAY_CLUSTER_SECRET_KEY is %q, want ${GOSSIP_KEY:?message}", g, v)
			}
		}
	})
	t.Run("demo.sh makes a key per run", func(t *testing.T) {
		script := string(readFile(t, "demo.sh"))
		for _, want := range []string{"openssl rand -base64 32", "export GOSSIP_KEY"} {
			if !strings.Contains(script, want) {
				t.Errorf("demo.sh: no %q", want)
			}
		}
	})

	dir := t.TempDir()
	k8sFile := filepath.Join(dir, "configmap-config.yaml")
	if err := os.WriteFile(k8sFile, []byte(k8sGatewayConfig(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, file string
		env        map[string]string
		want       string
	}{
		{"kubernetes Secret as committed", k8sFile, podEnv(t), "not valid base64"},
		{"demo example without GOSSIP_KEY", "examples/demo-cluster-1.yaml", nil, "can forge"},
		{"compose config without a key", "compose/config.yaml", map[string]string{"GENAI_GATEWAY_CLUSTER_NODE_NAME": "gateway-1"}, "can forge"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := checkConfig(t, gateway, tt.file, tt.env)
			if code != 2 || !strings.Contains(out, "cluster.secret_key") || !strings.Contains(out, tt.want) ||
				!strings.Contains(out, "openssl rand -base64 32") {
				t.Errorf("check-config %s: got exit %d:\n%s\nwant exit 2 naming cluster.secret_key, %q and how to make a key", tt.file, code, out, tt.want)
			}
		})
	}
}

// podEnv is the environment deployment.yaml gives a pod: Secret values from secret.yaml,
// field references from a made-up pod, $(VAR) references expanded as the kubelet does.
func podEnv(t *testing.T) map[string]string {
	t.Helper()
	k := loadKubernetes(t)
	secret := k.get(t, "Secret", "genai-gateway")
	container := k.gatewayContainer(t)
	fields := map[string]string{"metadata.name": "genai-gateway-7d9c-x2k4f", "status.podIP": "10.1.2.3",
		"metadata.namespace": "default", "spec.nodeName": "node-1"}
	env := map[string]string{}
	for _, e := range asSlice(container["env"]) {
		e := asMap(e)
		name := fmt.Sprint(e["name"])
		switch {
		case e["value"] != nil:
			env[name] = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`).ReplaceAllStringFunc(fmt.Sprint(e["value"]),
				func(ref string) string {
					if v, ok := env[ref[2:len(ref)-1]]; ok {
						return v
					}
					return ref
				})
		case e["valueFrom"] != nil:
			from := asMap(e["valueFrom"])
			switch {
			case from["fieldRef"] != nil:
				fp := fmt.Sprint(asMap(from["fieldRef"])["fieldPath"])
				v, ok := fields[fp]
				if !ok {
					t.Fatalf("env %s: unexpected fieldRef %s", name, fp)
				}
				env[name] = v
			case from["secretKeyRef"] != nil:
				ref := asMap(from["secretKeyRef"])
				if ref["name"] != "genai-gateway" {
					t.Fatalf("env %s: got secretKeyRef to %v, want Secret genai-gateway", name, ref["name"])
				}
				v, ok := asMap(secret["stringData"])[fmt.Sprint(ref["key"])]
				if !ok {
					t.Fatalf("env %s: Secret genai-gateway has no key %v", name, ref["key"])
				}
				env[name] = fmt.Sprint(v)
			case from["resourceFieldRef"] != nil:
				env[name] = "1"
			default:
				t.Fatalf("env %s: unsupported valueFrom %v", name, from)
			}
		}
	}
	return env
}

// --- small helpers for decoded YAML ----------------------------------------------------------

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

func asStrings(v any) []string {
	var out []string
	for _, e := range asSlice(v) {
		out = append(out, fmt.Sprint(e))
	}
	return out
}
