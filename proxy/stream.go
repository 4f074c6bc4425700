package proxy

import (
	"bufio"
	"bytes"
	"io"
	"slices"

	"github.com/tidwall/gjson"

	"github.com/genai-gateway/genai-gateway/proxy/provider"
)

// Per-stream buffer sizes. The read and write buffers are fixed; the
// others start small and grow, only as far as their bound, when a stream
// needs them, so the common stream (small events, usage reported) holds
// about 10 KiB of them and no stream more than 40 KiB, or 164 KiB when an
// event too large to buffer passes (its tail is kept for usage), whatever
// the upstream sends.
const (
	sseReadSize = 4 << 10  // bufio.Reader over the upstream body
	sseEventMax = 16 << 10 // one buffered event; larger ones pass through unbuffered
	textMax     = 8 << 10  // streamed text kept for the tokenizer fallback
	// usageTailMax is the tail of an oversized event or body scanned for
	// usage: the Responses API puts user and metadata after usage, and
	// metadata may hold 16 values of 512 characters, about 55 KiB when
	// every one is escaped. The tail's buffer holds up to twice it, so
	// that keeping the last bytes moves them once per usageTailMax bytes.
	usageTailMax = 64 << 10
	// outMax is what is gathered for one write to the client: a chunk of
	// it, with its framing, fits fasthttp's 4 KiB connection buffer, so
	// each flush is one write(2).
	outMax  = 4<<10 - 16
	evStart = 1 << 10 // first size of the event buffer
	txStart = 512     // first size of the text buffer
)

// streamBufs are the buffers of one response in flight, pooled per Proxy so
// a stream allocates none of them in the steady state.
type streamBufs struct {
	br     *bufio.Reader
	gather gatherReader // under br for chunked bodies
	ev     []byte
	text   []byte
	tail   []byte // made on first use
	out    []byte
	anth   *provider.AnthropicStreamMeter // made on the first Messages stream
}

func newStreamBufs() *streamBufs {
	return &streamBufs{
		br:   bufio.NewReaderSize(nil, sseReadSize),
		ev:   make([]byte, 0, evStart),
		text: make([]byte, 0, txStart),
		out:  make([]byte, 0, outMax),
	}
}

// keep stores buffers a stream grew back into b for the next stream, unless
// they grew past their bound (a translated event may), so the pool never
// keeps more than the bounds above.
func (b *streamBufs) keep(ev, text, tail []byte) {
	if cap(ev) <= sseEventMax {
		b.ev = ev[:0]
	}
	if cap(text) <= textMax {
		b.text = text[:0]
	}
	if cap(tail) <= 2*usageTailMax {
		b.tail = tail[:0]
	}
}

// growTo makes room for n more bytes in b, doubling its capacity but never
// past limit (callers keep len(b)+n <= limit).
func growTo(b []byte, n, limit int) []byte {
	if len(b)+n <= cap(b) {
		return b
	}
	c := min(max(2*cap(b), len(b)+n), max(limit, len(b)+n))
	nb := make([]byte, len(b), c)
	copy(nb, b)
	return nb
}

// tokenCounter counts the tokens of a piece of generated text (the
// request's model's tokenizer); an interface so a stream's *metered is
// passed without a closure.
type tokenCounter interface{ count([]byte) int64 }

// countFunc is a tokenCounter made of a function (tests).
type countFunc func([]byte) int64

func (f countFunc) count(b []byte) int64 { return f(b) }

// streamKind says where a stream carries its text.
type streamKind uint8

const (
	kindChat      streamKind = iota // chat/completions and completions chunks
	kindResponses                   // Responses API events
	kindMessages                    // Anthropic Messages API events
)

// sseCopier copies a server-sent event stream from an upstream to the
// client event by event, reading usage from the chunks and keeping the
// streamed text (bounded) for the tokenizer fallback. With hide set it drops
// the usage-only chunk (`"choices": []` with a `usage` object) that the
// gateway asked for on the client's behalf. Bytes are copied as they are;
// only a dropped event is missing from the output. An event larger than
// sseEventMax is passed through unbuffered (it is never hidden, and only
// its tail is scanned for usage). Not safe for concurrent use.
type sseCopier struct {
	src  *bufio.Reader
	bufs *streamBufs
	kind streamKind
	hide bool

	// count tokenizes text when the text buffer is full; nil counts one
	// token per four bytes (tests).
	count tokenCounter

	// anth meters a Messages API stream (kindMessages) instead of usage
	// and text below.
	anth *provider.AnthropicStreamMeter
	// xl, when set, translates each event instead of copying it: events
	// are held whole (up to maxTranslatedEvent) and handed to it.
	xl     eventTranslator
	failed error // stops the copy: an event too large to translate

	ev      []byte // the event being read
	big     bool   // the event outgrew ev and is passing through
	midLine bool   // the last piece read did not end a line
	pending bool   // bytes were written since the last flush

	usage     usage
	haveUsage bool
	// finished: a choice has ended (finish_reason) or the Responses
	// stream's final event came; usageFinal: the usage kept came then, so
	// it counts the whole output (see meteredUsage).
	finished, usageFinal bool
	text                 []byte // streamed text not yet counted
	textTokens           int64  // tokens of text already counted
	tail                 []byte
}

// newSSECopier reads the upstream body through b.br, which the caller has
// reset to it, using the pooled buffers of b.
func newSSECopier(b *streamBufs, kind streamKind, hide bool, count tokenCounter) *sseCopier {
	return &sseCopier{src: b.br, bufs: b, kind: kind, hide: hide, count: count,
		ev: b.ev[:0], text: b.text[:0], tail: b.tail[:0]}
}

// copy copies the stream to dst until EOF or an error, calling flush after
// each event that was written whenever the next read could block. rerr is
// a read error (nil at EOF), werr a write or flush error; either stops the
// copy.
func (c *sseCopier) copy(dst io.Writer, flush func() error) (rerr, werr error) {
	for {
		line, err := c.src.ReadSlice('\n')
		if len(line) > 0 {
			if werr = c.addLine(dst, line, err == nil); werr != nil {
				return nil, werr
			}
			if c.failed != nil {
				return c.failed, nil
			}
		}
		switch err {
		case nil:
			if c.pending && !c.lineBuffered() {
				c.pending = false
				if werr = flush(); werr != nil {
					return nil, werr
				}
			}
			continue
		case bufio.ErrBufferFull:
			continue
		case io.EOF:
		default:
			rerr = err
		}
		// End of input: what was read of the last event goes out as it is.
		if c.big {
			c.endBig()
		} else if len(c.ev) > 0 {
			werr = c.endEvent(dst)
		}
		if c.pending && werr == nil {
			c.pending = false
			werr = flush()
		}
		return rerr, werr
	}
}

// lineBuffered reports whether a whole line is already buffered, so the
// next read will not block.
func (c *sseCopier) lineBuffered() bool {
	b, _ := c.src.Peek(c.src.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

// addLine takes the next piece of input: a whole line (complete) or the
// start of a line longer than the read buffer.
func (c *sseCopier) addLine(dst io.Writer, line []byte, complete bool) error {
	blank := !c.midLine && complete && (len(line) == 1 || (len(line) == 2 && line[0] == '\r'))
	c.midLine = !complete
	if !c.big && len(c.ev)+len(line) > sseEventMax && c.xl != nil {
		// A translated event is parsed whole: hold it, up to a bound.
		if len(c.ev)+len(line) > maxTranslatedEvent {
			c.failed = errEventTooLarge
			return nil
		}
		c.ev = slices.Grow(c.ev, len(line))
	}
	if !c.big && len(c.ev)+len(line) > sseEventMax {
		// Too large to hold: send what we have and pass the rest through.
		c.big = true
		c.addTail(c.ev)
		if _, err := dst.Write(c.ev); err != nil {
			return err
		}
		c.ev = c.ev[:0]
	}
	if c.big {
		c.addTail(line)
		c.pending = true
		if _, err := dst.Write(line); err != nil {
			return err
		}
		if blank {
			c.endBig()
		}
		return nil
	}
	c.ev = append(growTo(c.ev, len(line), sseEventMax), line...)
	if blank {
		return c.endEvent(dst)
	}
	return nil
}

// endEvent meters the buffered event and writes it unless it is hidden.
func (c *sseCopier) endEvent(dst io.Writer) error {
	ev := c.ev
	c.ev = c.ev[:0]
	var data []byte
	dataLines, otherLines := 0, 0
	for rest := ev; len(rest) > 0; {
		line := rest
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			rest = nil
		}
		line = bytes.TrimSuffix(line, []byte{'\r'})
		switch {
		case len(line) == 0:
		case bytes.HasPrefix(line, []byte("data:")):
			dataLines++
			data = line[len("data:"):]
			if len(data) > 0 && data[0] == ' ' {
				data = data[1:]
			}
			if c.xl != nil {
				c.pending = true
				if err := c.xl.Event("", data); err != nil {
					return err
				}
				continue
			}
			c.observe(data)
		default:
			otherLines++
		}
	}
	if c.xl != nil {
		return nil // translated above; the upstream's framing stays here
	}
	if c.hide && dataLines == 1 && otherLines == 0 && isUsageOnly(data) {
		return nil
	}
	c.pending = true
	_, err := dst.Write(ev)
	return err
}

// endBig ends an event that passed through unbuffered: its usage, if any,
// is in its tail.
func (c *sseCopier) endBig() {
	if u, ok := usageFromTail(c.tail); ok {
		// An event too large to buffer that carries usage is a final
		// one in practice (response.completed with its whole response).
		c.usage, c.haveUsage, c.usageFinal = u, true, true
	}
	c.big = false
	c.tail = c.tail[:0]
}

// addTail keeps the last usageTailMax bytes passed through.
func (c *sseCopier) addTail(b []byte) {
	c.tail = appendTail(c.tail, b)
}

// observe meters one data payload: usage when it carries some, streamed
// text otherwise. It walks the payload's top level once with the
// allocation-free scanner and hands only a usage object to gjson.
func (c *sseCopier) observe(data []byte) {
	if len(data) == 0 || data[0] != '{' {
		return // [DONE], keep-alives, garbage
	}
	if c.anth != nil {
		c.anth.Event("", data)
		return
	}
	var choices, use, typ, delta, resp string
	f := newMembers(unsafeString(data))
	for k, v, ok := f.next(); ok; k, v, ok = f.next() {
		switch k {
		case "choices":
			choices = v
		case "usage":
			use = v
		case "type":
			typ = v
		case "delta":
			delta = v
		case "response":
			resp = v
		}
	}
	if c.kind == kindResponses && use == "" && resp != "" {
		use = rawField(resp, "usage")
		switch typ {
		case `"response.completed"`, `"response.incomplete"`, `"response.failed"`:
			c.finished = true
		}
	}
	switch c.kind {
	case kindChat:
		chs := newMembers(choices)
		for _, ch, ok := chs.next(); ok; _, ch, ok = chs.next() {
			if r := rawField(ch, "finish_reason"); r != "" && r != "null" {
				c.finished = true
			}
			c.addText(rawField(ch, "text"))
			d := rawField(ch, "delta")
			if d == "" {
				continue
			}
			df := newMembers(d)
			for k, v, ok := df.next(); ok; k, v, ok = df.next() {
				switch k {
				case "content", "reasoning_content", "refusal":
					c.addText(v)
				case "tool_calls":
					tcs := newMembers(v)
					for _, tc, ok := tcs.next(); ok; _, tc, ok = tcs.next() {
						c.addText(rawField(rawField(tc, "function"), "arguments"))
					}
				}
			}
		}
	case kindResponses:
		switch typ {
		case `"response.output_text.delta"`, `"response.refusal.delta"`,
			`"response.function_call_arguments.delta"`, `"response.reasoning_text.delta"`,
			`"response.reasoning_summary_text.delta"`:
			c.addText(delta)
		}
	}
	if len(use) > 0 && use[0] == '{' {
		if u, ok := usageFromObject(gjson.Parse(use)); ok {
			c.usage, c.haveUsage, c.usageFinal = u, true, c.finished
		}
	}
}

// meteredUsage is the stream's usage as metered: the upstream's, except
// that usage reported before the output ended (an upstream that sends it
// early or on every chunk, then a stream cut) counts at least the tokens
// of the text that streamed. Final usage is the upstream's word.
func (c *sseCopier) meteredUsage() usage {
	u := c.usage
	if !c.usageFinal {
		u.completion = max(u.completion, c.completionTokens())
	}
	return u
}

// addText adds the raw JSON string raw to the streamed text. When the text
// buffer is full its content is tokenized and the buffer reused, so memory
// stays bounded however long the stream.
func (c *sseCopier) addText(raw string) {
	if len(raw) < 2 || raw[0] != '"' {
		return
	}
	if len(c.text)+len(raw) > textMax {
		c.countText()
		if len(raw) > textMax {
			// A single huge delta: counted as written, escapes included.
			c.textTokens += c.tokens(unsafeBytes(raw[1 : len(raw)-1]))
			return
		}
	}
	c.text = appendUnescaped(growTo(c.text, len(raw), textMax), raw)
}

func (c *sseCopier) countText() {
	c.textTokens += c.tokens(c.text)
	c.text = c.text[:0]
}

func (c *sseCopier) tokens(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	if c.count == nil {
		return int64(len(b)+3) / 4
	}
	return c.count.count(b)
}

// completionTokens returns the tokens of all the streamed text, for the
// tokenizer fallback.
func (c *sseCopier) completionTokens() int64 {
	c.countText()
	return c.textTokens
}

// isUsageOnly reports whether a data payload is the usage-only chunk a
// stream ends with when include_usage is set: an empty `choices` array and a
// `usage` object.
func isUsageOnly(data []byte) bool {
	if len(data) == 0 || data[0] != '{' || !bytes.Contains(data, []byte(`"usage"`)) {
		return false
	}
	js := unsafeString(data)
	ch := gjson.Get(js, "choices")
	if !ch.IsArray() {
		return false
	}
	i := 1
	for i < len(ch.Raw) && isSpace(ch.Raw[i]) {
		i++
	}
	if i >= len(ch.Raw) || ch.Raw[i] != ']' {
		return false
	}
	return gjson.Get(js, "usage").IsObject()
}
