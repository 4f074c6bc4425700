package proxy

import (
	"bytes"
	"encoding/json"
	"strconv"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

func TestExtractUsage(t *testing.T) {
	tests := []struct {
		name, body string
		want       usage
		ok         bool
	}{
		{"chat", `{"choices":[],"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}`, usage{12, 30}, true},
		{"embeddings", `{"data":[{"embedding":[1,2]}],"usage":{"prompt_tokens":8,"total_tokens":8}}`, usage{8, 0}, true},
		{"responses", `{"output":[],"usage":{"input_tokens":5,"output_tokens":6,"total_tokens":11}}`, usage{5, 6}, true},
		{"nested usage is not top-level", `{"x":{"usage":{"prompt_tokens":1}}}`, usage{}, false},
		{"null", `{"usage":null}`, usage{}, false},
		{"negative and floats", `{"usage":{"prompt_tokens":-3,"completion_tokens":2.9}}`, usage{0, 2}, true},
		{"strings are not numbers", `{"usage":{"prompt_tokens":"3"}}`, usage{}, true},
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
	tests := []struct {
		name, tail string
		want       usage
		ok         bool
	}{
		{"end of embeddings", `0.1,0.2]}],"model":"m","usage":{"prompt_tokens":8,"total_tokens":8}}`, usage{8, 0}, true},
		{"spaces", `], "usage" : {"prompt_tokens": 3, "completion_tokens": 4} }`, usage{3, 4}, true},
		{"escaped key in a string", `"text":"say \"usage\":{\"prompt_tokens\":1}"}]}`, usage{}, false},
		{"truncated object", `"usage":{"prompt_tokens":3,"comp`, usage{}, false},
		{"last wins", `"usage":{"prompt_tokens":1}},{"usage":{"prompt_tokens":2}}`, usage{2, 0}, true},
		{"responses completed", `"usage":{"input_tokens":5,"output_tokens":9,"total_tokens":14}}}`, usage{5, 9}, true},
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

// refUsage is extractUsage with encoding/json: ok is whether the top-level
// usage is an object; fields are compared only where they are integers.
func refUsage(body []byte) (prompt, completion *int64, ok bool, valid bool) {
	var top map[string]json.RawMessage
	if json.Unmarshal(body, &top) != nil {
		return nil, nil, false, false
	}
	var u map[string]json.RawMessage
	if json.Unmarshal(top["usage"], &u) != nil || u == nil {
		return nil, nil, false, true
	}
	field := func(name, alt string) *int64 {
		raw, found := u[name]
		if !found {
			raw, found = u[alt]
		}
		var n int64
		if !found {
			return &n
		}
		if json.Unmarshal(raw, &n) != nil {
			return nil // not an integer: not compared
		}
		n = max(n, 0)
		return &n
	}
	return field("prompt_tokens", "input_tokens"), field("completion_tokens", "output_tokens"), true, true
}

func FuzzUsage(f *testing.F) {
	for _, s := range []string{
		`{"usage":{"prompt_tokens":12,"completion_tokens":30}}`,
		`{"usage":{"input_tokens":5,"output_tokens":6}}`,
		`{"usage":null}`,
		`{"choices":[{"message":{"content":"usage"}}],"usage":{"prompt_tokens":1e2}}`,
		`{"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":-1}}`,
		`[1,2]`, `{"usage"`, `"usage":{"prompt_tokens":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := extractUsage(body)
		_, _ = usageFromTail(body)
		_ = rawField(string(body), "usage")
		_ = appendUnescaped(nil, string(body))
		_ = countCompletionText(routeChat, body, func(b []byte) int64 { return int64(len(b)) })
		if !json.Valid(body) || hasDupKeys(body) {
			return
		}
		p, c, wantOK, valid := refUsage(body)
		if !valid {
			return
		}
		if ok != wantOK {
			t.Fatalf("ok: got %v, want %v for %s", ok, wantOK, body)
		}
		if p != nil && got.prompt != *p {
			t.Fatalf("prompt: got %d, want %d for %s", got.prompt, *p, body)
		}
		if c != nil && got.completion != *c {
			t.Fatalf("completion: got %d, want %d for %s", got.completion, *c, body)
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
