package provider

import (
	"unsafe"

	"github.com/tidwall/gjson"
)

// Anthropic's Messages API (https://docs.anthropic.com/en/api/messages):
// usage comes from the `usage` object of a response, and in a stream from
// `message_start` (the prompt side: input and cache tokens, with an
// output_tokens sent before any output, 1 from the real API) and
// `message_delta` (cumulative figures, replacing earlier ones; its
// output_tokens is the output's).

// Header names and values of the Messages API.
const (
	// AnthropicKeyHeader carries the upstream's API key.
	AnthropicKeyHeader = "x-api-key"
	// AnthropicVersionHeader names the API version; a translated request
	// must carry one.
	AnthropicVersionHeader = "anthropic-version"
	// AnthropicVersion is the API version translated requests are written
	// for, sent when the client did not name one.
	AnthropicVersion = "2023-06-01"
)

// MaxTokens bounds every token figure read from an upstream: larger numbers
// are clamped to it, negative ones to 0, so sums of a few of them cannot
// overflow.
const MaxTokens = 1 << 32

// Usage is the token usage of one response, every figure in [0, MaxTokens].
type Usage struct {
	// Prompt is every input token: input_tokens + cache_creation_input_tokens
	// + cache_read_input_tokens (clamped).
	Prompt int64
	// Completion is output_tokens.
	Completion int64
	// CacheRead and CacheCreation are the parts of Prompt read from and
	// written to the prompt cache, for pricing.
	CacheRead     int64
	CacheCreation int64
}

// Total is Prompt + Completion.
func (u Usage) Total() int64 { return u.Prompt + u.Completion }

// anthropicUsage holds the raw figures of an Anthropic usage object.
type anthropicUsage struct {
	input, cacheCreation, cacheRead, output int64
}

func (a anthropicUsage) usage() Usage {
	return Usage{
		Prompt:        clamp(a.input + a.cacheCreation + a.cacheRead),
		Completion:    a.output,
		CacheRead:     a.cacheRead,
		CacheCreation: a.cacheCreation,
	}
}

// merge overwrites the figures present in the usage object v (a message_delta
// carries cumulative figures, some of them only). ok reports whether v is a
// complete, valid JSON object (a truncated one is ignored), output whether
// it had output_tokens.
func (a *anthropicUsage) merge(v gjson.Result) (ok, output bool) {
	if !v.IsObject() || !depthOK(unsafeBytes(v.Raw), MaxDepth) || !gjson.Valid(v.Raw) {
		return false, false
	}
	set := func(dst *int64, name string) bool {
		f := v.Get(name)
		if f.Exists() {
			*dst = number(f)
		}
		return f.Exists()
	}
	set(&a.input, "input_tokens")
	set(&a.cacheCreation, "cache_creation_input_tokens")
	set(&a.cacheRead, "cache_read_input_tokens")
	return true, set(&a.output, "output_tokens")
}

// number returns a JSON number as a token figure clamped to [0, MaxTokens];
// anything but a number counts 0.
func number(v gjson.Result) int64 {
	if v.Type != gjson.Number {
		return 0
	}
	f := v.Float()
	if f != f || f <= 0 { // NaN or not positive
		return 0
	}
	if f >= MaxTokens {
		return MaxTokens
	}
	return int64(f)
}

func clamp(n int64) int64 {
	return min(max(n, 0), MaxTokens)
}

// AnthropicUsage reads the usage of a whole non-streaming Messages response
// body. ok is false when the body has no usage object. It is safe for
// concurrent use and does not keep body.
func AnthropicUsage(body []byte) (u Usage, ok bool) {
	var a anthropicUsage
	if ok, _ := a.merge(gjson.Get(unsafeString(body), "usage")); !ok {
		return Usage{}, false
	}
	return a.usage(), true
}

// textMax bounds the streamed text an AnthropicStreamMeter keeps before it
// hands it to the tokenizer.
const textMax = 16 << 10

// AnthropicStreamMeter meters a Messages API event stream: feed it every
// event with Event, then read Usage, or CompletionTokens when the upstream
// sent no usage. Until a message_delta reports output_tokens, the output
// is metered as the larger of the output_tokens reported (message_start's
// placeholder) and the tokens of the text streamed so far, so a stream cut
// before message_delta is metered for what it produced. It keeps at most
// textMax bytes of streamed text, tokenizing them whenever the buffer
// fills, so its memory is bounded however long the stream. The zero value
// is not usable; call NewAnthropicStreamMeter. Not safe for concurrent use.
type AnthropicStreamMeter struct {
	count      func([]byte) int64
	usage      anthropicUsage
	haveUsage  bool
	haveOutput bool   // a message_delta reported output_tokens
	text       []byte // streamed text not yet counted
	textTokens int64  // tokens of the text already counted
}

// NewAnthropicStreamMeter returns a meter that tokenizes streamed text with
// count (nil counts one token per four bytes).
func NewAnthropicStreamMeter(count func([]byte) int64) *AnthropicStreamMeter {
	m := &AnthropicStreamMeter{}
	m.Reset(count)
	return m
}

// Reset makes m ready for a new stream, keeping its text buffer.
func (m *AnthropicStreamMeter) Reset(count func([]byte) int64) {
	text := m.text[:0]
	if text == nil {
		text = make([]byte, 0, textMax)
	}
	*m = AnthropicStreamMeter{count: count, text: text}
}

// Event takes one event: its SSE event name (when empty, the data's "type"
// field is used) and its data. Events other than message_start,
// message_delta and content_block_delta are ignored, as is malformed data.
// data is not kept.
func (m *AnthropicStreamMeter) Event(name string, data []byte) {
	js := unsafeString(data)
	if name == "" {
		name = gjson.Get(js, "type").Str
	}
	switch name {
	case "message_start":
		if ok, _ := m.usage.merge(gjson.Get(js, "message.usage")); ok {
			m.haveUsage = true
		}
	case "message_delta":
		if ok, output := m.usage.merge(gjson.Get(js, "usage")); ok {
			m.haveUsage = true
			m.haveOutput = m.haveOutput || output
		}
	case "content_block_delta":
		m.addText(deltaText(gjson.Get(js, "delta")))
	}
}

// deltaText returns the generated text of a content_block_delta's delta:
// text, tool-input JSON or thinking.
func deltaText(d gjson.Result) gjson.Result {
	switch d.Get("type").Str {
	case "text_delta":
		return d.Get("text")
	case "input_json_delta":
		return d.Get("partial_json")
	case "thinking_delta":
		return d.Get("thinking")
	}
	return gjson.Result{}
}

// addText adds a streamed string to the text, tokenizing the buffer when it
// would overflow.
func (m *AnthropicStreamMeter) addText(v gjson.Result) {
	if v.Type != gjson.String || v.Str == "" {
		return
	}
	s := v.Str
	if len(m.text)+len(s) > cap(m.text) {
		m.countText()
		if len(s) > cap(m.text) {
			m.textTokens += m.tokens(unsafeBytes(s))
			return
		}
	}
	m.text = append(m.text, s...)
}

func (m *AnthropicStreamMeter) countText() {
	m.textTokens += m.tokens(m.text)
	m.text = m.text[:0]
}

func (m *AnthropicStreamMeter) tokens(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	if m.count == nil {
		return int64(len(b)+3) / 4
	}
	return clamp(m.count(b))
}

// Usage returns the usage the stream reported so far; ok is false when no
// event carried a usage object. Before a message_delta reported
// output_tokens, Completion is at least the tokens of the streamed text.
func (m *AnthropicStreamMeter) Usage() (u Usage, ok bool) {
	u = m.usage.usage()
	if m.haveUsage && !m.haveOutput {
		u.Completion = max(u.Completion, m.CompletionTokens())
	}
	return u, m.haveUsage
}

// CompletionTokens returns the tokens of all the text streamed so far
// (text, tool input and thinking deltas), for the tokenizer fallback when
// the stream carried no usage.
func (m *AnthropicStreamMeter) CompletionTokens() int64 {
	m.countText()
	return clamp(m.textTokens)
}

// unsafeString views b as a string without copying; b must not change while
// the string is in use.
func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// unsafeBytes views s as bytes without copying; they must not be written.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
