package provider

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// seedFiles adds every file of testdata/dir with extension ext to f.
func seedFiles(f *testing.F, dir, ext string) {
	files, _ := filepath.Glob(filepath.Join("testdata", dir, "*"+ext))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// FuzzTranslateChatRequest: any input translates to valid JSON or to an
// error, never a panic.
func FuzzTranslateChatRequest(f *testing.F) {
	seedFiles(f, "request", ".json")
	f.Add([]byte(`{"model":"m","messages":[{"role":"tool","tool_call_id":"a","content":"x"},{"role":"tool","tool_call_id":"b","content":[{"type":"text","text":"y"}]}]}`))
	f.Add([]byte(`{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":[1]}"}}]}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, _, err := TranslateChatRequest(body)
		if err != nil {
			return
		}
		if !json.Valid(out) {
			t.Fatalf("got invalid JSON %q for %q", out, body)
		}
	})
}

// FuzzTranslateMessagesResponse: any upstream body translates to valid JSON
// or to an error.
func FuzzTranslateMessagesResponse(f *testing.F) {
	seedFiles(f, "response", ".json")
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := TranslateMessagesResponse(body, 1)
		if err == nil && !json.Valid(out) {
			t.Fatalf("got invalid JSON %q for %q", out, body)
		}
		_, _ = AnthropicUsage(body)
	})
}

// FuzzAnthropicStream feeds the meter and the stream translator the events
// of any input: figures stay in range, and every chunk written is a
// `data: ` event holding a JSON object or [DONE].
func FuzzAnthropicStream(f *testing.F) {
	seedFiles(f, "stream", ".sse")
	f.Add([]byte("event: content_block_start\ndata: {\"content_block\":{\"type\":\"tool_use\",\"id\":\"\\u00\",\"name\":1}}\n\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, includeUsage := range []bool{false, true} {
			var out bytes.Buffer
			s := NewChatStream(&out, ChatStreamOptions{IncludeUsage: includeUsage, Count: func(b []byte) int64 { return int64(len(b)) }})
			m := NewAnthropicStreamMeter(nil)
			for _, ev := range readSSE(t, raw) {
				m.Event(ev.name, []byte(ev.data))
				if err := s.Event(ev.name, []byte(ev.data)); err != nil {
					t.Fatal(err)
				}
			}
			if !s.Done() {
				_ = s.Fail("api_error", "cut")
			}
			checkChunks(t, out.Bytes())
			for _, u := range []Usage{must(m.Usage()), must(s.Usage())} {
				for _, n := range []int64{u.Prompt, u.Completion, u.CacheRead, u.CacheCreation} {
					if n < 0 || n > MaxTokens {
						t.Fatalf("got usage %+v, want every figure in [0, %d]", u, int64(MaxTokens))
					}
				}
			}
			if n := m.CompletionTokens(); n < 0 || n > MaxTokens {
				t.Fatalf("got %d completion tokens, want [0, %d]", n, int64(MaxTokens))
			}
		}
	})
}

func must(u Usage, _ bool) Usage { return u }
