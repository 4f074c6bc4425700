package mock

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/anthropics/anthropic-sdk-go/v2"
	"github.com/anthropics/anthropic-sdk-go/v2/option"
)

// newAnthropicClient returns an official Anthropic client talking to a
// fresh mock.
func newAnthropicClient(t *testing.T, opts Options) anthropic.Client {
	t.Helper()
	srv := newServer(t, opts)
	return anthropic.NewClient(
		option.WithBaseURL(srv.URL),
		option.WithAPIKey("sk-ant-test"),
		option.WithMaxRetries(0),
		option.WithHTTPClient(srv.Client()),
	)
}

// anthropicParams asks for n words after a 5-word prompt (system 2, user 3).
func anthropicParams(n int64) anthropic.MessageNewParams {
	return anthropic.MessageNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: n,
		System:    []anthropic.TextBlockParam{{Text: "be brief"}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("say three words"))},
	}
}

func TestAnthropicClientMessages(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		noUsage   bool
		tool      bool
		wantUsage anthropic.Usage
	}{
		{"text", false, false, anthropic.Usage{InputTokens: 5, OutputTokens: 3}},
		{"tool use", false, true, anthropic.Usage{InputTokens: 5, OutputTokens: 3}},
		{"no usage", true, false, anthropic.Usage{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newAnthropicClient(t, Options{NoUsage: tt.noUsage})
			params := anthropicParams(3)
			if tt.tool {
				params.Tools = []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{Name: "say",
					InputSchema: anthropic.ToolInputSchemaParam{Properties: map[string]any{"words": map[string]any{"type": "string"}}}}}}
				params.ToolChoice = anthropic.ToolChoiceUnionParam{OfAny: &anthropic.ToolChoiceAnyParam{}}
			}
			msg, err := c.Messages.New(testContext(t), params)
			if err != nil {
				t.Fatalf("messages: %v", err)
			}
			if msg.Model != "claude-sonnet-4-5" || !strings.HasPrefix(msg.ID, "msg_mock") || len(msg.Content) != 1 {
				t.Fatalf("got model %q id %q %d blocks, want claude-sonnet-4-5, msg_mock..., 1 block", msg.Model, msg.ID, len(msg.Content))
			}
			b := msg.Content[0]
			if tt.tool {
				if b.Type != "tool_use" || b.Name != "say" || string(b.Input) != `{"words":"w1 w2 w3"}` || msg.StopReason != "tool_use" {
					t.Errorf("got %s block %q input %s stop %q, want tool_use say {\"words\":\"w1 w2 w3\"} tool_use", b.Type, b.Name, b.Input, msg.StopReason)
				}
			} else if b.Type != "text" || b.Text != "w1 w2 w3" || msg.StopReason != "end_turn" {
				t.Errorf("got %s block %q stop %q, want text \"w1 w2 w3\" end_turn", b.Type, b.Text, msg.StopReason)
			}
			if got := usageFigures(msg.Usage); got != usageFigures(tt.wantUsage) {
				t.Errorf("got usage %v, want %v", got, usageFigures(tt.wantUsage))
			}
		})
	}
}

// usageFigures returns the four token figures of a usage.
func usageFigures(u anthropic.Usage) [4]int64 {
	return [4]int64{u.InputTokens, u.CacheCreationInputTokens, u.CacheReadInputTokens, u.OutputTokens}
}

func TestAnthropicClientStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		noUsage   bool
		tool      bool
		wantText  string
		wantInput string
		wantUsage [4]int64
	}{
		{"text", false, false, "w1 w2 w3 w4", "", [4]int64{5, 0, 0, 4}},
		{"tool use", false, true, "", `{"words": "w1 w2 w3 w4"}`, [4]int64{5, 0, 0, 4}},
		{"no usage", true, false, "w1 w2 w3 w4", "", [4]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newAnthropicClient(t, Options{NoUsage: tt.noUsage})
			params := anthropicParams(4)
			if tt.tool {
				params.Tools = []anthropic.ToolUnionParam{{OfTool: &anthropic.ToolParam{Name: "say",
					InputSchema: anthropic.ToolInputSchemaParam{}}}}
				params.ToolChoice = anthropic.ToolChoiceUnionParam{OfTool: &anthropic.ToolChoiceToolParam{Name: "say"}}
			}
			stream := c.Messages.NewStreaming(testContext(t), params)
			var msg anthropic.Message
			events := 0
			for stream.Next() {
				events++
				if err := msg.Accumulate(stream.Current()); err != nil {
					t.Fatalf("accumulate: %v", err)
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if err := stream.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			// start, block start, 4 deltas (+ closing JSON), block stop,
			// delta, stop; the SDK does not surface the ping.
			wantEvents := 9
			if tt.tool {
				wantEvents = 10
			}
			if events != wantEvents {
				t.Errorf("got %d events, want %d", events, wantEvents)
			}
			if len(msg.Content) != 1 {
				t.Fatalf("got %d blocks, want 1", len(msg.Content))
			}
			if tt.tool {
				if b := msg.Content[0]; b.Type != "tool_use" || string(b.Input) != tt.wantInput {
					t.Errorf("got %s block input %s, want tool_use %s", b.Type, b.Input, tt.wantInput)
				}
			} else if b := msg.Content[0]; b.Text != tt.wantText {
				t.Errorf("got text %q, want %q", b.Text, tt.wantText)
			}
			if got := usageFigures(msg.Usage); got != tt.wantUsage {
				t.Errorf("got usage %v, want %v", got, tt.wantUsage)
			}
		})
	}
}

func TestAnthropicClientCountTokens(t *testing.T) {
	t.Parallel()
	c := newAnthropicClient(t, Options{NoUsage: true})
	got, err := c.Messages.CountTokens(testContext(t), anthropic.MessageCountTokensParams{
		Model:  "claude-sonnet-4-5",
		System: anthropic.MessageCountTokensParamsSystemUnion{OfTextBlockArray: []anthropic.TextBlockParam{{Text: "one two"}}},
		Messages: []anthropic.MessageParam{
			anthropic.NewUserMessage(anthropic.NewTextBlock("three four five")),
			anthropic.NewAssistantMessage(anthropic.NewToolUseBlock("toolu_1", map[string]any{"a": "not counted"}, "f")),
			anthropic.NewUserMessage(anthropic.NewToolResultBlock("toolu_1", "six seven", false)),
		},
	})
	if err != nil {
		t.Fatalf("count tokens: %v", err)
	}
	if got.InputTokens != 7 {
		t.Errorf("got %d input tokens, want 7", got.InputTokens)
	}
}

func TestAnthropicClientError(t *testing.T) {
	t.Parallel()
	c := newAnthropicClient(t, Options{})
	_, err := c.Messages.New(testContext(t), anthropic.MessageNewParams{Model: "claude-x", MaxTokens: 0,
		Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("x"))}})
	var apiErr *anthropic.Error
	if !errors.As(err, &apiErr) {
		t.Fatalf("got error %v, want *anthropic.Error", err)
	}
	if apiErr.StatusCode != http.StatusBadRequest || !strings.Contains(apiErr.Error(), "invalid_request_error") {
		t.Errorf("got %d %v, want 400 invalid_request_error", apiErr.StatusCode, apiErr)
	}
}

func TestAnthropicWire(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	tests := []struct {
		name, path, body string
		noVersion        bool
		method           string
		status           int
		want             string // the exact body, or a substring of an error body
	}{
		{"messages", "/v1/messages", `{"model":"c","max_tokens":2,"messages":[{"role":"user","content":"a b c"}]}`, false, "POST", 200,
			`"content":[{"type":"text","text":"w1 w2"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":2}}`},
		{"count tokens without max_tokens", "/v1/messages/count_tokens", `{"model":"c","system":"x y","messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"image","source":{}}]}]}`, false, "POST", 200,
			`{"input_tokens":3}`},
		{"missing max_tokens", "/v1/messages", `{"model":"c","messages":[]}`, false, "POST", 400,
			`{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`},
		{"missing version", "/v1/messages", `{"model":"c","max_tokens":1,"messages":[]}`, true, "POST", 400,
			`anthropic-version: header is required`},
		{"bad json", "/v1/messages", `{"model":`, false, "POST", 400, `"type":"invalid_request_error"`},
		{"missing model", "/v1/messages", `{"max_tokens":1,"messages":[]}`, false, "POST", 400, `model: Field required`},
		{"bad content", "/v1/messages", `{"model":"c","max_tokens":1,"messages":[{"role":"user","content":5}]}`, false, "POST", 400, `"type":"invalid_request_error"`},
		{"wrong method", "/v1/messages", ``, false, "GET", 405, `{"type":"error","error":{"type":"invalid_request_error"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(tt.method, srv.URL+tt.path, strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.noVersion {
				req.Header.Set("anthropic-version", "2023-06-01")
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body bytes.Buffer
			if _, err := body.ReadFrom(resp.Body); err != nil {
				t.Fatal(err)
			}
			got := strings.TrimSpace(body.String())
			if resp.StatusCode != tt.status || !strings.Contains(got, tt.want) {
				t.Errorf("got %d %s, want %d containing %s", resp.StatusCode, got, tt.status, tt.want)
			}
			if !json.Valid([]byte(got)) {
				t.Errorf("got invalid JSON %s", got)
			}
		})
	}
}

func TestAnthropicStreamWire(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/v1/messages",
		strings.NewReader(`{"model":"c","max_tokens":2,"stream":true,"messages":[{"role":"user","content":"a b c"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("anthropic-version", "2023-06-01")
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body bytes.Buffer
	if _, err := body.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/event-stream") {
		t.Errorf("got content type %q, want text/event-stream", ct)
	}
	evs := parseSSE(t, body.Bytes())
	var names []string
	for _, ev := range evs {
		names = append(names, ev.name)
		var v struct {
			Type string `json:"type"`
		}
		mustJSON(t, ev.data, &v)
		if v.Type != ev.name {
			t.Errorf("got data type %q in event %q, want the same", v.Type, ev.name)
		}
	}
	want := "message_start content_block_start ping content_block_delta content_block_delta content_block_stop message_delta message_stop"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("got events %s, want %s", got, want)
	}
	if !strings.Contains(evs[0].data, `"usage":{"input_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}`) {
		t.Errorf("got message_start %s, want input 3 output 1", evs[0].data)
	}
	if !strings.Contains(evs[6].data, `"usage":{"output_tokens":2}`) {
		t.Errorf("got message_delta %s, want output_tokens 2", evs[6].data)
	}
}

func TestAzurePaths(t *testing.T) {
	t.Parallel()
	srv := newServer(t, Options{})
	tests := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"chat", "/openai/deployments/prod-4o/chat/completions?api-version=2024-10-21",
			`{"messages":[{"role":"user","content":"a b"}],"max_tokens":2}`, 200, `"model":"prod-4o"`},
		{"model from deployment wins", "/openai/deployments/dep/chat/completions?api-version=v",
			`{"model":"other","messages":[],"max_tokens":1}`, 200, `"model":"dep"`},
		{"embeddings", "/openai/deployments/emb/embeddings?api-version=v", `{"input":"x y"}`, 200, `"model":"emb"`},
		{"completions", "/openai/deployments/c/completions?api-version=v", `{"prompt":"x","max_tokens":1}`, 200, `"text":"w1"`},
		{"missing api-version", "/openai/deployments/d/chat/completions", `{"messages":[]}`, 400, `api-version`},
		{"unknown operation", "/openai/deployments/d/files?api-version=v", `{}`, 404, `unknown_url`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := do(t, srv, http.MethodPost, tt.path, tt.body)
			if r.status != tt.status || !strings.Contains(string(r.body), tt.want) {
				t.Errorf("got %d %s, want %d containing %s", r.status, r.body, tt.status, tt.want)
			}
		})
	}
}

// TestAnthropicClientModels lists the models in Anthropic's shape through
// the official client (which sends anthropic-version).
func TestAnthropicClientModels(t *testing.T) {
	t.Parallel()
	c := newAnthropicClient(t, Options{})
	page, err := c.Models.List(t.Context(), anthropic.ModelListParams{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range page.Data {
		got = append(got, m.ID)
		if m.CreatedAt.Unix() != modelsCreated {
			t.Errorf("%s created_at: got %v, want unix %d", m.ID, m.CreatedAt, modelsCreated)
		}
	}
	if want := ClaudeModels(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("models: got %v, want %v", got, want)
	}
}
