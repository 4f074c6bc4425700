package proxy

import (
	"context"
	"log"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"
)

// passthrough forwards unmetered /v1/ requests (GET /v1/models, file
// uploads, ...) to the first upstream untouched: bodies stream both ways
// unbuffered, content types and encodings are left alone, protocol upgrades
// work. It is httputil.ReverseProxy with the gateway's header rules, error
// path and metrics. Safe for concurrent use.
type passthrough struct {
	p  *Proxy
	up *upstream
	rp *httputil.ReverseProxy
}

type exchangeKey struct{}

func newPassthrough(p *Proxy) *passthrough {
	up := p.upstreams[0]
	t := &passthrough{p: p, up: up}
	t.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up.base)
			appendXFF(pr.Out.Header, pr.In.Header["X-Forwarded-For"], pr.In.RemoteAddr)
			if up.auth != nil {
				pr.Out.Header["Authorization"] = up.auth
			}
		},
		Transport:  p.transport,
		BufferPool: bufferPool{&p.copyBufs},
		ErrorLog:   log.New(p.log, "", 0),
		ModifyResponse: func(resp *http.Response) error {
			if ex, ok := resp.Request.Context().Value(exchangeKey{}).(*exchange); ok {
				ex.status = resp.StatusCode
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			ex, ok := r.Context().Value(exchangeKey{}).(*exchange)
			if !ok {
				writeAPIError(w, errInternal())
				return
			}
			aerr, reason := upstreamFailure(ex.clientCtx, ex.upstreamCtx, err, false)
			ex.reason, ex.err = reason, err
			if aerr == nil {
				ex.status = StatusClientClosedRequest
				return
			}
			p.reply(w, ex, aerr)
		},
	}
	return t
}

// serve forwards r. A response cut off midway makes ReverseProxy abort the
// connection (http.ErrAbortHandler); the deferred bookkeeping still runs.
func (t *passthrough) serve(w http.ResponseWriter, r *http.Request) {
	ex := &exchange{start: time.Now(), route: routeOther, method: r.Method, path: r.URL.Path,
		upstream: t.up.Name, ttft: -1, clientCtx: r.Context()}
	defer func() {
		if ex.status != StatusClientClosedRequest && r.Context().Err() != nil {
			ex.status, ex.err = StatusClientClosedRequest, r.Context().Err()
		}
		t.p.finish(ex)
	}()
	ctx, cancel := upstreamContext(r.Context(), t.up)
	defer cancel()
	ex.upstreamCtx = ctx
	_ = http.NewResponseController(w).SetWriteDeadline(time.Time{}) // bounded by the upstream timeout
	t.rp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, exchangeKey{}, ex)))
}

// bufferPool lends ReverseProxy the Proxy's copy buffers.
type bufferPool struct{ pool *sync.Pool }

func (b bufferPool) Get() []byte  { return *b.pool.Get().(*[]byte) }
func (b bufferPool) Put(v []byte) { b.pool.Put(&v) }
