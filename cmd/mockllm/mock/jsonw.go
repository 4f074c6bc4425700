package mock

import (
	"strconv"
	"unicode/utf8"
)

// This file holds the few JSON building blocks the hot paths use instead of
// encoding/json: response bodies are appended to a byte slice field by field,
// so a non-streaming chat response costs no reflection and one allocation at
// most (the pooled buffer usually already has room).

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string literal, quotes included. Control
// characters, quotes and backslashes are escaped; invalid UTF-8 is replaced by
// U+FFFD, as encoding/json does, so the output is always valid JSON.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but break JavaScript parsers;
		// encoding/json escapes them, and so do we.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// appendInt appends the decimal form of v.
func appendInt(b []byte, v int64) []byte {
	return strconv.AppendInt(b, v, 10)
}

// appendFloat appends v in the shortest form that round-trips as a float32,
// which is the precision OpenAI embeddings carry.
func appendFloat(b []byte, v float32) []byte {
	return strconv.AppendFloat(b, float64(v), 'g', -1, 32)
}

// appendChatUsage appends a complete `"usage":{...}` object in the chat and
// completions format.
func appendChatUsage(b []byte, prompt, completion int64) []byte {
	b = append(b, `"usage":{"prompt_tokens":`...)
	b = appendInt(b, prompt)
	b = append(b, `,"completion_tokens":`...)
	b = appendInt(b, completion)
	b = append(b, `,"total_tokens":`...)
	b = appendInt(b, prompt+completion)
	return append(b, `,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},`+
		`"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,`+
		`"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}`...)
}

// appendWords appends the deterministic completion text "w1 w2 ... wN"
// (without quotes; it never needs escaping).
func appendWords(b []byte, n int64) []byte {
	for i := int64(1); i <= n; i++ {
		if i > 1 {
			b = append(b, ' ')
		}
		b = append(b, 'w')
		b = appendInt(b, i)
	}
	return b
}

// appendWord appends the i-th word of the completion as it appears in a
// stream delta: "w1" for the first, " wI" (leading space) for the others, so
// the concatenated deltas equal the non-streaming text.
func appendWord(b []byte, i int64) []byte {
	if i > 1 {
		b = append(b, ' ')
	}
	b = append(b, 'w')
	return appendInt(b, i)
}
