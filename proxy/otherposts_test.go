package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// pathRecorder is an upstream that answers every path, recording what it
// was sent: images with usage (gpt-image-1 reports it), speech as audio
// bytes, anything else as an empty JSON object.
type pathRecorder struct {
	srv   *httptest.Server
	mu    sync.Mutex
	paths []string
	auth  []string
}

func newPathRecorder(t *testing.T) *pathRecorder {
	r := &pathRecorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.mu.Lock()
		r.paths = append(r.paths, req.URL.Path)
		r.auth = append(r.auth, req.Header.Get("Authorization"))
		r.mu.Unlock()
		switch req.URL.Path {
		case "/v1/images/generations":
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"created":1,"data":[{"b64_json":"aGk="}],"usage":{"total_tokens":60,"input_tokens":10,"output_tokens":50}}`)
		case "/v1/audio/speech":
			w.Header().Set("Content-Type", "audio/mpeg")
			_, _ = w.Write([]byte{0xff, 0xfb, 0x90, 0x00})
		default:
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{}`)
		}
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *pathRecorder) sent() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.paths...)
}

// TestOtherPostsRoutedAndLimited (issue #9, "no way around the limits"):
// every other JSON POST under /v1/ that names a model is routed by it,
// counts against requests limits (no path spends the upstream's key past
// a limit), is metered where its answer reports usage, and needs a key
// when auth is on; one without a model goes to the first upstream.
func TestOtherPostsRoutedAndLimited(t *testing.T) {
	chat, media := newPathRecorder(t), newPathRecorder(t)
	store := newMapStore()
	cfg := Config{Upstreams: []Upstream{
		{Name: "chat", URL: chat.srv.URL, Models: []string{"gpt-4o*"}, APIKey: "sk-chat", Timeout: time.Minute},
		{Name: "media", URL: media.srv.URL, Models: []string{"gpt-image-*", "tts-*"}, APIKey: "sk-media", Timeout: time.Minute},
	}, Auth: testKeys(t)}
	e := newEnv(t, cfg, newRealLimiter(t, store, 1_000_000, 3))
	alice := []string{"Authorization", "Bearer " + keyAlice}

	resp, body := e.post(t, "/v1/images/generations", `{"model":"gpt-image-1","prompt":"a gateway"}`, alice...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("images: %d %s", resp.StatusCode, body)
	}
	if p, c := e.tokens("alice", "gpt-image-1"); p != 10 || c != 50 {
		t.Errorf("images metered %v/%v tokens, want 10/50 from its usage", p, c)
	}
	resp, body = e.post(t, "/v1/audio/speech", `{"model":"tts-1","input":"hi","voice":"alloy"}`, alice...)
	if resp.StatusCode != http.StatusOK || len(body) != 4 {
		t.Fatalf("speech: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got := media.sent(); len(got) != 2 || got[0] != "/v1/images/generations" || got[1] != "/v1/audio/speech" {
		t.Errorf("the media upstream got %v, want both media requests (routed by model)", got)
	}
	if media.auth[0] != "Bearer sk-media" {
		t.Errorf("media upstream credential %q, want its own key", media.auth[0])
	}
	// A path variant is the same route.
	resp, body = e.post(t, "/v1//images/./generations/", `{"model":"gpt-image-1","prompt":"again"}`, alice...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("path variant: %d %s", resp.StatusCode, body)
	}
	// Three requests spent alice's requests limit, whatever their path.
	resp, body = e.post(t, "/v1/moderations", `{"model":"gpt-4o-mini","input":"x"}`, alice...)
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("fourth request on a limit of 3: %d %s, want 429", resp.StatusCode, body)
	}
	if store.total("reqs", "alice") != 3 {
		t.Errorf("requests counted %d, want 3", store.total("reqs", "alice"))
	}
	if n := len(chat.sent()); n != 0 {
		t.Errorf("the chat upstream got %d requests, want 0 (the refused moderation never left)", n)
	}

	// No credential: 401, nothing sent.
	resp, _ = e.post(t, "/v1/images/generations", `{"model":"gpt-image-1","prompt":"free"}`)
	if resp.StatusCode != http.StatusUnauthorized || len(media.sent()) != 3 {
		t.Errorf("no key: %d with %d media requests, want 401 and none sent", resp.StatusCode, len(media.sent()))
	}
	// A model the key may not call: 403.
	resp, _ = e.post(t, "/v1/images/generations", `{"model":"gpt-image-1","prompt":"x"}`, "Authorization", "Bearer "+keyBob)
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob (llama-* only) on gpt-image-1: %d, want 403", resp.StatusCode)
	}
	// A JSON POST without a model: the first upstream, not limited.
	resp, body = e.post(t, "/v1/batches", `{"input_file_id":"file-1","endpoint":"/v1/chat/completions"}`, alice...)
	if resp.StatusCode != http.StatusOK || strings.Join(chat.sent(), ",") != "/v1/batches" {
		t.Errorf("batches: %d %s, chat upstream got %v; want it forwarded to the first upstream", resp.StatusCode, body, chat.sent())
	}
	// Duplicate keys are refused here too.
	resp, _ = e.post(t, "/v1/images/generations", `{"model":"gpt-image-1","model":"dall-e-3"}`, "Authorization", "Bearer "+keyBob)
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("duplicate model: %d, want 400", resp.StatusCode)
	}
}
