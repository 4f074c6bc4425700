package provider

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestChatStreamEdges(t *testing.T) {
	t.Parallel()
	type ev struct{ name, data string }
	start := ev{"message_start", `{"type":"message_start","message":{"id":"m1","model":"claude","usage":{"input_tokens":2,"output_tokens":1}}}`}
	tests := []struct {
		name     string
		events   []ev
		fail     bool
		want     []string // substrings of the output, in order
		wantDone bool
	}{
		{"events before message_start get an empty id", []ev{
			{"content_block_delta", `{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"x"}}`},
		}, false, []string{`{"id":"","object":"chat.completion.chunk","created":7,"model":"","choices":[{"index":0,"delta":{"content":"x"}`}, false},
		{"cut stream fails", []ev{start}, true,
			[]string{`"delta":{"role":"assistant","content":""}`, `data: {"error":{"message":"upstream broke off","type":"api_error","param":null,"code":null}}`}, true},
		{"arguments outside a tool block are ignored", []ev{start,
			{"content_block_delta", `{"delta":{"type":"input_json_delta","partial_json":"{}"}}`},
			{"message_stop", `{}`},
		}, false, []string{`"content":""}`, "data: [DONE]\n\n"}, true},
		{"events after the end are ignored", []ev{start, {"message_stop", `{}`},
			{"content_block_delta", `{"delta":{"type":"text_delta","text":"late"}}`},
		}, false, []string{"data: [DONE]\n\n"}, true},
		{"error without fields", []ev{{"error", `{}`}}, false,
			[]string{`data: {"error":{"message":"upstream stream failed","type":"api_error","param":null,"code":null}}`}, true},
		{"second message_start ignored", []ev{start, start, {"message_stop", `{}`}}, false,
			[]string{`"role":"assistant"`, "data: [DONE]"}, true},
		{"invalid escapes re-encoded as valid JSON", []ev{start,
			{"content_block_delta", `{"delta":{"type":"text_delta","text":"a\qb"}}`},
		}, false, []string{`{"content":"a`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			s := NewChatStream(&out, ChatStreamOptions{Created: 7})
			for _, e := range tt.events {
				if err := s.Event(e.name, []byte(e.data)); err != nil {
					t.Fatalf("event: %v", err)
				}
			}
			if tt.fail {
				if err := s.Fail("api_error", "upstream broke off"); err != nil {
					t.Fatalf("fail: %v", err)
				}
			}
			checkChunks(t, out.Bytes())
			rest := out.String()
			for _, w := range tt.want {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("got output %s, want it to contain %s (in order)", out.String(), w)
				}
				rest = rest[i+len(w):]
			}
			if s.Done() != tt.wantDone {
				t.Errorf("got Done %v, want %v", s.Done(), tt.wantDone)
			}
			if strings.Count(out.String(), "[DONE]") > 1 {
				t.Errorf("got [DONE] more than once in %s", out.String())
			}
		})
	}
}

// errWriter fails every write.
type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("client gone") }

func TestChatStreamWriteError(t *testing.T) {
	t.Parallel()
	s := NewChatStream(errWriter{}, ChatStreamOptions{})
	err := s.Event("message_start", []byte(`{"message":{"id":"x","usage":{"input_tokens":3,"output_tokens":1}}}`))
	if err == nil || err.Error() != "client gone" {
		t.Errorf("got error %v, want client gone", err)
	}
	if u, ok := s.Usage(); !ok || u.Prompt != 3 {
		t.Errorf("got usage %+v, %v; want prompt 3 metered despite the write error", u, ok)
	}
}
