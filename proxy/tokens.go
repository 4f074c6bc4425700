package proxy

import (
	"hash/maphash"
	"strings"
	"sync"
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
	mu   sync.Mutex
	seed maphash.Seed
	m    map[uint64]int64
}

// countCacheMax bounds the cache; 16 bytes an entry plus map overhead.
const countCacheMax = 1 << 14

// countCacheMin is the shortest text worth caching: shorter ones tokenize
// faster than a hash and a lock.
const countCacheMin = 64

func (c *countCache) key(enc uintptr, text []byte) uint64 {
	c.mu.Lock()
	if c.m == nil {
		c.seed = maphash.MakeSeed()
		c.m = make(map[uint64]int64)
	}
	seed := c.seed
	c.mu.Unlock()
	return maphash.Bytes(seed, text) ^ uint64(enc)*0x9e3779b97f4a7c15
}

func (c *countCache) get(k uint64) (int64, bool) {
	c.mu.Lock()
	n, ok := c.m[k]
	c.mu.Unlock()
	return n, ok
}

func (c *countCache) put(k uint64, n int64) {
	c.mu.Lock()
	if len(c.m) >= countCacheMax {
		clear(c.m)
	}
	c.m[k] = n
	c.mu.Unlock()
}

// o200kPrefixes name the model families that use the o200k_base encoding;
// every other model is counted with cl100k_base.
var o200kPrefixes = [...]string{"gpt-4o", "chatgpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4"}

// codec returns the encoder for model, or nil if it cannot be built.
func (t *tokenizers) codec(model string) tokenizer.Codec {
	for _, p := range o200kPrefixes {
		if strings.HasPrefix(model, p) {
			t.o200kOnce.Do(func() { t.o200k, _ = tokenizer.Get(tokenizer.O200kBase) })
			return t.o200k
		}
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
		var k uint64
		if len(text) >= countCacheMin {
			enc := uintptr(1)
			if c == t.o200k {
				enc = 2
			}
			k = t.cache.key(enc, text)
			if n, ok := t.cache.get(k); ok {
				return n
			}
		}
		// The codec does not retain its input, so a zero-copy view is safe.
		if n, err := c.Count(unsafeString(sample)); err == nil {
			total := int64(n) * int64(len(text)) / int64(len(sample))
			if len(text) >= countCacheMin {
				t.cache.put(k, total)
			}
			return total
		}
	}
	return int64(len(text)+3) / 4
}

// Per-message overhead of the chat format, as in OpenAI's token counting
// guide: every message costs 3 tokens besides its fields, a name 1 more, and
// the reply is primed with 3.
const (
	tokensPerMessage = 3
	tokensPerName    = 1
	tokensReplyPrime = 3
)

// estimatePrompt returns the prompt tokens of a metered request body:
// messages (chat; role, name and content text), prompt (completions), input
// (embeddings; responses, plus instructions). Token-id arrays count their
// length. Images, audio, tools and schemas are not counted.
func (t *tokenizers) estimatePrompt(route, model string, body []byte) int64 {
	c := counter{t: t, model: model}
	js := unsafeString(body)
	switch route {
	case routeChat:
		gjson.Get(js, "messages").ForEach(func(_, m gjson.Result) bool {
			c.n += tokensPerMessage
			c.text(m.Get("role"))
			if name := m.Get("name"); name.Exists() {
				c.n += tokensPerName
				c.text(name)
			}
			c.content(m.Get("content"))
			return true
		})
		c.n += tokensReplyPrime
	case routeCompletions:
		c.inputs(gjson.Get(js, "prompt"))
	case routeEmbeddings:
		c.inputs(gjson.Get(js, "input"))
	case routeResponses:
		c.text(gjson.Get(js, "instructions"))
		in := gjson.Get(js, "input")
		if !in.IsArray() {
			c.text(in)
			break
		}
		in.ForEach(func(_, m gjson.Result) bool {
			c.n += tokensPerMessage
			c.text(m.Get("role"))
			c.content(m.Get("content"))
			c.text(m.Get("output")) // function_call_output items
			return true
		})
		c.n += tokensReplyPrime
	}
	return c.n
}

// counter sums token counts of JSON values for one model.
type counter struct {
	t     *tokenizers
	model string
	n     int64
}

// text counts a JSON string value; other types count nothing.
func (c *counter) text(v gjson.Result) {
	if v.Type == gjson.String {
		c.n += c.t.count(c.model, unsafeBytes(v.Str))
	}
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
			c.n++
		case item.IsArray():
			item.ForEach(func(_, _ gjson.Result) bool { c.n++; return true })
		default:
			c.text(item)
		}
		return true
	})
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
