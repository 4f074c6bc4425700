package proxy

import (
	"bytes"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

// Usage extraction reads JSON with gjson (or the tiny scanners below) on a
// zero-copy string view of the bytes already in hand: metering needs only a
// few fields (`model`, `stream`, `stream_options`, `usage`, the streamed
// text), so parsing the whole document into Go values, as encoding/json
// would, costs allocations and time on every request for nothing.
//
// Upstream bytes are not validated before they get here (checkBody sees
// only request bodies), so everything below must stay safe on hostile
// input: nothing recurses per nesting level of the document, nothing
// allocates more than a copy of what it was handed, and every number is
// clamped before arithmetic. gjson.Get, Parse and ForEach qualify: they
// skip nested values with an iterative scanner (parseSquash, squash) and
// recurse only per component of the path they are given, which here are
// constants; TestJSONNoRecursion runs them on 10 MiB of nesting with a
// 1 MiB stack. gjson.Valid does recurse once per level and must never see
// upstream bytes: validValue does its job here.

// maxUsageTokens bounds every token figure read from an upstream. No single
// request comes near it (the largest context windows hold about 2^21
// tokens), and sums of a few figures this size cannot overflow an int64 or
// lose precision in a float64, so a hostile or broken upstream that reports
// 2^63-1 or 1e30 tokens can neither wrap a counter nor lock a user out for
// longer than an honest, very large request would.
const maxUsageTokens = 1 << 32

// usage is the token usage of one response as the upstream reported it,
// each figure in [0, maxUsageTokens].
type usage struct {
	prompt, completion int64
	cached             int64 // of prompt, read from the prompt cache (<= prompt)
	written            int64 // of prompt, written to the prompt cache (<= prompt - cached)
	// clamped is set when a figure was out of range, not an integer, or
	// not a number at all; prompt and completion then hold the clamped
	// values. The caller logs it and counts it (metrics.usageClamped).
	clamped bool
}

// usageFromObject reads a usage object: prompt_tokens (or input_tokens, the
// Responses API name) and completion_tokens (or output_tokens). The first of
// the two names present decides, whatever its value. A figure that is
// negative counts 0, one above maxUsageTokens counts maxUsageTokens, a
// fraction is cut to its integer part, and a string, boolean, array or
// object counts 0; each of these sets clamped. A missing figure or null
// counts 0 without. ok is false when v is not a JSON object.
//
// An Anthropic usage object (cache_read_input_tokens,
// cache_creation_input_tokens) counts its cache reads and writes in the
// prompt, as the Messages route meters them.
func usageFromObject(v gjson.Result) (u usage, ok bool) {
	if !v.IsObject() {
		return u, false
	}
	p, pc := tokenField(v, "prompt_tokens", "input_tokens")
	c, cc := tokenField(v, "completion_tokens", "output_tokens")
	// Cached prompt tokens (chat: prompt_tokens_details, Responses:
	// input_tokens_details) only price the prompt: never more than it.
	d := v.Get("prompt_tokens_details")
	if !d.Exists() {
		d = v.Get("input_tokens_details")
	}
	k, _ := tokenFigure(d.Get("cached_tokens"))
	// Anthropic's usage object (a Messages answer too large to hold,
	// metered from its tail): input_tokens counts only the prompt tokens
	// neither read from nor written to the cache.
	read, rc := tokenFigure(v.Get("cache_read_input_tokens"))
	written, wc := tokenFigure(v.Get("cache_creation_input_tokens"))
	if read > 0 || written > 0 {
		p = min(p+read+written, maxUsageTokens)
		return usage{prompt: p, completion: c, cached: read, written: written, clamped: pc || cc || rc || wc}, true
	}
	return usage{prompt: p, completion: c, cached: min(k, p), clamped: pc || cc}, true
}

func tokenField(obj gjson.Result, name, alt string) (n int64, clamped bool) {
	f := obj.Get(name)
	if !f.Exists() {
		f = obj.Get(alt)
	}
	return tokenFigure(f)
}

// tokenFigure returns the token figure v clamped to [0, maxUsageTokens],
// and whether it had to be changed (see usageFromObject).
func tokenFigure(v gjson.Result) (n int64, clamped bool) {
	switch v.Type {
	case gjson.Null:
		return 0, false
	case gjson.Number:
	default: // missing, or not a number
		return 0, v.Exists()
	}
	if n, neg, ok := parseTokenInt(v.Raw); ok {
		switch {
		case neg:
			return 0, n != 0
		case n > maxUsageTokens:
			return maxUsageTokens, true
		}
		return n, false
	}
	// A fraction, an exponent, or something gjson took for a number in an
	// invalid document (NaN, Infinity, +1): its float value decides.
	x := v.Num
	switch {
	case x != x: // NaN
		return 0, true
	case x <= 0:
		return 0, x < 0
	case x >= maxUsageTokens:
		return maxUsageTokens, x > maxUsageTokens
	}
	n = int64(x)
	return n, float64(n) != x
}

// parseTokenInt parses an integer written as -?[0-9]+, saturating just
// past maxUsageTokens so that no number of digits can overflow. ok is false
// for anything else.
func parseTokenInt(s string) (n int64, neg, ok bool) {
	if s != "" && s[0] == '-' {
		neg, s = true, s[1:]
	}
	if s == "" {
		return 0, false, false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false, false
		}
		if n <= maxUsageTokens {
			n = n*10 + int64(c-'0')
		}
	}
	return n, neg, true
}

// extractUsage returns the top-level `usage` object of a whole response
// body (chat, completions, embeddings, responses). The body need not be
// valid JSON; see the bounds above.
func extractUsage(body []byte) (usage, bool) {
	return usageFromObject(gjson.Get(unsafeString(body), "usage"))
}

// maxTailCandidates bounds how many `"usage"` keys usageFromTail tries, from
// the last one back: each try may scan the rest of the tail, so a tail full
// of them would otherwise cost time quadratic in its length. Honest bodies
// have one or two.
const maxTailCandidates = 16

// usageFromTail finds the last `"usage":{...}` in the tail of a body too
// large to keep whole, whose object is complete, valid JSON and at most
// maxJSONDepth deep. Upstreams put usage at the end of a response, so the
// last few KiB hold it. A key inside a JSON string would be escaped
// (\"usage\") and is not matched.
func usageFromTail(tail []byte) (usage, bool) {
	const key = `"usage"`
	for end, tries := len(tail), 0; end > 0 && tries < maxTailCandidates; {
		i := bytes.LastIndex(tail[:end], []byte(key))
		if i < 0 {
			break
		}
		end = i
		if i > 0 && tail[i-1] == '\\' {
			continue
		}
		j := skipSpace(tail, i+len(key))
		if j >= len(tail) || tail[j] != ':' {
			continue
		}
		j = skipSpace(tail, j+1)
		if j >= len(tail) || tail[j] != '{' {
			continue
		}
		tries++
		n := validValue(tail[j:])
		if n < 0 {
			continue
		}
		if u, ok := usageFromObject(gjson.Parse(unsafeString(tail[j : j+n]))); ok {
			return u, true
		}
	}
	return usage{}, false
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\r' || b[i] == '\n') {
		i++
	}
	return i
}

// countCompletionText counts the tokens of the generated text of a whole
// non-streaming response body, for upstreams that send no usage: message
// content, reasoning, refusals and tool-call arguments (chat), text
// (completions), output text and function-call arguments (responses).
func countCompletionText(route string, body []byte, count func([]byte) int64) int64 {
	var n int64
	add := func(v gjson.Result) {
		if v.Type == gjson.String {
			n += count(unsafeBytes(v.Str))
		}
	}
	js := unsafeString(body)
	switch route {
	case routeChat, routeCompletions:
		gjson.Get(js, "choices").ForEach(func(_, ch gjson.Result) bool {
			add(ch.Get("text"))
			msg := ch.Get("message")
			if c := msg.Get("content"); c.IsArray() {
				c.ForEach(func(_, p gjson.Result) bool { add(p.Get("text")); return true })
			} else {
				add(c)
			}
			add(msg.Get("reasoning_content"))
			add(msg.Get("refusal"))
			msg.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
				add(tc.Get("function.arguments"))
				return true
			})
			return true
		})
	case routeMessages:
		gjson.Get(js, "content").ForEach(func(_, b gjson.Result) bool {
			add(b.Get("text"))
			add(b.Get("thinking"))
			if in := b.Get("input"); in.IsObject() {
				n += count(unsafeBytes(in.Raw))
			}
			return true
		})
	case routeResponses:
		gjson.Get(js, "output").ForEach(func(_, item gjson.Result) bool {
			add(item.Get("arguments"))
			item.Get("content").ForEach(func(_, p gjson.Result) bool { add(p.Get("text")); return true })
			item.Get("summary").ForEach(func(_, p gjson.Result) bool { add(p.Get("text")); return true })
			return true
		})
	}
	return n
}

// The scanners below find one field of a JSON object without unescaping
// anything on the way, so reading the text of a stream chunk allocates
// nothing even when the text holds escapes. They never panic on malformed
// input; they just find nothing. They are iterative, linear in the bytes
// they walk, and treat a value nested deeper than maxJSONDepth as
// malformed.

// rawField returns the raw value of the top-level key of the JSON object
// obj (leading spaces allowed), or "" when there is none. Keys are compared
// as written (a key spelled with escapes does not match).
func rawField(obj, key string) string {
	f := newMembers(obj)
	for k, v, ok := f.next(); ok; k, v, ok = f.next() {
		if k == key {
			return v
		}
	}
	return ""
}

// members iterates over the members of a JSON object, or the elements of
// an array (with empty keys), without allocating.
type members struct {
	s   string
	i   int
	obj bool
}

// newMembers starts an iteration over obj, a raw JSON object or array;
// anything else has no members.
func newMembers(raw string) members {
	i := skipSpaceS(raw, 0)
	if i >= len(raw) || (raw[i] != '{' && raw[i] != '[') {
		return members{}
	}
	return members{s: raw, i: i + 1, obj: raw[i] == '{'}
}

// next returns the next member; ok is false at the end or on malformed input.
func (m *members) next() (key, val string, ok bool) {
	s, i := m.s, m.i
	m.i = len(s) // stop, unless a member is found
	for i < len(s) && (isSpace(s[i]) || s[i] == ',') {
		i++
	}
	if m.obj {
		if i >= len(s) || s[i] != '"' {
			return "", "", false
		}
		end := skipString(s, i)
		if end < 0 {
			return "", "", false
		}
		key = s[i+1 : end-1]
		if strings.IndexByte(key, '\\') >= 0 {
			// "max_tok\u0065ns" is max_tokens to every JSON decoder
			// upstream: compare keys as decoded (allocates only here).
			key = gjson.Parse(s[i:end]).Str
		}
		i = skipSpaceS(s, end)
		if i >= len(s) || s[i] != ':' {
			return "", "", false
		}
		i = skipSpaceS(s, i+1)
	} else if i >= len(s) || s[i] == ']' {
		return "", "", false
	}
	end := skipValue(s, i)
	if end < 0 {
		return "", "", false
	}
	m.i = end
	return key, s[i:end], true
}

func skipSpaceS(s string, i int) int {
	for i < len(s) && isSpace(s[i]) {
		i++
	}
	return i
}

// skipValue returns the index just past the JSON value starting at s[i], or
// -1 if there is no complete value there or it is nested deeper than
// maxJSONDepth. Brackets are counted, not matched: `[}` passes, as do
// scalars that are not JSON; what the value holds is the caller's concern.
func skipValue(s string, i int) int {
	if i >= len(s) {
		return -1
	}
	switch s[i] {
	case '"':
		return skipString(s, i)
	case '{', '[':
		depth := 0
		for i < len(s) {
			switch s[i] {
			case '"':
				i = skipString(s, i)
				if i < 0 {
					return -1
				}
				continue
			case '{', '[':
				if depth++; depth > maxJSONDepth {
					return -1
				}
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	default:
		start := i
		for i < len(s) && !isSpace(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']' {
			i++
		}
		if i == start {
			return -1
		}
		return i
	}
}

// skipString returns the index just past the JSON string starting at s[i]
// (a quote), or -1 if it is unterminated.
func skipString(s string, i int) int {
	j := i + 1
	// Keys and short values are quicker to walk byte by byte...
	for end := min(len(s), j+16); j < end; j++ {
		switch s[j] {
		case '"':
			return j + 1
		case '\\':
			j++
		}
	}
	// ...long text with a vectorized search for the closing quote.
	for j < len(s) {
		k := strings.IndexByte(s[j:], '"')
		if k < 0 {
			return -1
		}
		j += k
		n := 0 // backslashes before the quote: an odd number escapes it
		for b := j - 1; b > i && s[b] == '\\'; b-- {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		j++
	}
	return -1
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

// appendUnescaped appends the text of the raw JSON string literal raw
// (quotes included) to dst. Anything that is not a string appends nothing;
// malformed escapes are copied as they are. It never appends more than
// len(raw)-2 bytes (no escape decodes to more bytes than it is written
// with), so a caller that bounds raw bounds dst; the text is not made
// valid UTF-8.
func appendUnescaped(dst []byte, raw string) []byte {
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return dst
	}
	s := raw[1 : len(raw)-1]
	for len(s) > 0 {
		j := strings.IndexByte(s, '\\')
		if j < 0 {
			return append(dst, s...)
		}
		dst = append(dst, s[:j]...)
		s = s[j:]
		if len(s) < 2 {
			return append(dst, s...)
		}
		switch c := s[1]; c {
		case 'n':
			dst = append(dst, '\n')
		case 't':
			dst = append(dst, '\t')
		case 'r':
			dst = append(dst, '\r')
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'u':
			r, n := decodeU(s)
			if n == 0 {
				dst = append(dst, s[:2]...)
				break
			}
			dst = utf8.AppendRune(dst, r)
			s = s[n:]
			continue
		default: // '"', '\\', '/', and anything else
			dst = append(dst, c)
		}
		s = s[2:]
	}
	return dst
}

// decodeU decodes a \uXXXX escape (and a following low surrogate) at the
// start of s. n is the number of bytes used, 0 if s holds no valid escape.
func decodeU(s string) (rune, int) {
	r1, ok := parseHex4(s)
	if !ok {
		return 0, 0
	}
	if !utf16.IsSurrogate(r1) {
		return r1, 6
	}
	if r2, ok := parseHex4(s[6:]); ok {
		if r := utf16.DecodeRune(r1, r2); r != utf8.RuneError {
			return r, 12
		}
	}
	return utf8.RuneError, 6
}

func parseHex4(s string) (rune, bool) {
	if len(s) < 6 || s[0] != '\\' || s[1] != 'u' {
		return 0, false
	}
	var r rune
	for _, c := range []byte(s[2:6]) {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}
