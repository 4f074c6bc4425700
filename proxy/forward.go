package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"strings"
	"time"

	"github.com/tidwall/gjson"

	"github.com/genai-gateway/genai-gateway/limiter"
)

// Metered requests use a small hand-made forwarder rather than
// httputil.ReverseProxy: it must hold the response headers back until the
// first body byte (so an upstream that fails before sending anything still
// gets a clean 502), rewrite the stream and meter it, and it allocates less
// per request (see BenchmarkProxyChat against BenchmarkReverseProxyBaseline).
// Unmetered paths use httputil.ReverseProxy (passthrough.go), which also
// handles protocol upgrades.

const (
	copyBufSize     = 32 << 10
	maxHeldBody     = 1 << 20 // non-streaming bodies parsed whole up to this size
	maxIdlePerHost  = 1024
	dialTimeout     = 30 * time.Second
	idleConnTimeout = 90 * time.Second
)

// newTransport returns the keep-alive transport shared by all upstreams of
// a Proxy: many idle connections per host, HTTP/2 over TLS, and no
// transparent compression (metered bodies are read, passthrough bodies keep
// the client's own Accept-Encoding).
func newTransport() *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   maxIdlePerHost,
		IdleConnTimeout:       idleConnTimeout,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// serveMetered handles a POST to a metered route. It reports whether the
// response was cut off after its headers were sent, in which case the
// caller aborts the connection so the client sees the truncation.
func (p *Proxy) serveMetered(w http.ResponseWriter, r *http.Request, route string) (abort bool) {
	ex := exchange{start: time.Now(), route: route, method: r.Method, path: route, metered: true, ttft: -1}
	defer p.finish(&ex)
	if p.cfg.UserHeader != "" {
		ex.user = r.Header.Get(p.cfg.UserHeader)
	}
	body, aerr := p.readBody(w, r)
	if aerr != nil {
		p.replyOrGone(w, r, &ex, aerr)
		return false
	}
	js := unsafeString(body)
	if !gjson.Valid(js) {
		p.reply(w, &ex, errBadJSON())
		return false
	}
	model := gjson.Get(js, "model")
	if model.Type != gjson.String || model.Str == "" {
		p.reply(w, &ex, errMissingModel())
		return false
	}
	ex.model = strings.Clone(model.Str) // body must not be kept alive by labels and maps
	up := p.pick(ex.model)
	if up == nil {
		p.reply(w, &ex, errUnknownModel(ex.model))
		return false
	}
	ex.upstream = up.Name
	hide := false
	if (route == routeChat || route == routeCompletions) && gjson.Get(js, "stream").Type == gjson.True {
		if so := gjson.Get(js, "stream_options"); so.Get("include_usage").Type != gjson.True {
			body, hide = withIncludeUsage(body, so), true
		}
	}
	est := estimator{tok: &p.tok, route: route, model: ex.model, body: body}
	var res *limiter.Reservation
	if p.lim != nil {
		var err error
		if res, err = p.lim.Admit(ex.user, ex.model, est.estimate); err != nil {
			var rej *limiter.Rejection
			switch {
			case errors.As(err, &rej):
				p.reply(w, &ex, errRateLimited(rej))
			case errors.Is(err, limiter.ErrMissingUser):
				p.reply(w, &ex, errMissingUser(p.cfg.UserHeader))
			default:
				ex.err = err
				p.reply(w, &ex, errInternal())
			}
			return false
		}
	}
	// Settle exactly once, with what was metered: 0 when the upstream
	// answered an error status or never answered (it did no billable work
	// we can see), the upstream's usage, or the tokenizer's count.
	defer func() { res.Settle(limiter.Usage{PromptTokens: ex.prompt, CompletionTokens: ex.completion}) }()
	return p.forward(w, r, &ex, up, body, hide, &est)
}

// forward sends the metered request upstream and copies the response back.
func (p *Proxy) forward(w http.ResponseWriter, r *http.Request, ex *exchange, up *upstream,
	body []byte, hide bool, est *estimator) (abort bool) {
	ctx, cancel := upstreamContext(r.Context(), up)
	defer cancel()
	u := *up.base
	u.Path += ex.route
	u.RawQuery = joinQuery(up.base.RawQuery, r.URL.RawQuery)
	out := (&http.Request{
		Method:        http.MethodPost,
		URL:           &u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        outHeader(r, up, true),
		Body:          io.NopCloser(bytes.NewReader(body)),
		GetBody:       func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil },
		ContentLength: int64(len(body)),
		Host:          u.Host,
	}).WithContext(ctx)
	resp, err := p.metered.RoundTrip(out)
	if err != nil {
		p.upstreamError(w, r, ex, ctx, err)
		return false
	}
	defer resp.Body.Close()

	h := w.Header()
	copyHeader(h, resp.Header)
	s := sink{w: w, rc: http.NewResponseController(w), status: resp.StatusCode, ex: ex}
	ok := resp.StatusCode >= 200 && resp.StatusCode < 300
	var rerr, werr error
	switch {
	case !ok:
		// Passed through byte for byte; settles to 0 usage.
		rerr, werr = p.copyRaw(&s, resp.Body)
	case isEventStream(resp.Header):
		if hide {
			h.Del("Content-Length")
		}
		_ = s.rc.SetWriteDeadline(time.Time{}) // streams are bounded by the upstream timeout
		kind := kindChat
		if ex.route == routeResponses {
			kind = kindResponses
		}
		bufs := p.bufs.Get().(*streamBufs)
		c := newSSECopier(resp.Body, bufs, kind, hide, func(b []byte) int64 { return p.tok.count(ex.model, b) })
		rerr, werr = c.copy(&s, s.flush)
		if c.haveUsage {
			ex.prompt, ex.completion = c.usage.prompt, c.usage.completion
		} else {
			ex.prompt, ex.completion = est.estimate(), c.completionTokens()
		}
		c.release()
		p.bufs.Put(bufs)
	default:
		rerr, werr = p.copyJSON(&s, resp.Body, ex, est)
	}
	switch {
	case werr != nil || (rerr != nil && r.Context().Err() != nil):
		ex.status, ex.reason, ex.err = StatusClientClosedRequest, reasonCanceled, firstErr(werr, rerr)
		return false
	case rerr != nil:
		aerr, reason := upstreamFailure(r.Context(), ctx, rerr, true)
		ex.reason, ex.err = reason, rerr
		if s.committed {
			return true
		}
		clear(h)
		p.reply(w, ex, aerr)
		return false
	}
	s.commit() // an empty body still sends its headers
	return false
}

// copyRaw copies an upstream body through unchanged.
func (p *Proxy) copyRaw(dst *sink, src io.Reader) (rerr, werr error) {
	bp := p.copyBufs.Get().(*[]byte)
	defer p.copyBufs.Put(bp)
	buf := *bp
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, werr = dst.Write(buf[:n]); werr != nil {
				return nil, werr
			}
		}
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			return err, nil
		}
	}
}

// copyJSON copies a non-streaming body through unchanged while keeping what
// metering needs: the whole body up to maxHeldBody (embeddings: only the
// tail), else its tail, where upstreams put usage. The usage is read at the
// end; without one the prompt estimate and the tokens of the generated text
// are metered.
func (p *Proxy) copyJSON(dst *sink, src io.Reader, ex *exchange, est *estimator) (rerr, werr error) {
	bufs := p.bufs.Get().(*streamBufs)
	defer p.bufs.Put(bufs)
	limit := maxHeldBody
	if ex.route == routeEmbeddings {
		limit = 0 // large vectors; usage is always at the end
	}
	m := bodyMeter{held: bufs.text[:0], tail: bufs.tail[:0], limit: limit}
	buf := bufs.ev[:cap(bufs.ev)]
	for {
		n, err := src.Read(buf)
		if n > 0 {
			m.write(buf[:n])
			if _, werr = dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			rerr = err
			break
		}
	}
	if u, ok := m.usage(); ok {
		ex.prompt, ex.completion = u.prompt, u.completion
	} else {
		ex.prompt = est.estimate()
		if !m.over {
			ex.completion = countCompletionText(ex.route, m.held, func(b []byte) int64 { return p.tok.count(ex.model, b) })
		}
	}
	return rerr, werr
}

// bodyMeter keeps a non-streaming body for the usage parse: whole while it
// fits in limit bytes, then only its last usageTailMax bytes.
type bodyMeter struct {
	held, tail []byte
	limit      int
	over       bool
}

func (m *bodyMeter) write(b []byte) {
	if !m.over {
		if len(m.held)+len(b) <= m.limit {
			m.held = append(m.held, b...)
			return
		}
		m.over = true
		m.tail = appendTail(m.tail, m.held)
		m.held = nil
	}
	m.tail = appendTail(m.tail, b)
}

func (m *bodyMeter) usage() (usage, bool) {
	if m.over {
		return usageFromTail(m.tail)
	}
	return extractUsage(m.held)
}

// appendTail appends b to tail, keeping only the last cap(tail) bytes.
func appendTail(tail, b []byte) []byte {
	if len(b) >= cap(tail) {
		return append(tail[:0], b[len(b)-cap(tail):]...)
	}
	if over := len(tail) + len(b) - cap(tail); over > 0 {
		tail = tail[:copy(tail, tail[over:])]
	}
	return append(tail, b...)
}

// upstreamError answers a failed exchange before any response byte: 499
// (nothing written) when the client went away, else 502/504.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, ex *exchange, ctx context.Context, err error) {
	aerr, reason := upstreamFailure(r.Context(), ctx, err, false)
	ex.reason, ex.err = reason, err
	if aerr == nil {
		ex.status = StatusClientClosedRequest
		return
	}
	p.reply(w, ex, aerr)
}

// sink writes a response to the client, sending the status and headers
// with the first body byte (or at the end, for an empty body).
type sink struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	status    int
	committed bool
	ex        *exchange
}

func (s *sink) commit() {
	if s.committed {
		return
	}
	s.committed = true
	s.ex.status = s.status
	if s.status >= 200 && s.status < 300 {
		s.ex.ttft = time.Since(s.ex.start)
	}
	s.w.WriteHeader(s.status)
}

func (s *sink) Write(b []byte) (int, error) {
	s.commit()
	return s.w.Write(b)
}

func (s *sink) flush() {
	s.commit()
	_ = s.rc.Flush()
}

func isEventStream(h http.Header) bool {
	ct := h.Get("Content-Type")
	return len(ct) >= len("text/event-stream") && strings.EqualFold(ct[:len("text/event-stream")], "text/event-stream")
}

// hopHeaders are removed from requests and responses in both directions
// (RFC 9110 7.6.1), besides the headers a Connection header names.
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopHeaders(h http.Header) {
	for _, v := range h["Connection"] {
		for _, f := range strings.Split(v, ",") {
			if f = textproto.TrimString(f); f != "" {
				delete(h, textproto.CanonicalMIMEHeaderKey(f))
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// outHeader builds the upstream request's headers: the client's minus
// hop-by-hop headers and Content-Length (set from the body), X-Forwarded-For
// appended, Authorization replaced when the upstream has an API key, and
// (metered) no Expect or Accept-Encoding, so the response can be read. Value slices
// are shared with the client request and must not be modified.
func outHeader(r *http.Request, up *upstream, metered bool) http.Header {
	h := make(http.Header, len(r.Header)+2)
	for k, v := range r.Header {
		h[k] = v
	}
	removeHopHeaders(h)
	delete(h, "Content-Length")
	if metered {
		// The body is in hand: no 100-continue round trip; and the response
		// must come back readable.
		delete(h, "Expect")
		delete(h, "Accept-Encoding")
	}
	if up.auth != nil {
		h["Authorization"] = up.auth
	}
	if _, ok := h["User-Agent"]; !ok {
		h["User-Agent"] = []string{""} // no Go default User-Agent
	}
	appendXFF(h, r.Header["X-Forwarded-For"], r.RemoteAddr)
	return h
}

// appendXFF sets X-Forwarded-For to the client's chain plus its address.
func appendXFF(h http.Header, prior []string, remoteAddr string) {
	ip, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return
	}
	if len(prior) > 0 {
		ip = strings.Join(prior, ", ") + ", " + ip
	}
	h["X-Forwarded-For"] = []string{ip}
}

// copyHeader copies an upstream response's headers minus hop-by-hop ones.
func copyHeader(dst, src http.Header) {
	for k, v := range src {
		dst[k] = v
	}
	removeHopHeaders(dst)
}

func joinQuery(base, in string) string {
	switch {
	case base == "":
		return in
	case in == "":
		return base
	}
	return base + "&" + in
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
