package mock

import "net/http"

// sse writes Server-Sent Events, flushing after each one.
type sse struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

// newSSE sends the 200 status and event-stream headers and returns a writer
// for the events. With flush the headers leave at once, as a real upstream's
// do before the first token; without, they go out with the first event.
func newSSE(w http.ResponseWriter, flush bool) *sse {
	hdr := w.Header()
	hdr["Content-Type"] = []string{"text/event-stream; charset=utf-8"}
	hdr["Cache-Control"] = []string{"no-cache"}
	hdr["X-Accel-Buffering"] = []string{"no"}
	w.WriteHeader(http.StatusOK)
	s := &sse{w: w, rc: http.NewResponseController(w)}
	if flush {
		s.err = s.rc.Flush()
	}
	return s
}

// send writes one complete event (b must end with a blank line) and flushes
// it. It reports whether the client can still be written to; after the first
// failure it writes nothing more.
func (s *sse) send(b []byte) bool {
	if s.err != nil {
		return false
	}
	if _, s.err = s.w.Write(b); s.err == nil {
		s.err = s.rc.Flush()
	}
	return s.err == nil
}
