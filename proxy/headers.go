package proxy

import (
	"bytes"
	"net/netip"

	"github.com/valyala/fasthttp"

	"github.com/genai-gateway/genai-gateway/proxy/provider"
)

// hopHeaders are removed from requests and responses in both directions
// (RFC 9110 7.6.1), besides the headers a Connection header names.
var hopHeaders = [...]string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

// outRequest prepares the upstream request for the client's: the client's
// headers minus hop-by-hop ones, Host and the URL of the upstream (its base
// path + path, its base query + the client's query; for azure the
// deployment URL of model with its api-version), X-Forwarded-For appended,
// the client's credential replaced by the upstream's API key in the
// provider's header, anthropic-version when an anthropic upstream's client
// named none, and (metered) no Expect or Accept-Encoding, so the response
// can be read. The body is the caller's to set. With auth on (authed), the
// client's credential was the gateway's and is never forwarded in any
// header. The error is an azure path that names no deployment.
func outRequest(ctx *fasthttp.RequestCtx, req *fasthttp.Request, up *upstream, path, model string, query []byte, metered, authed bool, rid string) error {
	in := &ctx.Request.Header
	ctx.Request.Header.CopyTo(&req.Header)
	h := &req.Header
	for f := range bytes.SplitSeq(in.Peek("Connection"), []byte{','}) {
		if f = bytes.TrimSpace(f); len(f) > 0 {
			h.DelBytes(f)
		}
	}
	for _, k := range hopHeaders {
		h.Del(k)
	}
	h.ResetConnectionClose()
	h.Del("Content-Length")
	if metered {
		h.Del("Expect")
		h.Del("Accept-Encoding")
	}
	if authed || up.auth != nil {
		h.Del("Authorization")
		h.Del("X-Api-Key")
		h.Del("Api-Key")
	}
	if up.auth != nil {
		h.SetBytesV(up.authName, up.auth)
	}
	if up.kind == kindAnthropic && len(in.Peek(provider.AnthropicVersionHeader)) == 0 {
		h.Set(provider.AnthropicVersionHeader, provider.AnthropicVersion)
	}
	h.Set("X-Request-Id", rid)
	var xb [128]byte // the header values are copied: these stay on the stack
	xff := xb[:0]
	if prior := in.Peek("X-Forwarded-For"); len(prior) > 0 {
		xff = append(append(xff, prior...), ", "...)
	}
	if ip, ok := netip.AddrFromSlice(ctx.RemoteIP()); ok {
		xff = ip.Unmap().AppendTo(xff)
	}
	h.SetBytesV("X-Forwarded-For", xff)
	if up.azure != nil {
		u, err := up.azure.URL(model, path, string(query))
		if err != nil {
			return err
		}
		req.SetRequestURI(u)
		h.SetHost(up.host)
		return nil
	}
	var ub [256]byte
	u := append(ub[:0], up.origin...)
	u = append(u, up.prefix...)
	u = append(u, path...)
	switch {
	case up.base.RawQuery != "" && len(query) > 0:
		u = append(append(append(append(u, '?'), up.base.RawQuery...), '&'), query...)
	case up.base.RawQuery != "":
		u = append(append(u, '?'), up.base.RawQuery...)
	case len(query) > 0:
		u = append(append(u, '?'), query...)
	}
	req.SetRequestURIBytes(u)
	h.SetHost(up.host)
	return nil
}

// anthropicCredential moves the client's own key of a translated request,
// sent as OpenAI clients do (Authorization: Bearer), to Anthropic's
// x-api-key, when the client's credential is forwarded at all (no auth, no
// upstream api_key) and it named no x-api-key itself.
func anthropicCredential(h *fasthttp.RequestHeader, up *upstream, authed bool) {
	if authed || up.auth != nil || len(h.Peek(provider.AnthropicKeyHeader)) > 0 {
		return
	}
	v := h.Peek("Authorization")
	if len(v) > len("Bearer ") && bytes.EqualFold(v[:len("Bearer ")], []byte("Bearer ")) {
		h.SetBytesV(provider.AnthropicKeyHeader, bytes.TrimSpace(v[len("Bearer "):]))
		h.Del("Authorization")
	}
}

// copyResponseHeader copies an upstream response's status and headers to
// the client's response, minus hop-by-hop headers.
func copyResponseHeader(dst, src *fasthttp.ResponseHeader) {
	src.CopyTo(dst)
	for f := range bytes.SplitSeq(src.Peek("Connection"), []byte{','}) {
		if f = bytes.TrimSpace(f); len(f) > 0 {
			dst.DelBytes(f)
		}
	}
	for _, k := range hopHeaders {
		dst.Del(k)
	}
	dst.ResetConnectionClose()
}
