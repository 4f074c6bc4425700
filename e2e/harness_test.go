// Package e2e starts the real binaries (genai-gateway, mockllm) as processes and talks
// to them over HTTP with the official OpenAI Go client, as users and operators do.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "genai-gateway-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	cmd := exec.Command("go", "build", "-race", "-o", dir+string(os.PathSeparator), "../cmd/genai-gateway", "../cmd/mockllm")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build binaries:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort returns a TCP port that was free a moment ago on 127.0.0.1.
// handedOut holds every port freePort returned in this test binary.
var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

func freePort(t *testing.T) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		// The kernel may hand the same free port out twice in a row; a
		// port is given to one process of this test binary only.
		handedOutMu.Lock()
		taken := handedOut[port]
		handedOut[port] = true
		handedOutMu.Unlock()
		if taken {
			continue
		}
		// Gossip needs the UDP port too.
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			continue
		}
		pc.Close()
		return port
	}
	t.Fatal("no free port")
	return 0
}

// process is a started binary whose output is kept for failure reports.
type process struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs a binary from binDir; it is killed in t.Cleanup if still running.
func start(t *testing.T, name string, args ...string) *process {
	t.Helper()
	p := &process{t: t, name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.Env = append(os.Environ(), "GORACE=halt_on_error=1")
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("--- output of %s %v:\n%s", name, args, p.out.String())
		}
		if strings.Contains(p.out.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race:\n%s", name, p.out.String())
		}
	})
	return p
}

// kill sends SIGKILL and waits for the process.
func (p *process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

// stop sends SIGTERM and returns the exit code, failing the test past the deadline.
func (p *process) stop(timeout time.Duration) int {
	p.t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %v after SIGTERM", p.name, timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// waitHTTP polls url until it answers want, or fails the test.
func waitHTTP(t *testing.T, url string, want int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == want {
				return
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: got %s, want %d within %v", url, last, want, timeout)
}

// eventually polls cond until it is true, or fails the test with msg.
func eventually(t *testing.T, timeout time.Duration, cond func() bool, msg string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("not within %v: "+msg, append([]any{timeout}, args...)...)
}

// startMock runs mockllm and returns its base URL.
func startMock(t *testing.T, args ...string) string {
	t.Helper()
	port := freePort(t)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	start(t, "mockllm", append([]string{"--addr", addr}, args...)...)
	base := "http://" + addr
	waitHTTP(t, base+"/v1/models", http.StatusOK, 20*time.Second)
	return base
}

// replica is one running genai-gateway process.
type replica struct {
	*process
	name       string
	proxy      string // base URL of the proxy port
	ops        string // base URL of the operator port
	gossipAddr string
	configPath string
}

// replicaSpec describes a replica's config; YAML is appended after the generated keys.
type replicaSpec struct {
	name     string
	upstream string
	// upstreams, when set, is the YAML of the upstreams key, in place of
	// one upstream "mock" at upstream.
	upstreams string
	extra     string   // more YAML (rate_limit, ...)
	join      []string // gossip addresses; nil with cluster = first node
	cluster   bool
	ports     [3]int // proxy, operator, gossip; zero = pick free ones
}

// startReplica writes a config file and starts genai-gateway with it.
func startReplica(t *testing.T, s replicaSpec) *replica {
	t.Helper()
	for i := range s.ports {
		if s.ports[i] == 0 {
			s.ports[i] = freePort(t)
		}
	}
	r := &replica{
		name:       s.name,
		proxy:      fmt.Sprintf("http://127.0.0.1:%d", s.ports[0]),
		ops:        fmt.Sprintf("http://127.0.0.1:%d", s.ports[1]),
		gossipAddr: fmt.Sprintf("127.0.0.1:%d", s.ports[2]),
	}
	var b strings.Builder
	fmt.Fprintf(&b, "listen: 127.0.0.1:%d\nmetrics_listen: 127.0.0.1:%d\n", s.ports[0], s.ports[1])
	fmt.Fprintf(&b, "log: {level: info, format: json}\ndrain_timeout: 10s\n")
	if s.upstreams != "" {
		b.WriteString(s.upstreams)
	} else {
		fmt.Fprintf(&b, "upstreams:\n  - name: mock\n    url: %s\n    timeout: 30s\n", s.upstream)
	}
	if s.cluster {
		join, _ := json.Marshal(s.join)
		if s.join == nil {
			join = []byte("[]")
		}
		// Gossip is encrypted, as in production: a base64 key of 32 bytes.
		fmt.Fprintf(&b, "cluster:\n  enabled: true\n  node_name: %s\n  bind: %s\n  join: %s\n  gossip_interval: 100ms\n  secret_key: %s\n",
			s.name, r.gossipAddr, join, "ZTJlLWdvc3NpcC1rZXktMDEyMzQ1Njc4OWFiY2RlZjA=")
	}
	b.WriteString(s.extra)
	r.configPath = filepath.Join(t.TempDir(), s.name+".yaml")
	if err := os.WriteFile(r.configPath, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	r.process = start(t, "genai-gateway", "--config", r.configPath)
	waitHTTP(t, r.ops+"/metrics", http.StatusOK, 30*time.Second)
	return r
}

// metricValue reads one sample of a metric family from a replica's /metrics, by exact
// label set rendered as Prometheus prints it (e.g. `{model="gpt-4o"}`), or "" for none.
func metricValue(t *testing.T, opsURL, name, labels string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(opsURL + "/metrics")
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	prefix := name + labels + " "
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, prefix) {
			var v float64
			if _, err := fmt.Sscanf(strings.TrimPrefix(line, prefix), "%g", &v); err != nil {
				t.Fatalf("parse %q: %v", line, err)
			}
			return v, true
		}
	}
	return 0, false
}

// getJSON decodes a JSON GET response into v and returns the status.
func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: decode: %v", url, err)
	}
	return resp.StatusCode
}
