package proxy

import (
	"net/http"
	"time"

	"github.com/rs/zerolog"
	"github.com/valyala/fasthttp"

	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// exchange is the record of one request: what the access log line and the
// request metrics report when it ends. It is owned by the request's
// goroutine, then by its response stream's.
type exchange struct {
	start        time.Time
	route        string // metric route label: a metered path or "other"
	method, path string // path only: a query string may hold credentials
	model, user  string
	requested    string // the model the client asked for, when a fallback answered; else ""
	upstream     string
	provider     string // the upstream's provider; "" before routing
	metered      bool
	status       int           // as sent to the client; 499 when it went away
	ttft         time.Duration // first body byte of a 2xx response; -1 = none
	prompt       int64
	completion   int64
	cached       int64   // of prompt, read from the provider's prompt cache
	written      int64   // of prompt, written to the provider's prompt cache
	costUSD      float64 // priced usage; 0 when unpriced or not metered
	reason       string  // upstream error reason label, "" = none
	err          error   // logged; never holds header values
	requestID    string
	key          string // name of the gateway key that authenticated it
	// attempts counts the upstreams tried (0 = none: refused before);
	// tried lists those that failed and were retried, in order; the last
	// attempt is upstream's.
	attempts int
	tried    []attempt
}

// attempt is a failed attempt that was retried on another upstream.
type attempt struct {
	upstream string
	model    string
	outcome  route.Outcome
}

// attempts is the tried list as a log array of {upstream, outcome}, and
// the model of each when models is set (a fallback answered).
type attempts struct {
	list   []attempt
	models bool
}

func (a attempts) MarshalZerologArray(arr *zerolog.Array) {
	for _, t := range a.list {
		d := zerolog.Dict().Str("upstream", t.upstream)
		if a.models {
			d = d.Str("model", t.model)
		}
		arr.Dict(d.Str("outcome", t.outcome.String()))
	}
}

// reply answers the request with an error the gateway produced, in
// Anthropic's error shape on the Messages API routes.
func (p *Proxy) reply(ctx *fasthttp.RequestCtx, ex *exchange, e *apiError) {
	ex.status = e.status
	if ex.err == nil {
		ex.err = e
	}
	writeAPIError(ctx, e, ex.route == routeMessages || ex.route == routeCountTokens)
}

// finish records the ended request in the metrics and the access log.
func (p *Proxy) finish(ex *exchange) {
	d := time.Since(ex.start)
	if ex.status == 0 {
		ex.status = http.StatusOK
	}
	if ex.reason != "" {
		p.m.upstreamErrors.WithLabelValues(ex.upstream, ex.reason).Inc()
	}
	if ex.metered {
		p.m.addTokens(ex.user, ex.model, ex.prompt, ex.completion, ex.costUSD)
	}
	ttft := -1.0
	if ex.ttft >= 0 && ex.metered {
		ttft = ex.ttft.Seconds()
	}
	p.m.request(ex.route, ex.model, ex.upstream, ex.status, d.Seconds(), ttft)

	level := zerolog.InfoLevel
	if ex.status >= 500 {
		level = zerolog.WarnLevel
	}
	e := p.log.WithLevel(level)
	if e == nil {
		return
	}
	e = e.Str("method", ex.method).
		Str("path", ex.path).
		Str("model", ex.model).
		Str("user", ex.user).
		Str("upstream", ex.upstream).
		Str("provider", ex.provider).
		Int("status", ex.status).
		Int64("prompt_tokens", ex.prompt).
		Int64("completion_tokens", ex.completion).
		Int64("cached_tokens", ex.cached).
		Int64("cache_write_tokens", ex.written).
		Float64("cost_usd", ex.costUSD).
		Float64("duration_ms", float64(d.Microseconds())/1000).
		Str("request_id", ex.requestID)
	if ex.key != "" {
		e = e.Str("key", ex.key)
	}
	if ex.requested != "" {
		e = e.Str("requested_model", ex.requested)
	}
	if ex.attempts > 0 {
		e = e.Int("attempts", ex.attempts)
	}
	if len(ex.tried) > 0 {
		e = e.Array("retried", attempts{list: ex.tried, models: ex.requested != ""})
	}
	if ex.err != nil {
		e = e.Str("error", ex.err.Error())
	}
	e.Msg("request")
}
