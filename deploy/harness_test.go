package deploy_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// requirePrometheus returns the paths of prometheus and promtool. They are required, not
// optional: the deploy tests are how the dashboard and the alerts are known to work.
func requirePrometheus(t *testing.T) (prometheus, promtool string) {
	t.Helper()
	var missing []string
	prometheus, err1 := exec.LookPath("prometheus")
	promtool, err2 := exec.LookPath("promtool")
	if err1 != nil {
		missing = append(missing, "prometheus")
	}
	if err2 != nil {
		missing = append(missing, "promtool")
	}
	if missing != nil {
		t.Fatalf("%v not on PATH: the deploy tests need a real Prometheus. Install Debian's package "+
			"(`apt-get install prometheus`, which `bash .ci/deps` does) and run again", missing)
	}
	return prometheus, promtool
}

func runTool(t *testing.T, bin string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
}

// replica is one genai-gateway process of the test cluster.
type replica struct {
	name                   string
	proxy, metrics, gossip string // 127.0.0.1:port
	proc                   *process
}

// testCluster is mockllm, a dead upstream and three replicas joined in one cluster.
type testCluster struct {
	mock     string // 127.0.0.1:port of mockllm
	replicas []*replica
}

// tokenLimit is the test cluster's total_tokens limit per user and hour.
const tokenLimit = 200

// startCluster starts mockllm and three replicas r1..r3 on free ports and waits until each is
// ready and sees the two others alive.
func startCluster(t *testing.T, dir, gateway, mockllm string) *testCluster {
	t.Helper()
	c := &testCluster{mock: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t)) // nothing listens there: upstream unreachable
	mock := startProcess(t, dir, "mockllm", mockllm, nil, "--addr", c.mock)
	for i := 1; i <= 3; i++ {
		c.replicas = append(c.replicas, &replica{
			name:    fmt.Sprintf("r%d", i),
			proxy:   fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			metrics: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
			gossip:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		})
	}
	for _, r := range c.replicas {
		var join []string
		for _, o := range c.replicas {
			if o != r {
				join = append(join, strconv.Quote(o.gossip))
			}
		}
		cfg := fmt.Sprintf(`listen: %q
metrics_listen: %q
log: {level: warn, format: json}
drain_timeout: 2s
upstreams:
  - {name: mock, url: "http://%s", models: ["mock-*"], timeout: 30s}
  - {name: dead, url: "http://%s", models: ["dead-*"], timeout: 5s}
prices: # $0.001 a token both ways, so spend is tokens / 1000
  - {models: ["mock-*"], input: 1000, output: 1000}
rate_limit:
  enabled: true
  user_header: user
  missing_user: reject
  limits:
    - {name: tokens-hour, metric: total_tokens, limit: %d, window: 1h}
    - {name: requests-hour, metric: requests, limit: 1000, window: 1h}
cluster:
  enabled: true
  node_name: %s
  bind: %q
  join: [%s]
  gossip_interval: 50ms
  secret_key: %s
`, r.proxy, r.metrics, c.mock, dead, tokenLimit, r.name, r.gossip, strings.Join(join, ", "), testGossipKey)
		file := filepath.Join(dir, r.name+".yaml")
		if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
		r.proc = startProcess(t, dir, r.name, gateway, nil, "--config", file)
	}

	eventually(t, 20*time.Second, "mockllm", func() error {
		_, err := getBody("http://" + c.mock + "/v1/models")
		return err
	}, mock)
	for _, r := range c.replicas {
		eventually(t, 30*time.Second, r.name+" ready and seeing 3 members alive", func() error {
			if _, err := getBody("http://" + r.proxy + "/readyz"); err != nil {
				return err
			}
			var cl struct {
				Node    string `json:"node"`
				Members []struct {
					Name  string `json:"name"`
					State string `json:"state"`
				} `json:"members"`
			}
			if err := getJSON("http://"+r.metrics+"/cluster", &cl); err != nil {
				return err
			}
			var alive []string
			for _, m := range cl.Members {
				if m.State == "alive" {
					alive = append(alive, m.Name)
				}
			}
			slices.Sort(alive)
			if cl.Node != r.name || !slices.Equal(alive, []string{"r1", "r2", "r3"}) {
				return fmt.Errorf("/cluster: node %q, alive %v; want node %s, alive [r1 r2 r3]", cl.Node, alive, r.name)
			}
			return nil
		}, r.proc)
	}
	return c
}

// startPrometheus runs Prometheus with deploy/prometheus/prometheus.yml, its genai-gateway job
// pointed at the replicas' operator ports, every interval at 1s, and rules.yml loaded. It
// returns the base URL of the HTTP API.
func startPrometheus(t *testing.T, dir, prometheus, promtool string, targets []string) string {
	t.Helper()
	cfg := promConfig(t)
	job := gatewayJob(t, cfg)
	job["static_configs"] = []any{map[string]any{"targets": targets}}
	job["scrape_interval"] = "1s"
	job["scrape_timeout"] = "1s"
	cfg["scrape_configs"] = []any{job}
	cfg["global"] = map[string]any{"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
	rules, err := filepath.Abs("prometheus/rules.yml")
	if err != nil {
		t.Fatal(err)
	}
	cfg["rule_files"] = []any{rules}
	delete(cfg, "alerting")
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	runTool(t, promtool, "check", "config", file)

	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	proc := startProcess(t, dir, "prometheus", prometheus, nil,
		"--config.file="+file,
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		"--web.listen-address="+addr,
		"--log.level=warn")
	base := "http://" + addr
	eventually(t, 30*time.Second, "prometheus ready", func() error {
		_, err := getBody(base + "/-/ready")
		return err
	}, proc)
	return base
}

// sample is one series of an instant query's result.
type sample struct {
	Metric map[string]string `json:"metric"`
	Value  [2]any            `json:"value"`
}

func (s sample) value() float64 {
	v, _ := s.Value[1].(string)
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return math.NaN()
	}
	return f
}

// errQuery is a query that Prometheus refused (bad syntax, bad types): retrying cannot help.
var errQuery = errors.New("query refused")

// query runs an instant query through the HTTP API.
func query(base, expr string) ([]sample, error) {
	resp, err := httpClient.PostForm(base+"/api/v1/query", url.Values{"query": {expr}})
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string          `json:"status"`
		ErrorType string          `json:"errorType"`
		Error     string          `json:"error"`
		Data      json.RawMessage `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return nil, fmt.Errorf("query %q: status %d: %w", expr, resp.StatusCode, err)
	}
	if r.Status != "success" {
		return nil, fmt.Errorf("%w: %q: %s: %s", errQuery, expr, r.ErrorType, r.Error)
	}
	var data struct {
		ResultType string          `json:"resultType"`
		Result     json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(r.Data, &data); err != nil {
		return nil, err
	}
	switch data.ResultType {
	case "vector":
		var out []sample
		err := json.Unmarshal(data.Result, &out)
		return out, err
	case "scalar":
		var v [2]any
		err := json.Unmarshal(data.Result, &v)
		return []sample{{Metric: map[string]string{}, Value: v}}, err
	default:
		return nil, fmt.Errorf("%w: %q: result type %s, want an instant vector", errQuery, expr, data.ResultType)
	}
}

// scalarOf runs a query that must return one series and returns its value.
func scalarOf(base, expr string) (float64, error) {
	s, err := query(base, expr)
	if err != nil {
		return 0, err
	}
	if len(s) != 1 {
		return 0, fmt.Errorf("%s: got %d series, want 1", expr, len(s))
	}
	return s[0].value(), nil
}

// chatBody etc. build request bodies; the mock's usage is predictable from them (contract:
// prompt = words of the prompt, completion = max_tokens words).
type traffic struct {
	replica *replica
	path    string
	user    string
	model   string
	body    string
	stream  bool
	status  int // want
	tokens  int // prompt + completion the upstream reports; 0 when it is not reached
}

func chat(r *replica, user, model, prompt string, maxTokens int, stream bool) traffic {
	msgs, _ := json.Marshal([]map[string]string{{"role": "user", "content": prompt}})
	return traffic{replica: r, path: "/v1/chat/completions", user: user, model: model, stream: stream, status: 200,
		body:   fmt.Sprintf(`{"model":%q,"messages":%s,"max_tokens":%d,"stream":%v}`, model, msgs, maxTokens, stream),
		tokens: len(strings.Fields(prompt)) + maxTokens}
}

// send posts one request with the user header and returns the status, body and headers.
func (tr traffic) send(t *testing.T) (int, []byte, http.Header) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, "http://"+tr.replica.proxy+tr.path, strings.NewReader(tr.body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer sk-test")
	req.Header.Set("user", tr.user)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s%s: %v", tr.replica.name, tr.path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("POST %s%s: read body: %v", tr.replica.name, tr.path, err)
	}
	return resp.StatusCode, b, resp.Header
}

// usageTotal is usage.total_tokens of a JSON body, or -1.
func usageTotal(b []byte) int {
	var v struct {
		Usage *struct {
			TotalTokens int `json:"total_tokens"`
		} `json:"usage"`
	}
	if json.Unmarshal(b, &v) != nil || v.Usage == nil {
		return -1
	}
	return v.Usage.TotalTokens
}

// metricNamesOf returns the names of the series of a Prometheus text exposition.
func metricNamesOf(b []byte) map[string]bool {
	names := map[string]bool{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}
