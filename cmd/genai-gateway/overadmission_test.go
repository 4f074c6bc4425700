package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
	"github.com/genai-gateway/genai-gateway/config"
)

// BenchmarkOverAdmission measures how far a cluster of three replicas overshoots a limit
// when one user sends as fast as it can through all three at once: admitted / limit,
// for a token limit and a request limit, gossip_interval 100ms (the default).
//
//	go test -run='^$' -bench=OverAdmission -benchtime=5x ./cmd/genai-gateway/
func BenchmarkOverAdmission(b *testing.B) {
	upstream := httptest.NewServer(mock.NewHandler(mock.Options{}))
	b.Cleanup(upstream.Close)
	const tokenLimit, requestLimit = 3000, 300
	apps := startBenchCluster(b, 3, upstream.URL, []config.Limit{
		{Name: "tokens", Metric: "total_tokens", Limit: tokenLimit, Window: time.Hour, Models: []string{"tok-*"}},
		{Name: "requests", Metric: "requests", Limit: requestLimit, Window: time.Hour, Models: []string{"req-*"}},
	})
	// run floods the cluster until every replica refuses, and returns what the upstream served
	// for the user: tokens (4 prompt + 5 completion each) and requests.
	run := func(user, model string) (tokens, requests int64) {
		ok := flood(b, apps, user, model)
		return ok * 9, ok
	}

	var tokRatio, reqRatio, tokMax, reqMax float64
	n := 0
	for b.Loop() {
		tokens, _ := run(fmt.Sprintf("tok-user-%d", n), "tok-model")
		_, requests := run(fmt.Sprintf("req-user-%d", n), "req-model")
		tr, rr := float64(tokens)/tokenLimit, float64(requests)/requestLimit
		tokRatio += tr
		reqRatio += rr
		tokMax, reqMax = max(tokMax, tr), max(reqMax, rr)
		n++
	}
	b.ReportMetric(tokRatio/float64(n), "tokens-admitted/limit")
	b.ReportMetric(tokMax, "tokens-max-admitted/limit")
	b.ReportMetric(reqRatio/float64(n), "requests-admitted/limit")
	b.ReportMetric(reqMax, "requests-max-admitted/limit")
}

// startBenchCluster starts n in-process replicas joined in a cluster with the given limits.
func startBenchCluster(tb testing.TB, n int, upstream string, limits []config.Limit) []*App {
	tb.Helper()
	gossip := make([]string, n)
	for i := range gossip {
		gossip[i] = freeAddr(tb)
	}
	apps := make([]*App, n)
	for i := range apps {
		cfg := config.Default()
		cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
		cfg.Log.Level = "error"
		cfg.DrainTimeout = 5 * time.Second
		cfg.Upstreams = []config.Upstream{{Name: "mock", URL: upstream, Timeout: 10 * time.Second}}
		cfg.RateLimit.Enabled = true
		cfg.RateLimit.Limits = limits
		cfg.Cluster.Enabled = true
		cfg.Cluster.NodeName = fmt.Sprintf("node%d", i)
		cfg.Cluster.Bind = gossip[i]
		cfg.Cluster.Join = append(append([]string{}, gossip[:i]...), gossip[i+1:]...)
		cfg.Cluster.Insecure = true // plaintext gossip on loopback: figures comparable with earlier runs
		apps[i] = startApp(tb, cfg)
	}
	for _, a := range apps {
		waitReady(tb, a)
	}
	// Every replica must see the others alive before the escrow share is meaningful.
	deadline := time.Now().Add(20 * time.Second)
	for _, a := range apps {
		for a.node.LiveReplicas() < n {
			if time.Now().After(deadline) {
				tb.Fatalf("cluster did not form: %d live", a.node.LiveReplicas())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return apps
}

func waitReady(tb testing.TB, a *App) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + a.ProxyAddr() + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("replica %s not ready", a.ProxyAddr())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
