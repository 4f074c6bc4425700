package mock

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestAppendString(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"", `""`},
		{"plain", `"plain"`},
		{`q"b\`, `"q\"b\\"`},
		{"a\nb\tc\rd\x01", `"a\nb\tc\rd\u0001"`},
		{"caf\u00e9 \u2028", "\"caf\u00e9 \\u2028\""},
		{"bad\xffutf8", `"bad\ufffdutf8"`},
	}
	for _, tt := range tests {
		if got := string(appendString(nil, tt.in)); got != tt.want {
			t.Errorf("appendString(%q): got %s, want %s", tt.in, got, tt.want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "a\"b", "\x00\x1f", "\u2029", "\xff\xfe", "日本語"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("appendString(%q) = %s: invalid JSON: %v", s, b, err)
		}
		if want := decodeLikeJSON(s); got != want {
			t.Fatalf("appendString(%q) decodes to %q, want %q", s, got, want)
		}
	})
}

// decodeLikeJSON returns s with every invalid UTF-8 byte replaced by one
// U+FFFD, which is what appendString promises.
func decodeLikeJSON(s string) string {
	var b strings.Builder
	for _, r := range s {
		b.WriteRune(r)
	}
	return b.String()
}

func TestCountWords(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", " ", "a", " a ", "a b", "a\tb\nc\vd\fe\rf", "a\u00a0b\u2003c\u3000d",
		"\u0085x\u200by", "\xff \xfe", "  many   spaces  here  "} {
		if got, want := countWords(s), int64(len(strings.Fields(s))); got != want {
			t.Errorf("countWords(%q): got %d, want %d", s, got, want)
		}
	}
}

func FuzzCountWords(f *testing.F) {
	f.Add("hello world")
	f.Add("a\u00a0b\xff c")
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := countWords(s), int64(len(strings.Fields(s))); got != want {
			t.Fatalf("countWords(%q): got %d, want %d", s, got, want)
		}
	})
}

// BenchmarkChat measures the non-streaming chat hot path, the benchmarks'
// baseline, without a network.
func BenchmarkChat(b *testing.B) {
	benchmarkPost(b, "/v1/chat/completions",
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark please"}],"max_tokens":16}`)
}

// BenchmarkChatStream measures a 16-word chat stream without a network.
func BenchmarkChatStream(b *testing.B) {
	benchmarkPost(b, "/v1/chat/completions",
		`{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello to the benchmark please"}],"max_tokens":16,"stream":true,"stream_options":{"include_usage":true}}`)
}

func benchmarkPost(b *testing.B, path, body string) {
	h := NewHandler(Options{})
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code != http.StatusOK {
			b.Fatalf("got status %d, want 200: %s", w.Code, w.Body)
		}
	}
}
