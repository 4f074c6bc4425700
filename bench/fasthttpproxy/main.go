// Command fasthttpproxy is the floor of the gateway's HTTP stack, for
// bench/loadbench.sh: fasthttp's server and HostClient (the versions in
// go.mod) passing every request through to one upstream with nothing else:
// no routing, limits, metering, metrics or logging. What the gateway costs
// above it is the gateway's own work; what it costs above nginx is the
// stack's (Go's scheduler and netpoller, fasthttp).
//
// Usage: fasthttpproxy --addr HOST:PORT --upstream HOST:PORT
package main

import (
	"flag"
	"io"
	"log"
	"net"

	"github.com/valyala/fasthttp"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "listen address")
	upstream := flag.String("upstream", "127.0.0.1:8000", "upstream host:port (plain HTTP)")
	flag.Parse()
	hc := &fasthttp.HostClient{
		Addr:               *upstream,
		MaxConns:           4096,
		StreamResponseBody: true,
		Dial:               func(a string) (net.Conn, error) { return net.Dial("tcp", a) },
	}
	srv := &fasthttp.Server{
		NoDefaultServerHeader: true,
		Handler: func(ctx *fasthttp.RequestCtx) {
			req := fasthttp.AcquireRequest()
			ctx.Request.CopyTo(req)
			req.SetHost(*upstream)
			resp := fasthttp.AcquireResponse()
			err := hc.Do(req, resp)
			fasthttp.ReleaseRequest(req)
			if err != nil {
				fasthttp.ReleaseResponse(resp)
				ctx.Error(err.Error(), fasthttp.StatusBadGateway)
				return
			}
			resp.Header.CopyTo(&ctx.Response.Header)
			if resp.Header.ContentLength() >= 0 {
				ctx.SetBody(resp.Body())
				fasthttp.ReleaseResponse(resp)
				return
			}
			ctx.Response.SetBodyStream(&body{resp}, -1) // one flushed chunk per upstream chunk
		},
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(srv.Serve(ln))
}

// body streams an upstream body and releases the response when fasthttp
// closes it.
type body struct{ resp *fasthttp.Response }

func (b *body) Read(p []byte) (int, error) {
	if s := b.resp.BodyStream(); s != nil {
		return s.Read(p)
	}
	return 0, io.EOF
}

func (b *body) Close() error {
	err := b.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(b.resp)
	return err
}
