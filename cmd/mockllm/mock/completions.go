package mock

import (
	"net/http"
)

// completions serves POST /v1/completions (the legacy text API).
func (h *handler) completions(w http.ResponseWriter, r *http.Request, req *request) {
	n, err := req.completionWords()
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	inputs, err := textInputs(req.Prompt, "prompt")
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	var prompt int64
	for _, in := range inputs {
		prompt += in.words
	}
	if req.Stream {
		h.completionsStream(w, r, req, prompt, n)
		return
	}
	t := h.newTimer()
	if !h.wait(r, t, n) {
		return
	}

	p := h.getBuf()
	b := (*p)[:0]
	b = append(b, `{"id":`...)
	b = h.quotedID(b, "cmpl-mock")
	b = append(b, `,"object":"text_completion","created":`...)
	b = appendInt(b, h.opts.Now().Unix())
	b = append(b, `,"model":`...)
	b = appendString(b, req.Model)
	b = append(b, `,"choices":[{"text":"`...)
	b = appendWords(b, n)
	b = append(b, `","index":0,"logprobs":null,"finish_reason":"stop"}]`...)
	if !h.opts.NoUsage {
		b = append(b, ',')
		b = appendChatUsage(b, prompt, n)
	}
	b = append(b, `,"system_fingerprint":"`+fingerprint+`"}`+"\n"...)
	writeJSON(w, http.StatusOK, b)
	h.putBuf(p, b)
}

// completionsStream sends a text completion as SSE chunks, one per word.
func (h *handler) completionsStream(w http.ResponseWriter, r *http.Request, req *request, prompt, n int64) {
	withUsage := req.includeUsage() && !h.opts.NoUsage

	prefix := make([]byte, 0, 160+len(req.Model))
	prefix = append(prefix, `data: {"id":`...)
	prefix = h.quotedID(prefix, "cmpl-mock")
	prefix = append(prefix, `,"object":"text_completion","created":`...)
	prefix = appendInt(prefix, h.opts.Now().Unix())
	prefix = append(prefix, `,"model":`...)
	prefix = appendString(prefix, req.Model)
	prefix = append(prefix, `,"system_fingerprint":"`+fingerprint+`","choices":[`...)
	end := "}\n\n"
	if withUsage {
		end = `,"usage":null}` + "\n\n"
	}

	s := newSSE(w, h.opts.TokenLatency > 0)
	t := h.newTimer()
	b := make([]byte, 0, 512)
	for i := int64(1); i <= n; i++ {
		if !h.wait(r, t, 1) {
			return
		}
		b = append(b[:0], prefix...)
		b = append(b, `{"text":"`...)
		b = appendWord(b, i)
		b = append(b, `","index":0,"logprobs":null,"finish_reason":null}]`...)
		b = append(b, end...)
		if !s.send(b) {
			return
		}
	}
	b = append(b[:0], prefix...)
	b = append(b, `{"text":"","index":0,"logprobs":null,"finish_reason":"stop"}]`...)
	b = append(b, end...)
	if !s.send(b) {
		return
	}
	if withUsage {
		b = append(b[:0], prefix...)
		b = append(b, "],"...)
		b = appendChatUsage(b, prompt, n)
		b = append(b, "}\n\n"...)
		if !s.send(b) {
			return
		}
	}
	s.send([]byte("data: [DONE]\n\n"))
}
