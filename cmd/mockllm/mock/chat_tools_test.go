package mock

import (
	"encoding/json"
	"testing"

	"github.com/openai/openai-go/v3"
)

// TestChatToolCall: a chat request that forces a tool gets one call of it
// with arguments {"words": "w1 ... wN"}, plain and streamed, as the
// official client reads them.
func TestChatToolCall(t *testing.T) {
	c := newClient(t, Options{})
	tool := openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "lookup"})
	other := openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "other"})
	for _, tt := range []struct {
		name   string
		choice openai.ChatCompletionToolChoiceOptionUnionParam
		want   string
	}{
		{"named", openai.ChatCompletionToolChoiceOptionUnionParam{OfFunctionToolChoice: &openai.ChatCompletionNamedToolChoiceParam{
			Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "other"}}}, "other"},
		{"required", openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}, "lookup"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			params := openai.ChatCompletionNewParams{
				Model:      "gpt-4o",
				Messages:   []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a b"), openai.ToolMessage("c d e", "call_1")},
				MaxTokens:  openai.Int(3),
				Tools:      []openai.ChatCompletionToolUnionParam{tool, other},
				ToolChoice: tt.choice,
			}
			check := func(what string, calls []openai.ChatCompletionMessageToolCallUnion, finish string) {
				t.Helper()
				if finish != "tool_calls" || len(calls) != 1 || calls[0].Function.Name != tt.want || calls[0].ID == "" {
					t.Fatalf("%s: got finish %q, calls %+v; want one call of %s", what, finish, calls, tt.want)
				}
				var args struct{ Words string }
				if err := json.Unmarshal([]byte(calls[0].Function.Arguments), &args); err != nil || args.Words != "w1 w2 w3" {
					t.Errorf("%s: got arguments %q (%v), want words w1 w2 w3", what, calls[0].Function.Arguments, err)
				}
			}
			got, err := c.Chat.Completions.New(testContext(t), params)
			if err != nil {
				t.Fatal(err)
			}
			check("plain", got.Choices[0].Message.ToolCalls, got.Choices[0].FinishReason)
			if got.Usage.PromptTokens != 5 || got.Usage.CompletionTokens != 3 {
				t.Errorf("usage: got %+v, want 5/3", got.Usage)
			}
			params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			s := c.Chat.Completions.NewStreaming(testContext(t), params)
			var acc openai.ChatCompletionAccumulator
			for s.Next() {
				acc.AddChunk(s.Current())
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			check("stream", acc.Choices[0].Message.ToolCalls, acc.Choices[0].FinishReason)
			if acc.Usage.CompletionTokens != 3 {
				t.Errorf("stream usage: got %+v, want 3 completion tokens", acc.Usage)
			}
		})
	}
}
