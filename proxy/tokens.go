package proxy

import (
	"hash/maphash"
	"strings"
	"sync"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"

	"github.com/tidwall/gjson"
	"github.com/tiktoken-go/tokenizer"
)

// tokenizers holds the two BPE encoders the gateway counts with, each built
// on first use (building one costs a regexp compilation; the vocabularies
// themselves are embedded in the tokenizer module and loaded once per
// process by it). Safe for concurrent use: the codecs are read-only after
// construction.
type tokenizers struct {
	o200kOnce, cl100kOnce sync.Once
	o200k, cl100k         tokenizer.Codec
	cache                 countCache
}

// countCache remembers token counts of recent texts by hash: chat requests
// resend the same system prompt and history turn after turn, and the BPE
// tokenizer costs about a quarter of a millisecond per KiB. Bounded: when
// full it is emptied. Safe for concurrent use.
type countCache struct {
	once sync.Once
	seed maphash.Seed
	mu   sync.Mutex
	m    map[uint64]int64
}

// countCacheMax bounds the cache; 16 bytes an entry plus map overhead.
const countCacheMax = 1 << 14

// Texts of every length are cached: a cache hit on "user" costs about
// 0.1 us, tokenizing it about 1 us and 8 allocations (BenchmarkCount in
// estimate_bench_test.go).

func (c *countCache) key(enc uintptr, text []byte) uint64 {
	c.once.Do(func() {
		c.seed = maphash.MakeSeed()
		c.m = make(map[uint64]int64)
	})
	return maphash.Bytes(c.seed, text) ^ uint64(enc)*0x9e3779b97f4a7c15
}

func (c *countCache) get(k uint64) (int64, bool) {
	c.mu.Lock()
	n, ok := c.m[k]
	c.mu.Unlock()
	return n, ok
}

// put remembers n; a cache whose map was set to nil caches nothing.
func (c *countCache) put(k uint64, n int64) {
	c.mu.Lock()
	if c.m == nil {
		c.mu.Unlock()
		return
	}
	if len(c.m) >= countCacheMax {
		clear(c.m)
	}
	c.m[k] = n
	c.mu.Unlock()
}

// o200kPrefixes name the model families that use the o200k_base encoding;
// every other model is counted with cl100k_base.
var o200kPrefixes = [...]string{"gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4"}

// isO200k reports whether model is counted with o200k_base.
func isO200k(model string) bool {
	for _, p := range o200kPrefixes {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	return false
}

// codec returns the encoder for model, or nil if it cannot be built.
func (t *tokenizers) codec(model string) tokenizer.Codec {
	if isO200k(model) {
		t.o200kOnce.Do(func() { t.o200k, _ = tokenizer.Get(tokenizer.O200kBase) })
		return t.o200k
	}
	t.cl100kOnce.Do(func() { t.cl100k, _ = tokenizer.Get(tokenizer.Cl100kBase) })
	return t.cl100k
}

// exactTokenizeMax bounds the text tokenized exactly in one count: the BPE
// tokenizer costs about a quarter of a millisecond per KiB, so a longer text
// is counted on its first exactTokenizeMax bytes and extrapolated by length,
// keeping a huge prompt from costing a request tens of milliseconds.
const exactTokenizeMax = 64 << 10

// count returns the number of tokens of text for model. It falls back to
// one token per four bytes if the encoder fails.
func (t *tokenizers) count(model string, text []byte) int64 {
	if len(text) == 0 {
		return 0
	}
	sample := text
	if len(sample) > exactTokenizeMax {
		cut := exactTokenizeMax
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		sample = text[:cut]
	}
	if c := t.codec(model); c != nil && len(sample) > 0 {
		enc := uintptr(1)
		if c == t.o200k {
			enc = 2
		}
		k := t.cache.key(enc, text)
		if n, ok := t.cache.get(k); ok {
			return n
		}
		// The codec does not retain its input, so a zero-copy view is safe.
		if n, err := countPieces(c, unsafeString(sample)); err == nil {
			total := int64(n) * int64(len(text)) / int64(len(sample))
			t.cache.put(k, total)
			return total
		}
	}
	return int64(len(text)+3) / 4
}

// maxSpaceRun is the longest run of white space the tokenizer is given in
// one piece. Its pre-split pattern (`\s*[\r\n]+|\s+(?!\S)|\s+`) backtracks
// over a run of mixed spaces and newlines once per match, so 64 KiB of
// " \n" took 2 s; cut into pieces, a run costs time linear in its length,
// and each cut changes the count by at most a token.
const maxSpaceRun = 64

// countPieces counts the tokens of s, cutting it inside every run of white
// space at each maxSpaceRun-th character of the run.
func countPieces(c tokenizer.Codec, s string) (int, error) {
	total, start, run := 0, 0, 0
	for i, r := range s {
		if !unicode.IsSpace(r) {
			run = 0
			continue
		}
		if run++; run < maxSpaceRun {
			continue
		}
		n, err := c.Count(s[start:i])
		if err != nil {
			return 0, err
		}
		total, start, run = total+n, i, 0
	}
	n, err := c.Count(s[start:])
	return total + n, err
}

// requestTokenizeMax bounds the text one prompt count tokenizes, over all
// of a request's texts (each also capped at exactTokenizeMax): past it,
// texts are counted at the tokens per byte seen so far, or the cheap guess
// if that is more, so a 10 MiB body of many texts costs tens of
// milliseconds, not seconds.
const requestTokenizeMax = 256 << 10

// Per-message overhead of the chat format, as in OpenAI's token counting
// guide: every message costs 3 tokens besides its fields, a name 1 more, and
// the reply is primed with 3.
const (
	tokensPerMessage = 3
	tokensPerName    = 1
	tokensReplyPrime = 3
)

// estimatePrompt returns the prompt tokens of a metered request body:
// messages (chat; role, name, content text, and tool calls' names and
// arguments), prompt (completions), input (embeddings; responses, plus
// instructions and function calls' names and arguments), Anthropic's system
// prompt and messages (with tool_use inputs). Tool definitions and output
// schemas (chat tools, functions and response_format.json_schema; Responses
// tools and text.format; Anthropic tools) count as their raw JSON text,
// which upstreams bill as prompt in a form of their own. Token-id arrays
// count their length. Images and audio are not counted. It tokenizes every
// text (cached by hash); promptBound is its cheap counterpart.
func (t *tokenizers) estimatePrompt(route, model string, body []byte) int64 {
	c := counter{t: t, model: model}
	c.walk(route, body)
	return c.n
}

// promptBound returns, without tokenizing and without allocating, an upper
// bound on estimatePrompt(route, model, body) and a cheap guess at it. The
// bound holds for every model and body: a BPE token covers at least one byte
// of the text the tokenizer sees, so it is the byte length of every text
// estimatePrompt counts, as the tokenizer sees it (JSON escapes decoded,
// each invalid UTF-8 byte as the 3 bytes of U+FFFD), plus the same
// per-message overhead and token-id counts. The guess counts what the
// tokenizer's pre-split would make of the text (words, longer ones by their
// length, 3-digit groups, punctuation, runs of mixed whitespace, non-ASCII
// runes by their UTF-8 length) with weights fitted per encoding (see
// TestPromptGuessError for its error on a corpus, TestPromptGuessRuns for
// texts made to be guessed low).
func promptBound(route, model string, body []byte) (bound, cheap int64) {
	c := counter{o200k: isO200k(model)}
	c.walk(route, body)
	return c.n, (c.milli + 999) / 1000
}

// counter sums, over the JSON values of a request body that estimatePrompt
// counts, their tokens when t is set, and otherwise their bound (n) and
// cheap guess (milli, in thousandths of a token). One walk serves both, so
// the bound counts exactly the texts the tokenizer would.
//
// The walk is iterative and bounded: it visits the messages (or inputs) of
// the top-level array, their content parts and token-id arrays, never
// deeper, so its stack does not grow with the body's nesting; gjson scans
// each value once per field asked for. Without t it allocates nothing; with
// t, gjson allocates an unescaped copy of each text that has a backslash.
type counter struct {
	t     *tokenizers
	model string
	o200k bool  // guess weights for o200k_base (else cl100k_base)
	n     int64 // tokens, or their bound
	milli int64 // cheap guess, in thousandths of a token
	// Exact counting (t set): the bytes of the texts counted with the
	// tokenizer and their tokens, against requestTokenizeMax.
	tokBytes, tokTokens int64
}

// exact counts text (raw: its JSON form, for the cheap guess, unescaped as
// a string's when unescape) with the tokenizer while the request's budget
// lasts, then at the tokens per byte counted so far, or the cheap guess of
// raw if more.
func (c *counter) exact(text []byte, raw string, unescape bool) int64 {
	if c.tokBytes < requestTokenizeMax {
		n := c.t.count(c.model, text)
		c.tokBytes += int64(len(text))
		c.tokTokens += n
		return n
	}
	_, g := measureText(raw, unescape, isO200k(c.model))
	return max(int64(len(text))*c.tokTokens/c.tokBytes, (g+999)/1000)
}

// walk counts body as estimatePrompt documents it.
func (c *counter) walk(route string, body []byte) {
	js := unsafeString(body)
	switch route {
	case routeChat:
		gjson.Get(js, "messages").ForEach(func(_, m gjson.Result) bool {
			c.fixed(tokensPerMessage)
			c.text(m.Get("role"))
			if name := m.Get("name"); name.Exists() {
				c.fixed(tokensPerName)
				c.text(name)
			}
			c.content(m.Get("content"))
			m.Get("tool_calls").ForEach(func(_, call gjson.Result) bool {
				c.call(call.Get("function"))
				return true
			})
			c.call(m.Get("function_call")) // deprecated form of tool_calls
			return true
		})
		c.fixed(tokensReplyPrime)
		c.json(gjson.Get(js, "tools"))
		c.json(gjson.Get(js, "functions"))
		c.json(gjson.Get(js, "response_format.json_schema"))
	case routeCompletions:
		c.inputs(gjson.Get(js, "prompt"))
	case routeEmbeddings:
		c.inputs(gjson.Get(js, "input"))
	case routeMessages:
		// Anthropic: a system prompt (a string or text blocks), then
		// messages whose content is a string or blocks; tool results hold
		// a string or text blocks of their own.
		c.content(gjson.Get(js, "system"))
		gjson.Get(js, "messages").ForEach(func(_, m gjson.Result) bool {
			c.fixed(tokensPerMessage)
			c.text(m.Get("role"))
			content := m.Get("content")
			c.content(content)
			if content.IsArray() {
				content.ForEach(func(_, block gjson.Result) bool {
					if r := block.Get("content"); r.Exists() {
						c.content(r)
					}
					if in := block.Get("input"); in.Exists() { // tool_use
						c.text(block.Get("name"))
						c.json(in)
					}
					return true
				})
			}
			return true
		})
		c.fixed(tokensReplyPrime)
		c.json(gjson.Get(js, "tools"))
	case routeResponses:
		c.text(gjson.Get(js, "instructions"))
		c.json(gjson.Get(js, "tools"))
		if f := gjson.Get(js, "text.format"); f.Get("schema").Exists() {
			c.json(f) // a json_schema format
		}
		in := gjson.Get(js, "input")
		if !in.IsArray() {
			c.text(in)
			break
		}
		in.ForEach(func(_, m gjson.Result) bool {
			c.fixed(tokensPerMessage)
			c.text(m.Get("role"))
			c.content(m.Get("content"))
			c.content(m.Get("output")) // function_call_output items
			c.call(m)                  // function_call items
			return true
		})
		c.fixed(tokensReplyPrime)
	}
}

// fixed counts k tokens known without looking at text.
func (c *counter) fixed(k int64) {
	c.n += k
	c.milli += 1000 * k
}

// text counts a JSON string value; other types count nothing.
func (c *counter) text(v gjson.Result) {
	if v.Type != gjson.String {
		return
	}
	if c.t != nil {
		raw := v.Raw
		if len(raw) >= 2 {
			raw = raw[1 : len(raw)-1]
		}
		c.n += c.exact(unsafeBytes(v.Str), raw, true)
		return
	}
	b, g := measure(v.Raw, c.o200k)
	c.n += b
	c.milli += g
}

// call counts a function call's name and arguments (a JSON text in a
// string): a chat tool call's function, a deprecated function_call, or a
// Responses function_call item.
func (c *counter) call(v gjson.Result) {
	if !v.IsObject() {
		return
	}
	c.text(v.Get("name"))
	c.text(v.Get("arguments"))
}

// json counts a JSON value as its raw text, as written in the body (tool
// definitions, schemas, tool_use inputs); null and absent values count
// nothing.
func (c *counter) json(v gjson.Result) {
	if !v.Exists() || v.Type == gjson.Null {
		return
	}
	if c.t != nil {
		c.n += c.exact(unsafeBytes(v.Raw), v.Raw, false)
		return
	}
	b, g := measureText(v.Raw, false, c.o200k)
	c.n += b
	c.milli += g
}

// content counts a message content: a string, or an array of parts whose
// `text` fields are counted.
func (c *counter) content(v gjson.Result) {
	if v.IsArray() {
		v.ForEach(func(_, part gjson.Result) bool {
			c.text(part.Get("text"))
			return true
		})
		return
	}
	c.text(v)
}

// inputs counts a completions prompt or an embeddings input: a string, an
// array of strings, an array of token ids, or an array of token-id arrays.
func (c *counter) inputs(v gjson.Result) {
	if !v.IsArray() {
		c.text(v)
		return
	}
	v.ForEach(func(_, item gjson.Result) bool {
		switch {
		case item.Type == gjson.Number:
			c.fixed(1)
		case item.IsArray():
			item.ForEach(func(_, _ gjson.Result) bool { c.fixed(1); return true })
		default:
			c.text(item)
		}
		return true
	})
}

// guessWeights are the cheap guess's thousandths of a token per piece of
// text, fitted on the corpus of TestPromptGuessError. The two encodings
// differ most on non-ASCII text: o200k_base has far more multi-byte merges.
//
// A run of letters costs word, plus long per letter past its longWord-th:
// real words of 9 to 13 letters average 1.3 to 1.8 tokens, a random run
// about one token per 2 letters, so a prompt that is one long run is not
// guessed as one token. In a run of whitespace the first character is free
// (a space joins the next word, a newline its indentation), a repeat of
// the character before costs space, and each further change of character
// costs change: a run of alternating whitespace is one token per 2 bytes.
type guessWeights struct {
	word, digits, punct, rune2, rune3, rune4 int64
	long, space, change                      int64
}

var (
	cl100kGuess = guessWeights{word: 1000, digits: 1000, punct: 700, rune2: 500, rune3: 1200, rune4: 2000, long: 500, space: 60, change: 500}
	o200kGuess  = guessWeights{word: 1000, digits: 1000, punct: 700, rune2: 270, rune3: 650, rune4: 1600, long: 500, space: 60, change: 500}
)

// longWord is the length of a run of letters guessed as one token.
const longWord = 8

// Character classes of the cheap guess.
const (
	classNone = iota
	classLetter
	classDigit
	classSpace
	classPunct
	classOther // non-ASCII
)

// measure returns, for raw, the JSON text of a string value (quotes
// included), the byte length of the string the tokenizer sees (see
// promptBound) and a guess at its tokens in thousandths. It decodes escapes
// as gjson does, or to at least as many bytes, and allocates nothing.
func measure(raw string, o200k bool) (bound, milli int64) {
	if len(raw) < 2 {
		return int64(len(raw)) * utf8.UTFMax, 0 // not a string gjson returns; stay an upper bound
	}
	return measureText(raw[1:len(raw)-1], true, o200k)
}

// measureText is measure of s, a string's JSON text without its quotes
// when unescape is set (escapes decoded), or a text tokenized as it is.
func measureText(s string, unescape, o200k bool) (bound, milli int64) {
	w := &cl100kGuess
	if o200k {
		w = &o200kGuess
	}
	invalid := false
	prev, digits, letters, changes, last := classNone, 0, 0, 0, rune(0)
	for i := 0; i < len(s); {
		c := s[i]
		var r rune
		var size int // bytes the tokenizer sees
		switch {
		case c == '\\' && unescape && i+1 < len(s):
			i++
			if s[i] != 'u' {
				r, size = rune(unescapeByte(s[i])), 1
				i++
				break
			}
			r, size = hex4(s[i+1:]), 3 // a lone surrogate or bad hex decodes to U+FFFD or less
			i += 5
			if utf16.IsSurrogate(r) && i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
				r, size = utf16.DecodeRune(r, hex4(s[i+2:])), 4 // gjson consumes the pair
				i += 6
			} else if !utf16.IsSurrogate(r) {
				size = utf8.RuneLen(r)
			}
		case c < utf8.RuneSelf:
			r, size = rune(c), 1
			i++
		default:
			var n int
			r, n = utf8.DecodeRuneInString(s[i:])
			size = n
			if r == utf8.RuneError && n == 1 {
				size, invalid = 3, true // the tokenizer's regexp sees U+FFFD
			}
			i += n
		}
		bound += int64(size)
		cls := classOther
		switch {
		case r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
			cls = classLetter
			if prev != classLetter {
				milli += w.word
				letters = 0
			}
			if letters++; letters > longWord {
				milli += w.long
			}
		case r >= '0' && r <= '9':
			cls = classDigit
			if prev != classDigit {
				digits = 0
			}
			if digits%3 == 0 {
				milli += w.digits
			}
			digits++
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			cls = classSpace
			switch {
			case prev != classSpace:
				changes = 0
			case r == last:
				milli += w.space
			case changes > 0:
				milli += w.change
			default:
				changes++
			}
		case r < utf8.RuneSelf:
			cls = classPunct
			milli += w.punct
		case size == 2:
			milli += w.rune2
		case size == 3:
			milli += w.rune3
		default:
			milli += w.rune4
		}
		prev, last = cls, r
	}
	if invalid && bound > exactTokenizeMax {
		// count extrapolates from a sample, which may hold all the invalid bytes.
		bound = int64(len(s)) * 3
	}
	if bound > 0 {
		milli = min(max(milli, 1000), 1000*bound)
	}
	return bound, milli
}

// unescapeByte returns the byte a JSON escape \c stands for.
func unescapeByte(c byte) byte {
	switch c {
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	case 'n':
		return '\n'
	case 'r':
		return '\r'
	case 't':
		return '\t'
	}
	return c
}

// hex4 decodes the 4 hex digits that start s, or returns U+FFFD.
func hex4(s string) rune {
	if len(s) < 4 {
		return utf8.RuneError
	}
	var r rune
	for i := range 4 {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return utf8.RuneError
		}
		r = r<<4 | rune(c)
	}
	return r
}

// unsafeString views b as a string without copying. The caller must not
// modify b while the string is in use.
func unsafeString(b []byte) string {
	return unsafe.String(unsafe.SliceData(b), len(b))
}

// unsafeBytes views s as a byte slice without copying; it must not be
// modified.
func unsafeBytes(s string) []byte {
	return unsafe.Slice(unsafe.StringData(s), len(s))
}
