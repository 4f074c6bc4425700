package deploy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// repoRoot is the module root: the deploy tests run in deploy/.
const repoRoot = ".."

// built holds the gateway binaries, compiled once per test process by binaries.
var built struct {
	once sync.Once
	dir  string
	err  error
}

// binaries compiles cmd/genai-gateway and cmd/mockllm (the real commands, not test doubles)
// once per test process and returns the paths of the two binaries.
func binaries(t *testing.T) (gateway, mockllm string) {
	t.Helper()
	built.once.Do(func() {
		dir, err := os.MkdirTemp("", "genai-gateway-deploy-test-")
		if err != nil {
			built.err = err
			return
		}
		built.dir = dir
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
			"./cmd/genai-gateway", "./cmd/mockllm")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			built.err = fmt.Errorf("go build ./cmd/genai-gateway ./cmd/mockllm: %w\n%s", err, out)
		}
	})
	if built.err != nil {
		t.Fatal(built.err)
	}
	return filepath.Join(built.dir, "genai-gateway"), filepath.Join(built.dir, "mockllm")
}

// readFile returns a file under deploy/ (or, with "../", the repository).
func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return b
}

// yamlDocs decodes every document of a (multi-document) YAML stream.
func yamlDocs(b []byte) ([]map[string]any, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var docs []map[string]any
	for {
		var doc map[string]any
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(docs)+1, err)
		}
		if doc != nil {
			docs = append(docs, doc)
		}
	}
}

// yamlFile decodes a single-document YAML file under deploy/ into v.
func yamlFile(t *testing.T, path string, v any) {
	t.Helper()
	if err := yaml.Unmarshal(readFile(t, path), v); err != nil {
		t.Fatalf("parse %s: %v", path, err)
	}
}

// gatewayConfig is the part of the gateway's YAML that the deployment files must agree with.
type gatewayConfig struct {
	Listen        string `yaml:"listen"`
	MetricsListen string `yaml:"metrics_listen"`
	DrainTimeout  string `yaml:"drain_timeout"`
	Upstreams     []struct {
		Name string `yaml:"name"`
		URL  string `yaml:"url"`
	} `yaml:"upstreams"`
	RateLimit struct {
		Enabled    bool   `yaml:"enabled"`
		UserHeader string `yaml:"user_header"`
	} `yaml:"rate_limit"`
	Cluster struct {
		Enabled  bool     `yaml:"enabled"`
		NodeName string   `yaml:"node_name"`
		Bind     string   `yaml:"bind"`
		Join     []string `yaml:"join"`
	} `yaml:"cluster"`
}

func parseGatewayConfig(t *testing.T, name string, b []byte) gatewayConfig {
	t.Helper()
	var c gatewayConfig
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatalf("parse gateway config %s: %v", name, err)
	}
	return c
}

func (c gatewayConfig) drain(t *testing.T) time.Duration {
	t.Helper()
	if c.DrainTimeout == "" {
		return 30 * time.Second // the built-in default
	}
	d, err := time.ParseDuration(c.DrainTimeout)
	if err != nil {
		t.Fatalf("drain_timeout %q: %v", c.DrainTimeout, err)
	}
	return d
}

// port returns the port of a "host:port" address as a number.
func port(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatalf("address %q: port is not a number", addr)
	}
	return n
}

// checkConfig runs `genai-gateway check-config --config FILE` with exactly the given environment
// and returns its exit code and output.
func checkConfig(t *testing.T, gateway, file string, env map[string]string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, gateway, "check-config", "--config", file)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, string(out)
	case errors.As(err, &exit):
		return exit.ExitCode(), string(out)
	default:
		t.Fatalf("run check-config: %v", err)
		return -1, ""
	}
}

// handedOut holds every port freePort returned in this test binary: the
// kernel may hand the same free port out twice in a row.
var (
	handedOutMu sync.Mutex
	handedOut   = map[int]bool{}
)

// firstHandOut reports whether port was never returned before, and marks it.
func firstHandOut(port int) bool {
	handedOutMu.Lock()
	defer handedOutMu.Unlock()
	if handedOut[port] {
		return false
	}
	handedOut[port] = true
	return true
}

// freePort returns a port on 127.0.0.1 that was free for both TCP and UDP (gossip uses
// both), never the same one twice in a test binary.
func freePort(t *testing.T) int {
	t.Helper()
	for range 50 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("listen: %v", err)
		}
		p := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		_ = ln.Close()
		if err != nil || !firstHandOut(p) {
			continue
		}
		_ = pc.Close()
		return p
	}
	t.Fatal("no free TCP+UDP port on 127.0.0.1")
	return 0
}

// process is a command started by startProcess; it is stopped in t.Cleanup.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid after done is closed
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startProcess starts bin with args and exactly env (plus PATH), logging to a file in dir. At
// cleanup it sends SIGTERM, waits up to 10 s, then kills; when the test failed, the log tail is
// printed.
func startProcess(t *testing.T, dir, name, bin string, env []string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir}, env...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		_ = f.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				t.Logf("%s did not stop within 10s of SIGTERM; killing it", name)
				_ = cmd.Process.Kill()
				<-p.done
			}
		}
		if t.Failed() {
			t.Logf("--- last lines of %s (%s) ---\n%s", name, logPath, tail(logPath, 30))
		}
	})
	return p
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// eventually polls cond every 200 ms until it returns nil or the deadline passes, then fails
// with the last error. Processes that exited early fail it at once.
func eventually(t *testing.T, within time.Duration, what string, cond func() error, procs ...*process) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		for _, p := range procs {
			if p.exited() {
				t.Fatalf("waiting for %s: %s exited (%v); log:\n%s", what, p.name, p.err, tail(p.log, 30))
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: still not true after %s: %v", what, within, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpClient is used for every request of the tests; its idle connections are closed at the end.
var httpClient = &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{}}

// getBody fetches url and returns the body of a 200 answer.
func getBody(url string) ([]byte, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return b, fmt.Errorf("GET %s: status %d: %s", url, resp.StatusCode, bytes.TrimSpace(b))
	}
	return b, nil
}

// getJSON fetches url and decodes the JSON of a 200 answer into v.
func getJSON(url string, v any) error {
	b, err := getBody(url)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("GET %s: %w: %s", url, err, b)
	}
	return nil
}
