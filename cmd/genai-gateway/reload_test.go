package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
)

// lockedBuffer collects log lines written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// served is a replica run by serve, as main runs it, from a config file.
type served struct {
	app  *App
	hup  chan os.Signal
	logs *lockedBuffer
	url  string // the proxy's chat completions URL
}

// startServing starts a replica from the file at path and serves it until
// the test ends; with watch, changes of the file reload it.
func startServing(t *testing.T, path string, watch bool) *served {
	t.Helper()
	src := configSource{path: path}
	res, err := src.read()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	s := &served{hup: make(chan os.Signal, 1), logs: &lockedBuffer{}}
	app, err := NewApp(res.Config, zerolog.New(s.logs))
	if err != nil {
		t.Fatalf("NewApp: %v", err)
	}
	app.SetConfigHash(res.Hash)
	if err := app.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	s.app, s.url = app, "http://"+app.ProxyAddr()+"/v1/chat/completions"
	var changed <-chan struct{}
	unwatch := func() {}
	if watch {
		changed, unwatch = watchFile(src, 20*time.Millisecond, app.log)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- serve(ctx, func() {}, app, src, s.hup, changed) }()
	t.Cleanup(func() {
		cancel()
		if code := <-done; code != exitOK {
			t.Errorf("serve: got exit code %d, want 0", code)
		}
		unwatch()
		if t.Failed() {
			t.Logf("replica log:\n%s", s.logs.String())
		}
	})
	return s
}

// gatewayYAML is a replica's file: the mock upstream and a requests limit
// of n per hour, then extra.
func gatewayYAML(upstream string, n int, extra string) string {
	return fmt.Sprintf(`listen: 127.0.0.1:0
metrics_listen: 127.0.0.1:0
drain_timeout: 5s
upstreams: [{name: mock, url: %q, timeout: 10s}]
rate_limit:
  enabled: true
  limits: [{name: req, metric: requests, limit: %d, window: 1h}]
`, upstream, n) + extra
}

func newMock(t *testing.T) string {
	t.Helper()
	upstream := httptest.NewServer(mock.NewHandler(mock.Options{}))
	t.Cleanup(upstream.Close)
	return upstream.URL
}

const chatBody = `{"model":"m","messages":[{"role":"user","content":"hi"}],"max_tokens":2}`

func (s *served) reloads(result string) float64 {
	return testutil.ToFloat64(s.app.metrics.reloads.WithLabelValues(result))
}

// hash returns the hash label of genai_gateway_config_hash, which must have
// exactly one series.
func (s *served) hash(t *testing.T) string {
	t.Helper()
	if n := testutil.CollectAndCount(s.app.metrics.hash); n != 1 {
		t.Fatalf("genai_gateway_config_hash: got %d series, want 1", n)
	}
	s.app.reloadMu.Lock()
	defer s.app.reloadMu.Unlock()
	if v := testutil.ToFloat64(s.app.metrics.hash.WithLabelValues(s.app.hash)); v != 1 {
		t.Fatalf("genai_gateway_config_hash{hash=%q}: got %v, want 1", s.app.hash, v)
	}
	return s.app.hash
}

// waitFor polls cond until it holds, or fails the test.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 10s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wantCodes posts for user once per code and checks each status.
func (s *served) wantCodes(t *testing.T, user string, codes ...int) {
	t.Helper()
	for i, want := range codes {
		if got := post(t, s.url, user, chatBody); got != want {
			t.Fatalf("%s, request %d: got %d, want %d", user, i+1, got, want)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// renameOver replaces path atomically, as editors and config tools do.
func renameOver(t *testing.T, path, content string) {
	t.Helper()
	writeFile(t, path+".tmp", content)
	if err := os.Rename(path+".tmp", path); err != nil {
		t.Fatal(err)
	}
}

// kubeletVolume lays dir out as the kubelet lays out a ConfigMap volume
// (..TIMESTAMP/config.yaml, ..data -> ..TIMESTAMP, config.yaml ->
// ..data/config.yaml) and returns the file's path.
func kubeletVolume(t *testing.T, dir, content string) string {
	t.Helper()
	if err := os.Symlink(kubeletDir(t, dir, content), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "config.yaml")
	if err := os.Symlink(filepath.Join("..data", "config.yaml"), path); err != nil {
		t.Fatal(err)
	}
	return path
}

func kubeletDir(t *testing.T, dir, content string) string {
	t.Helper()
	ts := ".." + time.Now().Format("2006_01_02_15_04_05.000000000")
	if err := os.Mkdir(filepath.Join(dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, ts, "config.yaml"), content)
	return ts
}

// kubeletSwap updates the volume as the kubelet's AtomicWriter does: a new
// timestamped directory, ..data_tmp pointing to it renamed over ..data,
// the old directory removed.
func kubeletSwap(t *testing.T, dir, content string) {
	t.Helper()
	old, err := os.Readlink(filepath.Join(dir, "..data"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(kubeletDir(t, dir, content), filepath.Join(dir, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
		t.Fatal(err)
	}
}

// TestReloadOnFileChange raises a limit by changing the file three ways;
// the new limit applies without a restart and the hash follows the file.
func TestReloadOnFileChange(t *testing.T) {
	upstream := newMock(t)
	tests := []struct {
		name   string
		setup  func(t *testing.T, content string) string
		change func(t *testing.T, path, content string)
	}{
		{"rewritten in place", func(t *testing.T, c string) string {
			path := filepath.Join(t.TempDir(), "gateway.yaml")
			writeFile(t, path, c)
			return path
		}, writeFile},
		{"renamed over", func(t *testing.T, c string) string {
			path := filepath.Join(t.TempDir(), "gateway.yaml")
			writeFile(t, path, c)
			return path
		}, renameOver},
		{"ConfigMap symlink swap", func(t *testing.T, c string) string {
			return kubeletVolume(t, t.TempDir(), c)
		}, func(t *testing.T, path, c string) { kubeletSwap(t, filepath.Dir(path), c) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := tt.setup(t, gatewayYAML(upstream, 1, ""))
			s := startServing(t, path, true)
			before := s.hash(t)
			s.wantCodes(t, "erin", http.StatusOK, http.StatusTooManyRequests)

			tt.change(t, path, gatewayYAML(upstream, 3, ""))
			waitFor(t, "a successful reload", func() bool { return s.reloads("success") == 1 })
			s.wantCodes(t, "erin", http.StatusOK, http.StatusOK, http.StatusTooManyRequests)
			if after := s.hash(t); after == before {
				t.Errorf("genai_gateway_config_hash: got %q after the change, want a new hash", after)
			}
			if got := s.reloads("failure"); got != 0 {
				t.Errorf("failed reloads: got %v, want 0", got)
			}
		})
	}
}

// TestReloadOnSIGHUP reloads only on the signal when the file is not
// watched, and always, even when the file did not change. User names keep
// their case all the way to the limiter: Alice and alice are two users.
func TestReloadOnSIGHUP(t *testing.T) {
	upstream := newMock(t)
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, gatewayYAML(upstream, 1, ""))
	s := startServing(t, path, false)
	s.wantCodes(t, "Alice", http.StatusOK, http.StatusTooManyRequests)

	writeFile(t, path, gatewayYAML(upstream, 1, "  overrides:\n    Alice: [{name: req, limit: 3}]\n"))
	s.hup <- syscall.SIGHUP
	waitFor(t, "a reload on SIGHUP", func() bool { return s.reloads("success") == 1 })
	s.wantCodes(t, "Alice", http.StatusOK, http.StatusOK, http.StatusTooManyRequests)
	s.wantCodes(t, "alice", http.StatusOK, http.StatusTooManyRequests)

	s.hup <- syscall.SIGHUP
	waitFor(t, "a second reload on SIGHUP, file unchanged", func() bool { return s.reloads("success") == 2 })
}

// TestReloadRefusesInvalidFile keeps the running configuration when the
// new file has problems, logs every one, and takes the next valid file.
func TestReloadRefusesInvalidFile(t *testing.T) {
	upstream := newMock(t)
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, gatewayYAML(upstream, 1, ""))
	s := startServing(t, path, true)
	running := s.hash(t)
	s.wantCodes(t, "erin", http.StatusOK, http.StatusTooManyRequests)

	writeFile(t, path, gatewayYAML(upstream, 5, "  limts: []\nmax_body_bytes: -1\n"))
	waitFor(t, "a refused reload", func() bool { return s.reloads("failure") == 1 })
	s.wantCodes(t, "erin", http.StatusTooManyRequests)
	if got := s.hash(t); got != running {
		t.Errorf("hash after a refused file: got %q, want the running %q", got, running)
	}
	logs := s.logs.String()
	for _, want := range []string{"reload refused", "rate_limit.limts: unknown key", "max_body_bytes: must be > 0"} {
		if !strings.Contains(logs, want) {
			t.Errorf("log: got\n%s\nwant it to contain %q", logs, want)
		}
	}

	// A file written empty or cut down to comments (a failed template, an
	// editor mid-save) would reload as all defaults, limits and auth off:
	// refused, the limit still holds.
	for i, empty := range []string{"", "# moved to the new repo\n", "~\n"} {
		writeFile(t, path, empty)
		waitFor(t, fmt.Sprintf("empty file %q refused", empty), func() bool { return s.reloads("failure") == float64(2+i) })
		s.wantCodes(t, "erin", http.StatusTooManyRequests)
	}
	if !strings.Contains(s.logs.String(), "holds no settings") {
		t.Errorf("log: no word of the empty file:\n%s", s.logs.String())
	}

	writeFile(t, path, gatewayYAML(upstream, 5, ""))
	waitFor(t, "a reload of the fixed file", func() bool { return s.reloads("success") == 1 })
	s.wantCodes(t, "erin", http.StatusOK)
}

// TestReloadLogsWhatNeedsARestart: keys a reload does not apply are named.
func TestReloadLogsWhatNeedsARestart(t *testing.T) {
	upstream := newMock(t)
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, gatewayYAML(upstream, 1, ""))
	s := startServing(t, path, false)
	next := strings.Replace(gatewayYAML(upstream, 2, "  user_header: x-user\n"), "timeout: 10s", "timeout: 20s", 1)
	writeFile(t, path, next+"cluster: {gossip_interval: 1s}\n")
	s.hup <- syscall.SIGHUP
	waitFor(t, "a reload", func() bool { return s.reloads("success") == 1 })
	logs := s.logs.String()
	// upstreams changed too (a timeout), and are applied: not named.
	if !strings.Contains(logs, `"keys":["rate_limit.user_header","cluster.gossip_interval"]`) {
		t.Errorf("log: got\n%s\nwant the keys that need a restart named", logs)
	}
}

// TestReloadUnderLoad swaps two configurations back and forth, by file
// change and SIGHUP, while clients send without pause: no request fails,
// and every response was limited by one whole configuration or the other.
func TestReloadUnderLoad(t *testing.T) {
	upstream := newMock(t)
	const key = "sk-gw-reload-under-load"
	sum := sha256.Sum256([]byte(key))
	keys := "auth:\n  keys:\n    - {name: load, sha256: " + hex.EncodeToString(sum[:]) + "}\n"
	other := sha256.Sum256([]byte("another key"))
	configs := []string{
		gatewayYAML(upstream, 1_000_000, "") + keys,
		gatewayYAML(upstream, 2_000_000, "") + keys + "    - {name: other, sha256: " + hex.EncodeToString(other[:]) + "}\n",
	}
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, configs[0])
	s := startServing(t, path, true)

	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	t.Cleanup(client.CloseIdleConnections)
	var stop atomic.Bool
	var sent, failed atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				req, _ := http.NewRequest(http.MethodPost, s.url, strings.NewReader(chatBody))
				req.Header.Set("Authorization", "Bearer "+key)
				resp, err := client.Do(req)
				if err != nil {
					t.Errorf("request: %v", err)
					failed.Add(1)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				sent.Add(1)
				limit := resp.Header.Get("X-Gateway-Ratelimit-Limit-Requests")
				if resp.StatusCode != http.StatusOK || (limit != "1000000" && limit != "2000000") {
					t.Errorf("got %d with x-gateway-ratelimit-limit-requests %q, want 200 under one whole configuration", resp.StatusCode, limit)
					failed.Add(1)
					return
				}
			}
		}()
	}
	for i := range 10 {
		renameOver(t, path, configs[(i+1)%2])
		want := float64(i + 1)
		if i%3 == 2 {
			s.hup <- syscall.SIGHUP
		}
		waitFor(t, fmt.Sprintf("reload %d", i+1), func() bool { return s.reloads("success") >= want })
	}
	stop.Store(true)
	wg.Wait()
	if sent.Load() < 10 || failed.Load() > 0 {
		t.Errorf("got %d requests sent, %d failed; want many, none failed", sent.Load(), failed.Load())
	}
	if got := s.reloads("failure"); got != 0 {
		t.Errorf("failed reloads: got %v, want 0", got)
	}
}

// TestReloadEmptyFileItStartedOn: a replica may start on a file that holds
// no settings (everything from the environment); file events that leave it
// as it is are no failed reloads, while a file that becomes empty is.
func TestReloadEmptyFileItStartedOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, "# every setting comes from the environment\n")
	src := configSource{path: path, environ: []string{"GENAI_GATEWAY_LISTEN=127.0.0.1:0", "GENAI_GATEWAY_METRICS_LISTEN=127.0.0.1:0"}}
	res, err := src.read()
	if err != nil || !res.Empty {
		t.Fatalf("read: %v, empty %v", err, res.Empty)
	}
	app := startApp(t, res.Config)
	app.SetConfigHash(res.Hash)
	if err := app.ReloadFile(src, false); err != nil {
		t.Errorf("a file event, file unchanged: %v", err)
	}
	if err := app.ReloadFile(src, true); err != nil {
		t.Errorf("SIGHUP, file unchanged: %v", err)
	}
	if got := testutil.ToFloat64(app.metrics.reloads.WithLabelValues("failure")); got != 0 {
		t.Errorf("failed reloads: %v, want 0", got)
	}
	writeFile(t, path, "# moved to the new repository\n")
	if err := app.ReloadFile(src, false); err == nil || !strings.Contains(err.Error(), "holds no settings") {
		t.Errorf("a different empty file: got %v, want it refused", err)
	}
}
