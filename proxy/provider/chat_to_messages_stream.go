package provider

import (
	"io"
	"strconv"

	"github.com/tidwall/gjson"
)

// maxStreamToolCalls bounds the tool calls of one translated stream: the
// index of every call that started is kept to route its argument deltas.
const maxStreamToolCalls = 256

// MessagesStreamOptions configures a MessagesStream.
type MessagesStreamOptions struct {
	// Count tokenizes streamed text for the tokenizer fallback; nil counts
	// one token per four bytes.
	Count func([]byte) int64
	// Prompt is the gateway's own prompt estimate: the input_tokens of
	// message_start (chat completions report usage only at the end, where
	// message_delta carries the upstream's figure), and of message_delta
	// when the upstream reports no usage.
	Prompt int64
}

// MessagesStream translates an OpenAI chat completions chunk stream into
// Messages API events written to w, and meters it on the way. Feed it the
// data of every upstream event with Event; it writes zero or more complete
// `event: NAME\ndata: JSON\n\n` events per call, in one Write, so the caller
// can flush after each call. Text and argument fragments are copied as raw
// JSON strings. Its memory is its output buffer (as large as the largest
// event), the text kept for the tokenizer fallback (at most textMax bytes)
// and the indexes of at most maxStreamToolCalls tool calls. Not safe for
// concurrent use.
//
// The mapping: the first chunk → message_start (id and model of the
// chunk); content deltas → a text block (content_block_start, then
// text_delta events); a tool call's first delta (id and name) → a tool_use
// block, its argument fragments → input_json_delta events; a block is
// stopped when the next one starts or the message ends; finish_reason
// (by StopReason) and the usage chunk → message_delta with stop_reason,
// stop_sequence and the usage (input_tokens without the cached ones,
// cache_read_input_tokens, output_tokens), sent at [DONE], then
// message_stop; a refusal delta → text, and stop_reason refusal; an error
// payload → an error event (Anthropic's way to fail a stream; SDKs raise
// it) and the end. Chunks without choices or usage (Azure's prompt filter
// results) write nothing.
type MessagesStream struct {
	w    io.Writer
	opts MessagesStreamOptions

	// The tokenizer fallback: streamed text not yet counted (grown as it
	// comes, up to textMax), and the tokens of the text already counted.
	text       []byte
	textTokens int64

	buf     []byte
	started bool
	done    bool
	refused bool

	open      int64   // index of the open block, -1 for none
	openTool  int64   // the OpenAI index of the open tool block, -1 for text
	nextBlock int64   // index of the next block
	tools     []int64 // OpenAI indexes of the tool calls started, in order

	reason    string // the mapped stop_reason, "" before finish_reason
	stopSeq   []byte // raw JSON of stop_sequence, nil for null
	usage     Usage
	haveUsage bool
	// finalUsage: usage came with or after finish_reason, so its
	// completion_tokens count the whole output.
	finalUsage bool
}

// NewMessagesStream returns a translator writing to w.
func NewMessagesStream(w io.Writer, opts MessagesStreamOptions) *MessagesStream {
	return &MessagesStream{w: w, opts: opts, open: -1, openTool: -1, buf: make([]byte, 0, 512)}
}

// Done reports whether the stream has ended: [DONE] or an error payload
// was translated, or Fail was called. A stream that reaches the upstream's
// EOF without being done was cut; the caller should Fail it.
func (s *MessagesStream) Done() bool { return s.done }

// Finished reports whether the upstream sent its finish_reason: a stream
// that then reaches EOF without [DONE] (some OpenAI-compatible servers
// send none) is complete, and the caller may end it by passing [DONE].
func (s *MessagesStream) Finished() bool { return s.reason != "" }

// Usage returns the usage the stream reported (prompt tokens with the
// cached ones); ok is false when it reported none (then meter with
// CompletionTokens). Usage that came before finish_reason (an upstream
// reporting it early, or on every chunk) may not count all the output
// that streamed: Completion is then at least the tokens of the streamed
// text and tool arguments.
func (s *MessagesStream) Usage() (Usage, bool) {
	u := s.usage
	if s.haveUsage && !s.finalUsage {
		u.Completion = max(u.Completion, s.CompletionTokens())
	}
	return u, s.haveUsage
}

// CompletionTokens returns the tokenizer count of the streamed text and
// tool arguments.
func (s *MessagesStream) CompletionTokens() int64 {
	s.countText()
	return clamp(s.textTokens)
}

// addText keeps a streamed string for the tokenizer fallback, counting the
// kept text whenever it would pass textMax.
func (s *MessagesStream) addText(v gjson.Result) {
	str := v.Str
	if len(s.text)+len(str) > textMax {
		s.countText()
		if len(str) > textMax {
			s.textTokens += s.tokens(unsafeBytes(str))
			return
		}
	}
	s.text = append(s.text, str...)
}

func (s *MessagesStream) countText() {
	s.textTokens += s.tokens(s.text)
	s.text = s.text[:0]
}

func (s *MessagesStream) tokens(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	if s.opts.Count == nil {
		return int64(len(b)+3) / 4
	}
	return clamp(s.opts.Count(b))
}

// Event translates the data of one upstream event (OpenAI streams name no
// events; name is ignored). It returns the error of writing to w. data is
// not kept. Events after the end are ignored.
func (s *MessagesStream) Event(_ string, data []byte) error {
	if s.done {
		return nil
	}
	if string(data) == "[DONE]" {
		s.buf = s.buf[:0]
		s.finish()
		return s.write()
	}
	if len(data) == 0 || data[0] != '{' || !depthOK(data, MaxDepth) {
		return nil // keep-alives, garbage
	}
	// One walk of the top level.
	var id, model, errv, choice, use gjson.Result
	gjson.Parse(unsafeString(data)).ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			id = v
		case "model":
			model = v
		case "error":
			errv = v
		case "choices":
			v.ForEach(func(_, c gjson.Result) bool {
				choice = c
				return false
			})
		case "usage":
			use = v
		}
		return true
	})
	s.buf = s.buf[:0]
	if errv.Exists() && errv.Type != gjson.Null {
		msg := errv.Get("message").Str
		if msg == "" {
			msg = "upstream stream failed"
		}
		s.fail("api_error", msg)
		return s.write()
	}
	if !choice.IsObject() && !use.IsObject() {
		return nil
	}
	if !s.started {
		s.start(id, model)
	}
	if choice.IsObject() {
		s.choice(choice)
	}
	if u, ok := ChatUsage(use); ok {
		s.usage, s.haveUsage = u, true
		s.finalUsage = s.reason != ""
	}
	return s.write()
}

// Fail ends the stream with an Anthropic error event, for an upstream that
// broke off or sent garbage.
func (s *MessagesStream) Fail(typ, message string) error {
	if s.done {
		return nil
	}
	s.buf = s.buf[:0]
	s.fail(typ, message)
	return s.write()
}

func (s *MessagesStream) fail(typ, message string) {
	s.done = true
	s.buf = append(s.buf, "event: error\ndata: "...)
	s.buf = append(s.buf, AnthropicErrorBody(typ, message)...)
	s.buf = append(s.buf, "\n\n"...)
}

// start writes message_start.
func (s *MessagesStream) start(id, model gjson.Result) {
	s.started = true
	s.event("message_start", `{"type":"message_start","message":{"id":`)
	s.buf = appendString(s.buf, id)
	s.buf = append(s.buf, `,"type":"message","role":"assistant","model":`...)
	s.buf = appendString(s.buf, model)
	s.buf = append(s.buf, `,"content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":`...)
	s.buf = strconv.AppendInt(s.buf, clamp(s.opts.Prompt), 10)
	s.buf = append(s.buf, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":0}}}`+"\n\n"...)
}

// choice translates the first choice of a chunk.
func (s *MessagesStream) choice(ch gjson.Result) {
	d := ch.Get("delta")
	if c := d.Get("content"); c.Type == gjson.String && c.Str != "" {
		s.textDelta(c)
	}
	if r := d.Get("refusal"); r.Type == gjson.String && r.Str != "" {
		s.refused = true
		s.textDelta(r)
	}
	d.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
		return s.toolDelta(tc)
	})
	if s.done {
		return
	}
	if fr := ch.Get("finish_reason"); fr.Type == gjson.String && s.reason == "" {
		reason, seq := StopReason(fr.Str, ch.Get("stop_reason"))
		s.reason, s.stopSeq = reason, nil
		if seq.Exists() {
			s.stopSeq = appendString(nil, seq)
		}
		s.stop()
	}
}

// textDelta writes a text delta, opening a text block first when the open block
// is not one.
func (s *MessagesStream) textDelta(t gjson.Result) {
	if s.open < 0 || s.openTool >= 0 {
		s.stop()
		s.startBlock()
		s.buf = append(s.buf, `{"type":"text","text":""}}`+"\n\n"...)
		s.openTool = -1
	}
	s.addText(t)
	s.event("content_block_delta", `{"type":"content_block_delta","index":`)
	s.buf = strconv.AppendInt(s.buf, s.open, 10)
	s.buf = append(s.buf, `,"delta":{"type":"text_delta","text":`...)
	s.buf = appendString(s.buf, t)
	s.buf = append(s.buf, "}}\n\n"...)
}

// toolDelta translates one tool_calls entry of a delta: a call's start
// (its id and name) opens a tool_use block, its argument fragments become
// input_json_delta events. Arguments of a call whose block was stopped
// (interleaved calls) cannot be expressed: the stream fails. It reports
// whether to go on.
func (s *MessagesStream) toolDelta(tc gjson.Result) bool {
	idx := int64(-1)
	if i := tc.Get("index"); i.Type == gjson.Number && i.Num >= 0 && i.Num < MaxTokens {
		idx = int64(i.Num)
	}
	if idx < 0 {
		s.fail("api_error", "The upstream streamed a tool call without an index.")
		return false
	}
	id, name := tc.Get("id"), tc.Get("function.name")
	known := false
	for _, t := range s.tools {
		known = known || t == idx
	}
	if !known && (id.Type == gjson.String || name.Type == gjson.String) {
		if len(s.tools) >= maxStreamToolCalls {
			s.fail("api_error", "The upstream streamed more tool calls than the gateway translates.")
			return false
		}
		s.tools = append(s.tools, idx)
		s.stop()
		s.startBlock()
		s.buf = append(s.buf, `{"type":"tool_use","id":`...)
		s.buf = appendString(s.buf, id)
		s.buf = append(s.buf, `,"name":`...)
		s.buf = appendString(s.buf, name)
		s.buf = append(s.buf, `,"input":{}}}`+"\n\n"...)
		s.openTool = idx
		known = true
	}
	args := tc.Get("function.arguments")
	if args.Type != gjson.String || args.Str == "" {
		return true
	}
	if !known || s.openTool != idx || s.open < 0 {
		s.fail("api_error", "The upstream interleaved tool call arguments, which the Messages API stream cannot carry.")
		return false
	}
	s.addText(args)
	s.event("content_block_delta", `{"type":"content_block_delta","index":`)
	s.buf = strconv.AppendInt(s.buf, s.open, 10)
	s.buf = append(s.buf, `,"delta":{"type":"input_json_delta","partial_json":`...)
	s.buf = appendString(s.buf, args)
	s.buf = append(s.buf, "}}\n\n"...)
	return true
}

// startBlock writes the head of a content_block_start for the next block,
// up to its content_block value, and opens it.
func (s *MessagesStream) startBlock() {
	s.open = s.nextBlock
	s.nextBlock++
	s.event("content_block_start", `{"type":"content_block_start","index":`)
	s.buf = strconv.AppendInt(s.buf, s.open, 10)
	s.buf = append(s.buf, `,"content_block":`...)
}

// stop writes content_block_stop for the open block, if any.
func (s *MessagesStream) stop() {
	if s.open < 0 {
		return
	}
	s.event("content_block_stop", `{"type":"content_block_stop","index":`)
	s.buf = strconv.AppendInt(s.buf, s.open, 10)
	s.buf = append(s.buf, "}\n\n"...)
	s.open, s.openTool = -1, -1
}

// finish ends the message: the open block's stop, message_delta with the
// stop reason and the usage, message_stop.
func (s *MessagesStream) finish() {
	s.done = true
	if !s.started {
		s.start(gjson.Result{}, gjson.Result{})
	}
	s.stop()
	reason := s.reason
	if s.refused {
		reason, s.stopSeq = "refusal", nil
	}
	if reason == "" {
		reason = "end_turn"
	}
	u, ok := s.Usage()
	if !ok {
		u = Usage{Prompt: clamp(s.opts.Prompt), Completion: s.CompletionTokens()}
	}
	s.event("message_delta", `{"type":"message_delta","delta":{"stop_reason":"`)
	s.buf = append(s.buf, reason...)
	s.buf = append(s.buf, `","stop_sequence":`...)
	if s.stopSeq != nil {
		s.buf = append(s.buf, s.stopSeq...)
	} else {
		s.buf = append(s.buf, "null"...)
	}
	s.buf = append(s.buf, `},"usage":`...)
	s.buf = appendMessagesUsage(s.buf, u)
	s.buf = append(s.buf, "}\n\n"...)
	s.event("message_stop", `{"type":"message_stop"}`)
	s.buf = append(s.buf, "\n\n"...)
}

// event appends an event's name line and the start of its data.
func (s *MessagesStream) event(name, data string) {
	s.buf = append(s.buf, "event: "...)
	s.buf = append(s.buf, name...)
	s.buf = append(s.buf, "\ndata: "...)
	s.buf = append(s.buf, data...)
}

func (s *MessagesStream) write() error {
	if len(s.buf) == 0 {
		return nil
	}
	_, err := s.w.Write(s.buf)
	return err
}
