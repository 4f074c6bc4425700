package provider

import (
	"encoding/json"
	"io"
	"strconv"

	"github.com/tidwall/gjson"
)

// ChatStreamOptions configures a ChatStream.
type ChatStreamOptions struct {
	// IncludeUsage sends the final usage-only chunk (stream_options.
	// include_usage of the client's request), and "usage":null on every
	// other chunk, as OpenAI does.
	IncludeUsage bool
	// Created is the chunks' "created" time (Unix seconds).
	Created int64
	// Count tokenizes streamed text for the tokenizer fallback; nil counts
	// one token per four bytes.
	Count func([]byte) int64
	// FallbackPrompt is the prompt_tokens of the usage chunk when the
	// upstream reports no usage (the gateway's own prompt count); the
	// completion_tokens are then counted with Count.
	FallbackPrompt int64
}

// ChatStream translates a Messages API event stream into OpenAI
// chat.completion.chunk events written to w, and meters it on the way.
// Feed it every upstream event with Event; it writes zero or more complete
// `data: ...\n\n` events per call, each in one Write, so the caller can
// flush after each call. Text and tool-argument fragments are copied as raw
// JSON strings, so an event costs no allocation (a fragment holding JSON
// escapes costs gjson's unescaping of it); the memory a stream holds
// is its output buffer (as large as the largest event) and the meter's
// bounded text. Not safe for concurrent use.
//
// The mapping: message_start → a first chunk with role assistant and empty
// content; text deltas → content deltas; a tool_use block → a tool_calls
// delta with index, id, type and name and empty arguments, then its
// input_json_delta fragments as arguments deltas; message_delta → a chunk
// with the finish_reason; message_stop → the usage chunk ("choices": [],
// only with IncludeUsage and when the stream reported usage), then
// `data: [DONE]`; an error event → `data: {"error":{...}}` (OpenAI's way
// to fail a stream; SDKs raise it) and the end. ping, thinking and unknown
// events write nothing.
type ChatStream struct {
	w     io.Writer
	opts  ChatStreamOptions
	meter AnthropicStreamMeter

	prefix    []byte // `data: {"id":...,"model":...,"choices":[`
	buf       []byte
	started   bool
	done      bool
	inTool    bool  // the current content block is a tool_use
	toolIndex int64 // index of the current tool call, -1 before the first
}

// NewChatStream returns a translator writing to w.
func NewChatStream(w io.Writer, opts ChatStreamOptions) *ChatStream {
	s := &ChatStream{w: w, opts: opts, toolIndex: -1, buf: make([]byte, 0, 512)}
	s.meter.Reset(opts.Count)
	return s
}

// Done reports whether the stream has ended: message_stop or an error event
// was translated, or Fail was called. A stream that reaches the upstream's
// EOF without being done was cut; the caller should Fail it.
func (s *ChatStream) Done() bool { return s.done }

// Usage returns the usage the stream reported so far; ok is false when it
// reported none (then meter with CompletionTokens).
func (s *ChatStream) Usage() (Usage, bool) { return s.meter.Usage() }

// CompletionTokens returns the tokenizer count of the streamed text.
func (s *ChatStream) CompletionTokens() int64 { return s.meter.CompletionTokens() }

// Event translates one upstream event: its SSE event name (when empty, the
// data's "type" is used) and data. It returns the error of writing to w.
// data is not kept. Events after the end are ignored.
func (s *ChatStream) Event(name string, data []byte) error {
	if s.done {
		return nil
	}
	js := unsafeString(data)
	if name == "" {
		name = gjson.Get(js, "type").Str
	}
	s.meter.Event(name, data)
	switch name {
	case "message_start":
		if s.started {
			return nil
		}
		s.start(gjson.Get(js, "message"))
		return s.chunk(`{"role":"assistant","content":""}`, "null")
	case "content_block_start":
		return s.blockStart(gjson.Get(js, "content_block"))
	case "content_block_delta":
		return s.blockDelta(gjson.Get(js, "delta"))
	case "content_block_stop":
		s.inTool = false
	case "message_delta":
		r := gjson.Get(js, "delta.stop_reason")
		if r.Type != gjson.String {
			return nil
		}
		return s.chunk("{}", `"`+FinishReason(r.Str)+`"`)
	case "message_stop":
		return s.finish()
	case "error":
		e := gjson.Get(js, "error")
		typ, msg := e.Get("type").Str, e.Get("message").Str
		if typ == "" {
			typ = "api_error"
		}
		if msg == "" {
			msg = "upstream stream failed"
		}
		return s.Fail(typ, msg)
	}
	return nil
}

// Fail ends the stream with an OpenAI error event, for an upstream that
// broke off or sent an error.
func (s *ChatStream) Fail(typ, message string) error {
	if s.done {
		return nil
	}
	s.done = true
	s.buf = append(s.buf[:0], "data: "...)
	s.buf = append(s.buf, OpenAIErrorBody(typ, "", "", message)...)
	s.buf = append(s.buf, "\n\n"...)
	return s.write()
}

// start builds the chunk prefix from message_start's message.
func (s *ChatStream) start(msg gjson.Result) {
	s.started = true
	p := append(s.prefix[:0], `data: {"id":`...)
	p = appendString(p, msg.Get("id"))
	p = append(p, `,"object":"chat.completion.chunk","created":`...)
	p = strconv.AppendInt(p, s.opts.Created, 10)
	p = append(p, `,"model":`...)
	p = appendString(p, msg.Get("model"))
	s.prefix = append(p, `,"choices":[`...)
}

func (s *ChatStream) blockStart(b gjson.Result) error {
	switch b.Get("type").Str {
	case "text":
		s.inTool = false
		if t := b.Get("text"); t.Type == gjson.String && t.Str != "" {
			return s.content(t)
		}
	case "tool_use":
		s.inTool = true
		s.toolIndex++
		s.buf = s.open()
		s.buf = append(s.buf, `{"tool_calls":[{"index":`...)
		s.buf = strconv.AppendInt(s.buf, s.toolIndex, 10)
		s.buf = append(s.buf, `,"id":`...)
		s.buf = appendString(s.buf, b.Get("id"))
		s.buf = append(s.buf, `,"type":"function","function":{"name":`...)
		s.buf = appendString(s.buf, b.Get("name"))
		s.buf = append(s.buf, `,"arguments":""}}]}`...)
		return s.close("null")
	default:
		s.inTool = false
	}
	return nil
}

func (s *ChatStream) blockDelta(d gjson.Result) error {
	switch d.Get("type").Str {
	case "text_delta":
		return s.content(d.Get("text"))
	case "input_json_delta":
		if !s.inTool {
			return nil
		}
		p := d.Get("partial_json")
		if p.Type != gjson.String || p.Str == "" {
			return nil
		}
		s.buf = s.open()
		s.buf = append(s.buf, `{"tool_calls":[{"index":`...)
		s.buf = strconv.AppendInt(s.buf, s.toolIndex, 10)
		s.buf = append(s.buf, `,"function":{"arguments":`...)
		s.buf = appendString(s.buf, p)
		s.buf = append(s.buf, `}}]}`...)
		return s.close("null")
	}
	return nil
}

// content writes a content delta holding the string t.
func (s *ChatStream) content(t gjson.Result) error {
	if t.Type != gjson.String {
		return nil
	}
	s.buf = s.open()
	s.buf = append(s.buf, `{"content":`...)
	s.buf = appendString(s.buf, t)
	s.buf = append(s.buf, '}')
	return s.close("null")
}

// finish writes the usage chunk (when asked for) and [DONE].
func (s *ChatStream) finish() error {
	s.done = true
	s.buf = s.buf[:0]
	if s.opts.IncludeUsage {
		u, ok := s.meter.Usage()
		if !ok {
			u = Usage{Prompt: clamp(s.opts.FallbackPrompt), Completion: s.meter.CompletionTokens()}
		}
		s.buf = append(s.buf, s.prefixBytes()...)
		s.buf = append(s.buf, `],"usage":{"prompt_tokens":`...)
		s.buf = strconv.AppendInt(s.buf, u.Prompt, 10)
		s.buf = append(s.buf, `,"completion_tokens":`...)
		s.buf = strconv.AppendInt(s.buf, u.Completion, 10)
		s.buf = append(s.buf, `,"total_tokens":`...)
		s.buf = strconv.AppendInt(s.buf, u.Total(), 10)
		s.buf = append(s.buf, `,"prompt_tokens_details":{"cached_tokens":`...)
		s.buf = strconv.AppendInt(s.buf, u.CacheRead, 10)
		s.buf = append(s.buf, "}}}\n\n"...)
	}
	s.buf = append(s.buf, "data: [DONE]\n\n"...)
	return s.write()
}

// chunk writes a chunk with one choice: delta (a JSON object) and
// finishReason (JSON).
func (s *ChatStream) chunk(delta, finishReason string) error {
	s.buf = s.open()
	s.buf = append(s.buf, delta...)
	return s.close(finishReason)
}

// prefixBytes is the chunk prefix; a stream that did not start with
// message_start gets one with empty id and model.
func (s *ChatStream) prefixBytes() []byte {
	if !s.started {
		s.start(gjson.Result{})
	}
	return s.prefix
}

// open starts a chunk in s.buf, up to the choice's delta.
func (s *ChatStream) open() []byte {
	b := append(s.buf[:0], s.prefixBytes()...)
	return append(b, `{"index":0,"delta":`...)
}

// close ends the chunk in s.buf after the delta and writes it.
func (s *ChatStream) close(finishReason string) error {
	s.buf = append(s.buf, `,"logprobs":null,"finish_reason":`...)
	s.buf = append(s.buf, finishReason...)
	if s.opts.IncludeUsage {
		s.buf = append(s.buf, `}],"usage":null}`+"\n\n"...)
	} else {
		s.buf = append(s.buf, "}]}\n\n"...)
	}
	return s.write()
}

func (s *ChatStream) write() error {
	_, err := s.w.Write(s.buf)
	return err
}

// appendString appends the JSON string v: its raw text when that is a valid
// JSON string (no copy through unescaping), else v's value re-encoded, and
// "" for anything that is not a string.
func appendString(b []byte, v gjson.Result) []byte {
	if v.Type != gjson.String {
		return append(b, `""`...)
	}
	if len(v.Raw) >= 2 && v.Raw[0] == '"' && gjson.Valid(v.Raw) {
		return append(b, v.Raw...)
	}
	enc, err := json.Marshal(v.Str)
	if err != nil {
		return append(b, `""`...)
	}
	return append(b, enc...)
}

func itoa(n int) string { return strconv.Itoa(n) }
