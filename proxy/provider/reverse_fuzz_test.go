package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"github.com/tidwall/gjson"
)

// Fuzz targets of the reverse direction (Messages requests to chat
// completions, and the answers back):
//
//	go test ./proxy/provider/ -run '^$' -fuzz FuzzMessagesStream -fuzztime 30s

// FuzzTranslateMessagesRequest: any input translates to a valid JSON chat
// request or to a *RequestError, never a panic; a translated body always
// names the model and holds messages.
func FuzzTranslateMessagesRequest(f *testing.F) {
	seedFiles(f, "msgrequest", ".json")
	f.Add([]byte(`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"a","is_error":true,"content":[{"type":"text","text":"x"}]},{"type":"text","text":"y"}]}]}`))
	f.Add([]byte(`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{"a":[1,{"b":"\u00e9"}]}}]},{"role":"user","content":"b"}]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		out, info, err := TranslateMessagesRequest(body)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("got error %T %v, want a *RequestError", err, err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("got invalid JSON %q for %q", out, body)
		}
		if gjson.GetBytes(out, "model").Str == "" || info.Model == "" || !gjson.GetBytes(out, "messages").IsArray() || info.MaxTokens < 1 {
			t.Fatalf("got %s (info %+v) for %q, want the model, messages and max_tokens", out, info, body)
		}
	})
}

// FuzzTranslateChatResponse: any upstream body translates to a valid JSON
// Messages response or to ErrUpstreamChat.
func FuzzTranslateChatResponse(f *testing.F) {
	seedFiles(f, "chatresponse", ".json")
	f.Fuzz(func(t *testing.T, body []byte) {
		out, err := TranslateChatResponse(body, Usage{Prompt: 1, Completion: 2})
		if err != nil {
			if !errors.Is(err, ErrUpstreamChat) {
				t.Fatalf("got error %v, want ErrUpstreamChat", err)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("got invalid JSON %q for %q", out, body)
		}
		for _, k := range []string{"input_tokens", "output_tokens", "cache_read_input_tokens"} {
			if n := gjson.GetBytes(out, "usage."+k).Int(); n < 0 || n > MaxTokens {
				t.Fatalf("got usage.%s %d, want [0, %d]", k, n, int64(MaxTokens))
			}
		}
	})
}

// FuzzMessagesStream feeds the chunk translator the data of any input's
// events: every event written is Anthropic-framed JSON of its type, blocks
// open and close in order, the stream always ends cleanly once [DONE] or
// Fail is given, and the figures stay in range.
func FuzzMessagesStream(f *testing.F) {
	seedFiles(f, "chatstream", ".sse")
	f.Add([]byte("data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"\\u00\",\"function\":{\"name\":1,\"arguments\":\"{\"}}]}}]}\n\n"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		var out bytes.Buffer
		s := NewMessagesStream(&out, MessagesStreamOptions{Prompt: 3, Count: func(b []byte) int64 { return int64(len(b)) }})
		for _, ev := range readSSE(t, raw) {
			if err := s.Event(ev.name, []byte(ev.data)); err != nil {
				t.Fatal(err)
			}
		}
		if !s.Done() {
			_ = s.Fail("api_error", "cut")
		}
		checkMessagesEvents(t, out.Bytes())
		u, _ := s.Usage()
		for _, n := range []int64{u.Prompt, u.Completion, u.CacheRead, s.CompletionTokens()} {
			if n < 0 || n > MaxTokens {
				t.Fatalf("got usage %+v, want every figure in [0, %d]", u, int64(MaxTokens))
			}
		}
	})
}
