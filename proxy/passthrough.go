package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// passthrough forwards an unmetered /v1/ request (GET /v1/models, file
// uploads, ...) to the first upstream untouched: bodies stream both ways
// unbuffered and unbounded in size (bounded in time by the upstream's
// timeout), content types and encodings are left alone. Protocol upgrades
// (WebSocket) are refused with 501. It reports whether the response goes
// on as a stream after the handler returns.
func (p *Proxy) passthrough(ctx *fasthttp.RequestCtx, path string, query []byte, c caller, rid string) (async bool) {
	up := p.ups()[0]
	ex := &exchange{start: time.Now(), route: routeOther, method: string(ctx.Method()), path: path, upstream: up.Name, ttft: -1,
		user: c.user, requestID: rid, key: c.id.KeyName}
	if len(ctx.Request.Header.Peek("Upgrade")) > 0 {
		p.reply(ctx, ex, &apiError{status: fasthttp.StatusNotImplemented, typ: typeInvalidRequest,
			message: "Protocol upgrades (WebSocket) are not supported by the gateway."})
		p.finish(ex)
		return false
	}
	var held *reqBody // an upload read whole to find its model
	if c.restricted() {
		var aerr *apiError
		if id, ok := strings.CutPrefix(path, "/v1/models/"); ok && ctx.IsGet() {
			if !c.allows(id) {
				aerr = errModelNotAllowed(id)
			}
		} else if held, aerr = p.uploadModel(ctx, c); aerr == nil {
			defer p.releaseBody(held)
		}
		if aerr != nil {
			p.reply(ctx, ex, aerr)
			p.finish(ex)
			return false
		}
	}
	var deadline time.Time
	if up.Timeout > 0 {
		// Uploads may take as long as the upstream exchange may.
		deadline = ex.start.Add(up.Timeout)
		_ = ctx.Conn().SetReadDeadline(deadline)
	}
	req := fasthttp.AcquireRequest()
	if err := outRequest(ctx, req, up, path, "", query, false, c.authed, rid); err != nil {
		fasthttp.ReleaseRequest(req)
		p.reply(ctx, ex, &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, message: err.Error()})
		p.finish(ex)
		return false
	}
	if held != nil {
		req.SetBodyRaw(held.b)
	} else if s := ctx.RequestBodyStream(); s != nil && ctx.Request.Header.ContentLength() != 0 {
		req.SetBodyStream(s, ctx.Request.Header.ContentLength())
	}
	resp := fasthttp.AcquireResponse()
	resp.StreamBody = true
	var err error
	if deadline.IsZero() {
		err = up.client.Do(req, resp)
	} else {
		err = up.client.DoDeadline(req, resp, deadline)
	}
	fasthttp.ReleaseRequest(req)
	if err != nil {
		fasthttp.ReleaseResponse(resp)
		aerr, reason := upstreamFailure(err, false)
		ex.reason, ex.err = reason, err
		p.reply(ctx, ex, aerr)
		p.finish(ex)
		return false
	}
	ex.status = resp.StatusCode()
	copyResponseHeader(&ctx.Response.Header, &resp.Header)
	ctx.Response.SetBodyStream(&passStream{p: p, ex: ex, resp: resp}, resp.Header.ContentLength())
	return true
}

// uploadModel lets a caller limited to some models through only with a
// multipart POST (an image edit, an audio transcription) whose model field
// it may call: the body is read whole, within max_body_bytes and the
// in-flight budget, and returned to be sent from memory. Anything else
// (files, batches, stored objects) is refused: the gateway cannot tell
// which model it would run or whose data it would read.
func (p *Proxy) uploadModel(ctx *fasthttp.RequestCtx, c caller) (*reqBody, *apiError) {
	mt, params, err := mime.ParseMediaType(string(ctx.Request.Header.ContentType()))
	if !ctx.IsPost() || err != nil || mt != "multipart/form-data" || params["boundary"] == "" {
		return nil, errUnattributable()
	}
	body, aerr := p.readBody(ctx)
	if aerr != nil {
		return nil, aerr
	}
	// Every part is read: form parsers upstream keep the last of two
	// model fields, so a form naming two is refused, not checked on one.
	model, found := "", false
	r := multipart.NewReader(bytes.NewReader(body.b), params["boundary"])
	for parts := 0; aerr == nil; parts++ {
		part, err := r.NextPart()
		switch {
		case errors.Is(err, io.EOF):
		case err != nil || parts == maxUploadParts:
			aerr = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest,
				message: fmt.Sprintf("The multipart body could not be read (or has more than %d parts).", maxUploadParts)}
		case part.FormName() == "model" && found:
			aerr = &apiError{status: fasthttp.StatusBadRequest, typ: typeInvalidRequest, code: "duplicate_key",
				message: "The form repeats the field `model`."}
		case part.FormName() == "model":
			b, _ := io.ReadAll(io.LimitReader(part, maxModelBytes+1))
			model, found = string(b), true
			continue
		default:
			continue
		}
		break
	}
	switch {
	case aerr != nil:
	case !found || model == "":
		aerr = errUnattributable()
	case len(model) > maxModelBytes:
		aerr = errModelTooLong(len(model))
	case !c.allows(model):
		aerr = errModelNotAllowed(model)
	default:
		return body, nil
	}
	p.releaseBody(body)
	return nil, aerr
}

// maxUploadParts bounds the parts uploadModel looks through for the model.
const maxUploadParts = 64

// passStream copies an upstream body to the client unchanged and ends the
// request when done.
type passStream struct {
	p     *Proxy
	ex    *exchange
	resp  *fasthttp.Response
	ended bool
}

func (s *passStream) SupportsBodyWriteTo() bool { return true }

func (s *passStream) Read([]byte) (int, error) {
	return 0, errors.New("proxy: response stream is written with WriteTo")
}

func (s *passStream) WriteTo(w io.Writer) (int64, error) {
	bufs := s.p.bufs.Get().(*streamBufs)
	defer s.p.bufs.Put(bufs)
	buf := bufs.out[:cap(bufs.out)]
	var n int64
	src := s.resp.BodyStream()
	for {
		r, err := src.Read(buf)
		if r > 0 {
			wn, werr := w.Write(buf[:r])
			n += int64(wn)
			if werr != nil {
				s.ex.status, s.ex.reason, s.ex.err = StatusClientClosedRequest, reasonCanceled, werr
				s.end()
				return n, werr
			}
		}
		if errors.Is(err, io.EOF) {
			s.end()
			return n, nil
		}
		if err != nil {
			_, s.ex.reason = upstreamFailure(err, true)
			s.ex.err = err
			s.end()
			return n, err
		}
	}
}

func (s *passStream) CloseWithError(err error) error {
	if !s.ended && err != nil {
		s.ex.status, s.ex.err = StatusClientClosedRequest, err
	}
	s.end()
	return nil
}

func (s *passStream) end() {
	if s.ended {
		return
	}
	s.ended = true
	_ = s.resp.CloseBodyStream()
	fasthttp.ReleaseResponse(s.resp)
	s.p.finish(s.ex)
	s.p.done()
}
