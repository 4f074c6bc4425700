package proxy

import (
	"bufio"
	"io"
	"reflect"
)

// gatherReader reads a chunked upstream body the way nginx reads a socket:
// one Read hands on every chunk already received, not one chunk.
//
// fasthttp's body stream returns at most one chunk per Read, and upstreams
// send one SSE event per chunk, so without this the SSE copier saw one event
// at a time and wrote (and flushed) each to the client separately: 19
// writes for a 16-token stream whose bytes had arrived in two reads. It
// only reads on while the next chunk is wholly in the connection's buffer,
// so a Read never blocks once it has bytes to return, and no event waits
// for a later one.
type gatherReader struct {
	src io.Reader
	buf *bufio.Reader // the upstream connection's buffer under src; nil: one chunk per Read
}

func (g *gatherReader) Read(p []byte) (int, error) {
	n, err := g.src.Read(p)
	for err == nil && n < len(p) && g.buf != nil && chunkBuffered(g.buf) {
		var k int
		k, err = g.src.Read(p[n:])
		n += k
	}
	return n, err
}

// chunkBuffered reports whether br holds a whole non-empty chunk of a
// chunked body (size line, data, CRLF), so reading it cannot block. It
// answers false whenever it is unsure (extensions, the last chunk).
func chunkBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	size, i := 0, 0
	for ; i < len(b) && i < 8; i++ {
		if !isHexDigit(b[i]) {
			break
		}
		size = size<<4 | int(unhex(b[i]))
	}
	return i > 0 && size > 0 && len(b) >= i+2 && b[i] == '\r' && b[i+1] == '\n' &&
		len(b) >= i+2+size+2
}

// bufioType is the type connReader looks for.
var bufioType = reflect.TypeFor[*bufio.Reader]()

// connReader finds the upstream connection's *bufio.Reader under a body
// stream of fasthttp's HostClient (a clientStreamBody whose reader is a
// requestStream whose reader is the connection's buffer), or nil when the
// stream is shaped otherwise (then every chunk is its own Read: correct,
// only slower). fasthttp exposes no way to ask whether a Read would block;
// TestGatherReaderFindsConnBuffer fails when an upgrade moves these fields.
func connReader(body io.Reader) *bufio.Reader {
	v := reflect.ValueOf(body)
	for range 2 {
		if v.Kind() == reflect.Interface {
			v = v.Elem()
		}
		if v.Kind() != reflect.Pointer || v.IsNil() || v.Elem().Kind() != reflect.Struct {
			return nil
		}
		if v = v.Elem().FieldByName("reader"); !v.IsValid() {
			return nil
		}
	}
	if v.Kind() == reflect.Interface {
		v = v.Elem()
	}
	if !v.IsValid() || v.Type() != bufioType || v.IsNil() {
		return nil
	}
	return (*bufio.Reader)(v.UnsafePointer())
}
