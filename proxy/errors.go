package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/tidwall/gjson"
	"github.com/valyala/fasthttp"

	"github.com/genai-gateway/genai-gateway/limiter"
	"github.com/genai-gateway/genai-gateway/proxy/provider"
)

// StatusClientClosedRequest is the status recorded in metrics and logs when
// the client went away before the response was complete (nginx's 499). It is
// never written to the wire: there is nobody left to read it.
const StatusClientClosedRequest = 499

// Upstream error reasons, the `reason` label of
// genai_gateway_upstream_errors_total.
const (
	reasonTimeout     = "timeout"
	reasonUnreachable = "unreachable"
	reasonBroken      = "broken"
	reasonCanceled    = "canceled"
)

// OpenAI error types used by the errors the gateway produces itself.
const (
	typeInvalidRequest = "invalid_request_error"
	typeServer         = "server_error"
)

// apiError is an error the gateway answers itself, in the OpenAI error shape
// {"error":{"message":...,"type":...,"param":null,"code":...}}.
type apiError struct {
	status  int
	typ     string
	code    string // "" = JSON null
	message string
	header  http.Header // extra response headers (429); may be nil
}

func (e *apiError) Error() string { return e.message }

// writeAPIError is the one place that writes an error body the gateway
// produces: OpenAI's shape, or Anthropic's (anthropic set, for the Messages
// API routes) with the type that fits the status. It replaces whatever
// response was being prepared (an upstream's headers included) and never
// includes request headers, so no Authorization value or API key can end
// up in it.
func writeAPIError(ctx *fasthttp.RequestCtx, e *apiError, anthropic bool) {
	ctx.Response.Reset()
	for k, vs := range e.header {
		for _, v := range vs {
			ctx.Response.Header.Add(k, v)
		}
	}
	ctx.Response.Header.SetContentType("application/json")
	ctx.SetStatusCode(e.status)
	if anthropic {
		ctx.Response.SetBodyRaw(append(provider.AnthropicErrorBody(provider.AnthropicErrorType(e.status), e.message), '\n'))
		return
	}
	ctx.Response.SetBodyRaw(appendErrorBody(make([]byte, 0, 128+len(e.message)), e))
}

// appendErrorBody appends the OpenAI-shaped JSON error body of e to b.
func appendErrorBody(b []byte, e *apiError) []byte {
	b = append(b, `{"error":{"message":`...)
	b = gjson.AppendJSONString(b, e.message)
	b = append(b, `,"type":`...)
	b = gjson.AppendJSONString(b, e.typ)
	b = append(b, `,"param":null,"code":`...)
	if e.code == "" {
		b = append(b, "null"...)
	} else {
		b = gjson.AppendJSONString(b, e.code)
	}
	return append(b, "}}\n"...)
}

// upstreamFailure maps an error of a request to an upstream to the status
// the client gets and the reason label of the upstream error metric: a
// deadline or network timeout (504, timeout), anything else before a
// response (502, unreachable) or while reading the response body (502,
// broken).
func upstreamFailure(err error, afterHeaders bool) (*apiError, string) {
	switch {
	case errors.Is(err, fasthttp.ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || isNetTimeout(err):
		return &apiError{status: http.StatusGatewayTimeout, typ: typeServer, code: "upstream_timeout",
			message: "The upstream server did not answer in time."}, reasonTimeout
	case afterHeaders:
		return &apiError{status: http.StatusBadGateway, typ: typeServer, code: "upstream_error",
			message: "The upstream server broke off its response."}, reasonBroken
	default:
		return &apiError{status: http.StatusBadGateway, typ: typeServer, code: "upstream_unreachable",
			message: "The upstream server could not be reached."}, reasonUnreachable
	}
}

func isNetTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func errBadJSON() *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest,
		message: "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload, but what was sent was not valid JSON."}
}

func errMissingModel() *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest,
		message: "You must provide a model parameter."}
}

// maxModelBytes bounds a request's model name. Real names are under 100
// bytes; the name is quoted in errors, logged and routed by, so a client's
// megabyte of model must not travel that far.
const maxModelBytes = 256

func errModelTooLong(n int) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_model",
		message: fmt.Sprintf("The model name is %d bytes long; at most %d are accepted.", n, maxModelBytes)}
}

func errUnknownModel(model string) *apiError {
	return &apiError{status: http.StatusNotFound, typ: typeInvalidRequest, code: "model_not_found",
		message: "The model `" + model + "` does not exist or you do not have access to it."}
}

func errTooLarge(limit int64) *apiError {
	return &apiError{status: http.StatusRequestEntityTooLarge, typ: typeInvalidRequest, code: "request_too_large",
		message: "The request body is larger than the limit of " + strconv.FormatInt(limit, 10) + " bytes."}
}

func errMissingUser(header string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "missing_user",
		message: "Missing the `" + header + "` header that identifies the user for rate limiting."}
}

func errNotFound(method, path string) *apiError {
	return &apiError{status: http.StatusNotFound, typ: typeInvalidRequest,
		message: "Invalid URL (" + method + " " + path + ")"}
}

func errBadPath() *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_path",
		message: "The request path cannot be cleaned safely (encoded dots or slashes, `;`, backslashes or control bytes)."}
}

func errReadTimeout() *apiError {
	return &apiError{status: http.StatusRequestTimeout, typ: typeInvalidRequest, code: "request_timeout",
		message: "The request was not received in time."}
}

func errBusy() *apiError {
	h := make(http.Header, 1)
	h.Set("Retry-After", "1")
	return &apiError{status: http.StatusServiceUnavailable, typ: typeServer, code: "overloaded",
		message: "The gateway is holding too many request bodies; retry shortly.", header: h}
}

// errUpstreamsFull is the answer when every upstream that serves model
// is at its max_in_flight: the client may retry in a second.
func errUpstreamsFull(model string) *apiError {
	h := make(http.Header, 1)
	h.Set("Retry-After", "1")
	return &apiError{status: http.StatusServiceUnavailable, typ: typeServer, code: "upstreams_busy",
		message: "Every upstream serving the model `" + model + "` is at its limit of requests in flight; retry shortly.", header: h}
}

func errUserTooLong(header string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "invalid_user",
		message: "The `" + header + "` header is longer than " + strconv.Itoa(MaxUserBytes) + " bytes."}
}

func errDepth() *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "json_too_deep",
		message: "The JSON body is nested deeper than " + strconv.Itoa(maxJSONDepth) + " levels."}
}

func errDuplicateKey(key string) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "duplicate_key",
		message: "The JSON body repeats the key `" + key + "` in one object."}
}

func errUnauthorized(reason string) *apiError {
	msg := "Incorrect API key provided."
	if reason == "missing" {
		msg = "You didn't provide an API key. Provide it in the Authorization header (Bearer), x-api-key or api-key."
	}
	return &apiError{status: http.StatusUnauthorized, typ: typeInvalidRequest, code: "invalid_api_key", message: msg}
}

func errModelNotAllowed(model string) *apiError {
	return &apiError{status: http.StatusForbidden, typ: typeInvalidRequest, code: "model_not_allowed",
		message: "Your API key may not call the model `" + model + "`."}
}

// errUnattributable refuses, for a caller limited to some models, a request
// without a model the gateway can read: a batch or an upload could run or
// read anything with the upstream's key.
func errUnattributable() *apiError {
	return &apiError{status: http.StatusForbidden, typ: typeInvalidRequest, code: "model_not_allowed",
		message: "Your API key may call only some models, and this request names none the gateway can check " +
			"(files, batches and other requests without a model are refused for such keys)."}
}

func errInternal() *apiError {
	return &apiError{status: http.StatusInternalServerError, typ: typeServer,
		message: "The gateway failed to handle the request."}
}

// errRateLimited builds the SPEC's 429 for a limiter rejection: the OpenAI
// error body with code rate_limit_exceeded, Retry-After (whole seconds,
// rounded up, at least 1), retry-after-ms, and the x-ratelimit-* headers of
// the limit that refused the request.
func errRateLimited(r *limiter.Rejection, maxWait time.Duration) *apiError {
	typ := r.Type
	if typ != "tokens" && typ != "requests" {
		typ = "tokens"
		if r.Metric == "requests" {
			typ = "requests"
		}
	}
	msg := r.Message
	if msg == "" {
		msg = "Rate limit reached for " + typ + "."
	}
	ms := max(int64((r.RetryAfter+time.Millisecond-1)/time.Millisecond), 1)
	secs := max((ms+999)/1000, 1)
	h := make(http.Header, 5)
	h.Set("Retry-After", strconv.FormatInt(secs, 10))
	h.Set("Retry-After-Ms", strconv.FormatInt(ms, 10))
	if r.Metric == limiter.MetricCostUSD {
		// A budget: in dollars, under names no SDK reads as tokens.
		h.Set("X-Ratelimit-Limit-Usd", strconv.FormatFloat(limiter.USD(r.LimitValue), 'f', -1, 64))
		h.Set("X-Ratelimit-Remaining-Usd", strconv.FormatFloat(limiter.USD(max(r.Remaining, 0)), 'f', -1, 64))
		h.Set("X-Ratelimit-Reset-Usd", formatReset(r.Reset))
	} else {
		h.Set("X-Ratelimit-Limit-"+typ, strconv.FormatInt(r.LimitValue, 10))
		h.Set("X-Ratelimit-Remaining-"+typ, strconv.FormatInt(max(r.Remaining, 0), 10))
		h.Set("X-Ratelimit-Reset-"+typ, formatReset(r.Reset))
	}
	if r.Never || (maxWait > 0 && r.RetryAfter > maxWait) {
		// Official SDKs honour this: report at once rather than sleep for
		// an hour, or retry what can never fit.
		h.Set("X-Should-Retry", "false")
	}
	return &apiError{status: http.StatusTooManyRequests, typ: typ, code: "rate_limit_exceeded", message: msg, header: h}
}

// formatReset formats a duration the way OpenAI's x-ratelimit-reset-*
// headers do ("6m0s", "1s", "250ms"): a Go duration rounded to milliseconds.
func formatReset(d time.Duration) string { return string(appendReset(nil, d)) }
