package proxy

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/valyala/fasthttp"

	"github.com/genai-gateway/genai-gateway/limiter"
	"github.com/genai-gateway/genai-gateway/proxy/auth"
)

// caller is who sent a request: the user that limits, metrics and logs
// use, and, with auth on, the identity its credential proved.
type caller struct {
	user   string
	id     auth.Identity
	authed bool // auth is on and the credential was valid
}

// allows reports whether the caller may call model.
func (c *caller) allows(model string) bool { return !c.authed || c.id.Allows(model) }

// restricted reports whether the caller may call only some models: then a
// request the gateway cannot tie to a model is refused (errUnattributable),
// as it would spend the upstream's key on anything.
func (c *caller) restricted() bool { return c.authed && c.id.Models != nil }

// identify works out who sent the request. Without auth the user is the
// user header, as the client wrote it. With auth it is the identity the
// credential proves; an on_behalf key's user header names one of its end
// users, counted as KEYUSER/ENDUSER. A refusal comes back as the error the
// client gets (401, or 400 for an oversized user).
func (p *Proxy) identify(ctx *fasthttp.RequestCtx) (caller, *apiError) {
	var c caller
	hdr := p.cfg.UserHeader
	a := p.auth.Load()
	if a == nil {
		if hdr != "" {
			u := ctx.Request.Header.Peek(hdr)
			if len(u) > MaxUserBytes {
				return c, errUserTooLong(hdr)
			}
			c.user = string(u)
		}
		return c, nil
	}
	id, err := a.Authenticate(ctx, func(name string) []byte { return ctx.Request.Header.Peek(name) })
	if err != nil {
		return c, errUnauthorized(auth.Reason(err))
	}
	c.id, c.authed, c.user = id, true, id.User
	if id.OnBehalf && hdr != "" {
		if end := ctx.Request.Header.Peek(hdr); len(end) > 0 {
			if len(id.User)+1+len(end) > MaxUserBytes {
				return c, errUserTooLong(hdr)
			}
			c.user = id.User + "/" + string(end)
		}
	}
	return c, nil
}

// SetAuthenticator replaces the authenticator for new requests (nil: no
// authentication) and returns the one it replaces, for the caller to
// Close. Requests in flight finish with the identity they proved. Safe
// for concurrent use.
func (p *Proxy) SetAuthenticator(a *auth.Authenticator) *auth.Authenticator {
	return p.auth.Swap(a)
}

// requestIDs makes X-Request-Id values: a random per-process prefix and a
// counter, unique without a syscall per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: "req_" + hex.EncodeToString(b[:]) + "_"}
}

func (r *requestIDs) next() string {
	return r.prefix + strconv.FormatUint(r.n.Add(1), 36)
}

// requestID is the client's own X-Request-Id when it is a sane token, else
// a new one.
func (p *Proxy) requestID(ctx *fasthttp.RequestCtx) string {
	if v := ctx.Request.Header.Peek("X-Request-Id"); len(v) > 0 && len(v) <= 128 && printable(v) {
		return string(v)
	}
	return p.ids.next()
}

func printable(b []byte) bool {
	for _, c := range b {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// serveUsage answers GET /usage on the proxy port: the caller's own usage,
// the document the operator port's /usage?user= gives for that user.
func (p *Proxy) serveUsage(ctx *fasthttp.RequestCtx, c caller) {
	limits := []limiter.LimitUsage{}
	if p.lim != nil {
		limits = p.lim.Usage(c.user)
	}
	b, _ := json.Marshal(struct {
		User   string               `json:"user"`
		Limits []limiter.LimitUsage `json:"limits"`
	}{c.user, limits})
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	ctx.SetStatusCode(http.StatusOK)
	ctx.SetBody(append(b, '\n'))
}

// setGatewayLimitHeaders puts the caller's tightest token and request
// limits, as the request's reservation left them, on a metered response as
// x-gateway-ratelimit-{limit,remaining,reset}-{tokens,requests}, resets in
// OpenAI's format as on a 429 (appendReset: "6m0s", "1.5s"); the upstream's
// own x-ratelimit-* stay as they are.
func setGatewayLimitHeaders(h *fasthttp.ResponseHeader, res *limiter.Reservation) {
	tok, req, tokOK, reqOK := res.Tightest()
	if tokOK {
		setHeadroom(h, &tok, "X-Gateway-Ratelimit-Limit-Tokens", "X-Gateway-Ratelimit-Remaining-Tokens", "X-Gateway-Ratelimit-Reset-Tokens")
	}
	if reqOK {
		setHeadroom(h, &req, "X-Gateway-Ratelimit-Limit-Requests", "X-Gateway-Ratelimit-Remaining-Requests", "X-Gateway-Ratelimit-Reset-Requests")
	}
	if cost, ok := res.TightestCost(); ok { // a budget, in dollars
		var b [32]byte
		h.SetBytesV("X-Gateway-Ratelimit-Limit-Usd", strconv.AppendFloat(b[:0], limiter.USD(cost.Limit), 'f', -1, 64))
		h.SetBytesV("X-Gateway-Ratelimit-Remaining-Usd", strconv.AppendFloat(b[:0], limiter.USD(cost.Remaining), 'f', -1, 64))
		h.SetBytesV("X-Gateway-Ratelimit-Reset-Usd", appendReset(b[:0], cost.Reset))
	}
}

func setHeadroom(h *fasthttp.ResponseHeader, r *limiter.Headroom, limit, remaining, reset string) {
	var b [24]byte
	h.SetBytesV(limit, strconv.AppendInt(b[:0], r.Limit, 10))
	h.SetBytesV(remaining, strconv.AppendInt(b[:0], r.Remaining, 10))
	h.SetBytesV(reset, appendReset(b[:0], r.Reset))
}
