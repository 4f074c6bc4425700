package proxy

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// readBody reads a metered request body whole, refusing more than
// MaxBodyBytes with 413.
func (p *Proxy) readBody(w http.ResponseWriter, r *http.Request) ([]byte, *apiError) {
	limit := p.cfg.MaxBodyBytes
	if r.ContentLength > limit {
		return nil, errTooLarge(limit)
	}
	src := http.MaxBytesReader(w, r.Body, limit)
	var (
		b   []byte
		err error
	)
	if r.ContentLength >= 0 {
		b = make([]byte, r.ContentLength)
		_, err = io.ReadFull(src, b)
	} else {
		b, err = io.ReadAll(src)
	}
	if err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return nil, errTooLarge(limit)
		}
		return nil, &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest,
			message: "Could not read the request body."}
	}
	return b, nil
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

// splice replaces raw, which must sit at body[i:], with repl in a new slice.
func splice(body []byte, i int, raw, repl string) ([]byte, bool) {
	if !at(body, i, raw) {
		return nil, false
	}
	out := make([]byte, 0, len(body)-len(raw)+len(repl))
	out = append(out, body[:i]...)
	out = append(out, repl...)
	return append(out, body[i+len(raw):]...), true
}

// insertField inserts field as the first member of the object whose '{' is
// body[i], in a new slice.
func insertField(body []byte, i int, field string) []byte {
	j := skipSpace(body, i+1)
	empty := j < len(body) && body[j] == '}'
	out := make([]byte, 0, len(body)+len(field)+1)
	out = append(out, body[:i+1]...)
	out = append(out, field...)
	if !empty {
		out = append(out, ',')
	}
	return append(out, body[i+1:]...)
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

// upstreamContext bounds an exchange with the upstream's timeout.
func upstreamContext(ctx context.Context, up *upstream) (context.Context, context.CancelFunc) {
	if up.Timeout > 0 {
		return context.WithTimeout(ctx, up.Timeout)
	}
	return context.WithCancel(ctx)
}
