package provider

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestTranslateChatRequestRefuses(t *testing.T) {
	t.Parallel()
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, body, param string
	}{
		{"not json", `{"model":`, ""},
		{"not an object", `[1]`, ""},
		{"too deep", `{"model":"m",` + msgs + `,"x":` + strings.Repeat("[", 200) + strings.Repeat("]", 200) + `}`, ""},
		{"missing model", `{` + msgs + `}`, "model"},
		{"missing messages", `{"model":"m"}`, "messages"},
		{"empty messages", `{"model":"m","messages":[]}`, "messages"},
		{"repeated key", `{"model":"m",` + msgs + `,"model":"x"}`, "model"},
		{"n 2", `{"model":"m",` + msgs + `,"n":2}`, "n"},
		{"logprobs", `{"model":"m",` + msgs + `,"logprobs":true}`, "logprobs"},
		{"top_logprobs", `{"model":"m",` + msgs + `,"top_logprobs":2}`, "top_logprobs"},
		{"json_schema", `{"model":"m",` + msgs + `,"response_format":{"type":"json_schema","json_schema":{}}}`, "response_format"},
		{"json_object", `{"model":"m",` + msgs + `,"response_format":{"type":"json_object"}}`, "response_format"},
		{"seed", `{"model":"m",` + msgs + `,"seed":1}`, "seed"},
		{"penalty", `{"model":"m",` + msgs + `,"presence_penalty":0.5}`, "presence_penalty"},
		{"logit_bias", `{"model":"m",` + msgs + `,"logit_bias":{"1":2}}`, "logit_bias"},
		{"audio modality", `{"model":"m",` + msgs + `,"modalities":["text","audio"]}`, "modalities"},
		{"unknown field", `{"model":"m",` + msgs + `,"frobnicate":1}`, "frobnicate"},
		{"temperature above 1", `{"model":"m",` + msgs + `,"temperature":1.5}`, "temperature"},
		{"temperature string", `{"model":"m",` + msgs + `,"temperature":"hot"}`, "temperature"},
		{"max_tokens zero", `{"model":"m",` + msgs + `,"max_tokens":0}`, "max_tokens"},
		{"max_tokens fraction", `{"model":"m",` + msgs + `,"max_completion_tokens":1.5}`, "max_completion_tokens"},
		{"stop number", `{"model":"m",` + msgs + `,"stop":[1]}`, "stop"},
		{"stream string", `{"model":"m",` + msgs + `,"stream":"yes"}`, "stream"},
		{"stream_options unknown", `{"model":"m",` + msgs + `,"stream_options":{"chunk":1}}`, "stream_options.chunk"},
		{"user and safety_identifier", `{"model":"m",` + msgs + `,"user":"a","safety_identifier":"b"}`, "safety_identifier"},
		{"unknown role", `{"model":"m","messages":[{"role":"function","name":"f","content":"x"}]}`, "messages[0].name"},
		{"function role", `{"model":"m","messages":[{"role":"function","content":"x"}]}`, "messages[0].role"},
		{"missing role", `{"model":"m","messages":[{"content":"x"}]}`, "messages[0].role"},
		{"message name", `{"model":"m","messages":[{"role":"user","name":"bob","content":"x"}]}`, "messages[0].name"},
		{"message unknown field", `{"model":"m","messages":[{"role":"user","content":"x","cache":1}]}`, "messages[0].cache"},
		{"audio part", `{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{"data":"x","format":"wav"}}]}]}`, "messages[0].content[0].type"},
		{"file part", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"file","file":{}}]}]}`, "messages[0].content[1].type"},
		{"text part extra field", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a","cache_control":{}}]}]}`, "messages[0].content[0].cache_control"},
		{"content number", `{"model":"m","messages":[{"role":"user","content":5}]}`, "messages[0].content"},
		{"image ftp", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"ftp://x/y.png"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"image data not base64", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,abc"}}]}]}`, "messages[0].content[0].image_url.url"},
		{"image data not image", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:text/plain;base64,YQ=="}}]}]}`, "messages[0].content[0].image_url.url"},
		{"image in system", `{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"https://x/y.png"}}]},{"role":"user","content":"x"}]}`, "messages[0].content[0].type"},
		{"tool call bad arguments", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}`, "messages[0].tool_calls[0].function.arguments"},
		{"tool call array arguments", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"[1]"}}]}]}`, "messages[0].tool_calls[0].function.arguments"},
		{"tool call without id", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"type":"function","function":{"name":"f","arguments":"{}"}}]}]}`, "messages[0].tool_calls[0].id"},
		{"tool call custom", `{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"custom","custom":{}}]}]}`, "messages[0].tool_calls[0].type"},
		{"tool without id", `{"model":"m","messages":[{"role":"tool","content":"x"}]}`, "messages[0].tool_call_id"},
		{"function_call", `{"model":"m","messages":[{"role":"assistant","function_call":{"name":"f"}}]}`, "messages[0].function_call"},
		{"custom tool", `{"model":"m",` + msgs + `,"tools":[{"type":"custom","custom":{"name":"x"}}]}`, "tools[0].type"},
		{"tool without name", `{"model":"m",` + msgs + `,"tools":[{"type":"function","function":{"description":"d"}}]}`, "tools[0].function.name"},
		{"tool parameters array", `{"model":"m",` + msgs + `,"tools":[{"type":"function","function":{"name":"f","parameters":[]}}]}`, "tools[0].function.parameters"},
		{"tool_choice allowed_tools", `{"model":"m",` + msgs + `,"tool_choice":{"type":"allowed_tools","allowed_tools":{}}}`, "tool_choice"},
		{"tool_choice word", `{"model":"m",` + msgs + `,"tool_choice":"sometimes"}`, "tool_choice"},
		{"functions", `{"model":"m",` + msgs + `,"functions":[{"name":"f"}]}`, "functions"},
		{"reasoning_effort", `{"model":"m",` + msgs + `,"reasoning_effort":"high"}`, "reasoning_effort"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, _, err := TranslateChatRequest([]byte(tt.body))
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("got output %s, error %v; want a *RequestError", out, err)
			}
			if re.Param != tt.param {
				t.Errorf("got param %q (%v), want %q", re.Param, err, tt.param)
			}
			if re.Message == "" {
				t.Errorf("got an empty message, want one")
			}
		})
	}
}

func TestTranslateChatRequestAccepts(t *testing.T) {
	t.Parallel()
	const msgs = `"messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name, body string
		check      func(t *testing.T, out map[string]any, info ChatRequest)
	}{
		{"nulls are defaults", `{"model":"m",` + msgs + `,"n":null,"seed":null,"temperature":null,"stop":null,"tools":null,"user":null,"max_tokens":null}`,
			func(t *testing.T, out map[string]any, info ChatRequest) {
				if len(out) != 3 {
					t.Errorf("got keys %v, want model, messages, max_tokens", out)
				}
			}},
		{"max_completion_tokens wins", `{"model":"m",` + msgs + `,"max_completion_tokens":7,"max_tokens":9}`,
			func(t *testing.T, out map[string]any, info ChatRequest) {
				if out["max_tokens"] != 7.0 || info.MaxTokens != 7 {
					t.Errorf("got max_tokens %v (info %d), want 7", out["max_tokens"], info.MaxTokens)
				}
			}},
		{"include_usage without stream", `{"model":"m",` + msgs + `,"stream_options":{"include_usage":true}}`,
			func(t *testing.T, out map[string]any, info ChatRequest) {
				if info.IncludeUsage || info.Stream {
					t.Errorf("got info %+v, want no stream and no include_usage", info)
				}
			}},
		{"parallel off without tool_choice", `{"model":"m",` + msgs + `,"tools":[{"type":"function","function":{"name":"f"}}],"parallel_tool_calls":false}`,
			func(t *testing.T, out map[string]any, info ChatRequest) {
				tc, _ := out["tool_choice"].(map[string]any)
				if tc["type"] != "auto" || tc["disable_parallel_tool_use"] != true {
					t.Errorf("got tool_choice %v, want auto with disable_parallel_tool_use", out["tool_choice"])
				}
			}},
		{"assistant refusal and null content", `{"model":"m","messages":[{"role":"assistant","content":[{"type":"refusal","refusal":"no"}]},{"role":"assistant","content":null}]}`,
			func(t *testing.T, out map[string]any, info ChatRequest) {
				got, _ := json.Marshal(out["messages"])
				want := `[{"content":[{"text":"no","type":"text"}],"role":"assistant"},{"content":"","role":"assistant"}]`
				if string(got) != want {
					t.Errorf("got messages %s, want %s", got, want)
				}
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			out, info, err := TranslateChatRequest([]byte(tt.body))
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			var m map[string]any
			if err := json.Unmarshal(out, &m); err != nil {
				t.Fatalf("got invalid JSON %s: %v", out, err)
			}
			tt.check(t, m, info)
		})
	}
}

// TestRefusalEchoesBoundedValue: a refused value is quoted in the error at
// most truncated, in both directions: a client's 100 KB temperature does
// not come back whole in the 400, nor land in the access log.
func TestRefusalEchoesBoundedValue(t *testing.T) {
	huge := `"` + strings.Repeat("x", 100_000) + `"`
	for _, translate := range []func([]byte) error{
		func(b []byte) error { _, _, err := TranslateChatRequest(b); return err },
		func(b []byte) error { _, _, err := TranslateMessagesRequest(b); return err },
	} {
		err := translate([]byte(`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}],"temperature":` + huge + `}`))
		if err == nil || !strings.Contains(err.Error(), "temperature") || len(err.Error()) > 300 {
			t.Errorf("got a %d-byte error %.120q, want a refusal of temperature under 300 bytes", len(fmt.Sprint(err)), fmt.Sprint(err))
		}
	}
}

// TestManyKeys: a body of 100,000 keys (null ones, which the Messages
// translation passes over) is read in linear time, and a key repeated past
// the first 32 is still refused.
func TestManyKeys(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}]`)
	for i := range 100_000 {
		fmt.Fprintf(&b, `,"k%d":null`, i)
	}
	body := b.String() + "}"
	if _, _, err := TranslateMessagesRequest([]byte(body)); err != nil {
		t.Fatalf("100,000 null keys: %v", err)
	}
	var re *RequestError
	if _, _, err := TranslateMessagesRequest([]byte(body[:len(body)-1] + `,"k99":null}`)); !errors.As(err, &re) || re.Param != "k99" {
		t.Errorf("k99 repeated after 100,000 keys: got %v, want a repeated-key refusal", err)
	}
}
