package mock

import (
	"net/http"
)

// fingerprint is the system_fingerprint of every chat and completions body.
const fingerprint = "fp_mockllm"

// chat serves POST /v1/chat/completions.
func (h *handler) chat(w http.ResponseWriter, r *http.Request, req *request) {
	n, err := req.completionWords()
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	prompt, err := chatPromptWords(req.Messages)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	if req.Stream {
		h.chatStream(w, r, req, prompt, n)
		return
	}
	t := h.newTimer()
	if !h.wait(r, t, n) {
		return
	}

	p := h.getBuf()
	b := (*p)[:0]
	b = append(b, `{"id":`...)
	b = h.quotedID(b, "chatcmpl-mock")
	b = append(b, `,"object":"chat.completion","created":`...)
	b = appendInt(b, h.opts.Now().Unix())
	b = append(b, `,"model":`...)
	b = appendString(b, req.Model)
	if tool := req.toolName(); tool != "" {
		b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":`...)
		b = h.quotedID(b, "call_mock")
		b = append(b, `,"type":"function","function":{"name":`...)
		b = appendString(b, tool)
		b = append(b, `,"arguments":"{\"words\": \"`...)
		b = appendWords(b, n)
		b = append(b, `\"}"}}],"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"tool_calls"}]`...)
	} else {
		b = append(b, `,"choices":[{"index":0,"message":{"role":"assistant","content":"`...)
		b = appendWords(b, n)
		b = append(b, `","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}]`...)
	}
	if !h.opts.NoUsage {
		b = append(b, ',')
		b = appendChatUsage(b, prompt, n)
	}
	b = append(b, `,"service_tier":"default","system_fingerprint":"`+fingerprint+`"}`+"\n"...)
	writeJSON(w, http.StatusOK, b)
	h.putBuf(p, b)
}

// chatStream sends a chat completion as SSE chunks, one per word.
func (h *handler) chatStream(w http.ResponseWriter, r *http.Request, req *request, prompt, n int64) {
	withUsage := req.includeUsage() && !h.opts.NoUsage

	// Every chunk starts the same way; build that prefix once.
	prefix := make([]byte, 0, 192+len(req.Model))
	prefix = append(prefix, `data: {"id":`...)
	prefix = h.quotedID(prefix, "chatcmpl-mock")
	prefix = append(prefix, `,"object":"chat.completion.chunk","created":`...)
	prefix = appendInt(prefix, h.opts.Now().Unix())
	prefix = append(prefix, `,"model":`...)
	prefix = appendString(prefix, req.Model)
	prefix = append(prefix, `,"service_tier":"default","system_fingerprint":"`+fingerprint+`","choices":[`...)
	end := "}\n\n"
	if withUsage {
		end = `,"usage":null}` + "\n\n"
	}

	s := newSSE(w, h.opts.TokenLatency > 0)
	t := h.newTimer()
	b := make([]byte, 0, 512)
	tool := req.toolName()
	if tool != "" {
		b = append(b[:0], prefix...)
		b = append(b, `{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":`...)
		b = h.quotedID(b, "call_mock")
		b = append(b, `,"type":"function","function":{"name":`...)
		b = appendString(b, tool)
		b = append(b, `,"arguments":""}}]},"logprobs":null,"finish_reason":null}]`...)
		b = append(b, end...)
		if !s.send(b) {
			return
		}
	}
	for i := int64(1); i <= n; i++ {
		if !h.wait(r, t, 1) {
			return
		}
		b = append(b[:0], prefix...)
		b = append(b, `{"index":0,"delta":{`...)
		switch {
		case tool != "":
			b = append(b, `"tool_calls":[{"index":0,"function":{"arguments":"`...)
			if i == 1 {
				b = append(b, `{\"words\": \"`...)
			}
			b = appendWord(b, i)
			b = append(b, `"}}]`...)
		case i == 1:
			b = append(b, `"role":"assistant","content":"`...)
			b = appendWord(b, i)
			b = append(b, '"')
		default:
			b = append(b, `"content":"`...)
			b = appendWord(b, i)
			b = append(b, '"')
		}
		b = append(b, `},"logprobs":null,"finish_reason":null}]`...)
		b = append(b, end...)
		if !s.send(b) {
			return
		}
	}
	b = append(b[:0], prefix...)
	if tool != "" {
		b = append(b, `{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"\"}"}}]},"logprobs":null,"finish_reason":null}]`...)
		b = append(b, end...)
		if !s.send(b) {
			return
		}
		b = append(b[:0], prefix...)
		b = append(b, `{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]`...)
	} else if n == 0 {
		b = append(b, `{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":"stop"}]`...)
	} else {
		b = append(b, `{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}]`...)
	}
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
