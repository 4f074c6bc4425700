package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// h1Post sends body to url through t and returns the status and body read whole.
func h1Post(t *testing.T, tr *h1Transport, ctx context.Context, url, body string, hdr http.Header) (int, string, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func hostOf(url string) string { return strings.TrimPrefix(url, "http://") }

func TestH1ReusesConnections(t *testing.T) {
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.Header.Get("Content-Length") != "" && r.ContentLength != int64(len(b)) {
			t.Errorf("Content-Length %d, body %d bytes", r.ContentLength, len(b))
		}
		w.Header().Set("X-Echo-Host", r.Host)
		_, _ = w.Write(b)
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	tr := newH1Transport(http.DefaultTransport, []string{hostOf(srv.URL)})
	defer tr.CloseIdleConnections()
	for i := range 5 {
		code, body, err := h1Post(t, tr, context.Background(), srv.URL+"/v1/chat/completions?x=1", `{"i":`+string(rune('0'+i))+`}`, nil)
		if err != nil || code != 200 || body != `{"i":`+string(rune('0'+i))+`}` {
			t.Fatalf("request %d: got %d %q %v, want 200 and the body echoed", i, code, body, err)
		}
	}
	if got := conns.Load(); got != 1 {
		t.Errorf("connections for 5 sequential requests: got %d, want 1", got)
	}
}

// rawServer accepts connections and runs handle on each; it is closed at cleanup.
func rawServer(t *testing.T, handle func(c net.Conn, br *bufio.Reader)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				handle(c, bufio.NewReader(c))
			}()
		}
	}()
	return "http://" + ln.Addr().String()
}

// readRequest reads one request and its body from br.
func readRequest(br *bufio.Reader) (*http.Request, string, error) {
	r, err := http.ReadRequest(br)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(r.Body)
	return r, string(b), err
}

func TestH1RetriesWhenIdleConnectionWasClosed(t *testing.T) {
	var served atomic.Int32
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		served.Add(1)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		// then close: the pooled connection is dead when the next request comes
	})
	tr := newH1Transport(http.DefaultTransport, []string{hostOf(url)})
	defer tr.CloseIdleConnections()
	for i := range 3 {
		code, body, err := h1Post(t, tr, context.Background(), url+"/v1/completions", "{}", nil)
		if err != nil || code != 200 || body != "ok" {
			t.Fatalf("request %d: got %d %q %v, want 200 ok", i, code, body, err)
		}
	}
	if got := served.Load(); got != 3 {
		t.Errorf("requests the upstream answered: got %d, want 3 (each sent once)", got)
	}
}

func TestH1ResponseFraming(t *testing.T) {
	tests := []struct {
		name, response, want string
		reusable             bool
	}{
		{"content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", true},
		{"chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n", "hello", true},
		{"connection close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello", "hello", false},
		{"until close", "HTTP/1.1 200 OK\r\n\r\nhello", "hello", false},
		{"informational first", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", "hello", true},
		{"error status", "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}", "{}", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
				for {
					if _, _, err := readRequest(br); err != nil {
						return
					}
					io.WriteString(c, tt.response)
					if !tt.reusable {
						return
					}
				}
			})
			tr := newH1Transport(http.DefaultTransport, []string{hostOf(url)})
			defer tr.CloseIdleConnections()
			_, body, err := h1Post(t, tr, context.Background(), url+"/v1/chat/completions", "{}", nil)
			if err != nil || body != tt.want {
				t.Fatalf("got %q %v, want %q", body, err, tt.want)
			}
			tr.mu.Lock()
			pooled := len(tr.idle[hostOf(url)])
			tr.mu.Unlock()
			if want := map[bool]int{true: 1, false: 0}[tt.reusable]; pooled != want {
				t.Errorf("pooled connections after the body: got %d, want %d", pooled, want)
			}
		})
	}
}

func TestH1HeadersCannotSplitTheRequest(t *testing.T) {
	got := make(chan *http.Request, 1)
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		r, _, err := readRequest(br)
		if err != nil {
			return
		}
		got <- r
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		// A smuggled second request would be read here; there must be none.
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if r2, err := http.ReadRequest(br); err == nil {
			t.Errorf("a second request was smuggled: %s %s", r2.Method, r2.URL)
		}
	})
	tr := newH1Transport(http.DefaultTransport, []string{hostOf(url)})
	defer tr.CloseIdleConnections()
	hdr := http.Header{"X-Evil": {"a\r\n\r\nGET /admin HTTP/1.1\r\nHost: x"}}
	if _, _, err := h1Post(t, tr, context.Background(), url+"/v1/embeddings", "{}", hdr); err != nil {
		t.Fatal(err)
	}
	r := <-got
	if v := r.Header.Get("X-Evil"); strings.ContainsAny(v, "\r\n") || !strings.HasPrefix(v, "a") {
		t.Errorf("X-Evil: got %q, want the value with CR/LF replaced", v)
	}
}

func TestH1DeadlineAndCancel(t *testing.T) {
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, _, err := readRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
		_, _ = io.Copy(io.Discard, br) // never finishes: waits for the client to give up
	})
	tr := newH1Transport(http.DefaultTransport, []string{hostOf(url)})
	defer tr.CloseIdleConnections()

	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, _, err := h1Post(t, tr, ctx, url+"/v1/chat/completions", "{}", nil)
	if !isNetTimeout(err) && !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("slow body past the deadline: got %v, want a timeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("timed out after %v, want about 150ms", d)
	}

	ctx2, cancel2 := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel2)
	if _, _, err := h1Post(t, tr, ctx2, url+"/v1/chat/completions", "{}", nil); err == nil {
		t.Error("canceled request: got no error")
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if n := len(tr.idle[hostOf(url)]); n != 0 {
		t.Errorf("connections pooled after cut-off bodies: got %d, want 0", n)
	}
}

func TestH1LeavesOtherRequestsToNext(t *testing.T) {
	var nextCalls atomic.Int32
	next := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		nextCalls.Add(1)
		return &http.Response{StatusCode: 204, Body: http.NoBody, Request: r}, nil
	})
	tr := newH1Transport(next, []string{"direct.example:80"})
	for _, url := range []string{"https://direct.example/v1/x", "http://other.example/v1/x"} {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader("{}"))
		if _, err := tr.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://direct.example:80/v1/models", nil)
	if _, err := tr.RoundTrip(req); err != nil {
		t.Fatal(err)
	}
	if got := nextCalls.Load(); got != 3 {
		t.Errorf("requests handed to the next transport: got %d, want 3", got)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestH1LargeBodyStreamedAfterHead(t *testing.T) {
	large := strings.Repeat("x", 3*h1InlineBody+17)
	url := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			_, body, err := readRequest(br)
			if err != nil {
				return
			}
			head := "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
			io.WriteString(c, head+body)
		}
	})
	tr := newH1Transport(http.DefaultTransport, []string{hostOf(url)})
	defer tr.CloseIdleConnections()
	for _, body := range []string{large, "{}"} { // the connection is reused after the large one
		_, got, err := h1Post(t, tr, context.Background(), url+"/v1/embeddings", body, nil)
		if err != nil || got != body {
			t.Fatalf("echo of %d bytes: got %d bytes, %v", len(body), len(got), err)
		}
	}
}
