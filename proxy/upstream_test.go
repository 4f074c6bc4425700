package proxy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Hostile and broken upstreams (issue #7, findings 2 and 12): the
// gateway's upstream client must never hand one caller's answer to the
// next, never send a POST twice, never read unbounded response heads, and
// turn every broken exchange into a clean 502.

// rawUpstream is an upstream that speaks HTTP/1.1 by hand on a loopback
// listener, for upstreams that need exact bytes on the wire. handle runs
// once per accepted connection, on its own goroutine; the connection is
// closed when handle returns and at cleanup, which waits for every handler.
type rawUpstream struct {
	URL      string
	ln       net.Listener
	accepted atomic.Int64
	requests atomic.Int64 // requests read by readRequest, all connections
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func newRawUpstream(t testing.TB, handle func(u *rawUpstream, c net.Conn, br *bufio.Reader)) *rawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{URL: "http://" + ln.Addr().String(), ln: ln, conns: map[net.Conn]struct{}{}}
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.accepted.Add(1)
			u.mu.Lock()
			u.conns[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				defer func() {
					c.Close()
					u.mu.Lock()
					delete(u.conns, c)
					u.mu.Unlock()
				}()
				handle(u, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		for c := range u.conns {
			c.Close()
		}
		u.mu.Unlock()
		u.wg.Wait()
	})
	return u
}

// readRequest reads one request and its whole body from br, counting it.
func (u *rawUpstream) readRequest(br *bufio.Reader) (*http.Request, []byte, error) {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, nil, err
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, nil, err
	}
	u.requests.Add(1)
	return req, body, nil
}

// rawEnv is a gateway in front of a raw upstream.
func rawEnv(t testing.TB, u *rawUpstream) *env {
	t.Helper()
	return newEnv(t, Config{Upstreams: []Upstream{{Name: "up0", URL: u.URL, Timeout: time.Minute}}}, nil)
}

// chatAnswer is a complete HTTP/1.1 response with Content-Length whose
// assistant message is content.
func chatAnswer(content string) []byte {
	body := fmt.Sprintf(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",`+
		`"choices":[{"index":0,"message":{"role":"assistant","content":%q},"finish_reason":"stop"}],`+
		`"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}`, content)
	return []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
}

// injected is a complete second response nobody asked for.
var injected = injectedSize(0)

// injectedSize is injected with its body padded by pad bytes.
func injectedSize(pad int) []byte {
	body := `{"id":"INJECTED","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"INJECTED` +
		strings.Repeat(" ", pad) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}`
	return []byte(fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
}

// promptOf is the first message's content of a chat request body.
func promptOf(body []byte) string {
	var req struct {
		Messages []struct{ Content string } `json:"messages"`
	}
	if json.Unmarshal(body, &req) != nil || len(req.Messages) == 0 {
		return ""
	}
	return req.Messages[0].Content
}

func chatFor(who string) string {
	return `{"model":"gpt-4o","messages":[{"role":"user","content":"` + who + `"}]}`
}

// TestHardeningUpstreamNoLeakAcrossRequests: an upstream that sends a
// complete extra response after its answer to the first request (at once,
// or 50ms later while the connection idles in the pool) must never have
// that response, or any answer, delivered to a later caller.
func TestHardeningUpstreamNoLeakAcrossRequests(t *testing.T) {
	for _, tt := range []struct {
		name    string
		delayed bool
		extra   []byte
	}{
		{"appended", false, injected},
		// Larger than the client's read buffer: part of it is still in the
		// socket when the connection goes back to the pool.
		{"appended 64KiB", false, injectedSize(64 << 10)},
		{"after 50ms", true, injected},
	} {
		delayed := tt.delayed
		t.Run(tt.name, func(t *testing.T) {
			var first atomic.Bool
			sent := make(chan struct{}) // closed once the injected bytes are written
			u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
				for {
					_, body, err := u.readRequest(br)
					if err != nil {
						return
					}
					out := chatAnswer("answer to " + promptOf(body))
					if !first.CompareAndSwap(false, true) {
						if _, err := c.Write(out); err != nil {
							return
						}
						continue
					}
					if !delayed {
						_, err = c.Write(append(out, tt.extra...))
						close(sent)
						if err != nil {
							return
						}
						continue
					}
					if _, err := c.Write(out); err != nil {
						close(sent)
						return
					}
					time.Sleep(50 * time.Millisecond) // the upstream's own pause, not a wait in the test
					_, err = c.Write(tt.extra)
					close(sent)
					if err != nil {
						return
					}
				}
			})
			e := rawEnv(t, u)
			users := []string{"alice", "bob", "carol", "dave"}
			wantOwnAnswers(t, e, users, sent)
			if got, want := u.requests.Load(), int64(len(users)); got != want {
				t.Errorf("requests the upstream read: got %d, want %d", got, want)
			}
		})
	}
}

// wantOwnAnswers sends a chat for each user in turn, each expecting its own
// answer ("answer to USER") and not the response the upstream injected
// (INJECTED) after the first, once sent says it was written.
func wantOwnAnswers(t *testing.T, e *env, users []string, sent <-chan struct{}) {
	t.Helper()
	for i, who := range users {
		resp, body := e.post(t, routeChat, chatFor(who), "user", who)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status: got %d, want 200 (body %s)", who, resp.StatusCode, body)
		}
		if bytes.Contains(body, []byte("INJECTED")) {
			t.Errorf("%s got the injected response: %s", who, body)
		}
		if want := "answer to " + who; !bytes.Contains(body, []byte(want)) {
			t.Errorf("%s: got body %s, want the answer %q", who, body, want)
		}
		if i == 0 {
			select {
			case <-sent:
			case <-time.After(5 * time.Second):
				t.Fatal("the upstream never wrote the injected response")
			}
		}
	}
}

// TestHardeningUpstreamPostNotReplayed: a POST the upstream read and then
// dropped without an answer is never sent again (it may have run); the
// client gets 502. A pooled connection the upstream closed while idle is
// replaced without the caller noticing, and the request reaches the
// upstream once.
func TestHardeningUpstreamPostNotReplayed(t *testing.T) {
	t.Run("read then closed", func(t *testing.T) {
		u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
			for {
				_, body, err := u.readRequest(br)
				if err != nil {
					return
				}
				if promptOf(body) == "drop me" {
					time.Sleep(300 * time.Millisecond) // works, then dies
					return
				}
				if _, err := c.Write(chatAnswer("ok")); err != nil {
					return
				}
			}
		})
		e := rawEnv(t, u)
		// Warm the pool: the dropped request goes out on a reused connection,
		// the case an HTTP client is most tempted to retry.
		if resp, body := e.post(t, routeChat, chatFor("warm up")); resp.StatusCode != http.StatusOK {
			t.Fatalf("warm-up: status %d, body %s", resp.StatusCode, body)
		}
		start := time.Now()
		resp, body := e.post(t, routeChat, chatFor("drop me"))
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("status: got %d, want 502 (body %s)", resp.StatusCode, body)
		} else {
			apiErrorBody(t, body)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("502 took %v, want about the upstream's 300ms", d)
		}
		if got := u.requests.Load(); got != 2 {
			t.Errorf("requests the upstream read: got %d, want 2 (warm-up + the dropped POST once)", got)
		}
	})

	t.Run("idle connection closed", func(t *testing.T) {
		var reqs atomic.Int64
		closed := make(chan struct{}, 1)
		u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
			_, body, err := u.readRequest(br)
			if err != nil {
				return
			}
			n := reqs.Add(1)
			c.Write(chatAnswer("answer to " + promptOf(body)))
			if n == 1 {
				// A keep-alive timeout: close without Connection: close once
				// the answer is out.
				c.Close()
				closed <- struct{}{}
				return
			}
			// Later connections serve until closed.
			for {
				_, body, err := u.readRequest(br)
				if err != nil {
					return
				}
				if _, err := c.Write(chatAnswer("answer to " + promptOf(body))); err != nil {
					return
				}
			}
		})
		e := rawEnv(t, u)
		if resp, body := e.post(t, routeChat, chatFor("first")); resp.StatusCode != http.StatusOK {
			t.Fatalf("first: status %d, body %s", resp.StatusCode, body)
		}
		select {
		case <-closed:
		case <-time.After(5 * time.Second):
			t.Fatal("upstream never closed the idle connection")
		}
		resp, body := e.post(t, routeChat, chatFor("second"))
		if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("answer to second")) {
			t.Errorf("second request on a closed pooled connection: got %d %s, want 200 with its answer", resp.StatusCode, body)
		}
		if got := u.requests.Load(); got != 2 {
			t.Errorf("requests the upstream read: got %d, want 2 (each once)", got)
		}
		if got := u.accepted.Load(); got != 2 {
			t.Errorf("connections: got %d, want 2 (the closed one replaced)", got)
		}
	})
}

// heapInuse is the heap in use after two collections.
func heapInuse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestHardeningUpstreamHugeResponseHeader: an upstream whose response head
// never ends (one header of up to 256 MiB) gets 502 at once, and the
// gateway reads no more of it than its head buffer.
func TestHardeningUpstreamHugeResponseHeader(t *testing.T) {
	for _, size := range []int{1 << 20, 256 << 20} {
		t.Run(strconv.Itoa(size>>20)+"MiB", func(t *testing.T) {
			var written atomic.Int64
			u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
				if _, _, err := u.readRequest(br); err != nil {
					return
				}
				if _, err := c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Huge: ")); err != nil {
					return
				}
				chunk := bytes.Repeat([]byte("a"), 64<<10)
				for n := 0; n < size; n += len(chunk) {
					if _, err := c.Write(chunk); err != nil {
						return // the gateway gave up on us
					}
					written.Add(int64(len(chunk)))
				}
				c.Write([]byte("\r\nContent-Length: 2\r\n\r\n{}"))
			})
			e := rawEnv(t, u)
			before := heapInuse()
			start := time.Now()
			resp, body := e.post(t, routeChat, chatFor("hi"))
			d := time.Since(start)
			after := heapInuse()
			if resp.StatusCode != http.StatusBadGateway {
				t.Fatalf("status: got %d, want 502 (body %.200s)", resp.StatusCode, body)
			}
			_, _, code := apiErrorBody(t, body)
			if code != "upstream_unreachable" && code != "upstream_error" {
				t.Errorf("code: got %v, want upstream_unreachable or upstream_error", code)
			}
			if d > 2*time.Second {
				t.Errorf("502 took %v, want well under 2s", d)
			}
			if grew := int64(after) - int64(before); grew > 8<<20 {
				t.Errorf("heap in use grew by %d bytes reading a %d-byte header, want < 8 MiB", grew, size)
			}
			if size >= 256<<20 && written.Load() >= int64(size) {
				t.Errorf("the upstream wrote its whole %d-byte header: the gateway read it all", size)
			}
		})
	}
}

// TestHardeningUpstreamBrokenBody: an upstream that sends its head with
// Content-Length: 100, 10 bytes of body, then closes: the client of a
// non-streaming request gets a 502 with the OpenAI error body, not an
// empty reply, and nothing is charged.
func TestHardeningUpstreamBrokenBody(t *testing.T) {
	u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
		if _, _, err := u.readRequest(br); err != nil {
			return
		}
		c.Write([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"id\":\"x\","))
	})
	store := newMapStore()
	e := newEnv(t, Config{Upstreams: []Upstream{{Name: "up0", URL: u.URL, Timeout: time.Minute}}},
		newRealLimiter(t, store, 1_000_000, 0))
	resp, body := e.post(t, routeChat, chatFor("hi"), "user", "erin")
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status: got %d, want 502 (body %q)", resp.StatusCode, body)
	}
	if _, _, code := apiErrorBody(t, body); code != "upstream_error" {
		t.Errorf("code: got %v, want upstream_error", code)
	}
	if got := testutil.ToFloat64(e.p.m.upstreamErrors.WithLabelValues("up0", reasonBroken)); got != 1 {
		t.Errorf("upstream_errors{broken}: got %v, want 1", got)
	}
	if got := store.total("tokens", "erin"); got != 0 {
		t.Errorf("tokens charged for a failed request: got %d, want 0", got)
	}
}

// TestHardeningUpstreamEndlessContinue: an upstream that answers with an
// endless stream of 100 Continue gets 502 quickly, not a wait for the
// upstream timeout.
func TestHardeningUpstreamEndlessContinue(t *testing.T) {
	u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
		if _, _, err := u.readRequest(br); err != nil {
			return
		}
		cont := bytes.Repeat([]byte("HTTP/1.1 100 Continue\r\n\r\n"), 64)
		deadline := time.Now().Add(30 * time.Second)
		for time.Now().Before(deadline) {
			if _, err := c.Write(cont); err != nil {
				return
			}
		}
	})
	e := rawEnv(t, u)
	start := time.Now()
	resp, body := e.post(t, routeChat, chatFor("hi"))
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("answer took %v, want well under 2s (upstream timeout 1m)", d)
	}
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status: got %d, want 502 (body %q)", resp.StatusCode, body)
	}
	apiErrorBody(t, body)
}
