package proxy

import "github.com/valyala/fasthttp"

// serveHealth answers /healthz: 200 while the process runs.
func (p *Proxy) serveHealth(ctx *fasthttp.RequestCtx) {
	writeHealth(ctx, fasthttp.StatusOK, "ok")
}

// serveReady answers /readyz: 200 when the replica serves, 503 while it
// drains at shutdown or while Config.Ready says it is not ready.
func (p *Proxy) serveReady(ctx *fasthttp.RequestCtx) {
	switch {
	case p.draining.Load():
		writeHealth(ctx, fasthttp.StatusServiceUnavailable, "draining")
	case p.cfg.Ready != nil && !p.cfg.Ready():
		writeHealth(ctx, fasthttp.StatusServiceUnavailable, "not ready")
	default:
		writeHealth(ctx, fasthttp.StatusOK, "ok")
	}
}

func writeHealth(ctx *fasthttp.RequestCtx, status int, body string) {
	ctx.Response.Header.Set("Content-Type", "text/plain; charset=utf-8")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetStatusCode(status)
	ctx.SetBodyString(body + "\n")
}
