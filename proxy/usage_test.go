package proxy

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/tidwall/gjson"
)

func TestUsageExtract(t *testing.T) {
	tests := []struct {
		name, body string
		want       usage
		ok         bool
	}{
		{"chat", `{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}`, usage{prompt: 12, completion: 30}, true},
		{"embeddings", `{"data":[{"embedding":[1,2]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`, usage{prompt: 8}, true},
		{"responses", `{"output":[],"usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}}`, usage{prompt: 5, completion: 6}, true},
		{"nested usage is not top-level", `{"x":{"usage":{"prompt_tokens":1}}}`, usage{}, false},
		{"null", `{"usage":null}`, usage{}, false},
		{"null figures", `{"usage":{"prompt_tokens":null,"completion_tokens":null}}`, usage{}, true},
		{"negative and floats", `{"usage":{"prompt_tokens":-3,"completion_tokens":2.9}}`, usage{prompt: 0, completion: 2, clamped: true}, true},
		{"strings are not numbers", `{"usage":{"prompt_tokens":"3"}}`, usage{clamped: true}, true},
		{"max int64", `{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}}`, usage{prompt: maxUsageTokens, completion: 1, clamped: true}, true},
		{"1e30", `{"usage":{"prompt_tokens":1e30,"completion_tokens":1E+30}}`, usage{prompt: maxUsageTokens, completion: maxUsageTokens, clamped: true}, true},
		{"huge integer", `{"usage":{"prompt_tokens":` + strings.Repeat("9", 400) + `}}`, usage{prompt: maxUsageTokens, clamped: true}, true},
		{"exponent that is an integer", `{"usage":{"prompt_tokens":1.5e3,"completion_tokens":2e0}}`, usage{prompt: 1500, completion: 2}, true},
		{"exactly the bound", `{"usage":{"prompt_tokens":4294967296}}`, usage{prompt: maxUsageTokens}, true},
		{"one past the bound", `{"usage":{"prompt_tokens":4294967297}}`, usage{prompt: maxUsageTokens, clamped: true}, true},
		{"minus zero", `{"usage":{"prompt_tokens":-0,"completion_tokens":-0.0}}`, usage{}, true},
		{"tiny negative", `{"usage":{"prompt_tokens":-1e-300}}`, usage{clamped: true}, true},
		{"booleans and objects", `{"usage":{"prompt_tokens":true,"completion_tokens":{"n":3}}}`, usage{clamped: true}, true},
		{"first name decides", `{"usage":{"prompt_tokens":"x","input_tokens":7}}`, usage{clamped: true}, true},
		{"invalid document, NaN", `{"usage":{"prompt_tokens":NaN,"completion_tokens":Infinity}}`, usage{completion: maxUsageTokens, clamped: true}, true},
		{"invalid document, minus infinity", `{"usage":{"prompt_tokens":-Infinity}}`, usage{clamped: true}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := extractUsage([]byte(tt.body))
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestUsageFromTail(t *testing.T) {
	// Sixteen unfinished usage objects after a good one: past the
	// candidates usageFromTail tries.
	hidden := `"usage":{"prompt_tokens":1}}` + strings.Repeat(`,"usage":{"x":`, maxTailCandidates)
	tests := []struct {
		name, tail string
		want       usage
		ok         bool
	}{
		{"end of embeddings", `0.1,0.2]}],"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}`, usage{prompt: 8}, true},
		{"spaces", `], "usage" : {"prompt_tokens": 3, "completion_tokens": 4} }`, usage{prompt: 3, completion: 4}, true},
		{"escaped key in a string", `"text":"say \"usage\":{\"prompt_tokens\":1}"}]}`, usage{}, false},
		{"truncated object", `"usage":{"prompt_tokens":3,"comp`, usage{}, false},
		{"invalid object", `"usage":{"prompt_tokens":3,}}`, usage{}, false},
		{"last wins", `"usage":{"prompt_tokens":1}},{"usage":{"prompt_tokens":2}}`, usage{prompt: 2}, true},
		{"last complete wins", `"usage":{"prompt_tokens":1}},{"usage":{"prompt_tokens":2`, usage{prompt: 1}, true},
		{"responses completed", `"usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14}}}`, usage{prompt: 5, completion: 9}, true},
		{"clamped", `"usage":{"prompt_tokens":1e30,"completion_tokens":-5}}`, usage{prompt: maxUsageTokens, clamped: true}, true},
		{"too deep", `"usage":{"a":` + strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth) + `,"prompt_tokens":1}}`, usage{}, false},
		{"deep enough", `"usage":{"a":` + strings.Repeat("[", maxJSONDepth-1) + strings.Repeat("]", maxJSONDepth-1) + `,"prompt_tokens":1}}`, usage{prompt: 1}, true},
		{"within the candidates tried", hidden[:len(hidden)-len(`,"usage":{"x":`)], usage{prompt: 1}, true},
		{"past the candidates tried", hidden, usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := usageFromTail([]byte(tt.tail))
			if got != tt.want || ok != tt.ok {
				t.Errorf("got %+v %v, want %+v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

// TestUsageFromTailBounded checks that a tail made of nothing but
// candidates costs a bounded number of scans, not one per candidate.
func TestUsageFromTailBounded(t *testing.T) {
	tail := bytes.Repeat([]byte(`"usage":{`), 64<<10/9)
	if got := testing.AllocsPerRun(10, func() { usageFromTail(tail) }); got != 0 {
		t.Errorf("allocs: got %v, want 0", got)
	}
	res := testing.Benchmark(func(b *testing.B) {
		for b.Loop() {
			usageFromTail(tail)
		}
	})
	// maxTailCandidates scans of 64 KiB each take well under 10 ms; one
	// scan per candidate (7,281 of them) would take seconds.
	if d := time.Duration(res.NsPerOp()); d > 10*time.Millisecond {
		t.Errorf("time per call: got %v, want under 10ms", d)
	}
}

func TestUsageSkipValue(t *testing.T) {
	tests := []struct {
		in   string
		want int
	}{
		{`{"a":[1,"]"]} x`, 13},
		{`"a\"b" x`, 6},
		{`123,`, 3},
		{`{"a":`, -1},
		{`"abc`, -1},
		{``, -1},
		{strings.Repeat("[", maxJSONDepth) + strings.Repeat("]", maxJSONDepth), 2 * maxJSONDepth},
		{strings.Repeat("[", maxJSONDepth+1) + strings.Repeat("]", maxJSONDepth+1), -1},
	}
	for _, tt := range tests {
		t.Run(tt.in[:min(len(tt.in), 16)], func(t *testing.T) {
			if got := skipValue(tt.in, 0); got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}

func TestRawFieldAndUnescape(t *testing.T) {
	obj := `{"a" : 1, "b":"x\"y", "nested":{"content":"no"}, "content" : "h\u00e9 \n\t\\ \/ \ud83d\ude00 \ud800 end", "z":[1,{"c":"]"}]}`
	raw := rawField(obj, "content")
	var want string
	if err := json.Unmarshal([]byte(raw), &want); err != nil {
		t.Fatalf("rawField returned %q: %v", raw, err)
	}
	if got := string(appendUnescaped(nil, raw)); got != want {
		t.Errorf("unescaped: got %q, want %q", got, want)
	}
	for key, wantRaw := range map[string]string{"a": "1", "b": `"x\"y"`, "z": `[1,{"c":"]"}]`, "missing": ""} {
		if got := rawField(obj, key); got != wantRaw {
			t.Errorf("rawField(%q): got %q, want %q", key, got, wantRaw)
		}
	}
}

func TestWithIncludeUsage(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"model":"m","stream":true}`, `{"stream_options":{"include_usage":true},"model":"m","stream":true}`},
		{` { "model":"m"}`, ` {"stream_options":{"include_usage":true}, "model":"m"}`},
		{`{"model":"m","stream_options":{}}`, `{"model":"m","stream_options":{"include_usage":true}}`},
		{`{"model":"m","stream_options":{"include_usage":null}}`, `{"model":"m","stream_options":{"include_usage":true}}`},
		{`{"model":"m","stream_options":false}`, `{"model":"m","stream_options":{"include_usage":true}}`},
	}
	for _, tt := range tests {
		got := withIncludeUsage([]byte(tt.in), gjson.Get(tt.in, "stream_options"))
		if string(got) != tt.want {
			t.Errorf("withIncludeUsage(%s):\ngot  %s\nwant %s", tt.in, got, tt.want)
		}
	}
}

// hasDupKeys reports whether any JSON object in data repeats a key
// (encoding/json keeps the last, gjson the first).
func hasDupKeys(data []byte) bool {
	dec := json.NewDecoder(bytes.NewReader(data))
	var walk func() (bool, error)
	walk = func() (bool, error) {
		tok, err := dec.Token()
		if err != nil {
			return false, err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return false, err
				}
				if seen[k.(string)] {
					return true, nil
				}
				seen[k.(string)] = true
				if dup, err := walk(); dup || err != nil {
					return dup, err
				}
			}
		case json.Delim('['):
			for dec.More() {
				if dup, err := walk(); dup || err != nil {
					return dup, err
				}
			}
		default:
			return false, nil
		}
		_, err = dec.Token()
		return false, err
	}
	dup, _ := walk()
	return dup
}

// refFigure is tokenFigure over encoding/json: raw is a value of a valid
// document, or nil when the field is missing.
func refFigure(raw json.RawMessage) (int64, bool) {
	if raw == nil || string(raw) == "null" {
		return 0, false
	}
	if c := raw[0]; c != '-' && (c < '0' || c > '9') {
		return 0, true // a string, boolean, array or object
	}
	x, err := strconv.ParseFloat(string(raw), 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		panic(err)
	}
	switch {
	case x <= 0:
		return 0, x < 0
	case x >= maxUsageTokens:
		return maxUsageTokens, x > maxUsageTokens
	}
	return int64(x), x != float64(int64(x))
}

// refUsage is extractUsage with encoding/json; valid is false when body is
// not a JSON object.
func refUsage(body []byte) (want usage, ok, valid bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return usage{}, false, false
	}
	var u map[string]json.RawMessage
	if json.Unmarshal(top["usage"], &u) != nil || u == nil {
		return usage{}, false, true
	}
	field := func(name, alt string) (int64, bool) {
		raw, found := u[name]
		if !found {
			raw = u[alt]
		}
		return refFigure(raw)
	}
	p, pc := field("prompt_tokens", "input_tokens")
	c, cc := field("completion_tokens", "output_tokens")
	return usage{prompt: p, completion: c, clamped: pc || cc}, true, true
}

func inRange(u usage) bool {
	return 0 <= u.prompt && u.prompt <= maxUsageTokens && 0 <= u.completion && u.completion <= maxUsageTokens
}

func FuzzUsage(f *testing.F) {
	for _, s := range []string{
		`{"usage":{"prompt_tokens":12,"completion_tokens":30}}`,
		`{"usage":{"input_tokens":5,"output_tokens":6}}`,
		`{"usage":null}`,
		`{"choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":1e2}}`,
		`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":-1}}`,
		`{"usage":{"prompt_tokens":1e30,"completion_tokens":-1e30}}`,
		`{"usage":{"prompt_tokens":` + strings.Repeat("9", 500) + `,"completion_tokens":0.5}}`,
		`{"usage":{"prompt_tokens":"12","completion_tokens":[3]}}`,
		`{"usage":{"prompt_tokens":NaN,"completion_tokens":Infinity}}`,
		"{\"usage\":{\"prompt_tokens\":1},\"text\":\"\xff\xfe\xed\xa0\x80\"}",
		"{\"choices\":[{\"message\":{\"content\":\"a\xffb\\ud800\"}}]}",
		`{"usage":` + strings.Repeat(`{"a":`, 200) + `1` + strings.Repeat("}", 200) + `}`,
		`{"choices":` + strings.Repeat("[", 300) + `}`,
		strings.Repeat("[", 1000),
		`"usage":{"prompt_tokens":1}},{"usage":{"prompt_tokens":2`,
		`[1,2]`, `{"usage"`, `"usage":{"prompt_tokens":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := extractUsage(body)
		if !inRange(got) {
			t.Fatalf("extractUsage: got %+v, out of range for %q", got, body)
		}
		if tail, _ := usageFromTail(body); !inRange(tail) {
			t.Fatalf("usageFromTail: got %+v, out of range for %q", tail, body)
		}
		_ = countCompletionText(routeChat, body, func(b []byte) int64 { return int64(len(b)) })
		_ = countCompletionText(routeResponses, body, func(b []byte) int64 { return int64(len(b)) })
		if !json.Valid(body) || hasDupKeys(body) {
			return
		}
		want, wantOK, valid := refUsage(body)
		if !valid {
			return
		}
		if got != want || ok != wantOK {
			t.Fatalf("got %+v %v, want %+v %v for %s", got, ok, want, wantOK, body)
		}
	})
}

// FuzzUsageScanners checks the allocation-free scanners stream metering
// runs on every upstream event: they stay inside their input, never grow
// text, and agree with encoding/json on valid documents.
func FuzzUsageScanners(f *testing.F) {
	for _, s := range []struct{ obj, key string }{
		{`{"a" : 1, "b":"x\"y", "content" : "h\u00e9 \ud83d\ude00 \ud800", "z":[1,{"c":"]"}]}`, "content"},
		{`{"choices":[{"delta":{"content":"hi"}}],"usage":null}`, "choices"},
		{"{\"t\":\"\xff\x00\xed\xa0\x80\"}", "t"},
		{`{"a":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `,"b":2}`, "b"},
		{`{"n":` + strings.Repeat("9", 400) + `}`, "n"},
		{strings.Repeat(`{"a":`, 1000), "a"},
		{`"\\\\\"`, ""},
		{`[1,2,3]`, ""},
	} {
		f.Add(s.obj, s.key)
	}
	f.Fuzz(func(t *testing.T, obj, key string) {
		for _, i := range []int{0, 1, len(obj) / 2, len(obj) - 1} {
			if i < 0 || i >= len(obj) {
				continue
			}
			if end := skipValue(obj, i); end != -1 && (end <= i || end > len(obj)) {
				t.Fatalf("skipValue(%q, %d): got %d", obj, i, end)
			}
		}
		if text := appendUnescaped(nil, obj); len(text) > max(len(obj)-2, 0) {
			t.Fatalf("appendUnescaped: got %d bytes from %d", len(text), len(obj))
		}
		var n int
		ms := newMembers(obj)
		for _, v, ok := ms.next(); ok; _, v, ok = ms.next() {
			if n++; n > len(obj) {
				t.Fatalf("members: more than %d members in %q", len(obj), obj)
			}
			if !strings.Contains(obj, v) || v == "" {
				t.Fatalf("members: value %q not in %q", v, obj)
			}
		}
		v := rawField(obj, key)
		if v != "" && !strings.Contains(obj, v) {
			t.Fatalf("rawField: %q not in %q", v, obj)
		}
		var text string
		if strings.HasPrefix(v, `"`) && utf8.ValidString(v) && json.Unmarshal([]byte(v), &text) == nil {
			if got := string(appendUnescaped(nil, v)); got != text {
				t.Fatalf("appendUnescaped(%s): got %q, want %q", v, got, text)
			}
		}
		// On a valid object with no repeated keys, plainly written, rawField
		// finds what encoding/json finds.
		if !json.Valid([]byte(obj)) || jsonDepth([]byte(obj)) > maxJSONDepth || hasDupKeys([]byte(obj)) ||
			strings.ContainsRune(obj, '\\') || !utf8.ValidString(obj) {
			return
		}
		var top map[string]json.RawMessage
		if json.Unmarshal([]byte(obj), &top) != nil {
			return // not an object
		}
		if want := top[key]; v != string(want) {
			t.Fatalf("rawField(%q): got %q, want %q in %s", key, v, want, obj)
		}
	})
}

func BenchmarkUsageExtract(b *testing.B) {
	body := []byte(`{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":"` +
		strings.Repeat("word ", 100) + `"},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":100,"total_tokens":112},"system_fingerprint":"fp"}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if u, ok := extractUsage(body); !ok || u.completion != 100 {
			b.Fatal(u, ok)
		}
	}
}

func BenchmarkEstimate(b *testing.B) {
	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 23)[:1024]
	body := func(i int) []byte {
		p := prompt
		if i >= 0 { // a different text each time: defeats the count cache
			p = strconv.Itoa(i) + prompt[8:]
		}
		out, _ := json.Marshal(map[string]any{"model": "gpt-4o", "messages": []any{
			map[string]any{"role": "user", "content": p}}})
		return out
	}
	b.Run("cold", func(b *testing.B) {
		var tok tokenizers
		tok.estimatePrompt(routeChat, "gpt-4o", body(-1)) // build the encoder outside the loop
		bodies := make([][]byte, 512)
		for i := range bodies {
			bodies[i] = body(i)
		}
		b.ReportAllocs()
		b.SetBytes(int64(len(bodies[0])))
		i := 0
		for b.Loop() {
			tok.cache.m = nil // keep every count a miss
			tok.estimatePrompt(routeChat, "gpt-4o", bodies[i%len(bodies)])
			i++
		}
	})
	b.Run("repeated", func(b *testing.B) {
		var tok tokenizers
		same := body(-1)
		tok.estimatePrompt(routeChat, "gpt-4o", same)
		b.ReportAllocs()
		b.SetBytes(int64(len(same)))
		for b.Loop() {
			tok.estimatePrompt(routeChat, "gpt-4o", same)
		}
	})
}

func TestCountCacheAgrees(t *testing.T) {
	var cached, fresh tokenizers
	texts := []string{
		strings.Repeat("system prompt words ", 20),
		strings.Repeat("Grüße, 世界! ", 30),
		strings.Repeat("x", 64),
	}
	for _, model := range []string{"gpt-4o", "gpt-3.5-turbo"} {
		for _, text := range texts {
			first := cached.count(model, []byte(text))
			second := cached.count(model, []byte(text)) // from the cache
			fresh.cache.m = nil
			want := fresh.count(model, []byte(text))
			if first != want || second != want {
				t.Errorf("%s %q...: got %d then %d (cached), want %d", model, text[:10], first, second, want)
			}
		}
	}
}

func TestCountLongTextExtrapolates(t *testing.T) {
	var tok tokenizers
	unit := []byte("The quick brown fox jumps over the lazy dog. ")
	const reps = 1000 // within exactTokenizeMax: counted exactly
	exact := tok.count("gpt-4o", bytes.Repeat(unit, reps))
	long := bytes.Repeat(unit, 6*reps)
	got := tok.count("gpt-4o", long)
	want := exact * 6
	if got < want*95/100 || got > want*105/100 {
		t.Errorf("tokens of %d bytes: got %d, want about %d", len(long), got, want)
	}
}
