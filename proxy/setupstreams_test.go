package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestSetUpstreams: new requests go to the new set at once, a stream in
// flight finishes on the upstream it started with, unchanged upstreams
// keep their client, and an invalid set changes nothing.
func TestSetUpstreams(t *testing.T) {
	a, b := newFakeLLM(t, perWord(20*time.Millisecond)), newFakeLLM(t)
	cfg := upstreams(a)
	e := newEnv(t, cfg, nil)
	keep := Upstream{Name: "keep", URL: b.srv.URL, Models: []string{"keep-*"}, Timeout: time.Minute}
	if err := e.p.SetUpstreams([]Upstream{keep, cfg.Upstreams[0]}); err != nil {
		t.Fatal(err)
	}
	kept := e.p.ups()[0]

	// A stream of 10 words on a (200ms), then the set changes under it.
	req, _ := http.NewRequest(http.MethodPost, e.srv.URL+routeChat,
		strings.NewReader(`{"model":"gpt-4o","max_tokens":10,"stream":true,"messages":[{"role":"user","content":"hi"}]}`))
	req.Header.Set("user", "vic")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := e.p.SetUpstreams([]Upstream{keep, {Name: "b", URL: b.srv.URL, Timeout: time.Minute}}); err != nil {
		t.Fatal(err)
	}
	if e.p.ups()[0] != kept {
		t.Error("an unchanged upstream got a new client")
	}
	bBefore := b.hits.Load()
	r2, body := e.post(t, routeChat, `{"model":"gpt-4o","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}`, "user", "vic")
	if r2.StatusCode != http.StatusOK || b.hits.Load() != bBefore+1 {
		t.Fatalf("a new request: got %d %s, b hits %d, want 200 from b", r2.StatusCode, body, b.hits.Load()-bBefore)
	}
	stream, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("the stream in flight broke: %v", err)
	}
	if got := strings.Count(string(stream), `"content":" w`) + strings.Count(string(stream), `"content":"w`); got != 10 || !strings.Contains(string(stream), "[DONE]") {
		t.Errorf("the stream in flight: got %d words, want all 10 and [DONE]:\n%s", got, stream)
	}
	if a.hits.Load() != 1 {
		t.Errorf("old upstream hits: got %d, want the stream's 1", a.hits.Load())
	}

	if err := e.p.SetUpstreams([]Upstream{{Name: "bad", URL: "ftp://x"}}); err == nil {
		t.Error("SetUpstreams with a bad URL: got no error")
	}
	if err := e.p.SetUpstreams(nil); err == nil {
		t.Error("SetUpstreams with no upstream: got no error")
	}
	if got := e.p.ups()[1].Name; got != "b" {
		t.Errorf("after refused sets: upstream %q, want b still", got)
	}
}
