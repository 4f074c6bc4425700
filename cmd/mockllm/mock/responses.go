package mock

import (
	"net/http"
)

// responses serves POST /v1/responses, as one body or as a stream of
// Responses API events.
func (h *handler) responses(w http.ResponseWriter, r *http.Request, req *request) {
	n, err := req.completionWords()
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	prompt, err := responsesInputWords(req.Input)
	if err != nil {
		writeBadRequest(w, err)
		return
	}
	rs := &response{
		created:   h.opts.Now().Unix(),
		model:     req.Model,
		maxOutput: req.MaxOutputTokens,
		prompt:    prompt,
		words:     n,
		usage:     !h.opts.NoUsage,
	}
	rs.id = string(h.nextID(nil, "resp_mock"))
	rs.msgID = string(h.nextID(nil, "msg_mock"))
	if req.Stream {
		h.responsesStream(w, r, rs)
		return
	}
	t := h.newTimer()
	if !h.wait(r, t, n) {
		return
	}
	p := h.getBuf()
	b := rs.append((*p)[:0], true)
	b = append(b, '\n')
	writeJSON(w, http.StatusOK, b)
	h.putBuf(p, b)
}

// response describes one Responses API response object.
type response struct {
	id, msgID string
	created   int64
	model     string
	maxOutput *int64
	prompt    int64 // input_tokens
	words     int64 // output_tokens
	usage     bool  // send usage (false with Options.NoUsage)
}

// append appends the response object, in progress (no output, no usage) or
// completed.
func (rs *response) append(b []byte, completed bool) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, rs.id)
	b = append(b, `,"object":"response","created_at":`...)
	b = appendInt(b, rs.created)
	if completed {
		b = append(b, `,"status":"completed","completed_at":`...)
		b = appendInt(b, rs.created)
	} else {
		b = append(b, `,"status":"in_progress","completed_at":null`...)
	}
	b = append(b, `,"background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":`...)
	if rs.maxOutput != nil {
		b = appendInt(b, *rs.maxOutput)
	} else {
		b = append(b, "null"...)
	}
	b = append(b, `,"max_tool_calls":null,"model":`...)
	b = appendString(b, rs.model)
	b = append(b, `,"output":[`...)
	if completed {
		b = rs.appendMessage(b, true)
	}
	b = append(b, `],"parallel_tool_calls":true,"previous_response_id":null,`+
		`"reasoning":{"effort":null,"summary":null},"service_tier":"default","store":true,`+
		`"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},`+
		`"tool_choice":"auto","tools":[],"top_logprobs":0,"top_p":1.0,"truncation":"disabled","usage":`...)
	if completed && rs.usage {
		b = append(b, `{"input_tokens":`...)
		b = appendInt(b, rs.prompt)
		b = append(b, `,"input_tokens_details":{"cached_tokens":0},"output_tokens":`...)
		b = appendInt(b, rs.words)
		b = append(b, `,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":`...)
		b = appendInt(b, rs.prompt+rs.words)
		b = append(b, '}')
	} else {
		b = append(b, "null"...)
	}
	return append(b, `,"user":null,"metadata":{}}`...)
}

// appendMessage appends the output message item, empty and in progress or
// completed with its text.
func (rs *response) appendMessage(b []byte, completed bool) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, rs.msgID)
	if completed {
		b = append(b, `,"type":"message","status":"completed","content":[`...)
		b = rs.appendPart(b, true)
		b = append(b, `],"role":"assistant"}`...)
		return b
	}
	return append(b, `,"type":"message","status":"in_progress","content":[],"role":"assistant"}`...)
}

// appendPart appends the output_text content part, empty or complete.
func (rs *response) appendPart(b []byte, complete bool) []byte {
	b = append(b, `{"type":"output_text","annotations":[],"logprobs":[],"text":"`...)
	if complete {
		b = appendWords(b, rs.words)
	}
	return append(b, `"}`...)
}

// responsesStream sends the Responses API event sequence for rs.
func (h *handler) responsesStream(w http.ResponseWriter, r *http.Request, rs *response) {
	s := newSSE(w, h.opts.TokenLatency > 0)
	t := h.newTimer()
	var seq int64
	b := make([]byte, 0, 1024)
	// event starts an SSE event of the given type, up to the fields that
	// follow "sequence_number".
	event := func(typ string) {
		b = append(b[:0], "event: "...)
		b = append(b, typ...)
		b = append(b, "\ndata: {\"type\":\""...)
		b = append(b, typ...)
		b = append(b, `","sequence_number":`...)
		b = appendInt(b, seq)
		seq++
	}
	// itemRef appends the item_id/output_index/content_index fields.
	itemRef := func(content bool) {
		b = append(b, `,"item_id":`...)
		b = appendString(b, rs.msgID)
		b = append(b, `,"output_index":0`...)
		if content {
			b = append(b, `,"content_index":0`...)
		}
	}
	done := func() bool {
		b = append(b, "}\n\n"...)
		return s.send(b)
	}

	event("response.created")
	b = append(b, `,"response":`...)
	b = rs.append(b, false)
	if !done() {
		return
	}
	event("response.in_progress")
	b = append(b, `,"response":`...)
	b = rs.append(b, false)
	if !done() {
		return
	}
	event("response.output_item.added")
	b = append(b, `,"output_index":0,"item":`...)
	b = rs.appendMessage(b, false)
	if !done() {
		return
	}
	event("response.content_part.added")
	itemRef(true)
	b = append(b, `,"part":`...)
	b = rs.appendPart(b, false)
	if !done() {
		return
	}
	for i := int64(1); i <= rs.words; i++ {
		if !h.wait(r, t, 1) {
			return
		}
		event("response.output_text.delta")
		itemRef(true)
		b = append(b, `,"delta":"`...)
		b = appendWord(b, i)
		b = append(b, `","logprobs":[]`...)
		if !done() {
			return
		}
	}
	event("response.output_text.done")
	itemRef(true)
	b = append(b, `,"text":"`...)
	b = appendWords(b, rs.words)
	b = append(b, `","logprobs":[]`...)
	if !done() {
		return
	}
	event("response.content_part.done")
	itemRef(true)
	b = append(b, `,"part":`...)
	b = rs.appendPart(b, true)
	if !done() {
		return
	}
	event("response.output_item.done")
	b = append(b, `,"output_index":0,"item":`...)
	b = rs.appendMessage(b, true)
	if !done() {
		return
	}
	event("response.completed")
	b = append(b, `,"response":`...)
	b = rs.append(b, true)
	done()
}
