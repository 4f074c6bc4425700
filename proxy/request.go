package proxy

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"slices"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"github.com/valyala/fasthttp"

	"github.com/genai-gateway/genai-gateway/limiter"
)

// Request body buffers: pooled up to maxPooledBody, grown with what
// arrives, never allocated at a declared Content-Length.
const (
	initialBodyBuf = 4 << 10
	maxPooledBody  = 1 << 20
)

// reqBody is a metered request's body, held in a pooled buffer whose
// capacity is charged to the Proxy's bodyBudget until release.
type reqBody struct {
	buf  *[]byte
	b    []byte
	held int64
}

// readBody reads a metered request body whole: 413 past MaxBodyBytes (at
// once when Content-Length says so), 408 when it does not arrive within
// BodyReadTimeout of the request's start, 503 when all bodies in flight
// together would pass MaxInflightBodyBytes. Memory grows with the bytes
// that arrive, not with what the client declares.
func (p *Proxy) readBody(ctx *fasthttp.RequestCtx) (*reqBody, *apiError) {
	limit := p.cfg.MaxBodyBytes
	cl := int64(ctx.Request.Header.ContentLength())
	if cl > limit {
		return nil, errTooLarge(limit)
	}
	rb := &reqBody{}
	src := ctx.RequestBodyStream()
	if src == nil {
		src = bytes.NewReader(ctx.Request.Body())
	}
	rb.buf = p.bodyBufs.Get().(*[]byte)
	rb.b = (*rb.buf)[:0]
	if !p.bodies.take(int64(cap(rb.b))) {
		p.releaseBody(rb)
		return nil, errBusy()
	}
	rb.held = int64(cap(rb.b))
	for {
		if len(rb.b) == cap(rb.b) {
			if int64(len(rb.b)) > limit {
				p.releaseBody(rb)
				return nil, errTooLarge(limit)
			}
			next := min(int64(cap(rb.b))*2, limit+1)
			if cl >= 0 && cl < next && int64(len(rb.b)) < cl {
				next = cl + 1 // room for the declared body and one byte to see EOF
			}
			if !p.bodies.take(next - int64(cap(rb.b))) {
				p.releaseBody(rb)
				return nil, errBusy()
			}
			rb.held += next - int64(cap(rb.b))
			grown := make([]byte, len(rb.b), next)
			copy(grown, rb.b)
			rb.b = grown
		}
		n, err := src.Read(rb.b[len(rb.b):cap(rb.b)])
		rb.b = rb.b[:len(rb.b)+n]
		if int64(len(rb.b)) > limit {
			p.releaseBody(rb)
			return nil, errTooLarge(limit)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return rb, nil
		case isNetTimeout(err):
			p.releaseBody(rb)
			return nil, errReadTimeout()
		default:
			p.releaseBody(rb)
			return nil, &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest,
				message: "Could not read the request body."}
		}
	}
}

// releaseBody returns rb's memory to the budget and its buffer to the pool.
// rb must not be used after.
func (p *Proxy) releaseBody(rb *reqBody) {
	if rb == nil || rb.buf == nil {
		return
	}
	p.bodies.give(rb.held)
	if cap(rb.b) <= maxPooledBody {
		*rb.buf = rb.b[:0]
		p.bodyBufs.Put(rb.buf)
	}
	rb.buf, rb.b, rb.held = nil, nil, 0
}

// withIncludeUsage returns body with stream_options.include_usage set to
// true, changing nothing else: it sets the field inside an existing
// stream_options object, replaces a stream_options that is not an object,
// or inserts "stream_options":{"include_usage":true} first in the request
// object. so is body's stream_options as gjson found it.
func withIncludeUsage(body []byte, so gjson.Result) []byte {
	switch {
	case so.IsObject():
		if iu := gjson.Get(so.Raw, "include_usage"); iu.Exists() {
			if out, ok := splice(body, so.Index+iu.Index, iu.Raw, "true"); ok {
				return out
			}
			break
		}
		if at(body, so.Index, so.Raw) {
			return insertField(body, so.Index, `"include_usage":true`)
		}
	case so.Exists():
		if out, ok := splice(body, so.Index, so.Raw, `{"include_usage":true}`); ok {
			return out
		}
	default:
		if i := bytes.IndexByte(body, '{'); i >= 0 {
			return insertField(body, i, `"stream_options":{"include_usage":true}`)
		}
	}
	// gjson could not place the value (it always can on valid JSON): let
	// sjson rewrite the document.
	if out, err := sjson.SetBytes(slices.Clone(body), "stream_options.include_usage", true); err == nil {
		return out
	}
	return body
}

// at reports whether raw sits in body at index i.
func at(body []byte, i int, raw string) bool {
	return i > 0 && i+len(raw) <= len(body) && string(body[i:i+len(raw)]) == raw
}

// splice replaces raw, which must sit at body[i:], with repl, in body's
// own array when it has the room.
func splice(body []byte, i int, raw, repl string) ([]byte, bool) {
	if !at(body, i, raw) {
		return nil, false
	}
	return replaceAt(body, i, len(raw), repl), true
}

// insertField inserts field as the first member of the object whose '{' is
// body[i], in body's own array when it has the room.
func insertField(body []byte, i int, field string) []byte {
	j := skipSpace(body, i+1)
	if j < len(body) && body[j] == '}' {
		return replaceAt(body, i+1, 0, field)
	}
	body = replaceAt(body, i+1, 0, ",")
	return replaceAt(body, i+1, 0, field)
}

// replaceAt replaces body[i:i+n] with s, moving the rest; it reallocates
// only when body's capacity is too small.
func replaceAt(body []byte, i, n int, s string) []byte {
	old := len(body)
	if d := len(s) - n; d > 0 {
		body = slices.Grow(body, d)[:old+d]
	} else {
		body = body[:old+d]
	}
	copy(body[i+len(s):], body[i+n:old])
	copy(body[i:], s)
	return body
}

// estimator computes a request's prompt-token estimate once, on first use
// (the limiter calls it only when a token limit applies; the tokenizer
// fallback reuses it). Not safe for concurrent use.
type estimator struct {
	tok          *tokenizers
	route, model string
	body         []byte
	n            int64
	done         bool
}

func (e *estimator) estimate() int64 {
	if !e.done {
		e.n, e.done = e.tok.estimatePrompt(e.route, e.model, e.body), true
	}
	return e.n
}

// limiterEstimate is the estimate the limiter admits with: a byte bound
// and a cheap guess, and the exact count only when the bound cannot decide.
func (e *estimator) limiterEstimate() limiter.Estimate {
	bound, cheap := promptBound(e.route, e.model, e.body)
	return limiter.Estimate{Bound: bound, Cheap: cheap, Exact: e.estimate, MaxOutput: maxOutput(e.route, e.body)}
}

// maxOutputChoices bounds the n and best_of that maxOutput multiplies by:
// they are client input, and OpenAI accepts at most 128 choices.
const maxOutputChoices = 128

// maxOutput is the most output the request asks for: the largest of its
// top-level max_tokens, max_completion_tokens (chat) and max_output_tokens
// (Responses), times the choices the upstream generates for chat and
// completions (the larger of n and best_of, at most maxOutputChoices),
// clamped like usage figures; 0 when it names none. One walk of the body's
// top level, no allocation.
func maxOutput(route string, body []byte) int64 {
	var n, choices int64 = 0, 1
	multi := route == routeChat || route == routeCompletions
	f := newMembers(unsafeString(body))
	for k, v, ok := f.next(); ok; k, v, ok = f.next() {
		switch k {
		case "max_tokens", "max_completion_tokens", "max_output_tokens":
			if x, _ := tokenFigure(gjson.Parse(v)); x > n {
				n = x
			}
		case "n", "best_of":
			if x, _ := tokenFigure(gjson.Parse(v)); multi && x > choices {
				choices = min(x, maxOutputChoices)
			}
		}
	}
	return min(n*choices, maxUsageTokens)
}
