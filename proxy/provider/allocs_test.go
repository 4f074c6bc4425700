package provider

import (
	"io"
	"testing"
)

// TestChatStreamEventAllocs keeps the per-event cost of a stream free of
// allocations: only starting a stream allocates. (A string holding JSON
// escapes costs gjson's unescaping, one allocation in the meter and one in
// the translator; these events hold none.)
func TestChatStreamEventAllocs(t *testing.T) {
	events := []struct{ name, data string }{
		{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello world, it is a fine day"}}`},
		{"content_block_start", `{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}`},
		{"content_block_delta", `{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"1, 2, 3"}}`},
		{"message_delta", `{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":9}}`},
		{"ping", `{"type":"ping"}`},
	}
	s := NewChatStream(io.Discard, ChatStreamOptions{IncludeUsage: true})
	if err := s.Event("message_start", []byte(`{"type":"message_start","message":{"id":"msg_1","model":"claude","usage":{"input_tokens":3,"output_tokens":1}}}`)); err != nil {
		t.Fatal(err)
	}
	for _, ev := range events {
		data := []byte(ev.data)
		if got := testing.AllocsPerRun(100, func() { _ = s.Event(ev.name, data) }); got != 0 {
			t.Errorf("%s: got %v allocations per event, want 0", ev.name, got)
		}
	}
}
