package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

// post sends body to the replica's chat route as user uma and returns the
// status and the answer.
func (s *served) post(t *testing.T, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url, strings.NewReader(body))
	req.Header.Set("user", "uma")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestReloadRouting: routing is reloaded live with the upstreams. A pool
// whose first upstream answers 500: with retries 0 the client gets the
// 500; after SIGHUP with retries 2 it gets the second upstream's answer.
func TestReloadRouting(t *testing.T) {
	var failing atomic.Int64
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		failing.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":{"message":"down","type":"server_error","param":null,"code":null}}`)
	}))
	t.Cleanup(bad.Close)
	goodURL, goodHits := countedMock(t)
	yaml := func(retries int) string {
		return strings.Replace(gatewayYAML(bad.URL, 100, fmt.Sprintf("routing: {retries: %d, cooldown: 1m}\n", retries)),
			fmt.Sprintf("upstreams: [{name: mock, url: %q, timeout: 10s}]", bad.URL),
			fmt.Sprintf("upstreams: [{name: bad, url: %q}, {name: good, url: %q}]", bad.URL, goodURL), 1)
	}
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, yaml(0))
	s := startServing(t, path, false)
	post := func() int { code, _ := s.post(t, chatBody); return code }
	if code := post(); code != http.StatusInternalServerError || goodHits.Load() != 0 {
		t.Fatalf("retries 0: got %d, good upstream hits %d; want the first upstream's 500, no retry", code, goodHits.Load())
	}
	writeFile(t, path, yaml(2))
	s.hup <- syscall.SIGHUP
	waitFor(t, "a reload", func() bool { return s.reloads("success") == 1 })
	if code := post(); code != http.StatusOK || goodHits.Load() != 1 || failing.Load() != 2 {
		t.Fatalf("retries 2: got %d, hits bad %d good %d; want 200 from the second upstream after one 500", code, failing.Load(), goodHits.Load())
	}
	if strings.Contains(s.logs.String(), "need a restart") {
		t.Errorf("log: a reload of routing named keys needing a restart:\n%s", s.logs.String())
	}
}

// TestReloadFallbacks: routing.fallbacks from the file, reloaded live. The
// model m has one upstream, answering 500; without fallbacks the client
// gets the 500, and after SIGHUP with fallbacks {m: [M-Small]} (a model
// name whose case must survive the loader) it gets M-Small's answer,
// charged once to the requests limit.
func TestReloadFallbacks(t *testing.T) {
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		io.WriteString(w, `{"error":{"message":"down","type":"server_error","param":null,"code":null}}`)
	}))
	t.Cleanup(bad.Close)
	goodURL, goodHits := countedMock(t)
	yaml := func(routing string) string {
		return strings.Replace(gatewayYAML(bad.URL, 100, routing),
			fmt.Sprintf("upstreams: [{name: mock, url: %q, timeout: 10s}]", bad.URL),
			fmt.Sprintf("upstreams: [{name: bad, url: %q, models: [m]}, {name: good, url: %q, models: [M-Small]}]", bad.URL, goodURL), 1)
	}
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, yaml("routing: {retries: 0}\n"))
	s := startServing(t, path, false)
	post := func() (int, string) { return s.post(t, chatBody) }
	if code, _ := post(); code != http.StatusInternalServerError || goodHits.Load() != 0 {
		t.Fatalf("no fallbacks: got %d, fallback hits %d; want the upstream's 500", code, goodHits.Load())
	}
	writeFile(t, path, yaml("routing: {retries: 0, fallbacks: {m: [M-Small]}}\n"))
	s.hup <- syscall.SIGHUP
	waitFor(t, "a reload", func() bool { return s.reloads("success") == 1 })
	code, body := post()
	if code != http.StatusOK || goodHits.Load() != 1 || !strings.Contains(body, `"model":"M-Small"`) {
		t.Fatalf("with fallbacks: got %d %s, fallback hits %d; want M-Small's answer", code, body, goodHits.Load())
	}
	used := int64(-1)
	for _, u := range s.app.limiter.Usage("uma") {
		if u.Name == "req" {
			used = u.Used
		}
	}
	if used != 1 {
		t.Errorf("requests charged: got %d, want 1 (the failed request not at all, the fallback once)", used)
	}
}
