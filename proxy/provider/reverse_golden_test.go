package provider

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The reverse direction's golden files: Messages requests to chat
// completions (testdata/msgrequest), chat completions to Messages responses
// (testdata/chatresponse), chat chunk streams to Messages events
// (testdata/chatstream). Rewrite them with
//
//	go test ./proxy/provider/ -run Golden -update

// TestGoldenMessagesRequest translates testdata/msgrequest/*.json (Messages
// requests) into *.golden: the request info and the chat completions body.
func TestGoldenMessagesRequest(t *testing.T) {
	for _, in := range inputs(t, "msgrequest", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, info, err := TranslateMessagesRequest(body)
			if err != nil {
				t.Fatalf("translate: got error %v, want none", err)
			}
			infoJSON, err := json.Marshal(info)
			if err != nil {
				t.Fatal(err)
			}
			doc := []byte(`{"info":` + string(infoJSON) + `,"body":` + string(out) + `}`)
			golden(t, strings.TrimSuffix(in, ".json")+".golden", indent(t, doc))
		})
	}
}

// TestGoldenChatResponse translates testdata/chatresponse/*.json (chat
// completions) into *.golden Messages responses; a body without usage gets
// the fallback figures 11/22.
func TestGoldenChatResponse(t *testing.T) {
	for _, in := range inputs(t, "chatresponse", ".json") {
		t.Run(filepath.Base(in), func(t *testing.T) {
			body, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := TranslateChatResponse(body, Usage{Prompt: 11, Completion: 22})
			if err != nil {
				t.Fatalf("translate: got error %v, want none", err)
			}
			golden(t, strings.TrimSuffix(in, ".json")+".golden", indent(t, out))
		})
	}
}

// TestGoldenMessagesStream translates testdata/chatstream/*.sse (chat chunk
// streams) into *.golden Messages event streams, checked event by event
// for Anthropic's framing (an event line, a JSON data line whose type is
// the event's name) and block order.
func TestGoldenMessagesStream(t *testing.T) {
	for _, in := range inputs(t, "chatstream", ".sse") {
		name := strings.TrimSuffix(in, ".sse")
		t.Run(filepath.Base(name), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			s := NewMessagesStream(&out, MessagesStreamOptions{Prompt: 5, Count: func(b []byte) int64 { return int64(len(bytes.Fields(b))) }})
			for _, ev := range readSSE(t, raw) {
				if err := s.Event(ev.name, []byte(ev.data)); err != nil {
					t.Fatalf("event: %v", err)
				}
			}
			if !s.Done() {
				t.Errorf("got Done false after the stream, want true")
			}
			checkMessagesEvents(t, out.Bytes())
			golden(t, name+".golden", out.Bytes())
		})
	}
}

// checkMessagesEvents fails unless out is a sequence of
// `event: NAME\ndata: JSON\n\n` events whose data's type is NAME, blocks
// start in index order, deltas and stops name the open block, and the
// stream ends with message_stop or an error.
func checkMessagesEvents(t testing.TB, out []byte) {
	t.Helper()
	open, next := int64(-1), int64(0)
	last := ""
	for _, ev := range bytes.SplitAfter(out, []byte("\n\n")) {
		if len(ev) == 0 {
			continue
		}
		rest, ok := bytes.CutPrefix(ev, []byte("event: "))
		name, data, ok2 := bytes.Cut(rest, []byte("\ndata: "))
		if !ok || !ok2 || !bytes.HasSuffix(data, []byte("\n\n")) {
			t.Fatalf("got event %q, want event: NAME\\ndata: ...\\n\\n", ev)
		}
		data = bytes.TrimSuffix(data, []byte("\n\n"))
		var d struct {
			Type  string `json:"type"`
			Index *int64 `json:"index"`
		}
		if err := json.Unmarshal(data, &d); err != nil || d.Type != string(name) {
			t.Fatalf("event %s: got data %q (%v), want JSON of that type", name, data, err)
		}
		switch d.Type {
		case "content_block_start":
			if d.Index == nil || *d.Index != next || open >= 0 {
				t.Fatalf("content_block_start %s with block %d open, want index %d and none open", data, open, next)
			}
			open, next = *d.Index, next+1
		case "content_block_delta", "content_block_stop":
			if d.Index == nil || *d.Index != open {
				t.Fatalf("%s %s, want index %d (the open block)", d.Type, data, open)
			}
			if d.Type == "content_block_stop" {
				open = -1
			}
		case "message_delta", "message_stop":
			if open >= 0 {
				t.Fatalf("%s with block %d open", d.Type, open)
			}
		}
		last = d.Type
	}
	if last != "message_stop" && last != "error" {
		t.Fatalf("stream ends with %q, want message_stop or error", last)
	}
}
