package proxy

import (
	"errors"
	"net/http"

	"github.com/genai-gateway/genai-gateway/proxy/provider"
)

// Anthropic's Messages API, natively (/v1/messages, metered from its own
// usage figures) and as the far side of a translated chat request (an
// OpenAI client calling a model served by an anthropic upstream). The
// wire formats and the translation are provider's pure functions; what is
// here ties them to a metered request.

// maxTranslatedEvent bounds one upstream event of a translated stream: the
// translator needs the whole event, so it cannot pass a larger one through
// as the plain copier does.
const maxTranslatedEvent = 1 << 20

var (
	errHeldTooLarge   = errors.New("upstream body larger than the gateway holds to translate")
	errEventTooLarge  = errors.New("upstream event larger than the gateway translates")
	errStreamBrokeOff = "The upstream stream broke off."
)

// errUntranslatable answers a chat request that cannot be expressed in the
// Messages API (400), naming the field.
func errUntranslatable(model string, err error) *apiError {
	var re *provider.RequestError
	if !errors.As(err, &re) {
		return errInternal()
	}
	return &apiError{status: http.StatusBadRequest, typ: typeInvalidRequest, code: "unsupported_for_model",
		message: "The model `" + model + "` is served through Anthropic's Messages API, which cannot take this request: " + re.Error()}
}

// fromProvider converts a provider's usage (already clamped).
func fromProvider(u provider.Usage) usage {
	cached := min(u.CacheRead, u.Prompt)
	return usage{prompt: u.Prompt, completion: u.Completion, cached: cached, written: min(u.CacheCreation, u.Prompt-cached)}
}

// bodyUsage reads the usage of a whole response body of the request's route.
func (m *metered) bodyUsage(body []byte) (usage, bool) {
	if m.ex.route == routeMessages {
		u, ok := provider.AnthropicUsage(body)
		return fromProvider(u), ok
	}
	return extractUsage(body)
}

// heldUsage reads the usage of a large body that streamed through: from
// the whole body when it was kept, else from its tail.
func (m *metered) heldUsage(bm *bodyMeter) (usage, bool) {
	if !bm.over {
		return m.bodyUsage(bm.held)
	}
	return bm.usage()
}

// meterStream meters a copied event stream: the upstream's usage, or the
// prompt estimate and the streamed text's tokens.
func (m *metered) meterStream(c *sseCopier) {
	switch {
	case c.anth != nil:
		if u, ok := c.anth.Usage(); ok {
			m.setUsage(fromProvider(u))
			return
		}
		m.ex.prompt, m.ex.completion = m.est.estimate(), c.anth.CompletionTokens()
	case c.haveUsage:
		m.setUsage(c.meteredUsage())
	default:
		m.ex.prompt, m.ex.completion = m.est.estimate(), c.completionTokens()
	}
}

// anthropicMeter returns the buffers' Anthropic stream meter, reset for a
// new stream: made once per pooled buffer set, so streams reuse it.
func (b *streamBufs) anthropicMeter(count func([]byte) int64) *provider.AnthropicStreamMeter {
	if b.anth == nil {
		b.anth = provider.NewAnthropicStreamMeter(count)
	} else {
		b.anth.Reset(count)
	}
	return b.anth
}

// translateBody translates a whole Messages API answer to a translated
// chat request (ok: a 2xx status) into a chat completion, metering it, or
// an error answer into OpenAI's error body.
func (m *metered) translateBody(body []byte, ok bool) ([]byte, *apiError) {
	if !ok {
		return provider.AnthropicToOpenAIError(m.ex.status, body), nil
	}
	out, err := provider.TranslateMessagesResponse(body, m.ex.start.Unix())
	if err != nil {
		m.ex.reason, m.ex.err = reasonBroken, err
		return nil, &apiError{status: http.StatusBadGateway, typ: typeServer, code: "upstream_error",
			message: "The upstream's answer is not a Messages API response."}
	}
	if u, found := provider.AnthropicUsage(body); found {
		m.setUsage(fromProvider(u))
	} else {
		m.ex.prompt = m.est.estimate()
		m.ex.completion = countCompletionText(routeMessages, body, m.count)
	}
	return out, nil
}

// translateStream translates a Messages API event stream into chat
// completion chunks written to cw, event by event, and meters it. A stream
// that ends without message_stop (cut, or an event too large) ends with an
// OpenAI error event, which SDKs raise.
func (m *metered) translateStream(cw *coalescer) (rerr, werr error) {
	opts := provider.ChatStreamOptions{IncludeUsage: m.xinfo.IncludeUsage, Created: m.ex.start.Unix(), Count: m.count}
	if opts.IncludeUsage {
		opts.FallbackPrompt = m.est.estimate()
	}
	chat := provider.NewChatStream(cw, opts)
	c := newSSECopier(m.bufs, kindChat, false, m)
	c.xl = chat
	rerr, werr = c.copy(cw, cw.flush)
	return rerr, m.endTranslated(chat, rerr, werr)
}
