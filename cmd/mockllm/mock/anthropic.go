package mock

import (
	"encoding/json"
	"errors"
	"net/http"
)

// The Anthropic Messages API side of the mock: POST /v1/messages (also
// streaming) and POST /v1/messages/count_tokens, with the same predictable
// figures as the OpenAI side. See the package documentation.

// anthropicRequest holds the fields of a Messages API body the mock reads.
type anthropicRequest struct {
	Model      string             `json:"model"`
	System     json.RawMessage    `json:"system"`
	Messages   []anthropicMessage `json:"messages"`
	MaxTokens  *int64             `json:"max_tokens"`
	Stream     bool               `json:"stream"`
	Tools      []anthropicTool    `json:"tools"`
	ToolChoice *anthropicChoice   `json:"tool_choice"`
}

type anthropicMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type anthropicTool struct {
	Name string `json:"name"`
}

type anthropicChoice struct {
	Type string `json:"type"`
	Name string `json:"name"`
}

// anthropicBlock is a content block; only its text (text blocks) and
// content (tool_result blocks) are counted.
type anthropicBlock struct {
	Type    string          `json:"type"`
	Text    string          `json:"text"`
	Content json.RawMessage `json:"content"`
}

// anthropicWords counts the words of Messages API content: a string, or
// blocks whose text, and tool results' content, are counted. nested bounds
// the recursion into tool results (one level, as the API allows).
func anthropicWords(raw json.RawMessage, nested bool) (int64, error) {
	switch kind(raw) {
	case 0, 'n':
		return 0, nil
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		return countWords(s), nil
	case '[':
		var blocks []anthropicBlock
		if err := json.Unmarshal(raw, &blocks); err != nil {
			return 0, err
		}
		var n int64
		for _, b := range blocks {
			n += countWords(b.Text)
			if b.Type == "tool_result" && !nested {
				c, err := anthropicWords(b.Content, true)
				if err != nil {
					return 0, err
				}
				n += c
			}
		}
		return n, nil
	}
	return 0, errors.New("content must be a string or an array of content blocks")
}

// promptWords counts the words of the system prompt and every message.
func (r *anthropicRequest) promptWords() (int64, error) {
	n, err := anthropicWords(r.System, false)
	if err != nil {
		return 0, &badRequest{msg: "system: Input should be a valid string or a list of text blocks", param: "system"}
	}
	for _, m := range r.Messages {
		c, err := anthropicWords(m.Content, false)
		if err != nil {
			return 0, &badRequest{msg: "messages: content must be a string or a list of content blocks", param: "messages"}
		}
		n += c
	}
	return n, nil
}

// toolName returns the tool the answer calls: the named one for
// tool_choice {"type":"tool"}, the first tool for {"type":"any"}, or "".
func (r *anthropicRequest) toolName() string {
	if r.ToolChoice == nil {
		return ""
	}
	switch r.ToolChoice.Type {
	case "tool":
		return r.ToolChoice.Name
	case "any":
		if len(r.Tools) > 0 {
			return r.Tools[0].Name
		}
	}
	return ""
}

// anthropic serves POST /v1/messages and /v1/messages/count_tokens.
func (h *handler) anthropic(w http.ResponseWriter, r *http.Request, countOnly bool) {
	if r.Method != http.MethodPost {
		w.Header()["Allow"] = []string{http.MethodPost}
		writeAnthropicError(w, http.StatusMethodNotAllowed, "invalid_request_error",
			"Method "+r.Method+" not allowed for "+r.URL.Path+"; use POST.")
		return
	}
	if r.Header.Get("anthropic-version") == "" {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "anthropic-version: header is required")
		return
	}
	p := h.getBuf()
	body, err := readBody(r.Body, *p)
	var req anthropicRequest
	if err == nil {
		err = json.Unmarshal(body, &req)
	}
	h.putBuf(p, body)
	switch {
	case errors.Is(err, errTooLarge):
		writeAnthropicError(w, http.StatusRequestEntityTooLarge, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
		return
	case err != nil:
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "There was an issue with the format or content of your request: "+err.Error())
		return
	case req.Model == "":
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "model: Field required")
		return
	case req.Messages == nil:
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "messages: Field required")
		return
	}
	prompt, err := req.promptWords()
	if err != nil {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", err.Error())
		return
	}
	if countOnly {
		b := append(make([]byte, 0, 32), `{"input_tokens":`...)
		b = appendInt(b, prompt)
		writeJSON(w, http.StatusOK, append(b, "}\n"...))
		return
	}
	if req.MaxTokens == nil {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error", "max_tokens: Field required")
		return
	}
	n := *req.MaxTokens
	if n < 1 || n > MaxCompletionWords {
		writeAnthropicError(w, http.StatusBadRequest, "invalid_request_error",
			"max_tokens: Input should be between 1 and "+itoa(MaxCompletionWords))
		return
	}
	if req.Stream {
		h.anthropicStream(w, r, &req, prompt, n)
		return
	}
	if !h.wait(r, h.newTimer(), n) {
		return
	}
	tool := req.toolName()
	p = h.getBuf()
	b := (*p)[:0]
	b = append(b, `{"id":`...)
	b = h.quotedID(b, "msg_mock")
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = appendString(b, req.Model)
	b = append(b, `,"content":[`...)
	if tool == "" {
		b = append(b, `{"type":"text","text":"`...)
		b = appendWords(b, n)
		b = append(b, `"}],"stop_reason":"end_turn"`...)
	} else {
		b = append(b, `{"type":"tool_use","id":`...)
		b = h.quotedID(b, "toolu_mock")
		b = append(b, `,"name":`...)
		b = appendString(b, tool)
		b = append(b, `,"input":{"words":"`...)
		b = appendWords(b, n)
		b = append(b, `"}}],"stop_reason":"tool_use"`...)
	}
	b = append(b, `,"stop_sequence":null`...)
	if !h.opts.NoUsage {
		b = append(b, ',')
		b = appendAnthropicUsage(b, prompt, n)
	}
	b = append(b, "}\n"...)
	writeJSON(w, http.StatusOK, b)
	h.putBuf(p, b)
}

// anthropicStream sends the answer as Messages API events: message_start,
// content_block_start, ping, one content_block_delta per word,
// content_block_stop, message_delta (stop reason and cumulative usage) and
// message_stop.
func (h *handler) anthropicStream(w http.ResponseWriter, r *http.Request, req *anthropicRequest, prompt, n int64) {
	tool := req.toolName()
	s := newSSE(w, h.opts.TokenLatency > 0)
	b := make([]byte, 0, 512)

	b = append(b, "event: message_start\ndata: "+`{"type":"message_start","message":{"id":`...)
	b = h.quotedID(b, "msg_mock")
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = appendString(b, req.Model)
	b = append(b, `,"content":[],"stop_reason":null,"stop_sequence":null`...)
	if !h.opts.NoUsage {
		b = append(b, ',')
		b = appendAnthropicUsage(b, prompt, min(n, 1))
	}
	b = append(b, "}}\n\n"...)
	b = append(b, "event: content_block_start\ndata: "+`{"type":"content_block_start","index":0,"content_block":`...)
	if tool == "" {
		b = append(b, `{"type":"text","text":""}}`+"\n\n"...)
	} else {
		b = append(b, `{"type":"tool_use","id":`...)
		b = h.quotedID(b, "toolu_mock")
		b = append(b, `,"name":`...)
		b = appendString(b, tool)
		b = append(b, `,"input":{}}}`+"\n\n"...)
	}
	b = append(b, "event: ping\ndata: {\"type\": \"ping\"}\n\n"...)
	if !s.send(b) {
		return
	}

	t := h.newTimer()
	for i := int64(1); i <= n; i++ {
		if !h.wait(r, t, 1) {
			return
		}
		b = append(b[:0], "event: content_block_delta\ndata: "+`{"type":"content_block_delta","index":0,"delta":`...)
		if tool == "" {
			b = append(b, `{"type":"text_delta","text":"`...)
			b = appendWord(b, i)
			b = append(b, `"}}`+"\n\n"...)
		} else {
			b = append(b, `{"type":"input_json_delta","partial_json":"`...)
			if i == 1 {
				b = append(b, `{\"words\": \"`...)
			}
			b = appendWord(b, i)
			b = append(b, `"}}`+"\n\n"...)
		}
		if !s.send(b) {
			return
		}
	}

	b = b[:0]
	if tool != "" {
		b = append(b, "event: content_block_delta\ndata: "+`{"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"\"}"}}`+"\n\n"...)
	}
	b = append(b, "event: content_block_stop\ndata: "+`{"type":"content_block_stop","index":0}`+"\n\n"...)
	b = append(b, "event: message_delta\ndata: "+`{"type":"message_delta","delta":{"stop_reason":`...)
	if tool == "" {
		b = append(b, `"end_turn"`...)
	} else {
		b = append(b, `"tool_use"`...)
	}
	b = append(b, `,"stop_sequence":null}`...)
	if !h.opts.NoUsage {
		b = append(b, `,"usage":{"output_tokens":`...)
		b = appendInt(b, n)
		b = append(b, '}')
	}
	b = append(b, "}\n\n"...)
	b = append(b, "event: message_stop\ndata: "+`{"type":"message_stop"}`+"\n\n"...)
	s.send(b)
}

// appendAnthropicUsage appends a complete `"usage":{...}` object in the
// Messages API format.
func appendAnthropicUsage(b []byte, prompt, output int64) []byte {
	b = append(b, `"usage":{"input_tokens":`...)
	b = appendInt(b, prompt)
	b = append(b, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":`...)
	b = appendInt(b, output)
	return append(b, '}')
}

// writeAnthropicError sends the Messages API error body
// {"type":"error","error":{"type":...,"message":...}}.
func writeAnthropicError(w http.ResponseWriter, status int, typ, msg string) {
	b := make([]byte, 0, 96+len(msg))
	b = append(b, `{"type":"error","error":{"type":`...)
	b = appendString(b, typ)
	b = append(b, `,"message":`...)
	b = appendString(b, msg)
	b = append(b, "}}\n"...)
	writeJSON(w, status, b)
}
