package provider

import (
	"strings"
	"testing"
)

func TestAnthropicUsage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		body   string
		want   Usage
		wantOK bool
	}{
		{"plain", `{"usage":{"input_tokens":10,"output_tokens":5}}`, Usage{Prompt: 10, Completion: 5}, true},
		{"cache", `{"usage":{"input_tokens":10,"cache_creation_input_tokens":20,"cache_read_input_tokens":300,"output_tokens":5}}`,
			Usage{Prompt: 330, Completion: 5, CacheRead: 300, CacheCreation: 20}, true},
		{"negative and huge clamped", `{"usage":{"input_tokens":-10,"cache_read_input_tokens":1e30,"cache_creation_input_tokens":99999999999,"output_tokens":-1}}`,
			Usage{Prompt: MaxTokens, Completion: 0, CacheRead: MaxTokens, CacheCreation: MaxTokens}, true},
		{"strings count 0", `{"usage":{"input_tokens":"10","output_tokens":null}}`, Usage{}, true},
		{"no usage", `{"id":"x"}`, Usage{}, false},
		{"usage not an object", `{"usage":5}`, Usage{}, false},
		{"not json", `{"usage":{"input_tokens":`, Usage{}, false},
		{"usage after deep nesting", `{"x":` + strings.Repeat("[", 1<<20) + strings.Repeat("]", 1<<20) + `,"usage":{"input_tokens":1,"output_tokens":2}}`,
			Usage{Prompt: 1, Completion: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, ok := AnthropicUsage([]byte(tt.body))
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestAnthropicStreamMeter(t *testing.T) {
	t.Parallel()
	type ev struct{ name, data string }
	tests := []struct {
		name       string
		events     []ev
		want       Usage
		wantOK     bool
		wantTokens int64
	}{
		{"start and cumulative deltas", []ev{
			{"message_start", `{"type":"message_start","message":{"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}`},
			{"content_block_delta", `{"type":"content_block_delta","delta":{"type":"text_delta","text":"abcdefgh"}}`},
			{"message_delta", `{"type":"message_delta","usage":{"output_tokens":10}}`},
			{"message_delta", `{"type":"message_delta","usage":{"output_tokens":15}}`},
		}, Usage{Prompt: 30, Completion: 15, CacheRead: 5}, true, 2},
		{"delta updates input too", []ev{
			{"message_start", `{"message":{"usage":{"input_tokens":0,"output_tokens":1}}}`},
			{"message_delta", `{"usage":{"input_tokens":40,"cache_creation_input_tokens":2,"output_tokens":3}}`},
		}, Usage{Prompt: 42, Completion: 3, CacheCreation: 2}, true, 0},
		{"name from data type", []ev{
			{"", `{"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}`},
			{"", `{"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"{\"a\":1}"}}`},
		}, Usage{Prompt: 3, Completion: 2}, true, 2},
		// Cut before message_delta: message_start's output_tokens (1) is
		// no measure of the output; the streamed text is.
		{"cut after text", []ev{
			{"message_start", `{"type":"message_start","message":{"usage":{"input_tokens":7,"cache_creation_input_tokens":2,"output_tokens":1}}}`},
			{"content_block_delta", `{"type":"content_block_delta","delta":{"type":"text_delta","text":"` + strings.Repeat("abcd", 40) + `"}}`},
			{"content_block_delta", `{"type":"content_block_delta","delta":{"type":"input_json_delta","partial_json":"` + strings.Repeat("x", 40) + `"}}`},
		}, Usage{Prompt: 9, Completion: 50, CacheCreation: 2}, true, 50},
		{"cut before text", []ev{
			{"message_start", `{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}`},
		}, Usage{Prompt: 7, Completion: 1}, true, 0},
		{"message_delta without output_tokens", []ev{
			{"message_start", `{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}`},
			{"content_block_delta", `{"type":"content_block_delta","delta":{"type":"text_delta","text":"abcdefgh"}}`},
			{"message_delta", `{"type":"message_delta","usage":{"input_tokens":8}}`},
		}, Usage{Prompt: 8, Completion: 2}, true, 2},
		// message_delta's output_tokens is the upstream's count, even
		// below the gateway's count of the text.
		{"message_delta authoritative", []ev{
			{"message_start", `{"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}`},
			{"content_block_delta", `{"type":"content_block_delta","delta":{"type":"text_delta","text":"` + strings.Repeat("abcd", 40) + `"}}`},
			{"message_delta", `{"type":"message_delta","usage":{"output_tokens":12}}`},
		}, Usage{Prompt: 7, Completion: 12}, true, 40},
		{"no usage", []ev{
			{"message_start", `{"message":{"id":"x"}}`},
			{"content_block_delta", `{"delta":{"type":"text_delta","text":"w1 w2 w3 w4"}}`},
			{"content_block_delta", `{"delta":{"type":"thinking_delta","thinking":"hmm"}}`},
			{"message_delta", `{"delta":{"stop_reason":"end_turn"}}`},
		}, Usage{}, false, 4},
		{"garbage", []ev{{"message_start", `{{{`}, {"message_delta", `nope`}, {"content_block_delta", ``}}, Usage{}, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			m := NewAnthropicStreamMeter(nil)
			for _, e := range tt.events {
				m.Event(e.name, []byte(e.data))
			}
			got, ok := m.Usage()
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got usage %+v, %v; want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
			if n := m.CompletionTokens(); n != tt.wantTokens {
				t.Errorf("got %d completion tokens, want %d", n, tt.wantTokens)
			}
		})
	}
}

func TestAnthropicStreamMeterBoundedText(t *testing.T) {
	t.Parallel()
	var counted int
	m := NewAnthropicStreamMeter(func(b []byte) int64 { counted += len(b); return int64(len(b)) })
	delta := []byte(`{"type":"content_block_delta","delta":{"type":"text_delta","text":"` + strings.Repeat("x", 1000) + `"}}`)
	for range 1000 {
		m.Event("content_block_delta", delta)
	}
	if cap(m.text) > textMax {
		t.Errorf("got text buffer of %d bytes, want at most %d", cap(m.text), textMax)
	}
	if n := m.CompletionTokens(); n != 1_000_000 || counted != 1_000_000 {
		t.Errorf("got %d tokens (%d bytes counted), want 1000000", n, counted)
	}
	big := []byte(`{"delta":{"type":"text_delta","text":"` + strings.Repeat("y", 2*textMax) + `"}}`)
	m.Reset(nil)
	m.Event("content_block_delta", big)
	if n := m.CompletionTokens(); n != 2*textMax/4 {
		t.Errorf("got %d tokens for one huge delta, want %d", n, 2*textMax/4)
	}
}

func TestDepthOK(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		max  int
		want bool
	}{
		{"flat", `{"a":1}`, 1, true},
		{"at the limit", `[[[]]]`, 3, true},
		{"over", `[[[[]]]]`, 3, false},
		{"brackets in strings", `{"a":"[[[[[[\"{{{{"}`, 1, true},
		{"escaped backslash ends string", `["\\",[[[]]]]`, 3, false},
		{"unterminated string", `["abc`, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := depthOK([]byte(tt.in), tt.max); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
