package proxy

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/genai-gateway/genai-gateway/proxy/provider"
)

// The reverse translation: an Anthropic client (POST /v1/messages) calling
// a model an openai or azure upstream serves. The Messages request is sent
// as a chat completions request, and the answer (whole, streamed, or an
// error) comes back in the Messages API's shape. The request is limited
// and metered as a native one: admitted on the Messages body's prompt
// estimate and max_tokens, settled with the usage of the chat answer.

// reverseState is a Messages request's chat completions translation, for
// the openai and azure upstreams of its pool.
type reverseState struct {
	send []byte // the chat completions body; nil when not translated
	info provider.MessagesRequest
	on   bool // the current attempt goes to an openai or azure upstream
	// count: a count_tokens request whose pool has only openai and azure
	// upstreams, none of which counts Messages tokens: the gateway
	// answers it from send.
	count bool
}

// eventTranslator translates an upstream event stream event by event
// instead of copying it (provider.ChatStream, provider.MessagesStream).
type eventTranslator interface {
	Event(name string, data []byte) error
}

// streamTranslator is an eventTranslator that ends its stream and meters
// it (provider.ChatStream, provider.MessagesStream).
type streamTranslator interface {
	eventTranslator
	Done() bool
	Fail(typ, message string) error
	Usage() (provider.Usage, bool)
	CompletionTokens() int64
}

// endTranslated ends a translated stream that the copy left with rerr and
// werr: one the upstream broke off (or sent an event too large in) gets the
// error event of the client's API, and the request is metered from the
// upstream's usage, else from the estimate and the text that streamed.
func (m *metered) endTranslated(st streamTranslator, rerr, werr error) error {
	if werr == nil && !st.Done() {
		msg := errStreamBrokeOff
		if errors.Is(rerr, errEventTooLarge) {
			msg = "An upstream event was larger than the gateway translates."
		}
		werr = st.Fail("api_error", msg)
	}
	if u, ok := st.Usage(); ok {
		m.setUsage(fromProvider(u))
	} else {
		m.ex.prompt, m.ex.completion = m.est.estimate(), st.CompletionTokens()
	}
	return werr
}

// readToTranslate reads the whole upstream answer to translate; a read
// that fails, or an answer larger than maxHeldBody, is the 502 returned.
func (m *metered) readToTranslate() ([]byte, *apiError) {
	buf, err := m.readHeld()
	if err == nil {
		return buf, nil
	}
	aerr, reason := upstreamFailure(err, true)
	if errors.Is(err, errHeldTooLarge) {
		aerr.message = "The upstream's answer is too large to translate."
	}
	m.ex.reason, m.ex.err = reason, err
	return nil, aerr
}

// errUntranslatableMessages answers a Messages request that cannot be
// expressed as a chat completions request (400, in Anthropic's shape on
// this route), naming the field.
func errUntranslatableMessages(model string, err error) *apiError {
	var re *provider.RequestError
	if !errors.As(err, &re) {
		return errInternal()
	}
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "unsupported_for_model",
		message: "The model `" + model + "` is served through the chat completions API, which cannot take this request: " + re.Error()}
}

// reverse prepares a Messages request (route messages or count_tokens)
// for the openai and azure upstreams of its pool, if any: the chat
// completions body they are sent. A body that cannot be translated keeps
// the request off them (400 when the pool has no other upstream).
// count_tokens goes to an anthropic upstream of the pool when there is
// one, else the gateway counts it (rev.count).
func (m *metered) reverse(route string, body []byte) *apiError {
	chat := m.pool.Mask(func(i int) bool { return m.rt.ups[i].kind != kindAnthropic })
	if chat == 0 {
		return nil
	}
	all := chat == 1<<m.pool.Len()-1
	if route == routeCountTokens {
		if !all {
			m.tried |= chat
			return nil
		}
		out, err := provider.TranslateCountTokensRequest(body)
		if err != nil {
			return errUntranslatableMessages(m.ex.model, err)
		}
		m.rev.send, m.rev.count = out, true
		return nil
	}
	out, info, err := provider.TranslateMessagesRequest(body)
	if err != nil {
		if all {
			return errUntranslatableMessages(m.ex.model, err)
		}
		m.tried |= chat
		return nil
	}
	m.rev.send, m.rev.info = out, info
	return nil
}

// openAICredential moves the Anthropic client's own key (x-api-key) of a
// translated request to the upstream's header (Authorization: Bearer, or
// api-key for azure) when the client's credential is forwarded at all (no
// auth, no upstream api_key), and removes the Messages API's version and
// beta headers, which mean nothing to a chat completions upstream.
func openAICredential(h *fasthttp.RequestHeader, up *upstream, authed bool) {
	h.Del(provider.AnthropicVersionHeader)
	h.Del("Anthropic-Beta")
	k := h.Peek(provider.AnthropicKeyHeader)
	if authed || up.auth != nil || len(k) == 0 {
		return
	}
	switch {
	case up.kind == kindAzure && len(h.Peek(provider.AzureKeyHeader)) == 0:
		h.SetBytesV(provider.AzureKeyHeader, k)
	case up.kind != kindAzure && len(h.Peek("Authorization")) == 0:
		h.SetBytesV("Authorization", append([]byte("Bearer "), k...))
	}
	h.Del(provider.AnthropicKeyHeader)
}

// reverseWhole answers a translated Messages request from the whole chat
// completions answer: a Messages response, metered from the chat answer's
// usage, or the upstream's error in Anthropic's shape. An answer larger
// than maxHeldBody or not a chat completion gets 502.
func (m *metered) reverseWhole(ctx *fasthttp.RequestCtx, ok bool) *apiError {
	buf, aerr := m.readToTranslate()
	if aerr != nil {
		return aerr
	}
	// The grown buffer serves the next response too (it is not kept
	// past textMax); nothing below keeps buf.
	m.bufs.keep(m.bufs.ev, buf, m.bufs.tail)
	ctx.Response.Header.SetContentType("application/json")
	if !ok {
		ctx.Response.SetBodyRaw(provider.OpenAIToAnthropicError(m.ex.status, buf))
		return nil
	}
	u, found := extractUsage(buf)
	if !found {
		u = usage{prompt: m.est.estimate(), completion: countCompletionText(routeChat, buf, m.count)}
	}
	out, err := provider.TranslateChatResponse(buf, provider.Usage{Prompt: u.prompt, Completion: u.completion})
	if err != nil {
		m.ex.reason, m.ex.err = reasonBroken, err
		return &apiError{status: http.StatusBadGateway, typ: typeServer, code: "upstream_error",
			message: "The upstream's answer cannot be translated to a Messages API response: " + err.Error()}
	}
	if found {
		m.setUsage(u)
	} else {
		m.ex.prompt, m.ex.completion = u.prompt, u.completion
	}
	ctx.Response.SetBodyRaw(out)
	return nil
}

// reverseStream translates a chat completions chunk stream into Messages
// API events written to cw, event by event, and meters it. A stream that
// ends without [DONE] (cut, or an event too large) ends with an Anthropic
// error event, which SDKs raise.
func (m *metered) reverseStream(cw *coalescer) (rerr, werr error) {
	ms := provider.NewMessagesStream(cw, provider.MessagesStreamOptions{Count: m.count, Prompt: m.est.estimate()})
	c := newSSECopier(m.bufs, kindChat, false, m)
	c.xl = ms
	rerr, werr = c.copy(cw, cw.flush)
	if werr == nil && !ms.Done() && rerr == nil && ms.Finished() {
		// The answer was complete; the upstream just sent no [DONE].
		werr = ms.Event("", []byte("[DONE]"))
	}
	werr = m.endTranslated(ms, rerr, werr)
	m.bufs.keep(c.ev, c.text, c.tail)
	return rerr, werr
}

// countTokens answers count_tokens for a model only chat completions
// upstreams serve: {"input_tokens": N}, N the gateway's count of the
// translated request's prompt with the model's tokenizer (as for a chat
// request: message text, OpenAI's per-message overhead, and tool
// definitions and calls as their JSON text; images are not counted).
// Nothing is sent upstream, nothing is charged.
func (m *metered) countTokens(ctx *fasthttp.RequestCtx) *apiError {
	n := m.p.tok.estimatePrompt(routeChat, m.ex.model, m.rev.send)
	b := append(make([]byte, 0, 40), `{"input_tokens":`...)
	b = strconv.AppendInt(b, n, 10)
	ctx.Response.Header.SetContentType("application/json")
	ctx.Response.SetBodyRaw(append(b, "}\n"...))
	m.ex.status = http.StatusOK
	return nil
}
