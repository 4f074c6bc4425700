package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Hostile clients (issue #7): one request must never crash, leak or
// outgrow a replica, and no spelling of a request may get around the
// limits. Upstream-side findings are in upstream_test.go.

// gatewayAddr is the host:port of e's proxy port.
func gatewayAddr(e *env) string { return strings.TrimPrefix(e.srv.URL, "http://") }

// rawExchange writes raw bytes to the gateway on a new connection and reads
// one response, bounded in time, then waits for the gateway to finish the
// request.
func rawExchange(t *testing.T, e *env, raw string) (*http.Response, []byte) {
	t.Helper()
	c, err := net.Dial("tcp", gatewayAddr(e))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	e.idle(t)
	return resp, body
}

// rawPost is a POST of body to target (sent verbatim) with extra header
// lines ("Name: value").
func rawPost(target, body string, headers ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: %d\r\n", target, len(body))
	for _, h := range headers {
		b.WriteString(h + "\r\n")
	}
	b.WriteString("Connection: close\r\n\r\n")
	b.WriteString(body)
	return b.String()
}

// wantAPIError checks an OpenAI error answer: status and code (nil: JSON
// null).
func wantAPIError(t *testing.T, resp *http.Response, body []byte, status int, code any) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status: got %d, want %d (body %.300s)", resp.StatusCode, status, body)
	}
	if _, _, got := apiErrorBody(t, body); got != code {
		t.Errorf("code: got %v, want %v", got, code)
	}
}

// waitFor polls cond every 5ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const chatHi = `{"model":"gpt-4o","messages":[{"role":"user","content":"say hi"}]}`

// nested is a chat body nested depth levels deep in all ({} is 1).
func nested(depth int) string {
	return `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"x":` +
		strings.Repeat("[", depth-1) + strings.Repeat("]", depth-1) + `}`
}

// TestHardeningDeepJSON (finding 1): 10 MiB of brackets get a 400, the
// process survives, memory comes back, and the next request is served;
// 128 levels are forwarded, 129 refused.
func TestHardeningDeepJSON(t *testing.T) {
	up := newFakeLLM(t)
	e := newEnv(t, upstreams(up), nil)
	for _, tt := range []struct{ name, unit string }{
		{"brackets", "["},
		{"objects", `{"a":`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			n := (DefaultMaxBodyBytes - 1) / len(tt.unit)
			body := strings.Repeat(tt.unit, n)
			before := heapInuse()
			resp, b := e.post(t, routeChat, body)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status: got %d, want 400 (body %.300s)", resp.StatusCode, b)
			}
			if _, _, code := apiErrorBody(t, b); code != "json_too_deep" && code != nil {
				t.Errorf("code: got %v, want json_too_deep (or null: invalid JSON)", code)
			}
			after := heapInuse()
			runtime.KeepAlive(body)
			if grew := int64(after) - int64(before); grew > 64<<20 {
				t.Errorf("heap in use grew by %d MiB after a deep request, want < 64 MiB", grew>>20)
			}
			if resp, b := e.post(t, routeChat, chatHi); resp.StatusCode != http.StatusOK {
				t.Errorf("next request: got %d %s, want 200", resp.StatusCode, b)
			}
		})
	}
	if up.hits.Load() != 2 {
		t.Errorf("upstream hits: got %d, want 2 (only the normal requests)", up.hits.Load())
	}

	t.Run("limit", func(t *testing.T) {
		hits := up.hits.Load()
		resp, b := e.post(t, routeChat, nested(maxJSONDepth))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("depth %d: got %d %s, want 200", maxJSONDepth, resp.StatusCode, b)
		}
		if got := up.hits.Load() - hits; got != 1 {
			t.Errorf("depth %d: upstream hits got %d, want 1", maxJSONDepth, got)
		}
		resp, b = e.post(t, routeChat, nested(maxJSONDepth+1))
		wantAPIError(t, resp, b, http.StatusBadRequest, "json_too_deep")
		if got := up.hits.Load() - hits; got != 1 {
			t.Errorf("depth %d reached the upstream", maxJSONDepth+1)
		}
	})
}

// TestHardeningDuplicateKeys (medium finding 7): a body that repeats a
// key (at the top or in any nested object), in any spelling, is refused and
// never forwarded.
func TestHardeningDuplicateKeys(t *testing.T) {
	up := newFakeLLM(t)
	e := newEnv(t, upstreams(up), nil)
	for _, body := range []string{
		`{"model":"a","model":"b","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"gpt-4o","mod\u0065l":"x","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"messages":[{"role":"user","content":"a much longer prompt"}]}`,
		`{"model":"gpt-4o","stream":false,"stream":true,"messages":[{"role":"user","content":"hi"}]}`,
		// Nested: the estimate would read the short content, the upstream the long one.
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi","content":"` + strings.Repeat("word ", 5000) + `"}]}`,
		// The gateway would see include_usage true and not ask; the upstream false and not send it.
		`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true,"include_usage":false},"messages":[{"role":"user","content":"hi"}]}`,
	} {
		resp, b := e.post(t, routeChat, body)
		wantAPIError(t, resp, b, http.StatusBadRequest, "duplicate_key")
	}
	if got := up.hits.Load(); got != 0 {
		t.Errorf("upstream hits: got %d, want 0", got)
	}
}

// TestHardeningLongModel: a megabyte of model name is refused with a 400
// that does not quote it, before it is routed, logged whole or sent on.
func TestHardeningLongModel(t *testing.T) {
	up := newFakeLLM(t)
	e := newEnv(t, upstreams(up), nil)
	model := strings.Repeat("m", 1<<20)
	resp, b := e.post(t, routeChat, `{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`)
	wantAPIError(t, resp, b, http.StatusBadRequest, "invalid_model")
	if len(b) > 1024 {
		t.Errorf("error body of %d bytes, want the name left out", len(b))
	}
	if got := up.hits.Load(); got != 0 {
		t.Errorf("upstream hits: got %d, want 0", got)
	}
	if n := len(e.logs.String()); n > 4096 {
		t.Errorf("access log of %d bytes for one refused request, want the name left out", n)
	}
}

// TestHardeningUserHeader (findings 5 and medium 8): user values with an
// invalid UTF-8 byte or a NUL are served, metered and logged; values are
// capped at 256 bytes.
func TestHardeningUserHeader(t *testing.T) {
	for _, tt := range []struct {
		name, user string
		// mayRefuse: a byte RFC 9110 forbids in a field value; a clean 400
		// from the header parser, before any metering, is as good as
		// serving it.
		mayRefuse bool
	}{
		{"invalid UTF-8", "al\xffice", false},
		{"NUL", "al\x00ice", true},
		{"lone continuation byte", "\x80", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeLLM(t)
			e := newEnv(t, upstreams(up), nil)
			resp, b := rawExchange(t, e, rawPost(routeChat, chatHi, "user: "+tt.user))
			if tt.mayRefuse && resp.StatusCode == http.StatusBadRequest {
				apiErrorBody(t, b)
				if got := up.hits.Load(); got != 0 {
					t.Errorf("refused request reached the upstream (%d hits)", got)
				}
				if resp, b := e.post(t, routeChat, chatHi, "user", "next"); resp.StatusCode != http.StatusOK {
					t.Errorf("next request: got %d %s, want 200", resp.StatusCode, b)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want 200 (body %.300s)", resp.StatusCode, b)
			}
			if !bytes.Contains(b, []byte("w16")) {
				t.Errorf("client did not get the whole answer: %s", b)
			}
			if got := testutil.ToFloat64(e.p.m.promptTotal); got <= 0 {
				t.Errorf("prompt_tokens_total: got %v, want > 0", got)
			}
			if got := testutil.ToFloat64(e.p.m.completionTotal); got != 16 {
				t.Errorf("completion_tokens_total: got %v, want 16", got)
			}
			if _, err := e.reg.Gather(); err != nil {
				t.Errorf("gather: %v", err)
			}
			if n := testutil.CollectAndCount(e.p.m.promptByUserModel); n != 1 {
				t.Errorf("prompt_tokens_by_user_by_model series: got %d, want 1", n)
			}
			if logs := e.logs.String(); !strings.Contains(logs, `"status":200`) || !strings.Contains(logs, `"message":"request"`) {
				t.Errorf("no access log line for the request; log:\n%s", logs)
			}
		})
	}

	t.Run("length", func(t *testing.T) {
		up := newFakeLLM(t)
		e := newEnv(t, upstreams(up), nil)
		resp, b := e.post(t, routeChat, chatHi, "user", strings.Repeat("u", MaxUserBytes+1))
		wantAPIError(t, resp, b, http.StatusBadRequest, "invalid_user")
		if got := up.hits.Load(); got != 0 {
			t.Errorf("upstream hits after a %d-byte user: got %d, want 0", MaxUserBytes+1, got)
		}
		resp, b = e.post(t, routeChat, chatHi, "user", strings.Repeat("u", MaxUserBytes))
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%d-byte user: got %d %s, want 200", MaxUserBytes, resp.StatusCode, b)
		}
	})
}

// TestHardeningUsageClamped (medium finding 9): an upstream that reports
// absurd usage cannot wrap a counter, panic a collector or lock its user
// out for longer than the clamp allows; the client still gets its answer.
func TestHardeningUsageClamped(t *testing.T) {
	for _, tt := range []struct {
		name, figure string
		stream       bool
	}{
		{"max int64", "9223372036854775807", false},
		{"1e30", "1e30", false},
		{"max int64 streamed", "9223372036854775807", true},
		{"1e30 streamed", "1e30", true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			answer := `{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],` +
				`"usage":{"prompt_tokens":` + tt.figure + `,"completion_tokens":1,"total_tokens":` + tt.figure + `}}`
			up := newFakeLLM(t)
			up.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if !tt.stream {
					w.Header().Set("Content-Type", "application/json")
					io.WriteString(w, answer)
					return
				}
				s := newSSEWriter(w)
				s.raw(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"hi"},"finish_reason":null}]}` + "\n\n")
				s.raw(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}` + "\n\n")
				s.raw(`data: {"id":"c","object":"chat.completion.chunk","created":1,"model":"gpt-4o","choices":[],"usage":{"prompt_tokens":` + tt.figure + `,"completion_tokens":1,"total_tokens":` + tt.figure + "}}\n\n")
				s.raw("data: [DONE]\n\n")
			})
			store := newMapStore()
			const limit = 2 * maxUsageTokens // room for one clamped response, not two
			e := newEnv(t, upstreams(up), newRealLimiter(t, store, limit, 0))
			body := chatHi
			if tt.stream {
				body = `{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"say hi"}]}`
			}
			for i := 1; i <= 2; i++ {
				resp, b := e.post(t, routeChat, body, "user", "mallory")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: got %d %s, want 200 (a clamped figure locks out no one)", i, resp.StatusCode, b)
				}
				if !tt.stream && string(b) != answer {
					t.Errorf("request %d: client body changed:\ngot  %s\nwant %s", i, b, answer)
				}
				if tt.stream && (!bytes.Contains(b, []byte(`"content":"hi"`)) || !bytes.Contains(b, []byte("[DONE]"))) {
					t.Errorf("request %d: client did not get the stream: %s", i, b)
				}
				prompt := testutil.ToFloat64(e.p.m.promptTotal)
				if prompt <= 0 || prompt > float64(i)*maxUsageTokens {
					t.Errorf("request %d: prompt_tokens_total got %v, want in (0, %d]", i, prompt, i*maxUsageTokens)
				}
				if got := testutil.ToFloat64(e.p.m.usageClamps.WithLabelValues("up0")); got != float64(i) {
					t.Errorf("request %d: usage_clamped_total{upstream=up0} got %v, want %d", i, got, i)
				}
				if used := store.total("tokens", "mallory"); used <= 0 || used > int64(i)*(maxUsageTokens+1) {
					t.Errorf("request %d: tokens charged got %d, want in (0, %d]", i, used, int64(i)*(maxUsageTokens+1))
				}
				if _, err := e.reg.Gather(); err != nil {
					t.Errorf("gather: %v", err)
				}
			}
			if !strings.Contains(e.logs.String(), "clamped") {
				t.Errorf("the clamp was not logged")
			}
		})
	}
}

// TestHardeningPaths (medium finding 12, SPEC "No way around the
// limits"): every spelling of a metered route is metered and limited like
// it; a path that cannot be cleaned safely gets 400 and is never forwarded.
func TestHardeningPaths(t *testing.T) {
	for _, target := range []string{
		"/v1/chat/completions/",
		"/v1//chat/completions",
		"/v1/./chat/completions",
		"/v1/x/../chat/completions",
		"//v1/chat/completions",
		"/v1/chat/completions/.",
		"/v1/chat/%63ompletions", // encoded unreserved characters are decoded
		"/%76%31/chat/completion%73",
	} {
		t.Run("metered "+target, func(t *testing.T) {
			up := newFakeLLM(t)
			lim := &fakeLimiter{}
			e := newEnv(t, upstreams(up), lim)
			resp, b := rawExchange(t, e, rawPost(target, chatHi, "user: ann"))
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("status: got %d, want 200 (body %.300s)", resp.StatusCode, b)
			}
			if got := up.last(t).path; got != routeChat {
				t.Errorf("upstream path: got %q, want %q", got, routeChat)
			}
			if calls := limiterCalls(lim); calls != 1 {
				t.Errorf("limiter calls: got %d, want 1", calls)
			}
			if got := testutil.ToFloat64(e.p.m.promptTotal); got <= 0 {
				t.Errorf("prompt_tokens_total: got %v, want > 0", got)
			}
			if got := testutil.ToFloat64(e.p.m.requests.WithLabelValues(routeChat, "gpt-4o", "up0", "200")); got != 1 {
				t.Errorf("requests_total{route=%s}: got %v, want 1", routeChat, got)
			}
		})
	}
	for _, tt := range []struct{ method, target string }{
		{"POST", "/v1/%2e%2e/x"},
		{"POST", "/v1/%2E%2E/chat/completions"},
		{"POST", "/v1/chat/completions;x"},
		{"POST", "/v1/a%00b"},
		{"POST", "/v1/a%2fb"},
		{"POST", "/v1/chat%2Fcompletions"},
		{"POST", `/v1\chat\completions`},
		{"GET", "/v1/%2e%2e/admin"},
		{"GET", "/v1/models;x"},
	} {
		t.Run("refused "+tt.method+" "+tt.target, func(t *testing.T) {
			up := newFakeLLM(t)
			lim := &fakeLimiter{}
			e := newEnv(t, upstreams(up), lim)
			raw := rawPost(tt.target, chatHi, "user: ann")
			if tt.method == "GET" {
				raw = "GET " + tt.target + " HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n"
			}
			resp, b := rawExchange(t, e, raw)
			if resp.StatusCode != http.StatusBadRequest {
				t.Fatalf("status: got %d, want 400 (body %.300s)", resp.StatusCode, b)
			}
			apiErrorBody(t, b)
			if got := up.hits.Load(); got != 0 {
				t.Errorf("upstream hits: got %d, want 0", got)
			}
			if calls := limiterCalls(lim); calls != 0 {
				t.Errorf("limiter calls: got %d, want 0", calls)
			}
		})
	}
}

func limiterCalls(l *fakeLimiter) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.calls
}

// stalledUpload opens a connection and sends a request head declaring
// declared body bytes followed by only sent of them, then stalls.
func stalledUpload(t *testing.T, e *env, declared, sent int) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", gatewayAddr(e))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", routeChat, declared)
	body := `{"model":"gpt-4o","messages":[{"role":"user","content":"` + strings.Repeat("a", max(sent, 64))
	if _, err := io.WriteString(c, head+body[:sent]); err != nil {
		t.Fatalf("write: %v", err)
	}
	return c
}

// readStatus reads the response on a stalled upload: its status, or 0 when
// the gateway closed the connection without one.
func readStatus(t *testing.T, c net.Conn, within time.Duration) int {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(within))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("no answer and no close within %v", within)
		}
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// postNow posts without waiting for the gateway to be idle (other requests
// are in flight on purpose).
func postNow(t *testing.T, e *env, body string) (*http.Response, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, e.srv.URL+routeChat, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.client.Do(req)
	if err != nil {
		t.Fatalf("post: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return resp, b
}

// TestHardeningSlowBodies (finding 3): a body that stalls is cut off at
// BodyReadTimeout; stalled bodies together cannot hold more than
// MaxInflightBodyBytes (past it: 503 with Retry-After, until they time
// out); and no buffer is sized by what a client declares.
func TestHardeningSlowBodies(t *testing.T) {
	t.Run("read timeout", func(t *testing.T) {
		for _, sent := range []int{1, 9 << 10} {
			t.Run(fmt.Sprintf("%d bytes sent", sent), func(t *testing.T) {
				up := newFakeLLM(t)
				cfg := upstreams(up)
				cfg.BodyReadTimeout = 300 * time.Millisecond
				e := newEnv(t, cfg, nil)
				start := time.Now()
				c := stalledUpload(t, e, 1_000_000, sent)
				status := readStatus(t, c, 3*time.Second)
				d := time.Since(start)
				if status != http.StatusRequestTimeout && status != 0 {
					t.Errorf("status: got %d, want 408 or the connection closed", status)
				}
				if d > 1200*time.Millisecond {
					t.Errorf("answer after %v, want about the 300ms BodyReadTimeout", d)
				}
				if up.hits.Load() != 0 {
					t.Errorf("a partial body reached the upstream")
				}
				e.idle(t)
			})
		}
	})

	t.Run("in-flight budget", func(t *testing.T) {
		up := newFakeLLM(t)
		cfg := upstreams(up)
		cfg.BodyReadTimeout = time.Second
		cfg.MaxBodyBytes = 32 << 10
		cfg.MaxInflightBodyBytes = 64 << 10
		e := newEnv(t, cfg, nil)
		var stalled []net.Conn
		for range 4 {
			// Past fasthttp's 8 KiB pre-read, so the handler holds a buffer.
			stalled = append(stalled, stalledUpload(t, e, 30_000, 9<<10))
		}
		waitFor(t, 2*time.Second, "stalled bodies to hold the budget", func() bool {
			return e.p.bodies.used.Load() >= cfg.MaxInflightBodyBytes
		})
		resp, b := postNow(t, e, chatHi)
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("status with the budget held: got %d %s, want 503", resp.StatusCode, b)
		}
		apiErrorBody(t, b)
		if resp.Header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
		for i, c := range stalled {
			if st := readStatus(t, c, 3*time.Second); st != http.StatusRequestTimeout && st != 0 {
				t.Errorf("stalled upload %d: got %d, want 408 or closed", i, st)
			}
		}
		waitFor(t, 2*time.Second, "the budget to be released", func() bool { return e.p.bodies.used.Load() == 0 })
		e.idle(t)
		if resp, b := e.post(t, routeChat, chatHi); resp.StatusCode != http.StatusOK {
			t.Errorf("after the stalled uploads timed out: got %d %s, want 200", resp.StatusCode, b)
		}
	})

	t.Run("declared length", func(t *testing.T) {
		for _, sent := range []int{1, 9 << 10} {
			t.Run(fmt.Sprintf("%d bytes sent", sent), func(t *testing.T) {
				up := newFakeLLM(t)
				cfg := upstreams(up)
				cfg.BodyReadTimeout = 10 * time.Second
				e := newEnv(t, cfg, nil)
				const heads = 50
				before := heapInuse()
				var conns []net.Conn
				for range heads {
					conns = append(conns, stalledUpload(t, e, DefaultMaxBodyBytes, sent))
				}
				waitFor(t, 2*time.Second, "the gateway to read every head", func() bool {
					if sent > 8<<10 {
						return e.p.bodies.used.Load() >= heads*initialBodyBuf
					}
					return e.srv.srv.GetOpenConnectionsCount() >= heads
				})
				after := heapInuse()
				if grew := int64(after) - int64(before); grew > 32<<20 {
					t.Errorf("%d heads declaring %d bytes grew the heap by %d MiB, want < 32 MiB", heads, DefaultMaxBodyBytes, grew>>20)
				}
				for _, c := range conns {
					c.Close()
				}
				e.idle(t)
			})
		}
	})
}

// FuzzCleanPath: cleanPath never panics, and a path it accepts is clean:
// absolute, without empty, `.` or `..` segments or a trailing slash, and a
// fixed point of cleanPath.
func FuzzCleanPath(f *testing.F) {
	for _, s := range []string{
		"/v1/chat/completions", "/v1/chat/completions/", "/v1//chat/completions", "/v1/./chat/completions",
		"/v1/x/../chat/completions", "/v1/%2e%2e/x", "/v1/chat/completions;x", "/v1/a%00b", "/v1/a%2fb",
		"/", "//", "/..", "/../..", "/v1/models?x=/../y", "", "v1/chat", "/v1/%", "/v1/%zz", "/a/b/../../../c",
		"/v1/\xff", "/v1/a%20b", "/.", "/./", "/v1/..%2f", "/v1/chat/%63ompletions", "/%76%31//chat/completions/",
		"/v1/%7e%2D%5f%41%7A",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, target []byte) {
		clean, query, ok := cleanPath(target)
		if !ok {
			return
		}
		if clean == "" || clean[0] != '/' {
			t.Fatalf("cleanPath(%q) = %q: not absolute", target, clean)
		}
		if clean != "/" && strings.HasSuffix(clean, "/") {
			t.Fatalf("cleanPath(%q) = %q: trailing slash", target, clean)
		}
		for _, bad := range []string{"//", "/./", "/../"} {
			if strings.Contains(clean, bad) {
				t.Fatalf("cleanPath(%q) = %q: contains %q", target, clean, bad)
			}
		}
		if strings.HasSuffix(clean, "/.") || strings.HasSuffix(clean, "/..") {
			t.Fatalf("cleanPath(%q) = %q: ends in a dot segment", target, clean)
		}
		if strings.ContainsAny(clean, "?#;\\\x00") {
			t.Fatalf("cleanPath(%q) = %q: holds a byte it must refuse", target, clean)
		}
		for i := 0; i+2 < len(clean); i++ {
			if v := unhex(clean[i+1])<<4 | unhex(clean[i+2]); clean[i] == '%' && unreserved(v) {
				t.Fatalf("cleanPath(%q) = %q: %q left encoded", target, clean, v)
			}
		}
		if i := bytes.IndexByte(target, '?'); i >= 0 && !bytes.Equal(query, target[i+1:]) {
			t.Fatalf("cleanPath(%q): query %q, want %q", target, query, target[i+1:])
		}
		again, q2, ok2 := cleanPath([]byte(clean))
		if !ok2 || again != clean || len(q2) != 0 {
			t.Fatalf("cleanPath(%q) = %q, but cleanPath(%q) = %q, %v", target, clean, clean, again, ok2)
		}
	})
}

// TestHardeningUnparsableRequestLogged: a request fasthttp refuses before
// any handler runs (a NUL in a header, a header block over the bound) gets
// its error in OpenAI's shape and an access log line with its status, and
// the line quotes none of the request's bytes, a credential included.
func TestHardeningUnparsableRequestLogged(t *testing.T) {
	const secret = "sk-unparsable-0123456789"
	for _, tt := range []struct {
		name     string
		raw      string
		status   int
		ownLines bool // fasthttp logs it too
	}{
		{"NUL in a header", "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + secret + "\x00x\r\nContent-Length: 2\r\n\r\n{}", 400, true},
		{"header block too large", "GET /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer " + secret + "\r\nX-Pad: " + strings.Repeat("a", maxRequestHeader) + "\r\n\r\n", 431, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			up := newFakeLLM(t)
			e := newEnv(t, upstreams(up), nil)
			resp, body := rawExchange(t, e, tt.raw)
			if resp.StatusCode != tt.status || !strings.Contains(string(body), `"type":"`+typeInvalidRequest+`"`) {
				t.Fatalf("got %d %s, want %d with an OpenAI error", resp.StatusCode, body, tt.status)
			}
			if up.hits.Load() != 0 {
				t.Errorf("the upstream got %d requests", up.hits.Load())
			}
			// Wait for the request's line and fasthttp's own (written once
			// the connection is done), so that both are checked.
			var lines []map[string]any
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				if lines = logLines(t, e); len(lines) > 0 && (!tt.ownLines || strings.Contains(e.logs.String(), `"component":"http"`)) {
					break
				}
			}
			if tt.ownLines && !strings.Contains(e.logs.String(), "error when serving connection") {
				t.Errorf("fasthttp's own line is missing: %s", e.logs.String())
			}
			if len(lines) != 1 || lines[0]["status"] != float64(tt.status) || lines[0]["error"] == nil {
				t.Fatalf("log: %v, want one line with status %d and an error", lines, tt.status)
			}
			if strings.Contains(e.logs.String(), secret) || strings.Contains(e.logs.String(), "aaaa") {
				t.Errorf("the log quotes the request: %s", e.logs.String())
			}
		})
	}
}

// TestHardeningEscapedKeys: a key spelled with JSON escapes is the same key
// to the upstream, so admission must read it too: an escaped max_tokens of
// 500 is refused by a 100-token limit as larger than the limit, exactly
// like the plain one, instead of reserving nothing and running.
func TestHardeningEscapedKeys(t *testing.T) {
	up := newFakeLLM(t)
	for _, key := range []string{`max_tokens`, `max_tok\u0065ns`, `max_completion_tok\u0065ns`, `\u006dax_output_tokens`} {
		t.Run(key, func(t *testing.T) {
			store := newMapStore()
			e := newEnv(t, upstreams(up), newRealLimiter(t, store, 100, 0))
			before := up.hits.Load()
			resp, b := e.post(t, routeChat, `{"model":"gpt-4o","`+key+`":500,"messages":[{"role":"user","content":"hi"}]}`, "user", "mallory")
			e.idle(t)
			if resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("x-should-retry") != "false" {
				t.Errorf("status %d, x-should-retry %q (body %.200s): want 429, false", resp.StatusCode, resp.Header.Get("x-should-retry"), b)
			}
			if up.hits.Load() != before {
				t.Errorf("the upstream ran it")
			}
		})
	}
}
