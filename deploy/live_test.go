package deploy_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestMonitoringLive runs the deployment's monitoring against the real thing: promtool checks
// the Prometheus files; then mockllm, three clustered replicas and a Prometheus that scrapes
// them every second with the alert rules loaded. After known traffic, every query of the
// dashboard and every operand of every alert returns data, every metric they read is exported,
// and the token and spend counters add up to what was sent.
func TestMonitoringLive(t *testing.T) {
	prometheus, promtool := requirePrometheus(t)
	t.Run("promtool", func(t *testing.T) {
		runTool(t, promtool, "check", "config", "prometheus/prometheus.yml")
		runTool(t, promtool, "check", "rules", "prometheus/rules.yml")
	})

	gateway, mockllm := binaries(t)
	dir := t.TempDir()
	start := time.Now()
	c := startCluster(t, dir, gateway, mockllm)
	var targets []string
	for _, r := range c.replicas {
		targets = append(targets, r.metrics)
	}
	prom := startPrometheus(t, dir, prometheus, promtool, targets)
	t.Logf("cluster and prometheus up in %s", time.Since(start).Round(time.Millisecond))
	r1, r2, r3 := c.replicas[0], c.replicas[1], c.replicas[2]

	// The Kubernetes preStop command, run as the kubelet would: it must exit 0 after its pause.
	k := loadKubernetes(t)
	pre := asStrings(asMap(asMap(asMap(k.gatewayContainer(t)["lifecycle"])["preStop"])["exec"])["command"])
	preStop := make(chan error, 1)
	preStopStart := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, gateway, pre[1:]...).CombinedOutput()
		if err != nil {
			err = fmt.Errorf("%w: %s", err, out)
		}
		preStop <- err
	}()

	// --- known traffic -------------------------------------------------------------------
	plan := []traffic{
		chat(r1, "alice", "mock-chat", "one two three four five", 7, false),
		chat(r1, "alice", "mock-chat", "one two three four five", 7, false),
		chat(r1, "alice", "mock-chat", "one two three four five", 7, false),
		chat(r2, "bob", "mock-chat", "alpha beta gamma delta", 6, true),
		chat(r2, "bob", "mock-chat", "alpha beta gamma delta", 6, true),
		{replica: r3, path: "/v1/completions", user: "bob", model: "mock-instruct", status: 200, tokens: 3 + 5,
			body: `{"model":"mock-instruct","prompt":"red green blue","max_tokens":5}`},
		{replica: r3, path: "/v1/embeddings", user: "bob", model: "mock-embed", status: 200, tokens: 6,
			body: `{"model":"mock-embed","input":"a b c d e f"}`},
		// carol's one request is admitted on its estimate (prompt and max_tokens) and leaves
		// her too little for another: any replica that has her usage refuses the next
		chat(r1, "carol", "mock-chat", "carol asks one long question", tokenLimit-15, false),
		// an upstream nobody listens on: 502 and an upstream error, no tokens
		{replica: r2, path: "/v1/chat/completions", user: "dave", model: "dead-model", status: 502,
			body: `{"model":"dead-model","messages":[{"role":"user","content":"anyone there"}]}`},
		{replica: r2, path: "/v1/chat/completions", user: "dave", model: "dead-model", status: 502,
			body: `{"model":"dead-model","messages":[{"role":"user","content":"anyone there"}]}`},
	}
	wantTokens := map[string]int{}
	total := 0
	for _, tr := range plan {
		status, body, _ := tr.send(t)
		if status != tr.status {
			t.Fatalf("%s %s via %s: got status %d, want %d: %s", tr.user, tr.path, tr.replica.name, status, tr.status, body)
		}
		if status == 200 && !tr.stream {
			if got := usageTotal(body); got != tr.tokens {
				t.Fatalf("%s %s: got usage.total_tokens %d, want %d (mockllm's contract)", tr.user, tr.path, got, tr.tokens)
			}
		}
		if tr.stream && !bytes.Contains(body, []byte("data: [DONE]")) {
			t.Fatalf("%s stream via %s: no [DONE] in %q", tr.user, tr.replica.name, body)
		}
		wantTokens[tr.user] += tr.tokens
		total += tr.tokens
	}

	// carol never used r3, yet r3 refuses her once gossip has brought her usage over.
	eventually(t, 15*time.Second, "r3 to see carol's usage", func() error {
		var u struct {
			Limits []struct {
				Name string `json:"name"`
				Used int    `json:"used"`
			} `json:"limits"`
		}
		if err := getJSON("http://"+r3.metrics+"/usage?user=carol", &u); err != nil {
			return err
		}
		for _, l := range u.Limits {
			if l.Name == "tokens-hour" && l.Used >= wantTokens["carol"] {
				return nil
			}
		}
		return fmt.Errorf("r3 /usage?user=carol: got %+v, want tokens-hour used >= %d", u.Limits, wantTokens["carol"])
	}, r3.proc)
	for _, r := range []*replica{r3, r2} {
		status, body, h := chat(r, "carol", "mock-chat", "one more please", 5, false).send(t)
		if status != http.StatusTooManyRequests || h.Get("Retry-After") == "" || !bytes.Contains(body, []byte("rate_limit_exceeded")) {
			t.Fatalf("carol via %s: got %d (Retry-After %q) %s, want 429 rate_limit_exceeded with Retry-After",
				r.name, status, h.Get("Retry-After"), body)
		}
	}

	// A hostile gossip packet: a memberlist user message whose payload is garbage. It must be
	// dropped and counted, and the replica must keep running.
	conn, err := net.Dial("udp", r2.gossip)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte{8, 0xff, 0x00, 0x13, 0x37, 'j', 'u', 'n', 'k'})
	_ = conn.Close()

	// --- what Prometheus sees --------------------------------------------------------------
	eventually(t, 30*time.Second, "prometheus to scrape the traffic", func() error {
		got, err := scalarOf(prom, `sum(tokens_total{job="genai-gateway"})`)
		if err != nil {
			return err
		}
		if got != float64(total) {
			return fmt.Errorf("sum(tokens_total): got %v, want %d", got, total)
		}
		dropped, err := scalarOf(prom, `sum(genai_gateway_gossip_dropped_messages_total{job="genai-gateway"})`)
		if err != nil {
			return err
		}
		if dropped < 1 {
			return fmt.Errorf("sum(genai_gateway_gossip_dropped_messages_total): got %v, want >= 1 after a garbage packet", dropped)
		}
		return nil
	}, r1.proc, r2.proc, r3.proc)

	t.Run("tokens add up", func(t *testing.T) {
		s, err := query(prom, `sum by (user) (tokens_by_user_by_model_total{job="genai-gateway"})`)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, x := range s {
			if v := int(x.value()); v != 0 {
				got[x.Metric["user"]] = v
			}
		}
		for user, want := range wantTokens {
			if want != 0 && got[user] != want {
				t.Errorf("tokens of %s: got %d, want %d (all: %v)", user, got[user], want, got)
			}
		}
		for _, e := range []string{
			`sum(prompt_tokens_total{job="genai-gateway"}) + sum(completion_tokens_total{job="genai-gateway"})`,
			`sum(tokens_by_model_total{job="genai-gateway"})`,
			`sum(tokens_by_user_by_model_total{job="genai-gateway"})`,
		} {
			if v, err := scalarOf(prom, e); err != nil || v != float64(total) {
				t.Errorf("%s: got %v (err %v), want %d", e, v, err, total)
			}
		}
		// Spend is priced at $0.001 a token (startCluster's prices): tokens / 1000 per user.
		s, err = query(prom, `sum by (user) (genai_gateway_cost_usd_total{job="genai-gateway"})`)
		if err != nil {
			t.Fatal(err)
		}
		spent := map[string]float64{}
		for _, x := range s {
			spent[x.Metric["user"]] = x.value()
		}
		for user, tokens := range wantTokens {
			if want := float64(tokens) / 1000; math.Abs(spent[user]-want) > 1e-9 {
				t.Errorf("spend of %s: got $%v, want $%v (all: %v)", user, spent[user], want, spent)
			}
		}
		// The replicas' own /metrics say the same.
		sum := 0.0
		for _, r := range c.replicas {
			b, err := getBody("http://" + r.metrics + "/metrics")
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "tokens_total "); ok {
					f, _ := strconv.ParseFloat(strings.TrimSpace(v), 64)
					sum += f
				}
			}
		}
		if sum != float64(total) {
			t.Errorf("tokens_total summed over the replicas' /metrics: got %v, want %d", sum, total)
		}
	})

	// Every metric that a dashboard panel or a rule reads is exported by some replica.
	exported := map[string]bool{}
	for _, r := range c.replicas {
		b, err := getBody("http://" + r.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for n := range metricNamesOf(b) {
			exported[n] = true
		}
	}
	d := loadDashboard(t)
	queries := dashboardQueries(t, d)
	rules, annotationLabels := ruleExprs(t)
	t.Run("every metric read is exported", func(t *testing.T) {
		check := func(where, expr string) {
			for _, n := range metricNames(expr) {
				if !prometheusBuiltins[n] && !exported[n] {
					t.Errorf("%s reads %s, which no replica's /metrics exports", where, n)
				}
			}
		}
		for _, q := range queries {
			check(q.where, q.expr)
		}
		for name, e := range rules {
			check("rule "+name, e)
		}
	})

	// hasLabels reports the first of labels that no series of s carries.
	hasLabels := func(s []sample, labels []string) error {
		for _, l := range labels {
			if l == "le" {
				continue
			}
			if !slices.ContainsFunc(s, func(x sample) bool { _, ok := x.Metric[l]; return ok }) {
				return fmt.Errorf("no series has label %q: %v", l, s)
			}
		}
		return nil
	}

	t.Run("dashboard queries return data", func(t *testing.T) {
		pending := slices.Clone(queries)
		deadline := time.Now().Add(20 * time.Second)
		for {
			var failed []dashboardQuery
			var reasons []string
			for _, q := range pending {
				s, err := query(prom, q.expr)
				if errors.Is(err, errQuery) {
					t.Errorf("%s: %v", q.where, err)
					continue
				}
				if err == nil && len(s) == 0 {
					err = errors.New("empty result")
				}
				if err == nil {
					err = hasLabels(s, append(groupingLabels(q.expr), q.legend...))
				}
				if err != nil {
					failed = append(failed, q)
					reasons = append(reasons, fmt.Sprintf("%s: %s: %v", q.where, q.expr, err))
				}
			}
			if len(failed) == 0 {
				return
			}
			if time.Now().After(deadline) {
				for _, r := range reasons {
					t.Error(r)
				}
				return
			}
			pending = failed
			time.Sleep(500 * time.Millisecond)
		}
	})

	t.Run("alert rules evaluate and their operands return data", func(t *testing.T) {
		for name, e := range rules {
			if _, err := query(prom, e); err != nil {
				t.Errorf("rule %s: %v", name, err)
			}
			ops := operands(e)
			if len(ops) == 0 {
				t.Errorf("rule %s: no operand in %q", name, e)
			}
			for i, op := range ops {
				var labels []string
				if i == 0 {
					labels = annotationLabels[name]
				}
				eventually(t, 20*time.Second, fmt.Sprintf("rule %s operand %q", name, op), func() error {
					s, err := query(prom, op)
					if errors.Is(err, errQuery) {
						t.Fatalf("rule %s: %v", name, err)
					}
					if err == nil && len(s) == 0 {
						err = errors.New("empty result: the alert could never fire")
					}
					if err == nil {
						err = hasLabels(s, append(groupingLabels(op), labels...))
					}
					return err
				})
			}
		}
		// Prometheus itself evaluates every rule without error.
		eventually(t, 20*time.Second, "every rule evaluated by prometheus", func() error {
			var r struct {
				Data struct {
					Groups []struct {
						Rules []struct {
							Name      string `json:"name"`
							Health    string `json:"health"`
							LastError string `json:"lastError"`
						} `json:"rules"`
					} `json:"groups"`
				} `json:"data"`
			}
			if err := getJSON(prom+"/api/v1/rules", &r); err != nil {
				return err
			}
			n := 0
			for _, g := range r.Data.Groups {
				for _, rule := range g.Rules {
					n++
					if rule.Health == "err" {
						t.Fatalf("rule %s: prometheus reports %s", rule.Name, rule.LastError)
					}
					if rule.Health != "ok" {
						return fmt.Errorf("rule %s: health %q", rule.Name, rule.Health)
					}
				}
			}
			if n != len(rules) {
				return fmt.Errorf("prometheus has %d rules loaded, want %d", n, len(rules))
			}
			return nil
		})
	})

	t.Run("image healthcheck and probe paths", func(t *testing.T) {
		hc := parseDockerfile(t).healthcheck
		u := healthcheckURL(t, hc)
		i := slices.Index(hc, u.String())
		run := func(target string) error {
			args := slices.Clone(hc[1:])
			args[i-1] = strings.Replace(u.String(), u.Host, target, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, gateway, args...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%w: %s", err, out)
			}
			return nil
		}
		if err := run(r1.proxy); err != nil {
			t.Errorf("HEALTHCHECK against a serving replica: %v", err)
		}
		if err := run(fmt.Sprintf("127.0.0.1:%d", freePort(t))); err == nil {
			t.Error("HEALTHCHECK against a closed port: got exit 0, want failure")
		}
		c := k.gatewayContainer(t)
		for _, probe := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
			p := fmt.Sprint(asMap(asMap(c[probe])["httpGet"])["path"])
			if _, err := getBody("http://" + r1.proxy + p); err != nil {
				t.Errorf("%s %s: %v", probe, p, err)
			}
		}
	})

	t.Run("preStop command", func(t *testing.T) {
		select {
		case err := <-preStop:
			if err != nil {
				t.Errorf("preStop %q: %v", pre, err)
			}
			wait, _ := strconv.Atoi(pre[2])
			if took := time.Since(preStopStart); took < time.Duration(wait)*time.Second-100*time.Millisecond {
				t.Errorf("preStop %q: returned after %s, want a pause of %ss", pre, took, pre[2])
			}
		case <-time.After(20 * time.Second):
			t.Errorf("preStop %q: still running after 20s", pre)
		}
	})
}

// TestDemoScript runs deploy/demo.sh non-interactively with the test's binaries: it must make
// two keys with keygen, show alice's key refused with 429 by a replica it never used (also when
// it names another user), bob's key served, an unknown key and no key refused with 401, and stop
// everything it started.
func TestDemoScript(t *testing.T) {
	gateway, _ := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "demo.sh")
	cmd.Env = append(os.Environ(), "GENAI_GATEWAY_BIN_DIR="+filepath.Dir(gateway), "DEMO_WAIT=0", "TMPDIR="+t.TempDir())
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/demo.sh: %v\n%s", err, out)
	}
	for _, want := range []string{
		"making two gateway API keys with genai-gateway keygen",
		"alice   -> :8081  200", "alice   -> :8083  429", "bob     -> :8083  200",
		"unknown -> :8083  401", "no key  -> :8083  401",
		"refused by a replica she never used", "got 401, and nothing reached the upstream",
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output: want %q in it:\n%s", want, out)
		}
	}
	// Everything it started is gone: its ports are free again.
	for _, p := range []int{8000, 8081, 8082, 8083, 9091, 9092, 9093, 7947, 7948, 7949} {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			t.Errorf("port %d still in use after the demo: %v", p, err)
			continue
		}
		_ = ln.Close()
	}
}
