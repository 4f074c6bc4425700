package proxy

import (
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"github.com/valyala/fasthttp"

	"github.com/genai-gateway/genai-gateway/limiter"
	"github.com/genai-gateway/genai-gateway/proxy/provider"
	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// maxHeldBody is the largest non-streaming response read whole before it
// is sent (one write to the client, usage parsed from the whole body);
// larger or unsized bodies stream through with their tail kept for usage.
const maxHeldBody = 1 << 20

// metered is one metered request in flight: what it read, what it
// reserved, and the upstream exchange. It lives from the handler to the
// end of the response stream, and is owned by one goroutine at a time.
type metered struct {
	p    *Proxy
	ex   exchange
	body *reqBody
	est  estimator
	res  *limiter.Reservation
	hide bool // the client did not ask for the usage chunk: drop it
	who  caller
	path string // the upstream path: the route, or the cleaned path of another JSON POST

	// rt is the router the request started with; target, the model it
	// now goes to in it: a model fallback replaces the target whole.
	rt *router
	target
	// fb is the next of the requested model's fallbacks to try; base, the
	// attempts made before the current model's (retries count per model).
	fb, base int

	resp *fasthttp.Response
	bufs *streamBufs

	// The response stream and its write gatherer live in m, so a stream
	// allocates neither.
	stream responseStream
	cw     coalescer
}

// target is what the request's attempts go to: one model's pool, the
// bodies for its upstreams, and the current attempt's upstream and its
// slot.
type target struct {
	send  []byte // the body sent to upstreams of the OpenAI format (held for every attempt)
	pool  *route.Pool
	up    *upstream
	slot  route.Slot
	tried uint64 // pool positions tried (or not to try)

	// xl is set when the attempt is a chat request to an anthropic
	// upstream: xsend, translated to the Messages API, is sent, and the
	// answer is translated back.
	xl    bool
	xsend []byte
	// rev is the same for a Messages request to an openai or azure
	// upstream: chat completions there and back (messages_xl.go).
	rev   reverseState
	xinfo provider.ChatRequest
}

// serveMetered handles a POST to a metered route, or (route routeOther) any
// other JSON POST under /v1/ to path. It reports whether the response goes
// on as a stream after the handler returns; the stream then ends the
// request (end).
func (p *Proxy) serveMetered(ctx *fasthttp.RequestCtx, route, path string, query []byte, c caller, rid string) (async bool) {
	m := &metered{p: p, who: c, path: path, ex: exchange{start: time.Now(), route: route, method: fasthttp.MethodPost, path: path,
		metered: route != routeCountTokens, ttft: -1, user: c.user, requestID: rid, key: c.id.KeyName}}
	var aerr *apiError
	if m.body, aerr = p.readBody(ctx); aerr != nil {
		p.reply(ctx, &m.ex, aerr)
		m.end()
		return false
	}
	if aerr = m.prepare(route); aerr != nil {
		p.reply(ctx, &m.ex, aerr)
		m.end()
		return false
	}
	if async, aerr = m.forward(ctx, query); aerr != nil {
		p.reply(ctx, &m.ex, aerr)
	}
	if !async {
		m.end()
	}
	return async
}

// prepare validates the body, routes it by model, asks for the usage chunk
// of a stream (or translates a chat request for an anthropic upstream) and
// admits the request. count_tokens is routed but not admitted: it costs no
// tokens.
func (m *metered) prepare(route string) *apiError {
	p := m.p
	body := m.body.b
	if aerr := checkRequestBody(body); aerr != nil {
		return aerr
	}
	js := unsafeString(body)
	model := gjson.Get(js, "model")
	if route == routeOther && !model.Exists() {
		// No model (batches, vector stores, ...): the first upstream
		// takes it, unlimited and unmetered, as it takes uploads; not
		// from a caller limited to some models.
		if m.who.restricted() {
			return errUnattributable()
		}
		m.rt = p.router.Load()
		m.up, m.send, m.ex.metered = m.rt.ups[0], body, false
		m.ex.upstream, m.ex.provider = m.up.Name, m.up.kind.String()
		return nil
	}
	if model.Type != gjson.String || model.Str == "" {
		return errMissingModel()
	}
	if len(model.Str) > maxModelBytes {
		return errModelTooLong(len(model.Str))
	}
	m.ex.model = strings.Clone(model.Str) // labels and maps must not keep the body alive
	if !m.who.allows(m.ex.model) {
		return errModelNotAllowed(m.ex.model)
	}
	m.rt = p.router.Load()
	if m.pool = m.rt.table.Pool(m.ex.model); m.pool == nil {
		return errUnknownModel(m.ex.model)
	}
	if (route == routeChat || route == routeCompletions) && gjson.Get(js, "stream").Type == gjson.True {
		if so := gjson.Get(js, "stream_options"); so.Get("include_usage").Type != gjson.True {
			body, m.hide = withIncludeUsage(body, so), true
		}
	}
	if aerr := m.aim(route, body); aerr != nil || m.rev.count {
		return aerr
	}
	// A pool whose upstreams are all full is refused unless a fallback
	// model may take the request.
	picked := m.pick()
	if !picked && len(m.fallbacks()) == 0 {
		return errUpstreamsFull(m.ex.model)
	}
	m.est = estimator{tok: &p.tok, route: route, model: m.ex.model, body: body}
	if p.lim != nil && route != routeCountTokens {
		res, err := p.lim.Admit(m.ex.user, m.ex.model, m.est.limiterEstimate())
		if err != nil {
			var rej *limiter.Rejection
			switch {
			case errors.As(err, &rej):
				return errRateLimited(rej, p.cfg.MaxClientWait)
			case errors.Is(err, limiter.ErrMissingUser):
				return errMissingUser(p.cfg.UserHeader)
			default:
				m.ex.err = err
				return errInternal()
			}
		}
		m.res = res
	}
	if !picked && !m.switchModel() {
		return errUpstreamsFull(m.ex.model)
	}
	return nil
}

// aim prepares body for the upstreams of the target's pool: sent as is
// to those that speak the route's API, translated for the others.
func (m *metered) aim(route string, body []byte) *apiError {
	m.send = body
	switch route {
	case routeChat:
		return m.translate(body)
	case routeMessages, routeCountTokens:
		return m.reverse(route, body)
	}
	return nil
}

// fallbacks are the models the request may go on to once its model's pool
// has failed (routing.fallbacks of the requested model). count_tokens has
// none: another model's count is not the answer asked for.
func (m *metered) fallbacks() []string {
	if m.ex.route == routeCountTokens {
		return nil
	}
	if m.ex.requested != "" {
		return m.rt.table.Fallbacks(m.ex.requested)
	}
	return m.rt.table.Fallbacks(m.ex.model)
}

// switchModel moves the request to the next of its fallbacks that the
// caller's key may call, that some upstream serves with room to take it,
// and whose limits admit it: the body is sent with that model, and the
// reservation extended by the limits of that model (limiter.Fallback: a
// limit covering both models is charged once; spend is priced at the
// model that answers). It reports false, the request as it was, when no
// fallback is left.
func (m *metered) switchModel() bool {
	fbs := m.fallbacks()
	for m.fb < len(fbs) {
		model := fbs[m.fb]
		m.fb++
		pool := m.rt.table.Pool(model)
		if pool == nil || !m.who.allows(model) {
			continue
		}
		body, err := sjson.SetBytes(slices.Clone(m.send), "model", model)
		if err != nil {
			continue
		}
		was, ex, est := m.target, m.ex, m.est
		m.target, m.ex.model = target{pool: pool}, model
		if m.aim(m.ex.route, body) == nil && m.pick() {
			m.est = estimator{tok: est.tok, route: est.route, model: model, body: est.body}
			res, err := m.res, error(nil)
			if m.p.lim != nil {
				res, err = m.p.lim.Fallback(m.res, m.ex.user, model, m.est.limiterEstimate())
			}
			if err == nil {
				m.res, m.base = res, m.ex.attempts
				if m.ex.requested == "" {
					m.ex.requested = ex.model
				}
				return true
			}
			m.rt.table.Release(m.slot)
		}
		m.target, m.ex, m.est = was, ex, est
	}
	return false
}

// translate prepares a chat request for the anthropic upstreams of its
// pool, if any: the Messages API body they are sent. A body that cannot be
// translated keeps the request off them (400 when the pool has no other).
func (m *metered) translate(body []byte) *apiError {
	anth := m.pool.Mask(func(i int) bool { return m.rt.ups[i].kind == kindAnthropic })
	if anth == 0 {
		return nil
	}
	out, info, err := provider.TranslateChatRequest(body)
	if err != nil {
		if anth == 1<<m.pool.Len()-1 {
			return errUntranslatable(m.ex.model, err)
		}
		m.tried |= anth
		return nil
	}
	// The usage chunk the gateway asked for is the gateway's, not the
	// client's.
	info.IncludeUsage = info.IncludeUsage && !m.hide
	m.xsend, m.xinfo = out, info
	return nil
}

// pick takes a slot on the pool's next upstream for an attempt, and
// reports false when every upstream left is full.
func (m *metered) pick() bool {
	s, ok := m.pool.Pick(m.tried)
	if !ok {
		return false
	}
	m.slot, m.tried = s, m.tried|1<<s.Pos
	m.up = m.rt.ups[s.Index]
	m.xl = m.xsend != nil && m.up.kind == kindAnthropic
	m.rev.on = m.rev.send != nil && m.up.kind != kindAnthropic
	m.ex.upstream, m.ex.provider = m.up.Name, m.up.kind.String()
	return true
}

// forward sends the request upstream, to the next upstream of the pool
// after a failure it may retry (see retry), and answers the client: an
// error before any response (502/504), a whole small body, or a stream
// that goes on after the handler returns (async).
func (m *metered) forward(ctx *fasthttp.RequestCtx, query []byte) (async bool, aerr *apiError) {
	if m.rev.count {
		return false, m.countTokens(ctx)
	}
	start := m.ex.start
	var o route.Outcome
	for {
		if o, aerr = m.try(ctx, query, start); !m.retry(o) && !m.fallback(o) {
			break
		}
		start = time.Now()
	}
	if aerr != nil {
		m.report(o)
		return false, aerr
	}
	status := m.resp.StatusCode()
	ok := status >= 200 && status < 300
	sse := ok && isEventStream(m.resp.Header.ContentType())
	size := m.resp.Header.ContentLength()
	m.bufs = m.p.bufs.Get().(*streamBufs)
	if body := m.resp.BodyStream(); size == -1 {
		// Chunked: hand on every chunk already received in one read.
		m.bufs.gather = gatherReader{src: body, buf: connReader(body)}
		m.bufs.br.Reset(&m.bufs.gather)
	} else {
		m.bufs.br.Reset(body)
	}
	// Wait for the first body byte before anything is sent: an upstream
	// that fails before it still gets a clean 502.
	if _, err := m.bufs.br.Peek(1); err != nil && !errors.Is(err, io.EOF) {
		aerr, m.ex.reason = upstreamFailure(err, true)
		m.ex.err = err
		if m.ex.reason == reasonTimeout {
			o = route.Timeout
		} else {
			o = route.Broken
		}
		m.report(o)
		return false, aerr
	}
	m.report(o)
	if ok {
		m.ex.ttft = time.Since(m.ex.start)
	}
	copyResponseHeader(&ctx.Response.Header, &m.resp.Header)
	m.ex.status = status
	if ok {
		setGatewayLimitHeaders(&ctx.Response.Header, m.res)
	}
	if m.rev.on && !sse {
		return false, m.reverseWhole(ctx, ok)
	}
	if m.xl && !sse {
		return false, m.translated(ctx, ok)
	}
	if !sse && size >= 0 && size <= maxHeldBody {
		return false, m.whole(ctx, ok, size)
	}
	// Streamed: chunked unless the body passes through unchanged with a
	// known size.
	if sse && (m.hide || m.xl || m.rev.on) {
		size = -1
	}
	m.compactBody()
	m.stream = responseStream{m: m, sse: sse, ok: ok}
	ctx.Response.SetBodyStream(&m.stream, size)
	return true, nil
}

// try makes one attempt on m.up: it sends the request, the body replayed
// from memory, and waits for the response head (bounded by the upstream's
// timeout from start). The outcome is route.NumOutcomes when nothing was
// sent (a request the upstream's addressing cannot express: 400).
func (m *metered) try(ctx *fasthttp.RequestCtx, query []byte, start time.Time) (route.Outcome, *apiError) {
	up := m.up
	m.ex.attempts++
	req := fasthttp.AcquireRequest()
	path, body := m.path, m.send
	if m.xl {
		path, body = routeMessages, m.xsend
	}
	if m.rev.on {
		path, body = routeChat, m.rev.send
	}
	if err := outRequest(ctx, req, up, path, m.ex.model, query, true, m.who.authed, m.ex.requestID); err != nil {
		fasthttp.ReleaseRequest(req)
		return route.NumOutcomes, &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, message: err.Error()}
	}
	if m.xl {
		anthropicCredential(&req.Header, up, m.who.authed)
	}
	if m.rev.on {
		openAICredential(&req.Header, up, m.who.authed)
	}
	req.SetBodyRaw(body)
	m.resp = fasthttp.AcquireResponse()
	m.resp.StreamBody = true
	var err error
	if up.Timeout > 0 {
		err = up.client.DoDeadline(req, m.resp, start.Add(up.Timeout))
	} else {
		err = up.client.Do(req, m.resp)
	}
	fasthttp.ReleaseRequest(req)
	if err != nil {
		var aerr *apiError
		aerr, m.ex.reason = upstreamFailure(err, false)
		m.ex.err = err
		if m.ex.reason == reasonTimeout {
			return route.Timeout, aerr
		}
		return route.Connect, aerr
	}
	return route.StatusOutcome(m.resp.StatusCode()), nil
}

// retry moves the request to the next upstream of its pool after an
// attempt that ended with o, when routing retries o, retries are left and
// an upstream is: the failed attempt is reported, its response discarded
// and its slot given back. Only outcomes before any response body byte
// are retried (no response at all, or a whole error head such as 429 or
// 503), and nothing has been sent to the client then; a response that
// broke after its head is never replayed, as the upstream may have run it.
func (m *metered) retry(o route.Outcome) bool {
	if m.pool == nil || !m.rt.table.Retryable(o, m.ex.attempts-m.base) {
		return false
	}
	prev, up, ra := m.slot, m.up, m.retryAfter(o)
	if !m.pick() {
		return false
	}
	m.abandon(prev, up, m.ex.model, o, ra)
	return true
}

// fallback moves the request to the next of its model fallbacks (see
// switchModel) once its model's pool failed with o, an outcome routing
// retries, and retry found no upstream or no retry left. The failed
// attempt is reported and its slot given back first: the fallback model
// may be served by the same upstream (a full one must count this request
// out, a 429 must cool it first). When no fallback is taken, its answer
// is still the one the client gets.
func (m *metered) fallback(o route.Outcome) bool {
	if m.pool == nil || !m.rt.table.Fails(o) || len(m.fallbacks()) <= m.fb {
		return false
	}
	up, model := m.up, m.ex.model
	m.report(o)
	m.rt.table.Release(m.slot)
	m.slot = route.Slot{}
	if !m.switchModel() {
		return false
	}
	m.discard(up, model, o)
	return true
}

// abandon ends the failed attempt on slot s of upstream up, for model,
// that another attempt replaces: it is reported, its slot given back, and
// it is recorded and its response discarded (discard).
func (m *metered) abandon(s route.Slot, up *upstream, model string, o route.Outcome, ra time.Duration) {
	m.rt.table.Report(s, o, ra)
	m.rt.table.Release(s)
	m.discard(up, model, o)
}

// discard records the failed attempt on upstream up, for model, and drops
// its response.
func (m *metered) discard(up *upstream, model string, o route.Outcome) {
	m.ex.tried = append(m.ex.tried, attempt{upstream: up.Name, model: model, outcome: o})
	if m.ex.reason != "" {
		m.p.m.upstreamErrors.WithLabelValues(up.Name, m.ex.reason).Inc()
	}
	m.ex.reason, m.ex.err = "", nil
	if m.resp != nil {
		_ = m.resp.CloseBodyStream() // unread: the connection is closed, not reused
		fasthttp.ReleaseResponse(m.resp)
		m.resp = nil
	}
}

// report records the outcome of the attempt that answers the request.
func (m *metered) report(o route.Outcome) {
	m.rt.table.Report(m.slot, o, m.retryAfter(o))
}

// retryAfter is how long a 429 answer asks to wait (retry-after-ms or
// Retry-After, clamped by route.RetryAfter); 0 for other outcomes.
func (m *metered) retryAfter(o route.Outcome) time.Duration {
	if o != route.Status429 || m.resp == nil {
		return 0
	}
	var ms, secs []byte
	for k, v := range m.resp.Header.All() {
		switch {
		case strings.EqualFold(unsafeString(k), "Retry-After-Ms"):
			ms = v
		case strings.EqualFold(unsafeString(k), "Retry-After"):
			secs = v
		}
	}
	return route.RetryAfter(ms, secs, time.Now())
}

// compactBody gives the pooled request buffer back before a response
// streams on, keeping a copy of only the body's bytes for the prompt
// estimate: a stream in flight then holds its request's size, not its
// buffer's (4 KiB at least, or whatever a larger request grew it to).
func (m *metered) compactBody() {
	if m.body == nil || m.body.buf == nil {
		return
	}
	m.est.body = slices.Clone(m.est.body)
	m.p.releaseBody(m.body)
	m.body, m.send = nil, nil // m.send may point into the released buffer
}

// whole reads a small response body, meters it and sets it as the answer.
func (m *metered) whole(ctx *fasthttp.RequestCtx, ok bool, size int) *apiError {
	// The buffer grows with what arrives, not with what the upstream
	// declared: a head announcing 1 MiB and sending a byte holds 4 KiB.
	buf := m.bufs.text[:0]
	for len(buf) < size {
		buf = growTo(buf, 1, size)
		n, err := m.bufs.br.Read(buf[len(buf):min(cap(buf), size)])
		buf = buf[:len(buf)+n]
		if err != nil && (len(buf) < size || !errors.Is(err, io.EOF)) {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			aerr, reason := upstreamFailure(err, true)
			m.ex.reason, m.ex.err = reason, err
			return aerr
		}
	}
	if ok && m.ex.metered {
		if u, found := m.bodyUsage(buf); found {
			m.setUsage(u)
		} else {
			m.ex.prompt = m.est.estimate()
			m.ex.completion = countCompletionText(m.ex.route, buf, m.count)
		}
	}
	ctx.Response.SetBody(buf)
	return nil
}

// translated answers a translated chat request from the whole Messages
// API answer: a chat completion, or the upstream's error in OpenAI's shape.
// An answer larger than maxHeldBody or not a Messages response gets 502.
func (m *metered) translated(ctx *fasthttp.RequestCtx, ok bool) *apiError {
	buf, aerr := m.readToTranslate()
	if aerr != nil {
		return aerr
	}
	out, aerr := m.translateBody(buf, ok)
	if aerr != nil {
		return aerr
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyRaw(out)
	return nil
}

// readHeld reads the whole upstream body, up to maxHeldBody bytes.
func (m *metered) readHeld() ([]byte, error) {
	buf := m.bufs.text[:0]
	for {
		if len(buf) == cap(buf) {
			if len(buf) > maxHeldBody {
				return nil, errHeldTooLarge
			}
			buf = slices.Grow(buf, min(max(cap(buf), 4<<10), maxHeldBody+1-len(buf)))
		}
		n, err := m.bufs.br.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		switch {
		case errors.Is(err, io.EOF):
			return buf, nil
		case err != nil:
			return nil, err
		}
	}
}

// setUsage meters the upstream's usage; figures it had to clamp (out of
// range, not integers) are counted and logged.
func (m *metered) setUsage(u usage) {
	m.ex.prompt, m.ex.completion, m.ex.cached, m.ex.written = u.prompt, u.completion, u.cached, u.written
	if u.clamped {
		m.p.m.usageClamped(m.ex.upstream)
		m.p.log.Warn().Str("upstream", m.ex.upstream).Str("model", m.ex.model).
			Int64("prompt_tokens", u.prompt).Int64("completion_tokens", u.completion).
			Msg("upstream usage out of range or not an integer: clamped")
	}
}

func (m *metered) count(b []byte) int64 { return m.p.tok.count(m.ex.model, b) }

// end settles the reservation with what was metered (0 when the upstream
// answered an error status or never answered: it did no billable work we
// can see), releases the request's buffers and upstream response, and
// records the request. It runs exactly once, on the goroutine that owns m.
func (m *metered) end() {
	p := m.p
	if m.slot.Held() {
		m.rt.table.Release(m.slot)
		m.slot = route.Slot{}
	}
	if st := m.ex.status; st >= 500 || st == http.StatusTooManyRequests || (st >= 400 && m.resp == nil) {
		// Failed by the gateway or the upstream, or refused before it was
		// sent: not charged, the request itself included.
		m.res.Release()
	} else {
		u := limiter.Usage{PromptTokens: m.ex.prompt, CompletionTokens: m.ex.completion,
			CachedPromptTokens: m.ex.cached, CacheWritePromptTokens: m.ex.written}
		m.res.Settle(u)
		if p.cost != nil && m.ex.metered {
			m.ex.costUSD, _ = p.cost.Cost(m.ex.model, u)
		}
	}
	if m.resp != nil {
		_ = m.resp.CloseBodyStream()
		fasthttp.ReleaseResponse(m.resp)
		m.resp = nil
	}
	if m.bufs != nil {
		if m.bufs.anth != nil {
			m.bufs.anth.Reset(nil) // drops the count func, and m with it
		}
		m.bufs.br.Reset(nil)
		m.bufs.gather = gatherReader{}
		p.bufs.Put(m.bufs)
		m.bufs = nil
	}
	p.releaseBody(m.body)
	p.finish(&m.ex)
}

// responseStream is the body of a streamed response: fasthttp calls WriteTo
// with the client connection (each Write a flushed chunk), then
// CloseWithError. It copies the upstream body through, event by event for
// SSE, meters it, and ends the request.
type responseStream struct {
	m       *metered
	sse, ok bool
	started bool
	ended   bool
}

// SupportsBodyWriteTo tells fasthttp to call WriteTo rather than Read.
func (s *responseStream) SupportsBodyWriteTo() bool { return true }

// Read is not used: fasthttp writes the stream with WriteTo.
func (s *responseStream) Read([]byte) (int, error) {
	return 0, errors.New("proxy: response stream is written with WriteTo")
}

func (s *responseStream) WriteTo(w io.Writer) (int64, error) {
	s.started = true
	m := s.m
	m.cw = coalescer{w: w, buf: m.bufs.out[:0]}
	cw := &m.cw
	var rerr, werr error
	switch {
	case s.sse && m.rev.on:
		rerr, werr = m.reverseStream(cw)
	case s.sse && m.xl:
		rerr, werr = m.translateStream(cw)
	case s.sse:
		kind := kindChat
		switch m.ex.route {
		case routeResponses:
			kind = kindResponses
		case routeMessages:
			kind = kindMessages
		}
		c := newSSECopier(m.bufs, kind, m.hide, m)
		if kind == kindMessages {
			c.anth = m.bufs.anthropicMeter(m.count)
		}
		rerr, werr = c.copy(cw, cw.flush)
		m.meterStream(c)
		m.bufs.keep(c.ev, c.text, c.tail)
	default:
		rerr, werr = m.copyBody(cw, s.ok)
	}
	if werr == nil {
		werr = cw.flush()
	}
	switch {
	case werr != nil:
		m.ex.status, m.ex.reason, m.ex.err = StatusClientClosedRequest, reasonCanceled, werr
	case rerr != nil:
		_, m.ex.reason = upstreamFailure(rerr, true)
		m.ex.err = rerr
	}
	s.end()
	return cw.n, firstErr(werr, rerr)
}

// CloseWithError ends the request if fasthttp never called WriteTo (the
// client went away before the head was written, or a HEAD request).
func (s *responseStream) CloseWithError(err error) error {
	if !s.started {
		s.m.ex.status, s.m.ex.err = StatusClientClosedRequest, err
		s.m.ex.prompt, s.m.ex.completion = 0, 0
	}
	s.end()
	return nil
}

func (s *responseStream) end() {
	if s.ended {
		return
	}
	s.ended = true
	s.m.end()
	s.m.p.done()
}

// copyBody copies a large or unsized non-streaming body through unchanged
// while keeping what metering needs: the whole body up to maxHeldBody
// (embeddings: only the tail), else its tail, where upstreams put usage.
// Error statuses are copied and not metered.
func (m *metered) copyBody(dst io.Writer, ok bool) (rerr, werr error) {
	limit := maxHeldBody
	if m.ex.route == routeEmbeddings || !ok {
		limit = 0 // large vectors; usage is always at the end
	}
	bm := bodyMeter{held: m.bufs.text[:0], tail: m.bufs.tail[:0], limit: limit}
	br := m.bufs.br
	for {
		if _, err := br.Peek(1); err != nil {
			if !errors.Is(err, io.EOF) {
				rerr = err
			}
			break
		}
		b, _ := br.Peek(br.Buffered()) // what arrived, without a copy
		bm.write(b)
		_, werr = dst.Write(b)
		_, _ = br.Discard(len(b))
		if werr != nil {
			break
		}
	}
	if !ok || !m.ex.metered {
		return rerr, werr
	}
	if u, found := m.heldUsage(&bm); found {
		m.setUsage(u)
	} else {
		m.ex.prompt = m.est.estimate()
		if !bm.over {
			m.ex.completion = countCompletionText(m.ex.route, bm.held, m.count)
		}
	}
	return rerr, werr
}

// coalescer gathers what the SSE copier writes and hands it to the client
// connection in one chunk per flush: events already buffered upstream go
// out together, and none waits for a later one.
type coalescer struct {
	w   io.Writer
	buf []byte
	n   int64
	err error
}

func (c *coalescer) Write(b []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if len(c.buf)+len(b) > cap(c.buf) {
		if err := c.flush(); err != nil {
			return 0, err
		}
		if len(b) > cap(c.buf) {
			n, err := c.w.Write(b)
			c.n += int64(n)
			c.err = err
			return n, err
		}
	}
	c.buf = append(c.buf, b...)
	return len(b), nil
}

func (c *coalescer) flush() error {
	if c.err != nil || len(c.buf) == 0 {
		return c.err
	}
	n, err := c.w.Write(c.buf)
	c.n += int64(n)
	c.buf = c.buf[:0]
	c.err = err
	return err
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

// appendTail appends b to tail, keeping at least the last usageTailMax
// bytes and at most twice that: the older half goes only when the buffer
// is full, so each byte is moved at most once (a 4 KiB write does not move
// 60 KiB).
func appendTail(tail, b []byte) []byte {
	if len(b) >= usageTailMax {
		return append(growTo(tail[:0], usageTailMax, 2*usageTailMax), b[len(b)-usageTailMax:]...)
	}
	if len(tail)+len(b) > 2*usageTailMax {
		tail = tail[:copy(tail, tail[len(tail)-usageTailMax:])]
	}
	return append(growTo(tail, len(b), 2*usageTailMax), b...)
}

func isEventStream(ct []byte) bool {
	const es = "text/event-stream"
	return len(ct) >= len(es) && strings.EqualFold(string(ct[:len(es)]), es)
}

func firstErr(errs ...error) error {
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}
