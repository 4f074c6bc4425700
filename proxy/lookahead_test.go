package proxy

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// sseEvent is the i-th event of the streams below.
func sseEvent(i int) string {
	return fmt.Sprintf(`data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"w%d"},"finish_reason":null}]}`+"\n\n", i)
}

// chunked frames s as one chunk of a chunked body.
func chunked(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

const sseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

// rawGatewayStream posts a streaming chat request to the gateway over a
// raw connection and returns the response's reader, positioned at the
// body, so a test sees the chunks the gateway wrote.
func rawGatewayStream(t *testing.T, e *env) (*bufio.Reader, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	body := `{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}`
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nUser: u\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || len(resp.TransferEncoding) == 0 {
		t.Fatalf("status %d, transfer encoding %v: want a chunked 200", resp.StatusCode, resp.TransferEncoding)
	}
	return br, c
}

// readChunk reads one chunk of a chunked body ("" at the last chunk).
func readChunk(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatalf("chunk size: %v", err)
	}
	var n int
	if _, err := fmt.Sscanf(strings.TrimSpace(line), "%x", &n); err != nil {
		t.Fatalf("chunk size %q: %v", line, err)
	}
	b := make([]byte, n+2)
	if _, err := io.ReadFull(br, b); err != nil {
		t.Fatalf("chunk: %v", err)
	}
	return string(b[:n])
}

// TestStreamCoalescesBufferedChunks: an upstream whose whole stream of
// events, one chunk each, has arrived before the gateway reads it reaches
// the client in one chunk (one write), not one per event, the bytes
// unchanged.
func TestStreamCoalescesBufferedChunks(t *testing.T) {
	const events = 12
	var want strings.Builder
	u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
		if _, _, err := u.readRequest(br); err != nil {
			return
		}
		var out strings.Builder
		out.WriteString(sseHead)
		for i := range events {
			out.WriteString(chunked(sseEvent(i)))
		}
		out.WriteString("0\r\n\r\n")
		_, _ = c.Write([]byte(out.String()))
	})
	for i := range events {
		want.WriteString(sseEvent(i))
	}
	e := rawEnv(t, u)
	br, _ := rawGatewayStream(t, e)
	var got []string
	for {
		c := readChunk(t, br)
		if c == "" {
			break
		}
		got = append(got, c)
	}
	if s := strings.Join(got, ""); s != want.String() {
		t.Fatalf("body changed:\n got %q\nwant %q", s, want.String())
	}
	if len(got) != 1 {
		t.Errorf("%d events that arrived together reached the client in %d chunks, want 1", events, len(got))
	}
}

// TestStreamNeverHoldsAnEvent: an event whose successor has not wholly
// arrived (the next chunk is cut in its size line, in its data, before its
// CRLF) still reaches the client at once: the upstream sends the rest only
// after the client has seen it.
func TestStreamNeverHoldsAnEvent(t *testing.T) {
	next := chunked(sseEvent(1))
	for _, cut := range []int{1, 4, len(next) - 2, len(next) - 1} {
		t.Run(fmt.Sprintf("cut%d", cut), func(t *testing.T) {
			seen := make(chan struct{})
			u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
				if _, _, err := u.readRequest(br); err != nil {
					return
				}
				_, _ = c.Write([]byte(sseHead + chunked(sseEvent(0)) + next[:cut]))
				select {
				case <-seen:
				case <-time.After(10 * time.Second):
					return
				}
				_, _ = c.Write([]byte(next[cut:] + "0\r\n\r\n"))
			})
			e := rawEnv(t, u)
			br, _ := rawGatewayStream(t, e)
			if got := readChunk(t, br); got != sseEvent(0) {
				t.Fatalf("first chunk %q, want event 0 alone", got)
			}
			close(seen)
			if got := readChunk(t, br); got != sseEvent(1) {
				t.Fatalf("second chunk %q, want event 1", got)
			}
			if got := readChunk(t, br); got != "" {
				t.Fatalf("chunk %q after the last event", got)
			}
		})
	}
}

// TestGatherReaderFindsConnBuffer: the lookahead finds the connection's
// buffer under fasthttp's streamed body; a fasthttp upgrade that moves it
// fails here instead of silently writing one chunk per event.
func TestGatherReaderFindsConnBuffer(t *testing.T) {
	u := newRawUpstream(t, func(u *rawUpstream, c net.Conn, br *bufio.Reader) {
		if _, _, err := u.readRequest(br); err != nil {
			return
		}
		_, _ = c.Write([]byte(sseHead + chunked(sseEvent(0)) + chunked(sseEvent(1)) + "0\r\n\r\n"))
	})
	hc := &fasthttp.HostClient{Addr: strings.TrimPrefix(u.URL, "http://"), StreamResponseBody: true,
		Dial: func(addr string) (net.Conn, error) { return net.Dial("tcp", addr) }}
	defer hc.CloseIdleConnections()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(u.URL + "/v1/chat/completions")
	req.Header.SetMethod(fasthttp.MethodPost)
	req.SetBodyString("{}")
	resp.StreamBody = true
	if err := hc.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	defer resp.CloseBodyStream()
	body := resp.BodyStream()
	if connReader(body) == nil {
		t.Fatalf("no connection buffer found under %T", body)
	}
	g := gatherReader{src: body, buf: connReader(body)}
	b := make([]byte, 4096)
	n, err := g.Read(b)
	if err != nil || string(b[:n]) != sseEvent(0)+sseEvent(1) {
		t.Fatalf("Read = %q, %v; want both events in one read", b[:n], err)
	}
}

func TestChunkBuffered(t *testing.T) {
	ev := chunked("abc")
	for _, tc := range []struct {
		buf  string
		want bool
	}{
		{ev, true},
		{ev + "1", true},
		{ev[:len(ev)-1], false},
		{"", false},
		{"0\r\n\r\n", false},
		{"3;ext=1\r\nabc\r\n", false},
		{"ffffffffff\r\n", false},
		{"x\r\n", false},
		{"3\r\nab", false},
	} {
		br := bufio.NewReaderSize(strings.NewReader(tc.buf), 64)
		_, _ = br.Peek(len(tc.buf))
		if got := chunkBuffered(br); got != tc.want {
			t.Errorf("chunkBuffered(%q) = %v, want %v", tc.buf, got, tc.want)
		}
	}
	if connReader(strings.NewReader("x")) != nil || connReader(nil) != nil {
		t.Error("connReader found a buffer in a plain reader")
	}
}
