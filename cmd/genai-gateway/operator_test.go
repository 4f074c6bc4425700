package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
	"github.com/genai-gateway/genai-gateway/config"
)

// openFDs is the number of file descriptors this process holds.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestOperatorPortIdleConnectionsCapped (issue #7, finding 11): idle
// connections to the operator port cannot exhaust the replica's file
// descriptors: past operatorMaxConns they wait in the kernel's backlog,
// unaccepted, and the proxy port keeps serving.
func TestOperatorPortIdleConnectionsCapped(t *testing.T) {
	if _, err := os.Stat("/proc/self/fd"); err != nil {
		t.Skip("needs /proc/self/fd to count descriptors")
	}
	upstream := httptest.NewServer(mock.NewHandler(mock.Options{}))
	t.Cleanup(upstream.Close)
	cfg := config.Default()
	cfg.Listen, cfg.MetricsListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.DrainTimeout = 5 * time.Second
	cfg.Upstreams = []config.Upstream{{Name: "mock", URL: upstream.URL, Timeout: 10 * time.Second}}
	app := startApp(t, cfg)

	before := openFDs(t)
	const idle = 3 * operatorMaxConns
	conns := make([]net.Conn, 0, idle)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range idle {
		c, err := net.Dial("tcp", app.MetricsAddr())
		if err != nil {
			t.Fatalf("dial operator port: %v", err)
		}
		conns = append(conns, c)
	}
	// Let the server accept all it will.
	time.Sleep(200 * time.Millisecond)
	accepted := openFDs(t) - before - idle // the server's side of each accepted connection
	if accepted > operatorMaxConns+4 {
		t.Errorf("the operator port accepted %d of %d idle connections, want at most %d", accepted, idle, operatorMaxConns)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + app.ProxyAddr() + "/healthz")
	if err != nil {
		t.Fatalf("proxy port with the operator port saturated: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("proxy /healthz: %d", resp.StatusCode)
	}
}
