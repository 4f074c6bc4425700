package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
)

// countedMock is a mock upstream that counts the requests it serves.
func countedMock(t *testing.T) (string, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	h := mock.NewHandler(mock.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &n
}

// TestReloadUpstreams: a reload swaps the upstreams live: after SIGHUP, a
// Claude model is routed to a new anthropic upstream (chat translated),
// and the old upstream gets no more requests; nothing needs a restart.
func TestReloadUpstreams(t *testing.T) {
	oldURL, oldHits := countedMock(t)
	newURL, newHits := countedMock(t)
	path := filepath.Join(t.TempDir(), "gateway.yaml")
	writeFile(t, path, gatewayYAML(oldURL, 100, ""))
	s := startServing(t, path, false)
	post := func(body string) (int, string) { return s.post(t, body) }
	claude := `{"model":"claude-haiku-4-5","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`
	if code, body := post(claude); code != http.StatusOK || oldHits.Load() != 1 {
		t.Fatalf("before the reload: got %d %s, old upstream hits %d; want 200 from the old upstream", code, body, oldHits.Load())
	}
	next := strings.Replace(gatewayYAML(oldURL, 100, ""), fmt.Sprintf("upstreams: [{name: mock, url: %q, timeout: 10s}]", oldURL),
		fmt.Sprintf("upstreams: [{name: claude, url: %q, provider: anthropic, models: [\"claude-*\"]}, {name: mock, url: %q}]", newURL, oldURL), 1)
	writeFile(t, path, next)
	s.hup <- syscall.SIGHUP
	waitFor(t, "a reload", func() bool { return s.reloads("success") == 1 })
	code, body := post(claude)
	if code != http.StatusOK || newHits.Load() != 1 || oldHits.Load() != 1 {
		t.Fatalf("after the reload: got %d %s, hits old %d new %d; want 200 from the new anthropic upstream", code, body, oldHits.Load(), newHits.Load())
	}
	if !strings.Contains(body, `"object":"chat.completion"`) || !strings.Contains(body, `"content":"w1 w2"`) {
		t.Errorf("translated answer: got %s", body)
	}
	if strings.Contains(s.logs.String(), "need a restart") {
		t.Errorf("log: a reload of upstreams alone named keys needing a restart:\n%s", s.logs.String())
	}
}
