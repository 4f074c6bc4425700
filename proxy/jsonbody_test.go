package proxy

import (
	"bytes"
	"encoding/json"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"unicode"
)

func TestJSONCheckBody(t *testing.T) {
	deep := func(n int) string { return `{"a":` + strings.Repeat("[", n-1) + strings.Repeat("]", n-1) + "}" }
	tests := []struct {
		name, body string
		want       bodyProblem
		key        string
	}{
		{"chat", `{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"stream":true}`, bodyOK, ""},
		{"spaces around", " \t\r\n{ \"a\" : [ 1 , 2 ] , \"b\" : { } } \n", bodyOK, ""},
		{"empty object", `{}`, bodyOK, ""},
		{"every value kind", `{"s":"x","n":-0.5e+3,"t":true,"f":false,"z":null,"a":[],"o":{}}`, bodyOK, ""},
		{"escapes", `{"a":"\"\\\/\b\f\n\r\t\u00e9\uD83D\uDE00"}`, bodyOK, ""},
		{"invalid UTF-8 in a string is JSON", "{\"a\":\"\xff\xfe\"}", bodyOK, ""},
		{"huge number", `{"n":` + strings.Repeat("9", 10000) + `e99999}`, bodyOK, ""},
		{"depth 128", deep(maxJSONDepth), bodyOK, ""},
		{"depth 129", deep(maxJSONDepth + 1), bodyTooDeep, ""},
		{"10 MiB of [", strings.Repeat("[", 10<<20), bodyTooDeep, ""},
		{"deep but invalid first", `{"a":[}` + strings.Repeat("[", 200), bodyInvalid, ""},
		{"empty", ``, bodyInvalid, ""},
		{"only spaces", `  `, bodyInvalid, ""},
		{"two values", `{} {}`, bodyInvalid, ""},
		{"trailing comma", `{"a":1,}`, bodyInvalid, ""},
		{"array trailing comma", `{"a":[1,]}`, bodyInvalid, ""},
		{"missing colon", `{"a" 1}`, bodyInvalid, ""},
		{"missing value", `{"a":}`, bodyInvalid, ""},
		{"unquoted key", `{a:1}`, bodyInvalid, ""},
		{"mismatched bracket", `{"a":[1}`, bodyInvalid, ""},
		{"unterminated string", `{"a":"x`, bodyInvalid, ""},
		{"control char in string", "{\"a\":\"x\ny\"}", bodyInvalid, ""},
		{"bad escape", `{"a":"\x"}`, bodyInvalid, ""},
		{"short \\u escape", `{"a":"\u12"}`, bodyInvalid, ""},
		{"leading zero", `{"a":01}`, bodyInvalid, ""},
		{"bare minus", `{"a":-}`, bodyInvalid, ""},
		{"dot without digits", `{"a":1.}`, bodyInvalid, ""},
		{"exponent without digits", `{"a":1e+}`, bodyInvalid, ""},
		{"plus sign", `{"a":+1}`, bodyInvalid, ""},
		{"truncated literal", `{"a":tru}`, bodyInvalid, ""},
		{"literal with junk", `{"a":nullx}`, bodyInvalid, ""},
		{"BOM", "\ufeff{}", bodyInvalid, ""},
		{"NUL after", "{}\x00", bodyInvalid, ""},
		{"array", `[1,2]`, bodyNotObject, ""},
		{"string", `"model"`, bodyNotObject, ""},
		{"number", ` 7 `, bodyNotObject, ""},
		{"duplicate", `{"model":"a","x":1,"model":"b"}`, bodyDuplicateKey, "model"},
		{"duplicate by escape", `{"model":"a","mod\u0065l":"b"}`, bodyDuplicateKey, "model"},
		{"duplicate by escaped slash", `{"a/b":1,"a\/b":2}`, bodyDuplicateKey, "a/b"},
		{"duplicate by surrogate pair", `{"😀":1,"\ud83d\ude00":2}`, bodyDuplicateKey, "😀"},
		{"duplicate by invalid UTF-8", "{\"a\xff\":1,\"a\xfe\":2}", bodyDuplicateKey, "a\uFFFD"},
		{"duplicate by lone surrogate", "{\"\\ud800\":1,\"\xff\":2}", bodyDuplicateKey, "\uFFFD"},
		{"duplicate empty key", `{"":1,"":2}`, bodyDuplicateKey, ""},
		{"first duplicate reported", `{"b":1,"a":1,"a":2,"b":2}`, bodyDuplicateKey, "a"},
		{"duplicate then invalid", `{"a":1,"a":2,}`, bodyInvalid, ""},
		{"nested repeat", `{"a":{"x":1,"x":2},"b":[{"y":1,"y":2}]}`, bodyDuplicateKey, "x"},
		{"repeat in an array's object", `{"messages":[{"role":"user","content":"hi","c\u006fntent":"long"}]}`, bodyDuplicateKey, "content"},
		{"repeat deep down", strings.Repeat(`{"a":[`, 20) + `{"k":1,"k":2}` + strings.Repeat("]}", 20), bodyDuplicateKey, "k"},
		{"same key in sibling objects", `{"a":{"x":1},"b":{"x":2},"c":[{"y":1},{"y":2}],"x":3}`, bodyOK, ""},
		{"siblings after a large object", `{"a":` + manyKeysString(300) + `,"b":[` + strings.Repeat(`{"x":1,"y":2},`, 50) + `{"x":1,"x":2}]}`, bodyDuplicateKey, "x"},
		{"case differs at the top", `{"model":"llama3","Model":"forbidden"}`, bodyDuplicateKey, "Model"}, // Go upstreams read both as model
		{"case folds like encoding/json", "{\"ks\":1,\"\u212a\u017f\":2}", bodyDuplicateKey, "\u212a\u017f"},
		{"case differs below the top", `{"tools":[{"parameters":{"properties":{"ID":{},"id":{}}}}]}`, bodyOK, ""},
		{"prefix differs", `{"mode":1,"model":2,"models":3}`, bodyOK, ""},
		{"escaped quote differs", `{"a\"":1,"a":2}`, bodyOK, ""},
		{"pair vs lone surrogates differ", `{"\ud83d\ude00":1,"\ud83d\u0041":2}`, bodyOK, ""},
		{"long key cut", `{"` + strings.Repeat("k", 300) + `":1,"` + strings.Repeat("k", 300) + `":2}`, bodyDuplicateKey, strings.Repeat("k", maxReportedKey)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, key := checkBody([]byte(tt.body))
			if got != tt.want || key != tt.key {
				t.Errorf("got %v %q, want %v %q", got, key, tt.want, tt.key)
			}
		})
	}
}

// TestJSONManyKeys crosses the inline key table into the heap one.
func TestJSONManyKeys(t *testing.T) {
	for _, n := range []int{inlineKeys - 1, inlineKeys, inlineKeys + 1, 1000, 100000} {
		var b strings.Builder
		b.WriteString("{")
		for i := range n {
			if i > 0 {
				b.WriteString(",")
			}
			b.WriteString(`"k` + strconv.Itoa(i) + `":1`)
		}
		t.Run(strconv.Itoa(n)+" distinct", func(t *testing.T) {
			if got, key := checkBody([]byte(b.String() + "}")); got != bodyOK {
				t.Errorf("got %v %q, want ok", got, key)
			}
		})
		t.Run(strconv.Itoa(n)+" then a repeat", func(t *testing.T) {
			body := b.String() + `,"k` + strconv.Itoa(n/2) + `":2}`
			if got, key := checkBody([]byte(body)); got != bodyDuplicateKey || key != "k"+strconv.Itoa(n/2) {
				t.Errorf("got %v %q, want %v %q", got, key, bodyDuplicateKey, "k"+strconv.Itoa(n/2))
			}
		})
	}
}

// TestJSONNoRecursion runs the scanners on 10 MiB of nesting with the
// goroutine stack capped at 1 MiB: a parser that recursed once per level
// would need about a gigabyte of stack and kill the test binary. gjson.Get
// and Parse are in the list because metering calls them on unvalidated
// upstream bytes: they skip nested values iteratively (parseSquash) and
// recurse only per component of the path they are given.
func TestJSONNoRecursion(t *testing.T) {
	defer debug.SetMaxStack(debug.SetMaxStack(1 << 20))
	bodies := map[string][]byte{
		"[":             bytes.Repeat([]byte("["), 10<<20),
		"{\"a\":":       bytes.Repeat([]byte(`{"a":`), 2<<20),
		"usage nesting": append([]byte(`{"usage":`), bytes.Repeat([]byte(`{"prompt_tokens":`), 1<<20)...),
		"closed":        append(bytes.Repeat([]byte("["), 1<<20), bytes.Repeat([]byte("]"), 1<<20)...),
	}
	for name, b := range bodies {
		t.Run(name, func(t *testing.T) {
			if got, _ := checkBody(b); got != bodyTooDeep {
				t.Errorf("checkBody: got %v, want %v", got, bodyTooDeep)
			}
			if got := validValue(b); got != -1 {
				t.Errorf("validValue: got %d, want -1", got)
			}
			// The usage parsers must survive it; what they find is checked
			// by their own tests.
			_, _ = extractUsage(b)
			_, _ = usageFromTail(b)
			_ = rawField(string(b), "usage")
			_ = countCompletionText(routeChat, b, func(b []byte) int64 { return int64(len(b)) })
			_ = countCompletionText(routeResponses, b, func(b []byte) int64 { return int64(len(b)) })
		})
	}
}

// TestJSONValidValue checks the end validValue reports.
func TestJSONValidValue(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{`{"a":1} rest`, 7},
		{` [1,{"b":[]}],`, 13},
		{`"s"x`, 3},
		{`12,`, 2},
		{`{"a":1`, -1},
		{`{"a":1,}`, -1},
		{strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth), 2 * maxJSONDepth},
		{strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), -1},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 20)], func(t *testing.T) {
			if got := validValue([]byte(tt.in)); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestJSONCheckBodyAllocs(t *testing.T) {
	for name, body := range map[string][]byte{"chat": jsonChatBody(1 << 10), "1 MiB": jsonChatBody(1 << 20), "many keys": manyKeys(inlineKeys)} {
		t.Run(name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, func() { checkBody(body) }); got != 0 {
				t.Errorf("allocs: got %v, want 0", got)
			}
		})
	}
}

// jsonDepth is the deepest nesting in b, strings skipped; b need not be
// valid.
func jsonDepth(b []byte) int {
	depth, deepest, in, esc := 0, 0, false, false
	for _, c := range b {
		switch {
		case in && esc:
			esc = false
		case in && c == '\\':
			esc = true
		case in && c == '"':
			in = false
		case in:
		case c == '"':
			in = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// refKeys is the reference for duplicate keys: encoding/json's decoder
// decodes every key of every object; dup is the first one (in document
// order) that its object has seen before.
func refKeys(b []byte) (dup string, found bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	type level struct {
		seen map[string]bool // nil: an array
		key  bool            // an object's next token is a key
	}
	var stack []*level
	valueDone := func() {
		if n := len(stack); n > 0 && stack[n-1].seen != nil {
			stack[n-1].key = true
		}
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			return "", false
		}
		if n := len(stack); n > 0 && stack[n-1].key {
			if key, ok := tok.(string); ok {
				k := key
				if n == 1 { // top-level keys match case-insensitively, as encoding/json's fields do
					k = strings.Map(func(r rune) rune { return unicode.ToUpper(unicode.ToLower(r)) }, k)
				}
				if stack[n-1].seen[k] {
					return key, true
				}
				stack[n-1].seen[k] = true
				stack[n-1].key = false
				continue
			}
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &level{seen: map[string]bool{}, key: true})
		case json.Delim('['):
			stack = append(stack, &level{})
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone()
		default:
			valueDone()
		}
		if len(stack) == 0 {
			return "", false
		}
	}
}

func FuzzJSONCheckBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`,
		`{"model":"a","mod\u0065l":"b"}`,
		"{\"a\xff\":1,\"a\xfe\":2}",
		"{\"\\ud800\":1,\"\xff\":2}",
		`{"\ud83d\ude00":1,"😀":2}`,
		`{"a":"\"\\\/\b\f\n\r\t\u00e9"}`,
		`{"n":1e999,"m":-0.0,"k":123456789012345678901234567890}`,
		strings.Repeat("[", 129) + strings.Repeat("]", 129),
		strings.Repeat("[", 128) + strings.Repeat("]", 128),
		`{"a":` + strings.Repeat(`{"a":`, 130),
		strings.Repeat(`{"a":[`, 64) + "1" + strings.Repeat("]}", 64),
		"\"\xed\xa0\x80\"", `[1,2]`, `"x"`, `nul`, `{"a":1,}`, ``, ` `, "{}\x00", "\ufeff{}",
		manyKeysString(inlineKeys + 2),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, key := checkBody(b)
		end := validValue(b)
		if got == bodyTooDeep {
			if d := jsonDepth(b); d <= maxJSONDepth {
				t.Fatalf("got %v, want a depth over %d (found %d) for %q", got, maxJSONDepth, d, b)
			}
			return
		}
		valid := json.Valid(b)
		if valid != (got != bodyInvalid) {
			t.Fatalf("got %v, want json.Valid %v for %q", got, valid, b)
		}
		if !valid {
			return
		}
		if end < 0 || len(bytes.TrimLeft(b[end:], " \t\r\n")) != 0 {
			t.Fatalf("validValue: got %d for valid %q", end, b)
		}
		top := bytes.TrimLeft(b, " \t\r\n")[0] == '{'
		if top != (got != bodyNotObject) {
			t.Fatalf("got %v, want object %v for %q", got, top, b)
		}
		wantKey, dup := refKeys(b)
		if dup != (got == bodyDuplicateKey) {
			t.Fatalf("got %v %q, want duplicate %v (%q) for %q", got, key, dup, wantKey, b)
		}
		if dup && len(wantKey) <= maxReportedKey && key != wantKey {
			t.Fatalf("key: got %q, want %q for %q", key, wantKey, b)
		}
	})
}

func manyKeysString(n int) string {
	var b strings.Builder
	b.WriteString("{")
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`"key` + strconv.Itoa(i) + `":` + strconv.Itoa(i))
	}
	return b.String() + "}"
}

func manyKeys(n int) []byte { return []byte(manyKeysString(n)) }

// jsonChatBody is a chat request of about n bytes: a system prompt, a
// conversation with escapes and non-ASCII text, and a tool schema.
func jsonChatBody(n int) []byte {
	turn := `{"role":"user","content":"Summarize the report: \"Q3 revenue grew 12%\" \u2014 café, naïve, 日本語.\nThen list risks."},` +
		`{"role":"assistant","content":"Sure. Revenue grew 12% year on year; the risks are supply, FX and churn."},`
	var b strings.Builder
	b.WriteString(`{"model":"gpt-4o","temperature":0.7,"max_tokens":512,"stream":true,"stream_options":{"include_usage":true},` +
		`"tools":[{"type":"function","function":{"name":"lookup","parameters":{"type":"object","properties":{"q":{"type":"string"}},"required":["q"]}}}],` +
		`"messages":[{"role":"system","content":"You are a helpful assistant."},`)
	for b.Len()+len(turn) < n-64 {
		b.WriteString(turn)
	}
	b.WriteString(`{"role":"user","content":"thanks"}],"user":"alice"}`)
	return []byte(b.String())
}

func BenchmarkJSONCheckBody(b *testing.B) {
	for _, bc := range []struct {
		name string
		body []byte
	}{{"1KiB", jsonChatBody(1 << 10)}, {"1MiB", jsonChatBody(1 << 20)}} {
		if p, _ := checkBody(bc.body); p != bodyOK {
			b.Fatalf("%s: got %v, want ok", bc.name, p)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				checkBody(bc.body)
			}
		})
		b.Run(bc.name+"/encoding-json-Valid", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.body)))
			for b.Loop() {
				json.Valid(bc.body)
			}
		})
	}
}
