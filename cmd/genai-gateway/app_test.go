package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.uber.org/goleak"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
	"github.com/genai-gateway/genai-gateway/config"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// The process-wide HTTP client keeps idle connections to test servers.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		// fasthttp's housekeeping goroutines sleep out their interval, then exit;
		// its server date ticker lives as long as the process.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		// memberlist's Shutdown does not wait for a probe in flight: it ends
		// on its own once its (health-scaled) probe interval passes, which
		// on a loaded machine can outlast goleak's retries (seen 1 run in 8).
		goleak.IgnoreAnyFunction("github.com/hashicorp/memberlist.(*Memberlist).probeNode"),
	)
}

// handedOut holds every address freeAddr returned.
var (
	handedOutMu sync.Mutex
	handedOut   = map[string]bool{}
)

// freeAddr returns a 127.0.0.1 address whose port was free, never the same
// one twice in this test binary (the kernel may hand a free port out twice
// in a row).
func freeAddr(t testing.TB) string {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		ln.Close()
		handedOutMu.Lock()
		taken := handedOut[addr]
		handedOut[addr] = true
		handedOutMu.Unlock()
		if !taken {
			return addr
		}
	}
	t.Fatal("no free port")
	return ""
}

// startApp builds and starts an App from cfg, shut down in t.Cleanup.
func startApp(t testing.TB, cfg config.Config) *App {
	t.Helper()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	app, err := NewApp(cfg, zerolog.New(io.Discard))
	if err != nil {
		t.Fatalf("NewApp: %v", err)
	}
	if err := app.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if err := app.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return app
}

func post(t *testing.T, url, user, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("user", user)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestTwoAppsShareLimits runs two replicas in one process (no package state), joined
// in a cluster, and checks that a user limited on one is limited on the other.
func TestTwoAppsShareLimits(t *testing.T) {
	upstream := httptest.NewServer(mock.NewHandler(mock.Options{}))
	t.Cleanup(upstream.Close)

	gossip := []string{freeAddr(t), freeAddr(t)}
	apps := make([]*App, 2)
	for i := range apps {
		cfg := config.Default()
		cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
		cfg.DrainTimeout = 5 * time.Second
		cfg.Upstreams = []config.Upstream{{Name: "mock", URL: upstream.URL, Timeout: 10 * time.Second}}
		cfg.RateLimit.Enabled = true
		cfg.RateLimit.Limits = []config.Limit{{Name: "req", Metric: "requests", Limit: 3, Window: time.Hour}}
		cfg.Cluster.Enabled = true
		cfg.Cluster.NodeName = fmt.Sprintf("app%d", i)
		cfg.Cluster.Bind = gossip[i]
		cfg.Cluster.Join = []string{gossip[1-i]}
		cfg.Cluster.GossipInterval = 20 * time.Millisecond
		cfg.Cluster.SecretKey = "YXBwLXRlc3QtZ29zc2lwLWtleS0wMTIzNDU2Nzg5YWI=" // 32 bytes: encrypted gossip
		apps[i] = startApp(t, cfg)
	}
	for _, a := range apps {
		waitReady(t, a)
	}

	body := `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`
	for i := range 3 {
		if code := post(t, "http://"+apps[0].ProxyAddr()+"/v1/chat/completions", "carol", body); code != http.StatusOK {
			t.Fatalf("request %d through app0: got %d, want 200", i+1, code)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		code := post(t, "http://"+apps[1].ProxyAddr()+"/v1/chat/completions", "carol", body)
		if code == http.StatusTooManyRequests {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("app1 for carol after 3 requests on app0: got %d, want 429", code)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := post(t, "http://"+apps[1].ProxyAddr()+"/v1/chat/completions", "dave", body); code != http.StatusOK {
		t.Errorf("dave through app1: got %d, want 200", code)
	}
}

// TestReloadReplacesLimits checks that Reload (SIGHUP) swaps limits in place.
func TestReloadReplacesLimits(t *testing.T) {
	upstream := httptest.NewServer(mock.NewHandler(mock.Options{}))
	t.Cleanup(upstream.Close)
	cfg := config.Default()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Upstreams = []config.Upstream{{Name: "mock", URL: upstream.URL, Timeout: 10 * time.Second}}
	cfg.RateLimit.Enabled = true
	cfg.RateLimit.Limits = []config.Limit{{Name: "req", Metric: "requests", Limit: 1, Window: time.Hour}}
	app := startApp(t, cfg)
	url := "http://" + app.ProxyAddr() + "/v1/chat/completions"
	body := `{"model":"m","messages":[{"role":"user","content":"hi"}]}`
	if code := post(t, url, "erin", body); code != http.StatusOK {
		t.Fatalf("first: got %d, want 200", code)
	}
	if code := post(t, url, "erin", body); code != http.StatusTooManyRequests {
		t.Fatalf("second: got %d, want 429", code)
	}
	next := cfg
	next.RateLimit.Limits = []config.Limit{{Name: "req", Metric: "requests", Limit: 5, Window: time.Hour}}
	if err := app.Reload(next); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if code := post(t, url, "erin", body); code != http.StatusOK {
		t.Fatalf("after raising the limit: got %d, want 200", code)
	}
}
