package proxy

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

const (
	chunk1     = `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null}],"usage":null}` + "\n\n"
	chunk2     = `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"lo\n \"w\u00e9\" \ud83d\ude00"},"finish_reason":null}],"usage":null}` + "\n\n"
	chunkStop  = `data: {"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":null}` + "\n\n"
	usageChunk = `data: {"id":"c","object":"chat.completion.chunk","choices":[],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18}}` + "\n\n"
	done       = "data: [DONE]\n\n"
)

// streamBufsFor returns fresh stream buffers reading src.
func streamBufsFor(src io.Reader) *streamBufs {
	b := newStreamBufs()
	b.br.Reset(src)
	return b
}

func copySSE(t testing.TB, in string, kind streamKind, hide bool, r func(io.Reader) io.Reader) (string, *sseCopier) {
	t.Helper()
	var out bytes.Buffer
	c := newSSECopier(streamBufsFor(r(strings.NewReader(in))), kind, hide, nil)
	flushes := 0
	rerr, werr := c.copy(&out, func() error { flushes++; return nil })
	if rerr != nil || werr != nil {
		t.Fatalf("copy: %v, %v", rerr, werr)
	}
	if out.Len() > 0 && flushes == 0 {
		t.Error("never flushed")
	}
	return out.String(), c
}

func TestSSECopier(t *testing.T) {
	long := `data: {"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("ab", 20000) + `"}}]}` + "\n\n"
	bigCompleted := "event: response.completed\ndata: " + `{"type":"response.completed","response":{"output":[{"content":[{"text":"` +
		strings.Repeat("x", 40000) + `"}]}],"usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14}}}` + "\n\n"
	tests := []struct {
		name, in, want string
		kind           streamKind
		hide           bool
		usage          usage
		haveUsage      bool
		text           string // streamed text kept for the fallback
	}{
		{name: "hide usage", in: chunk1 + chunk2 + chunkStop + usageChunk + done, hide: true,
			want: chunk1 + chunk2 + chunkStop + done, usage: usage{prompt: 11, completion: 7}, haveUsage: true, text: "Hello\n \"w\u00e9\" \U0001F600"},
		{name: "keep usage", in: chunk1 + usageChunk + done,
			want: chunk1 + usageChunk + done, usage: usage{prompt: 11, completion: 7}, haveUsage: true, text: "Hel"},
		{name: "crlf", in: strings.ReplaceAll(chunk1+usageChunk+done, "\n", "\r\n"), hide: true,
			want: strings.ReplaceAll(chunk1+done, "\n", "\r\n"), usage: usage{prompt: 11, completion: 7}, haveUsage: true, text: "Hel"},
		{name: "no usage", in: chunk1 + chunkStop + done, hide: true, want: chunk1 + chunkStop + done, text: "Hel"},
		{name: "comments and partial end", in: ": ping\n\n" + chunk1 + "data: {\"choi", hide: true,
			want: ": ping\n\n" + chunk1 + "data: {\"choi", text: "Hel"},
		{name: "usage with other lines is kept", in: "event: x\n" + usageChunk, hide: true,
			want: "event: x\n" + usageChunk, usage: usage{prompt: 11, completion: 7}, haveUsage: true},
		{name: "long line", in: long + usageChunk, hide: true, want: long, usage: usage{prompt: 11, completion: 7}, haveUsage: true},
		{name: "long line kept", in: long + usageChunk, want: long + usageChunk, usage: usage{prompt: 11, completion: 7}, haveUsage: true},
		{name: "completions text", in: `data: {"choices":[{"text":"a b","index":0}]}` + "\n\n", want: `data: {"choices":[{"text":"a b","index":0}]}` + "\n\n", text: "a b"},
		{name: "tool calls", in: `data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\":1}"}}]}}]}` + "\n\n",
			want: `data: {"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"x\":1}"}}]}}]}` + "\n\n", text: `{"x":1}`},
		{name: "responses", kind: kindResponses,
			in: "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n" +
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
			want: "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n" +
				"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":1}}}\n\n",
			usage: usage{prompt: 3, completion: 1}, haveUsage: true, text: "Hi"},
		{name: "responses completed larger than the event buffer", kind: kindResponses, in: bigCompleted, want: bigCompleted,
			usage: usage{prompt: 5, completion: 9}, haveUsage: true},
	}
	readers := map[string]func(io.Reader) io.Reader{
		"whole":    func(r io.Reader) io.Reader { return r },
		"one byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
	}
	for _, tt := range tests {
		for rn, r := range readers {
			t.Run(tt.name+"/"+rn, func(t *testing.T) {
				got, c := copySSE(t, tt.in, tt.kind, tt.hide, r)
				if got != tt.want {
					t.Errorf("output:\ngot  %q\nwant %q", trunc(got), trunc(tt.want))
				}
				if c.haveUsage != tt.haveUsage || c.usage != tt.usage {
					t.Errorf("usage: got %v %+v, want %v %+v", c.haveUsage, c.usage, tt.haveUsage, tt.usage)
				}
				if tt.text != "" && string(c.text) != tt.text {
					t.Errorf("text: got %q, want %q", c.text, tt.text)
				}
			})
		}
	}
}

func trunc(s string) string {
	if len(s) > 300 {
		return s[:150] + "..." + s[len(s)-150:]
	}
	return s
}

// TestSSETextBounded checks that a long stream keeps its text within the
// buffer and counts what overflowed.
func TestSSETextBounded(t *testing.T) {
	var in strings.Builder
	for range 5000 {
		in.WriteString(`data: {"choices":[{"delta":{"content":"abcdefgh"}}]}` + "\n\n")
	}
	_, c := copySSE(t, in.String(), kindChat, true, func(r io.Reader) io.Reader { return r })
	if cap(c.text) > textMax {
		t.Errorf("text buffer grew to %d, want at most %d", cap(c.text), textMax)
	}
	if got, want := c.completionTokens(), int64(5000*8/4); got != want {
		t.Errorf("completion tokens (4 bytes a token): got %d, want %d", got, want)
	}
}

// referenceSSE is the expected output of the copier: the input split into
// events at blank lines, minus hideable usage-only events no larger than
// the event buffer.
func referenceSSE(in []byte, hide bool) []byte {
	var out, ev []byte
	keep := func() {
		if !(hide && len(ev) <= sseEventMax && hideableEvent(ev)) {
			out = append(out, ev...)
		}
		ev = nil
	}
	for len(in) > 0 {
		line := in
		i := bytes.IndexByte(in, '\n')
		if i >= 0 {
			line = in[:i+1]
		}
		in = in[len(line):]
		ev = append(ev, line...)
		if i >= 0 && (len(line) == 1 || (len(line) == 2 && line[0] == '\r')) {
			keep()
		}
	}
	if len(ev) > 0 {
		keep()
	}
	return out
}

func hideableEvent(ev []byte) bool {
	var data []byte
	n := 0
	for _, l := range strings.Split(string(ev), "\n") {
		l = strings.TrimSuffix(l, "\r")
		switch {
		case l == "":
		case strings.HasPrefix(l, "data:"):
			n++
			data = []byte(strings.TrimPrefix(strings.TrimPrefix(l, "data:"), " "))
		default:
			return false
		}
	}
	return n == 1 && isUsageOnly(data)
}

func FuzzSSEReader(f *testing.F) {
	f.Add([]byte(chunk1+chunk2+chunkStop+usageChunk+done), true, uint8(0))
	f.Add([]byte(strings.ReplaceAll(chunk1+usageChunk, "\n", "\r\n")), true, uint8(1))
	f.Add([]byte("event: a\ndata: {\"choices\":[],\"usage\":{}}\n\ndata: x"), false, uint8(2))
	f.Add([]byte("data: {\"choices\": [ ],\"usage\":{\"prompt_tokens\":1}}\n\n\n\n"), true, uint8(3))
	f.Add([]byte("data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":1}}}\n\n"), false, uint8(4))
	f.Fuzz(func(t *testing.T, in []byte, hide bool, mode uint8) {
		var src io.Reader = bytes.NewReader(in)
		switch mode % 3 {
		case 1:
			src = iotest.OneByteReader(src)
		case 2:
			src = iotest.HalfReader(src)
		}
		kind := kindChat
		if mode&4 != 0 {
			kind = kindResponses
		}
		var out bytes.Buffer
		c := newSSECopier(streamBufsFor(src), kind, hide, nil)
		if rerr, werr := c.copy(&out, func() error { return nil }); rerr != nil || werr != nil {
			t.Fatalf("copy: %v %v", rerr, werr)
		}
		want := in
		if hide {
			want = referenceSSE(in, true)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("output:\ngot  %q\nwant %q", out.Bytes(), want)
		}
		if cap(c.text) > textMax || cap(c.tail) > 2*usageTailMax {
			t.Fatalf("buffers grew: text %d, tail %d", cap(c.text), cap(c.tail))
		}
		_ = c.completionTokens()
	})
}

// repeatReader yields the same chunk n times.
type repeatReader struct {
	chunk []byte
	n     int
	off   int
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.EOF
	}
	k := copy(p, r.chunk[r.off:])
	r.off += k
	if r.off == len(r.chunk) {
		r.off = 0
		r.n--
	}
	return k, nil
}

// BenchmarkSSEChunk measures the copier per chunk of a typical stream (an
// OpenAI content chunk carrying "usage":null), with hiding on. Target: 0
// allocations per chunk.
func BenchmarkSSEChunk(b *testing.B) {
	bufs := newStreamBufs()
	b.ReportAllocs()
	b.SetBytes(int64(len(chunk2)))
	b.ResetTimer()
	bufs.br.Reset(&repeatReader{chunk: []byte(chunk2), n: b.N})
	c := newSSECopier(bufs, kindChat, true, countFunc(func(p []byte) int64 { return int64(len(p)) }))
	if _, werr := c.copy(io.Discard, func() error { return nil }); werr != nil {
		b.Fatal(werr)
	}
}
