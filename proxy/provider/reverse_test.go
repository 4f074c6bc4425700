package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/tidwall/gjson"
)

// TestTranslateMessagesRequestRefuses: what the chat completions API cannot
// express is refused with a *RequestError naming the field, never dropped.
func TestTranslateMessagesRequestRefuses(t *testing.T) {
	t.Parallel()
	const user = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, body, param string
	}{
		{"not JSON", `{"model":`, ""},
		{"not an object", `[1]`, ""},
		{"too deep", `{"model":"m","x":` + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1) + `}`, ""},
		{"missing model", `{"max_tokens":1,` + user + `}`, "model"},
		{"missing max_tokens", `{"model":"m",` + user + `}`, "max_tokens"},
		{"missing messages", `{"model":"m","max_tokens":1}`, "messages"},
		{"empty messages", `{"model":"m","max_tokens":1,"messages":[]}`, "messages"},
		{"repeated key", `{"model":"m","model":"n","max_tokens":1,` + user + `}`, "model"},
		{"max_tokens zero", `{"model":"m","max_tokens":0,` + user + `}`, "max_tokens"},
		{"max_tokens fraction", `{"model":"m","max_tokens":1.5,` + user + `}`, "max_tokens"},
		{"top_k", `{"model":"m","max_tokens":1,"top_k":5,` + user + `}`, "top_k"},
		{"temperature out of range", `{"model":"m","max_tokens":1,"temperature":1.5,` + user + `}`, "temperature"},
		{"thinking", `{"model":"m","max_tokens":1,"thinking":{"type":"enabled","budget_tokens":1024},` + user + `}`, "thinking"},
		{"unknown field", `{"model":"m","max_tokens":1,"mcp_servers":[{}],` + user + `}`, "mcp_servers"},
		{"five stop sequences", `{"model":"m","max_tokens":1,"stop_sequences":["a","b","c","d","e"],` + user + `}`, "stop_sequences"},
		{"metadata other key", `{"model":"m","max_tokens":1,"metadata":{"x":1},` + user + `}`, "metadata.x"},
		{"system role", `{"model":"m","max_tokens":1,"messages":[{"role":"system","content":"x"}]}`, "messages[0].role"},
		{"prefill", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"},{"role":"assistant","content":"The answer is"}]}`, "messages"},
		{"document", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"document","source":{"type":"text","media_type":"text/plain","data":"x"}}]}]}`, "messages[0].content[0].type"},
		{"thinking block", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"thinking","thinking":"hm","signature":"s"}]},{"role":"user","content":"b"}]}`, "messages[1].content[0].type"},
		{"image in a tool result", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":[{"type":"image","source":{"type":"url","url":"https://x/y.png"}}]}]}]}`, "messages[0].content[0].content[0].type"},
		{"file image source", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"file","file_id":"f"}}]}]}`, "messages[0].content[0].source.file_id"},
		{"image media type", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"text/html","data":"eA=="}}]}]}`, "messages[0].content[0].source.media_type"},
		{"image url scheme", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"image","source":{"type":"url","url":"file:///etc/passwd"}}]}]}`, "messages[0].content[0].source.url"},
		{"citations", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"text","text":"x","citations":[{"type":"char_location"}]}]}]}`, "messages[0].content[0].citations"},
		{"server tool", `{"model":"m","max_tokens":1,"tools":[{"type":"web_search_20250305","name":"web_search"}],` + user + `}`, "tools[0].type"},
		{"tool without schema", `{"model":"m","max_tokens":1,"tools":[{"name":"f"}],` + user + `}`, "tools[0].input_schema"},
		{"tool_use input not an object", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":[1]}]},{"role":"user","content":"b"}]}`, "messages[1].content[0].input"},
		{"tool_choice type", `{"model":"m","max_tokens":1,"tool_choice":{"type":"some"},` + user + `}`, "tool_choice.type"},
		{"tool_choice tool without name", `{"model":"m","max_tokens":1,"tool_choice":{"type":"tool"},` + user + `}`, "tool_choice.name"},
		{"message field", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"a","name":"x"}]}`, "messages[0].name"},
		{"service tier", `{"model":"m","max_tokens":1,"service_tier":"priority",` + user + `}`, "service_tier"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, _, err := TranslateMessagesRequest([]byte(tt.body))
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("got %s, %v; want a *RequestError", out, err)
			}
			if re.Param != tt.param {
				t.Errorf("got param %q (%v), want %q", re.Param, err, tt.param)
			}
		})
	}
}

// TestTranslateMessagesRequestAccepts covers what is accepted without a
// trace in the output, and the choice of max_tokens field.
func TestTranslateMessagesRequestAccepts(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body string
		want       []string // JSON paths of the output and their raw values
	}{
		{"null fields", `{"model":"gpt-4o","max_tokens":3,"top_k":null,"system":null,"temperature":null,"messages":[{"role":"user","content":"a"}]}`,
			[]string{"max_tokens", "3", "temperature", "", "messages.#", "1"}},
		{"reasoning model", `{"model":"gpt-5-mini","max_tokens":3,"messages":[{"role":"user","content":"a"}]}`,
			[]string{"max_completion_tokens", "3", "max_tokens", ""}},
		{"tool_choice none keeps parallel", `{"model":"m","max_tokens":1,"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"none","disable_parallel_tool_use":true},"messages":[{"role":"user","content":"a"}]}`,
			[]string{"tool_choice", `"none"`, "parallel_tool_calls", ""}},
		{"auto without parallel", `{"model":"m","max_tokens":1,"tools":[{"name":"f","input_schema":{"type":"object"}}],"tool_choice":{"type":"auto","disable_parallel_tool_use":true},"messages":[{"role":"user","content":"a"}]}`,
			[]string{"tool_choice", `"auto"`, "parallel_tool_calls", "false"}},
		{"error result without content", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":[{"type":"tool_result","tool_use_id":"t","is_error":true}]}]}`,
			[]string{"messages.0.role", `"tool"`, "messages.0.content.0.text", `"Error:"`}},
		{"empty assistant blocks", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"a"},{"role":"assistant","content":[]},{"role":"user","content":"b"}]}`,
			[]string{"messages.1.content", `""`}},
		{"escapes kept", `{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"a\u00e9\"<>"}]}`,
			[]string{"messages.0.content", `"a\u00e9\"<>"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, _, err := TranslateMessagesRequest([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < len(tt.want); i += 2 {
				if got := gjson.GetBytes(out, tt.want[i]).Raw; got != tt.want[i+1] {
					t.Errorf("%s: got %q, want %q in %s", tt.want[i], got, tt.want[i+1], out)
				}
			}
		})
	}
}

func TestTranslateChatResponseRefuses(t *testing.T) {
	t.Parallel()
	for _, body := range []string{
		``, `{`, `[]`, `{"choices":[]}`, `{"choices":[1]}`, `{"choices":[{"index":0}]}`,
		`{"choices":[{"message":{"content":[{"type":"text","text":"x"}]}}]}`,
		`{"choices":[{"message":{"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]}}]}`,
		`{"choices":[{"message":{"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}}]}`,
		`{"choices":[{"message":{"tool_calls":[{"id":"c","type":"custom","custom":{"name":"f","input":"x"}}]}}]}`,
		`{"x":` + strings.Repeat("[", MaxDepth+1) + strings.Repeat("]", MaxDepth+1) + `}`,
	} {
		if out, err := TranslateChatResponse([]byte(body), Usage{}); !errors.Is(err, ErrUpstreamChat) {
			t.Errorf("%q: got %s, %v; want ErrUpstreamChat", body, out, err)
		}
	}
}

// TestTranslateChatResponseClamps: usage figures out of range are clamped
// before they are written, and cached tokens never exceed the prompt.
func TestTranslateChatResponseClamps(t *testing.T) {
	t.Parallel()
	out, err := TranslateChatResponse([]byte(`{"choices":[{"message":{"content":"x"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1e300,"completion_tokens":-5,"prompt_tokens_details":{"cached_tokens":1e301}}}`), Usage{})
	if err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(out, "usage").Raw; got != `{"input_tokens":0,"cache_creation_input_tokens":0,"cache_read_input_tokens":4294967296,"output_tokens":0}` {
		t.Errorf("got usage %s", got)
	}
}

func TestMessagesStreamEdges(t *testing.T) {
	t.Parallel()
	const first = `{"id":"c1","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":"a"}}]}`
	tests := []struct {
		name     string
		events   []string
		fail     bool
		want     []string // substrings of the output, in order
		wantDone bool
	}{
		{"cut stream fails", []string{first}, true,
			[]string{`"text":"a"`, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"upstream broke off\"}}\n\n"}, true},
		{"interleaved arguments fail", []string{
			`{"choices":[{"delta":{"tool_calls":[{"index":0,"id":"a","function":{"name":"f","arguments":""}}]}}]}`,
			`{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"b","function":{"name":"g","arguments":"{}"}}]}}]}`,
			`{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{}"}}]}}]}`,
		}, false, []string{`"name":"f"`, `"name":"g"`, "event: error\n", "interleaved"}, true},
		{"arguments of an unknown call fail", []string{
			`{"choices":[{"delta":{"tool_calls":[{"index":3,"function":{"arguments":"{}"}}]}}]}`,
		}, false, []string{"event: message_start", "event: error\n"}, true},
		{"tool call without index fails", []string{
			`{"choices":[{"delta":{"tool_calls":[{"id":"a","function":{"name":"f"}}]}}]}`,
		}, false, []string{"event: error\n", "without an index"}, true},
		{"events after the end are ignored", []string{first, "[DONE]", `{"choices":[{"delta":{"content":"late"}}]}`},
			false, []string{"event: message_stop"}, true},
		{"done without chunks", []string{"[DONE]"}, false,
			[]string{`"id":"","type":"message"`, `"stop_reason":"end_turn"`, "event: message_stop"}, true},
		{"garbage ignored", []string{"", "garbage", `{"choices":[]}`, `{"usage":"x"}`, strings.Repeat("[", 200)}, false, nil, false},
		{"refusal", []string{`{"choices":[{"delta":{"refusal":"no"},"finish_reason":"stop"}]}`, "[DONE]"}, false,
			[]string{`"text":"no"`, `"stop_reason":"refusal"`}, true},
		{"stop string", []string{first, `{"choices":[{"delta":{},"finish_reason":"stop","stop_reason":"END"}]}`, "[DONE]"}, false,
			[]string{`"stop_reason":"stop_sequence","stop_sequence":"END"`}, true},
		{"finished without [DONE]", []string{first, `{"choices":[{"delta":{},"finish_reason":"length"}]}`}, false,
			[]string{`"text":"a"`, "event: content_block_stop"}, false},
		{"invalid escapes re-encoded", []string{`{"choices":[{"delta":{"content":"a\qb"}}]}`}, false,
			[]string{`"text_delta","text":"a`}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			s := NewMessagesStream(&out, MessagesStreamOptions{})
			for _, e := range tt.events {
				if err := s.Event("", []byte(e)); err != nil {
					t.Fatalf("event: %v", err)
				}
			}
			if tt.fail {
				if err := s.Fail("api_error", "upstream broke off"); err != nil {
					t.Fatal(err)
				}
			}
			if s.Done() != tt.wantDone {
				t.Errorf("got Done %v, want %v", s.Done(), tt.wantDone)
			}
			got := out.String()
			for _, w := range tt.want {
				i := strings.Index(got, w)
				if i < 0 {
					t.Fatalf("got\n%s\nwant %q in it (in order)", out.String(), w)
				}
				got = got[i+len(w):]
			}
			if len(tt.want) == 0 && out.Len() != 0 {
				t.Errorf("got %q, want nothing written", out.String())
			}
			if tt.wantDone {
				checkMessagesEvents(t, out.Bytes())
			} else {
				for _, ev := range bytes.SplitAfter(out.Bytes(), []byte("\n\n")) {
					if _, data, ok := bytes.Cut(ev, []byte("\ndata: ")); ok && !json.Valid(bytes.TrimSpace(data)) {
						t.Errorf("got invalid JSON in %q", ev)
					}
				}
			}
		})
	}
}

// TestMessagesStreamWriteError: the writer's error is returned.
func TestMessagesStreamWriteError(t *testing.T) {
	t.Parallel()
	s := NewMessagesStream(failWriter{}, MessagesStreamOptions{})
	if err := s.Event("", []byte(`{"choices":[{"delta":{"content":"a"}}]}`)); !errors.Is(err, io.ErrClosedPipe) {
		t.Errorf("got %v, want the writer's error", err)
	}
}

type failWriter struct{}

func (failWriter) Write([]byte) (int, error) { return 0, io.ErrClosedPipe }

// TestMessagesStreamEventAllocs keeps the per-chunk cost of a stream free
// of allocations once it started.
func TestMessagesStreamEventAllocs(t *testing.T) {
	s := NewMessagesStream(io.Discard, MessagesStreamOptions{})
	if err := s.Event("", []byte(`{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"role":"assistant","content":""}}],"usage":null}`)); err != nil {
		t.Fatal(err)
	}
	for _, data := range []string{
		`{"id":"c","model":"gpt-4o","choices":[{"index":0,"delta":{"content":"Hello world, it is a fine day"},"finish_reason":null}],"usage":null}`,
		`{"id":"c","model":"gpt-4o","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}`,
	} {
		d := []byte(data)
		if got := testing.AllocsPerRun(100, func() { _ = s.Event("", d) }); got != 0 {
			t.Errorf("%s: got %v allocations per chunk, want 0", data, got)
		}
	}
}

// TestTranslateCountTokensRequest: a count_tokens body needs no
// max_tokens (and may hold none), and may end with an assistant turn.
func TestTranslateCountTokensRequest(t *testing.T) {
	t.Parallel()
	out, err := TranslateCountTokensRequest([]byte(`{"model":"gpt-4o","system":"s","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := gjson.GetBytes(out, "messages.#").Int(); got != 3 || gjson.GetBytes(out, "max_tokens").Exists() {
		t.Errorf("got %s, want three messages and no max_tokens", out)
	}
	var re *RequestError
	if _, err := TranslateCountTokensRequest([]byte(`{"model":"m","max_tokens":3,"messages":[{"role":"user","content":"a"}]}`)); !errors.As(err, &re) || re.Param != "max_tokens" {
		t.Errorf("max_tokens in count_tokens: got %v, want a RequestError naming it", err)
	}
	if _, err := TranslateCountTokensRequest([]byte(`{"model":"m","top_k":1,"messages":[{"role":"user","content":"a"}]}`)); !errors.As(err, &re) || re.Param != "top_k" {
		t.Errorf("top_k in count_tokens: got %v, want a RequestError naming it", err)
	}
}

// TestMessagesStreamFinished: finish_reason marks a stream complete, so a
// caller can end one whose upstream sent no [DONE].
func TestMessagesStreamFinished(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	s := NewMessagesStream(&out, MessagesStreamOptions{})
	if err := s.Event("", []byte(`{"choices":[{"delta":{"content":"a"}}]}`)); err != nil {
		t.Fatal(err)
	}
	if s.Finished() {
		t.Fatal("got Finished true before finish_reason, want false")
	}
	if err := s.Event("", []byte(`{"choices":[{"delta":{},"finish_reason":"length"}]}`)); err != nil {
		t.Fatal(err)
	}
	if !s.Finished() || s.Done() {
		t.Fatalf("after finish_reason: got Finished %v Done %v, want true and false", s.Finished(), s.Done())
	}
	if err := s.Event("", []byte("[DONE]")); err != nil {
		t.Fatal(err)
	}
	checkMessagesEvents(t, out.Bytes())
	if !strings.Contains(out.String(), `"stop_reason":"max_tokens"`) {
		t.Errorf("got %s, want stop_reason max_tokens", out.String())
	}
}
