package proxy

import (
	"encoding/binary"
	"hash/maphash"
	"math"
	"math/bits"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Request bodies are checked once, before any JSON library sees them, by an
// iterative scanner: gjson.Valid and encoding/json's decoder recurse once per
// nesting level, so 10 MiB of `[` overflows the goroutine stack (a fatal
// error no recover catches). The scanner keeps its state in a fixed array of
// maxJSONDepth bytes and allocates nothing for bodies with up to
// inlineKeys top-level keys.

// maxJSONDepth is the deepest nesting a request body may have: `{}` is 1,
// `{"a":[1]}` is 2. OpenAI's request formats need a handful of levels (tool
// schemas a dozen or so); 128 leaves room for any real schema.
const maxJSONDepth = 128

// bodyProblem is what checkBody found wrong with a request body.
type bodyProblem uint8

const (
	bodyOK           bodyProblem = iota
	bodyInvalid                  // not JSON, as encoding/json.Valid judges it
	bodyTooDeep                  // nested deeper than maxJSONDepth
	bodyNotObject                // valid JSON, but the top level is not an object
	bodyDuplicateKey             // an object repeats a key
	bodyTooLarge                 // 4 GiB or more: offsets of keys would not fit in 32 bits
)

func (p bodyProblem) String() string {
	switch p {
	case bodyOK:
		return "ok"
	case bodyInvalid:
		return "invalid JSON"
	case bodyTooDeep:
		return "nested too deep"
	case bodyNotObject:
		return "not an object"
	case bodyDuplicateKey:
		return "duplicate key"
	case bodyTooLarge:
		return "too large"
	}
	return "unknown"
}

// maxReportedKey bounds the key checkBody returns, which ends up in an error
// message.
const maxReportedKey = 256

// checkBody checks a request body in one pass over its bytes: it must be
// valid JSON (exactly what encoding/json.Valid accepts, which includes
// invalid UTF-8 inside strings), nested at most maxJSONDepth levels, with an
// object at the top level, and no object in it may name a key twice: the
// gateway reads a message's content or stream_options.include_usage with
// gjson, which takes the first of two, while most upstreams take the last,
// so a repeat anywhere would let the prompt estimate or the usage request
// differ from what the upstream runs. Keys are compared as
// encoding/json would decode them: escapes are resolved, and invalid UTF-8
// and unpaired surrogates become U+FFFD, so `"model"` and `"mod\u0065l"`
// are the same key (gjson reads the first of two, most upstreams the last);
// top-level keys are also compared case-insensitively, as encoding/json
// matches struct fields, so `"Model"` repeats `"model"` (see keySet.fold).
//
// The problems are reported in this order: bodyTooDeep as soon as the
// nesting passes the limit, then bodyInvalid, bodyNotObject and
// bodyDuplicateKey (a repeated key in a body that is invalid further on is
// reported as bodyInvalid). For bodyDuplicateKey, key is the first repeated
// key, decoded, made valid UTF-8 and cut to maxReportedKey bytes: a new
// string, which does not keep b alive.
//
// checkBody allocates nothing unless the top-level object has more than
// inlineKeys keys, an object nested deeper than inlineDeepLevels levels has
// keys, or a nested object has more than about 3/4 of inlineDeepKeys keys
// (then hash tables of 8 bytes a slot), or it reports a key.
// It is safe for concurrent use.
func checkBody(b []byte) (problem bodyProblem, key string) {
	if uint64(len(b)) > math.MaxUint32 {
		return bodyTooLarge, ""
	}
	var sc bodyScanner
	var inline [2 * inlineKeys]keySlot // the key table while it is small, on the stack
	sc.keys.slots, sc.keys.fold = inline[:], true
	var deep [inlineDeepLevels][inlineDeepKeys]keySlot // those of nested objects
	for d := range deep {
		sc.deep[d].slots = deep[d][:]
	}
	if _, p := sc.scan(b, true); p != bodyOK {
		return p, ""
	}
	if !sc.topObject {
		return bodyNotObject, ""
	}
	if sc.dup >= 0 {
		return bodyDuplicateKey, reportedKey(b, sc.dup)
	}
	return bodyOK, ""
}

// validValue reports the end of the JSON value that starts b (after
// optional white space), or -1 if b does not start with a whole valid value
// nested at most maxJSONDepth levels. It allocates nothing; what follows the
// value is not looked at.
func validValue(b []byte) int {
	var sc bodyScanner
	end, p := sc.scan(b, false)
	if p != bodyOK {
		return -1
	}
	return end
}

// bodyScanner is the state of one scan; it lives on the caller's stack.
type bodyScanner struct {
	stack     [maxJSONDepth]byte // '{' or '[' of each open container
	topObject bool
	dup       int // offset of the first repeated key's content, or -1
	keys      keySet
	// deep[d] holds the keys of the object open at depth d+2 (deeper
	// than the top level), emptied when the next object opens there.
	deep [maxJSONDepth - 1]keySet
}

// Inline key tables of nested objects: the first inlineDeepLevels levels
// below the top get inlineDeepKeys slots on the stack each, enough for the
// objects of chat, Responses and Messages bodies.
const (
	inlineDeepLevels = 10
	inlineDeepKeys   = 16
)

// scan validates the value at the start of b. With whole, only white space
// may follow it and the keys of every object are checked for repeats. end
// is the index just past the value, or -1 when b is not valid.
func (sc *bodyScanner) scan(b []byte, whole bool) (end int, problem bodyProblem) {
	const (
		stValue = iota // a value must come next
		stKey          // a key (or, right after '{', the closing '}') must come next
		stAfter        // a value has ended: ',' or a closing bracket, or the end
	)
	sc.dup = -1
	depth := 0
	i := skipWS(b, 0)
	if i < len(b) && b[i] == '{' {
		sc.topObject = true
	}
	checkKeys := whole && sc.topObject
	state := stValue
	for {
		switch state {
		case stValue:
			if i >= len(b) {
				return -1, bodyInvalid
			}
			switch c := b[i]; c {
			case '{', '[':
				if depth == maxJSONDepth {
					return -1, bodyTooDeep
				}
				sc.stack[depth] = c
				depth++
				i = skipWS(b, i+1)
				if c == '{' {
					if checkKeys && depth > 1 {
						sc.deep[depth-2].reset()
					}
					state = stKey
					if i < len(b) && b[i] == '}' {
						depth--
						i++
						state = stAfter
					}
					continue
				}
				if i < len(b) && b[i] == ']' {
					depth--
					i++
					state = stAfter
				}
				continue // state stays stValue
			case '"':
				i, _ = scanString(b, i+1)
			case 't':
				i = skipLiteral(b, i, "true")
			case 'f':
				i = skipLiteral(b, i, "false")
			case 'n':
				i = skipLiteral(b, i, "null")
			default:
				i = scanNumber(b, i)
			}
			if i < 0 {
				return -1, bodyInvalid
			}
			state = stAfter
		case stKey:
			if i >= len(b) || b[i] != '"' {
				return -1, bodyInvalid
			}
			start := i + 1
			var esc bool
			if i, esc = scanString(b, start); i < 0 {
				return -1, bodyInvalid
			}
			if checkKeys && sc.dup < 0 {
				set := &sc.keys
				if depth > 1 {
					set = &sc.deep[depth-2]
				}
				if !set.add(b, start, i-1, esc) {
					sc.dup = start
				}
			}
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return -1, bodyInvalid
			}
			i = skipWS(b, i+1)
			state = stValue
		case stAfter:
			if depth == 0 {
				if whole && skipWS(b, i) != len(b) {
					return -1, bodyInvalid
				}
				return i, bodyOK
			}
			i = skipWS(b, i)
			if i >= len(b) {
				return -1, bodyInvalid
			}
			open := sc.stack[depth-1]
			switch b[i] {
			case ',':
				i = skipWS(b, i+1)
				if open == '{' {
					state = stKey
				} else {
					state = stValue
				}
			case '}', ']':
				if b[i] != open+2 { // '{'+2 == '}', '['+2 == ']'
					return -1, bodyInvalid
				}
				depth--
				i++
			default:
				return -1, bodyInvalid
			}
		}
	}
}

// skipWS returns the index of the first byte at or after i that is not JSON
// white space.
func skipWS(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

func skipLiteral(b []byte, i int, lit string) int {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return -1
	}
	return i + len(lit)
}

// scanNumber returns the index just past the JSON number at b[i], or -1.
// What follows the number is checked by the caller's next state.
func scanNumber(b []byte, i int) int {
	if i < len(b) && b[i] == '-' {
		i++
	}
	switch {
	case i >= len(b):
		return -1
	case b[i] == '0':
		i++
	case '1' <= b[i] && b[i] <= '9':
		i = skipDigits(b, i+1)
	default:
		return -1
	}
	if i < len(b) && b[i] == '.' {
		j := skipDigits(b, i+1)
		if j == i+1 {
			return -1
		}
		i = j
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		j := skipDigits(b, i)
		if j == i {
			return -1
		}
		i = j
	}
	return i
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && '0' <= b[i] && b[i] <= '9' {
		i++
	}
	return i
}

// SWAR constants: a byte-wise test of 8 bytes at once.
const (
	swarLo        = 0x0101010101010101
	swarHi        = 0x8080808080808080
	swarQuote     = '"' * swarLo
	swarBackslash = '\\' * swarLo
	swarCtrl      = 0x20 * swarLo
)

// scanString returns the index just past the closing quote of the JSON
// string whose content starts at b[i], and whether it holds escapes; -1 if
// it is unterminated, holds a control character or a bad escape. Bytes of
// 0x80 and above pass unchecked: encoding/json.Valid accepts invalid UTF-8
// in strings (its decoder turns it into U+FFFD).
func scanString(b []byte, i int) (int, bool) {
	esc := false
	for {
		// Eight bytes at a time while none is a quote, a backslash or a
		// control character.
		for i+8 <= len(b) {
			w := binary.LittleEndian.Uint64(b[i:])
			// A byte of w equals x where the byte of w^x is zero, and
			// (v-swarLo)&^v&swarHi sets the high bit of the lowest zero
			// byte of v (higher bits may be false positives; the lowest is
			// all we need). (w-swarCtrl)&^w&swarHi does the same for bytes
			// below 0x20; &^w drops bytes of 0x80 and above.
			q, s := w^swarQuote, w^swarBackslash
			m := ((q - swarLo) &^ q) | ((s - swarLo) &^ s) | ((w - swarCtrl) &^ w)
			if m &= swarHi; m != 0 {
				i += bits.TrailingZeros64(m) / 8
				break
			}
			i += 8
		}
		if i >= len(b) {
			return -1, esc
		}
		switch c := b[i]; {
		case c == '"':
			return i + 1, esc
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return -1, esc
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 || !isHexDigit(b[i+2]) || !isHexDigit(b[i+3]) || !isHexDigit(b[i+4]) || !isHexDigit(b[i+5]) {
					return -1, esc
				}
				i += 6
			default:
				return -1, esc
			}
		case c < 0x20:
			return -1, esc
		default:
			i++
		}
	}
}

func isHexDigit(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// keySet remembers the keys of one object by the offset of their content
// in the body, in an open-addressing hash table whose size is a power of
// two: checkBody's arrays on the stack while small, then on the heap,
// doubling.
type keySet struct {
	n     int
	slots []keySlot
	// fold compares keys case-insensitively, as encoding/json matches
	// struct fields (Go upstreams, Ollama's among them, read "Model" as
	// model): for the top-level object, where no two keys of a real
	// request differ only in case. Nested objects (tool schemas' properties)
	// may hold such keys and are compared exactly.
	fold bool
}

// inlineKeys is how many keys a body may have before the key table moves to
// the heap; chat requests have about ten.
const inlineKeys = 32

type keySlot struct {
	off  uint32 // offset of the key's content + 1; 0 marks an empty slot
	hash uint32
}

// add records the key whose content is b[start:end] (esc: it holds escapes)
// and reports whether it is new.
func (s *keySet) add(b []byte, start, end int, esc bool) bool {
	h := keyHash(b, start, end, esc, s.fold)
	mask := uint32(len(s.slots) - 1)
	for j := h & mask; ; j = (j + 1) & mask {
		sl := s.slots[j]
		if sl.off == 0 {
			break
		}
		if sl.hash == h && sameKey(b, int(sl.off-1), start, s.fold) {
			return false
		}
	}
	if 4*(s.n+1) > 3*len(s.slots) {
		s.grow()
		mask = uint32(len(s.slots) - 1)
	}
	j := h & mask
	for s.slots[j].off != 0 {
		j = (j + 1) & mask
	}
	s.slots[j] = keySlot{off: uint32(start) + 1, hash: h}
	s.n++
	return true
}

// reset empties s for the next object at its depth: in place while the
// table is small, else a fresh small one, so that many small objects after
// a large one do not each pay for clearing its table.
func (s *keySet) reset() {
	switch {
	case s.n == 0 && s.slots != nil:
	case len(s.slots) > 0 && len(s.slots) <= maxClearedSlots:
		clear(s.slots)
	default:
		s.slots = make([]keySlot, inlineDeepKeys)
	}
	s.n = 0
}

// maxClearedSlots is the largest key table reset clears in place (2 KiB).
const maxClearedSlots = 256

func (s *keySet) grow() {
	old := s.slots
	s.slots = make([]keySlot, 2*len(old))
	mask := uint32(len(s.slots) - 1)
	for _, sl := range old {
		if sl.off == 0 {
			continue
		}
		j := sl.hash & mask
		for s.slots[j].off != 0 {
			j = (j + 1) & mask
		}
		s.slots[j] = sl
	}
}

// keySeed seeds keyHash with a value clients cannot know, so no body can
// be built whose keys collide in the table and make its probing quadratic
// (an unseeded hash such as FNV can be collided offline).
var keySeed = maphash.MakeSeed()

// keyHash hashes the decoded runes of a key, as UTF-8, with keySeed: two
// spellings of one key (escaped or not) hash alike.
func keyHash(b []byte, start, end int, esc, fold bool) uint32 {
	if !esc && isASCII(b[start:end]) {
		if !fold {
			return uint32(maphash.Bytes(keySeed, b[start:end]))
		}
		if end-start <= 64 { // the usual top-level key: folded on the stack
			var up [64]byte
			for i, c := range b[start:end] {
				up[i] = byte(foldRune(rune(c)))
			}
			return uint32(maphash.Bytes(keySeed, up[:end-start]))
		}
	}
	var h maphash.Hash
	h.SetSeed(keySeed)
	var enc [utf8.UTFMax]byte
	for i := start; ; {
		r, n := nextKeyRune(b, i)
		if n == 0 {
			return uint32(h.Sum64())
		}
		if fold {
			r = foldRune(r)
		}
		_, _ = h.Write(utf8.AppendRune(enc[:0], r))
		i += n
	}
}

// foldRune is encoding/json's case folding of a rune (its foldName): keys
// equal under it match the same struct field.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'a' <= r && r <= 'z' {
			return r - 'a' + 'A'
		}
		return r
	}
	return unicode.ToUpper(unicode.ToLower(r))
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// sameKey reports whether the keys whose content starts at b[i] and b[j]
// decode to the same text.
func sameKey(b []byte, i, j int, fold bool) bool {
	for {
		r1, n1 := nextKeyRune(b, i)
		r2, n2 := nextKeyRune(b, j)
		if fold {
			r1, r2 = foldRune(r1), foldRune(r2)
		}
		if r1 != r2 || (n1 == 0) != (n2 == 0) {
			return false
		}
		if n1 == 0 {
			return true
		}
		i, j = i+n1, j+n2
	}
}

// nextKeyRune decodes the rune at b[i] inside a string checkBody has
// validated, as encoding/json decodes it: invalid UTF-8 and unpaired
// surrogates are U+FFFD. n is 0 at the closing quote.
func nextKeyRune(b []byte, i int) (r rune, n int) {
	switch c := b[i]; {
	case c == '"':
		return 0, 0
	case c < utf8.RuneSelf && c != '\\':
		return rune(c), 1
	case c != '\\':
		return utf8.DecodeRune(b[i:]) // (RuneError, 1) on invalid UTF-8
	}
	switch c := b[i+1]; c {
	case 'b':
		return '\b', 2
	case 'f':
		return '\f', 2
	case 'n':
		return '\n', 2
	case 'r':
		return '\r', 2
	case 't':
		return '\t', 2
	case 'u':
		r := hexRune(b[i+2 : i+6])
		if !utf16.IsSurrogate(r) {
			return r, 6
		}
		if len(b)-i >= 12 && b[i+6] == '\\' && b[i+7] == 'u' {
			if d := utf16.DecodeRune(r, hexRune(b[i+8:i+12])); d != utf8.RuneError {
				return d, 12
			}
		}
		return utf8.RuneError, 6
	default: // '"', '\\', '/'
		return rune(c), 2
	}
}

// hexRune decodes 4 hex digits (checked by scanString; anything else
// decodes to garbage, never a panic).
func hexRune(h []byte) rune {
	var r rune
	for _, c := range h[:4] {
		switch {
		case c <= '9':
			c -= '0'
		case c <= 'F':
			c -= 'A' - 10
		default:
			c -= 'a' - 10
		}
		r = r<<4 | rune(c&0xf)
	}
	return r
}

// reportedKey decodes the key whose content starts at b[i] into a new
// string of at most maxReportedKey bytes of valid UTF-8.
func reportedKey(b []byte, i int) string {
	out := make([]byte, 0, 32)
	for {
		r, n := nextKeyRune(b, i)
		if n == 0 || len(out)+utf8.RuneLen(r) > maxReportedKey {
			return string(out)
		}
		out = utf8.AppendRune(out, r)
		i += n
	}
}
