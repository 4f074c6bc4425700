package provider

import (
	"bytes"
	"strconv"
	"strings"
	"testing"
)

// TestMessagesStreamUsage: usage reported with or after finish_reason is
// the output's; usage reported before it (early, or on every chunk) is
// raised to the tokens of the text that streamed, for metering and for
// the message_delta sent.
func TestMessagesStreamUsage(t *testing.T) {
	t.Parallel()
	text := `{"choices":[{"index":0,"delta":{"content":"` + strings.Repeat("abcd", 40) + `"}}]}` // 40 tokens
	tests := []struct {
		name   string
		chunks []string
		want   Usage
		wantOK bool
	}{
		{"early usage, cut", []string{
			`{"choices":[{"index":0,"delta":{"role":"assistant"}}],"usage":{"prompt_tokens":9,"completion_tokens":1}}`,
			text,
		}, Usage{Prompt: 9, Completion: 40}, true},
		{"early usage above the text", []string{
			`{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":9,"completion_tokens":70}}`,
			text,
		}, Usage{Prompt: 9, Completion: 70}, true},
		{"usage with finish_reason", []string{
			text,
			`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":12}}`,
		}, Usage{Prompt: 9, Completion: 12}, true},
		{"usage-only chunk after finish_reason", []string{
			`{"choices":[{"index":0,"delta":{}}],"usage":{"prompt_tokens":9,"completion_tokens":1}}`,
			text,
			`{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`,
			`{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":12}}`,
		}, Usage{Prompt: 9, Completion: 12}, true},
		{"no usage", []string{text}, Usage{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			s := NewMessagesStream(&out, MessagesStreamOptions{})
			for _, c := range tt.chunks {
				if err := s.Event("", []byte(c)); err != nil {
					t.Fatal(err)
				}
			}
			if got, ok := s.Usage(); got != tt.want || ok != tt.wantOK {
				t.Errorf("got usage %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
			if !tt.wantOK {
				return
			}
			if err := s.Event("", []byte("[DONE]")); err != nil {
				t.Fatal(err)
			}
			want := `"output_tokens":` + strconv.FormatInt(tt.want.Completion, 10) + "}}"
			if !strings.Contains(out.String(), want) {
				t.Errorf("got stream %s, want a message_delta with %s", out.String(), want)
			}
		})
	}
}
