package mock

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fixedNow is the clock of test servers.
func fixedNow() time.Time { return time.Unix(1700000000, 0) }

// newServer starts the mock with opts on a test server closed at cleanup.
func newServer(t testing.TB, opts Options) *httptest.Server {
	t.Helper()
	if opts.Now == nil {
		opts.Now = fixedNow
	}
	srv := httptest.NewServer(NewHandler(opts))
	t.Cleanup(srv.Close)
	return srv
}

// reply is a complete HTTP response.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request to srv and reads the whole response.
func do(t testing.TB, srv *httptest.Server, method, path, body string) reply {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatalf("new request: %v", err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body of %s %s: %v", method, path, err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

// post sends a JSON body and fails the test unless the status is 200.
func post(t testing.TB, srv *httptest.Server, path, body string) reply {
	t.Helper()
	r := do(t, srv, http.MethodPost, path, body)
	if r.status != http.StatusOK {
		t.Fatalf("POST %s %s: got status %d, want 200; body %s", path, body, r.status, r.body)
	}
	return r
}

// usage is the union of the usage objects of every endpoint.
type usage struct {
	PromptTokens     *int64 `json:"prompt_tokens"`
	CompletionTokens *int64 `json:"completion_tokens"`
	TotalTokens      *int64 `json:"total_tokens"`
	InputTokens      *int64 `json:"input_tokens"`
	OutputTokens     *int64 `json:"output_tokens"`
}

// figures returns prompt, completion and total, whichever names were used;
// a missing completion counts as 0.
func (u *usage) figures() (prompt, completion, total int64) {
	get := func(p *int64) int64 {
		if p == nil {
			return 0
		}
		return *p
	}
	if u.InputTokens != nil {
		return get(u.InputTokens), get(u.OutputTokens), get(u.TotalTokens)
	}
	return get(u.PromptTokens), get(u.CompletionTokens), get(u.TotalTokens)
}

// event is one Server-Sent Event.
type event struct {
	name string // the "event:" field, "" when absent
	data string
}

// parseSSE splits an event stream into events, failing on anything that is
// not a "data:" or "event:" line or a blank separator.
func parseSSE(t testing.TB, body []byte) []event {
	t.Helper()
	var evs []event
	var cur event
	var open bool
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 0, 64<<10), 16<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if !open {
				t.Fatalf("blank line without an event before it in %q", body)
			}
			evs = append(evs, cur)
			cur, open = event{}, false
		case strings.HasPrefix(line, "data: "):
			if cur.data != "" {
				t.Fatalf("event with two data lines in %q", body)
			}
			cur.data, open = strings.TrimPrefix(line, "data: "), true
		case strings.HasPrefix(line, "event: "):
			cur.name, open = strings.TrimPrefix(line, "event: "), true
		default:
			t.Fatalf("unexpected SSE line %q", line)
		}
	}
	if open {
		t.Fatalf("stream ends inside an event: %q", body)
	}
	return evs
}

// mustJSON decodes s into v, failing on errors and on unknown layouts.
func mustJSON(t testing.TB, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("decode %s: %v", s, err)
	}
}
