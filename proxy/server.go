package proxy

import (
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"
)

// Server settings of the proxy port.
const (
	maxRequestHeader = 16 << 10 // request heads larger than this get 431
	idleTimeout      = 2 * time.Minute
)

// Server returns the fasthttp server of the proxy port: request heads
// bounded in size, the whole request (head and body) bounded in time by
// BodyReadTimeout, connections capped at MaxConnections, request bodies
// streamed so memory grows only with what arrives. Serve it with
// Serve(ln); stop it with ShutdownWithContext, then Wait.
func (p *Proxy) Server() *fasthttp.Server {
	return &fasthttp.Server{
		Handler:                      p.Serve,
		ErrorHandler:                 p.serverError,
		Name:                         "",
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		ReadTimeout:                  p.cfg.BodyReadTimeout,
		IdleTimeout:                  idleTimeout,
		Concurrency:                  p.cfg.MaxConnections,
		ReadBufferSize:               maxRequestHeader,
		MaxRequestBodySize:           int(p.cfg.MaxBodyBytes),
		StreamRequestBody:            true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		SecureErrorLogMessage:        true,
		Logger:                       fasthttpLogger{p.log},
	}
}

// Serve handles one request of the proxy port: the metered routes; every
// other JSON POST under /v1/ (images, audio, moderations, ...), routed by
// its model, limited by requests limits and metered where its answer
// reports usage; every other /v1/ request (uploads, GETs, JSON without a
// model), forwarded to the first upstream; /healthz and /readyz. Safe for
// concurrent use.
func (p *Proxy) Serve(ctx *fasthttp.RequestCtx) {
	raw := ctx.Request.Header.RequestURI()
	switch string(raw) {
	case "/healthz":
		p.serveHealth(ctx)
		return
	case "/readyz":
		p.serveReady(ctx)
		return
	}
	p.inflight.add()
	p.m.inFlight.Inc()
	async := false
	defer func() {
		if !async {
			p.done()
		}
	}()
	method := string(ctx.Method())
	rid := p.requestID(ctx)
	// Set last: error replies and upstream headers replace the response's.
	// An upstream's own request ID (OpenAI's, for its support) is kept.
	defer func() {
		if len(ctx.Response.Header.Peek("X-Request-Id")) == 0 {
			ctx.Response.Header.Set("X-Request-Id", rid)
		}
	}()
	clean, query, ok := cleanPath(raw)
	if !ok {
		ex := exchange{start: time.Now(), route: routeOther, method: method, path: "(refused)", requestID: rid}
		p.reply(ctx, &ex, errBadPath())
		p.finish(&ex)
		return
	}
	route := meteredRoute(clean)
	if method != fasthttp.MethodPost {
		route = ""
	}
	c, aerr := p.identify(ctx)
	if aerr != nil {
		ex := exchange{start: time.Now(), route: routeOther, method: method, path: clean, requestID: rid, metered: route != ""}
		if route != "" {
			ex.route = route
		}
		p.reply(ctx, &ex, aerr)
		p.finish(&ex)
		return
	}
	switch {
	case route != "":
		async = p.serveMetered(ctx, route, route, query, c, rid)
	case method == fasthttp.MethodPost && isV1(clean) && mayBeJSON(&ctx.Request.Header):
		async = p.serveMetered(ctx, routeOther, clean, query, c, rid)
	case clean == "/usage" && method == fasthttp.MethodGet:
		p.serveUsage(ctx, c)
	case clean == "/v1/models" && method == fasthttp.MethodGet:
		p.serveModels(ctx, query, c, rid)
	case isV1(clean):
		async = p.passthrough(ctx, clean, query, c, rid)
	default:
		ex := exchange{start: time.Now(), route: routeOther, method: method, path: clean, requestID: rid}
		p.reply(ctx, &ex, errNotFound(method, clean))
		p.finish(&ex)
	}
}

// serveModels answers GET /v1/models with the merged list of every
// upstream's models (see mergeModels), asking the upstreams at once, each
// bounded in time and size; those that fail are left out. 502 when none
// answers.
func (p *Proxy) serveModels(ctx *fasthttp.RequestCtx, query []byte, c caller, rid string) {
	ex := exchange{start: time.Now(), route: routeOther, method: fasthttp.MethodGet, path: "/v1/models", ttft: -1,
		user: c.user, requestID: rid, key: c.id.KeyName}
	ups := p.ups()
	lists := make([]modelList, len(ups))
	reqs := make([]*fasthttp.Request, len(ups))
	for i, up := range ups {
		// Prepared here: the client's request is read on this goroutine only.
		reqs[i] = fasthttp.AcquireRequest()
		q := query
		if up.kind == kindAnthropic {
			q = []byte("limit=1000") // Anthropic pages its list; one page holds them all
		}
		if err := outRequest(ctx, reqs[i], up, "/v1/models", "", q, true, c.authed, rid); err != nil {
			fasthttp.ReleaseRequest(reqs[i])
			reqs[i] = nil
		}
		lists[i].up = up
	}
	deadline := ex.start.Add(modelsTimeout)
	var wg sync.WaitGroup
	for i, up := range ups {
		if reqs[i] == nil {
			continue
		}
		wg.Go(func() {
			var err error
			if lists[i].body, err = up.fetchModels(reqs[i], deadline); err != nil {
				p.log.Warn().Str("upstream", up.Name).Err(err).Msg("model list left out of /v1/models")
			}
			fasthttp.ReleaseRequest(reqs[i])
		})
	}
	wg.Wait()
	body, answered := mergeModels(lists, c.allows)
	if answered == 0 {
		p.reply(ctx, &ex, &apiError{status: fasthttp.StatusBadGateway, typ: typeServer, code: "upstream_error",
			message: "No upstream answered its model list."})
		p.finish(&ex)
		return
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyRaw(body)
	ex.status = fasthttp.StatusOK
	p.finish(&ex)
}

// done ends a request's in-flight accounting; for streamed responses it
// runs when the stream ends.
func (p *Proxy) done() {
	p.m.inFlight.Dec()
	p.inflight.done()
}

func isV1(p string) bool { return len(p) > len("/v1/") && p[:len("/v1/")] == "/v1/" }

// isJSON reports whether a Content-Type names JSON (application/json, with
// or without parameters).
func isJSON(ct []byte) bool {
	const js = "application/json"
	return len(ct) >= len(js) && strings.EqualFold(string(ct[:len(js)]), js) &&
		(len(ct) == len(js) || ct[len(js)] == ';' || ct[len(js)] == ' ')
}

// mayBeJSON reports whether a POST body must be read as JSON: it is not
// empty, and it says it is JSON or is not an upload (multipart or
// url-encoded form, octet-stream). Many upstreams parse a body without a Content-Type,
// or with text/plain, as JSON, so the header alone must not let a body
// naming a model pass unchecked and unlimited.
func mayBeJSON(h *fasthttp.RequestHeader) bool {
	if h.ContentLength() == 0 {
		return false // cancel calls: SDKs send Content-Type: application/json and no body
	}
	ct := h.ContentType()
	if isJSON(ct) {
		return true
	}
	mt, _, _ := strings.Cut(string(ct), ";")
	switch strings.ToLower(strings.TrimSpace(mt)) {
	case "multipart/form-data", "application/x-www-form-urlencoded", "application/octet-stream":
		return false
	}
	return true
}

func meteredRoute(p string) string {
	switch p {
	case routeChat, routeCompletions, routeEmbeddings, routeResponses, routeMessages, routeCountTokens:
		return p
	}
	return ""
}

// serverError answers requests fasthttp refused before the handler: heads
// too large or malformed, bodies too slow. The OpenAI error shape, like
// every error the gateway makes.
func (p *Proxy) serverError(ctx *fasthttp.RequestCtx, err error) {
	e := &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, message: "The request could not be parsed."}
	var small *fasthttp.ErrSmallBuffer
	var ne net.Error
	switch {
	case errors.As(err, &small):
		e = &apiError{status: fasthttp.StatusRequestHeaderFieldsTooLarge, typ: typeInvalidRequest,
			message: "The request headers are larger than " + strconv.Itoa(maxRequestHeader) + " bytes."}
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		e = errTooLarge(p.cfg.MaxBodyBytes)
	case errors.As(err, &ne) && ne.Timeout():
		e = errReadTimeout()
	}
	writeAPIError(ctx, e, false)
	ctx.SetConnectionClose()
	// Refused before any handler ran, it still gets its access log line
	// and its count. fasthttp's err quotes the request's bytes, which may
	// hold a credential: only the gateway's own message is logged.
	p.finish(&exchange{start: time.Now(), route: routeOther, status: e.status, err: e, ttft: -1})
}

// fasthttpLogger sends fasthttp's own messages to the proxy's log, at
// debug level. Its errors quote the request's bytes ("invalid header value
// \"Bearer sk-...\""), a credential included, so only addresses and
// numbers are passed on; every other argument is withheld.
type fasthttpLogger struct{ log zerolog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	e := l.log.Debug()
	if e == nil {
		return
	}
	safe := make([]any, len(args))
	for i, a := range args {
		switch a.(type) {
		case net.Addr, int, int64, uint, uint64:
			safe[i] = a
		default:
			safe[i] = "(withheld: it may quote the request)"
		}
	}
	e.Str("component", "http").Msgf(format, safe...)
}
