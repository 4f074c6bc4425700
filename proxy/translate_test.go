package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
)

// TestTranslationOpenAIClient: the official OpenAI client calls a Claude
// model unchanged; the gateway translates to the Messages API and back.
func TestTranslationOpenAIClient(t *testing.T) {
	pe := newProviderEnv(t, nil)
	client := pe.openaiClient()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params := openai.ChatCompletionNewParams{
		Model:     "claude-sonnet-4-5",
		MaxTokens: openai.Int(4),
		Messages: []openai.ChatCompletionMessageParamUnion{
			openai.SystemMessage("be brief"),
			openai.UserMessage("hello there gateway"),
		},
	}

	t.Run("chat", func(t *testing.T) {
		c, err := client.Chat.Completions.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Choices[0].Message.Content; got != "w1 w2 w3 w4" {
			t.Errorf("content: got %q, want %q", got, "w1 w2 w3 w4")
		}
		if got := c.Choices[0].FinishReason; got != "stop" {
			t.Errorf("finish_reason: got %q, want stop", got)
		}
		if c.Usage.PromptTokens != 5 || c.Usage.CompletionTokens != 4 || c.Usage.TotalTokens != 9 {
			t.Errorf("usage: got %+v, want 5/4/9", c.Usage)
		}
		if c.Model != "claude-sonnet-4-5" {
			t.Errorf("model: got %q", c.Model)
		}
		pe.idle(t)
		if p, q := pe.tokens("ann", "claude-sonnet-4-5"); p != 5 || q != 4 {
			t.Errorf("metered: got %v/%v, want 5/4", p, q)
		}
		head := pe.claude.last(t)
		if head.URL.Path != "/v1/messages" || head.Header.Get("X-Api-Key") != "sk-ant-upstream" ||
			head.Header.Get("Anthropic-Version") != "2023-06-01" || head.Header.Get("Authorization") != "" {
			t.Errorf("upstream request: got %s x-api-key %q anthropic-version %q authorization %q",
				head.URL.Path, head.Header.Get("X-Api-Key"), head.Header.Get("Anthropic-Version"), head.Header.Get("Authorization"))
		}
	})

	t.Run("stream", func(t *testing.T) {
		p := params
		p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		s := client.Chat.Completions.NewStreaming(ctx, p)
		var acc openai.ChatCompletionAccumulator
		chunks := 0
		for s.Next() {
			acc.AddChunk(s.Current())
			chunks++
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if got := acc.Choices[0].Message.Content; got != "w1 w2 w3 w4" {
			t.Errorf("content: got %q", got)
		}
		if got := acc.Choices[0].FinishReason; got != "stop" {
			t.Errorf("finish_reason: got %q, want stop", got)
		}
		if acc.Usage.PromptTokens != 5 || acc.Usage.CompletionTokens != 4 {
			t.Errorf("usage: got %+v, want 5/4", acc.Usage)
		}
		if chunks < 6 {
			t.Errorf("chunks: got %d, want one per word and more", chunks)
		}
		pe.idle(t)
		if p, q := pe.tokens("ann", "claude-sonnet-4-5"); p != 10 || q != 8 {
			t.Errorf("metered: got %v/%v, want 10/8", p, q)
		}
	})

	t.Run("stream without usage", func(t *testing.T) {
		s := client.Chat.Completions.NewStreaming(ctx, params)
		usageChunks := 0
		text := ""
		for s.Next() {
			ch := s.Current()
			if ch.Usage.TotalTokens > 0 {
				usageChunks++
			}
			if len(ch.Choices) > 0 {
				text += ch.Choices[0].Delta.Content
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if text != "w1 w2 w3 w4" || usageChunks != 0 {
			t.Errorf("got text %q and %d usage chunks, want w1 w2 w3 w4 and none", text, usageChunks)
		}
		pe.idle(t)
		if p, q := pe.tokens("ann", "claude-sonnet-4-5"); p != 15 || q != 12 {
			t.Errorf("metered: got %v/%v, want 15/12 (usage read though the client did not ask)", p, q)
		}
	})

	tool := openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{
		Name:        "lookup",
		Description: openai.String("look words up"),
		Parameters:  openai.FunctionParameters{"type": "object", "properties": map[string]any{"words": map[string]any{"type": "string"}}},
	})
	toolParams := params
	toolParams.Tools = []openai.ChatCompletionToolUnionParam{tool}
	toolParams.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{
		OfFunctionToolChoice: &openai.ChatCompletionNamedToolChoiceParam{Function: openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "lookup"}},
	}

	t.Run("tool call round trip", func(t *testing.T) {
		c, err := client.Chat.Completions.New(ctx, toolParams)
		if err != nil {
			t.Fatal(err)
		}
		msg := c.Choices[0].Message
		if c.Choices[0].FinishReason != "tool_calls" || len(msg.ToolCalls) != 1 {
			t.Fatalf("got finish_reason %q and %d tool calls, want tool_calls and 1", c.Choices[0].FinishReason, len(msg.ToolCalls))
		}
		call := msg.ToolCalls[0]
		var args struct{ Words string }
		if err := json.Unmarshal([]byte(call.Function.Arguments), &args); err != nil || call.Function.Name != "lookup" || args.Words != "w1 w2 w3 w4" {
			t.Fatalf("tool call: got %s(%s) %v", call.Function.Name, call.Function.Arguments, err)
		}
		next := params
		next.Messages = append(append([]openai.ChatCompletionMessageParamUnion{}, params.Messages...),
			msg.ToParam(), openai.ToolMessage("found five more words here", call.ID))
		next.MaxTokens = openai.Int(2)
		c2, err := client.Chat.Completions.New(ctx, next)
		if err != nil {
			t.Fatal(err)
		}
		if got := c2.Choices[0].Message.Content; got != "w1 w2" {
			t.Errorf("answer after the tool result: got %q, want w1 w2", got)
		}
		// Prompt: "be brief" + "hello there gateway" + the tool result's 5 words.
		if c2.Usage.PromptTokens != 10 {
			t.Errorf("prompt tokens with the tool result: got %d, want 10", c2.Usage.PromptTokens)
		}
	})

	t.Run("tool call stream", func(t *testing.T) {
		s := client.Chat.Completions.NewStreaming(ctx, toolParams)
		var acc openai.ChatCompletionAccumulator
		for s.Next() {
			acc.AddChunk(s.Current())
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		calls := acc.Choices[0].Message.ToolCalls
		if acc.Choices[0].FinishReason != "tool_calls" || len(calls) != 1 || calls[0].Function.Name != "lookup" {
			t.Fatalf("got finish_reason %q, calls %+v", acc.Choices[0].FinishReason, calls)
		}
		var args struct{ Words string }
		if err := json.Unmarshal([]byte(calls[0].Function.Arguments), &args); err != nil || args.Words != "w1 w2 w3 w4" {
			t.Errorf("streamed arguments: got %q (%v)", calls[0].Function.Arguments, err)
		}
	})

	t.Run("untranslatable", func(t *testing.T) {
		p := params
		p.N = openai.Int(3)
		before := pe.claude.count()
		_, err := client.Chat.Completions.New(ctx, p)
		var oe *openai.Error
		if !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest {
			t.Fatalf("error: got %v, want 400", err)
		}
		if !strings.Contains(oe.Message, "n") || oe.Type != "invalid_request_error" {
			t.Errorf("error: got %q (%s), want one naming n", oe.Message, oe.Type)
		}
		if pe.claude.count() != before {
			t.Error("an untranslatable request reached the upstream")
		}
	})

	t.Run("upstream error", func(t *testing.T) {
		p := params
		p.MaxTokens = openai.Int(mock.MaxCompletionWords + 1) // the mock refuses it, as Anthropic would
		_, err := client.Chat.Completions.New(ctx, p)
		var oe *openai.Error
		if !errors.As(err, &oe) || oe.StatusCode != http.StatusBadRequest {
			t.Fatalf("error: got %v, want the upstream's 400", err)
		}
		if oe.Type != "invalid_request_error" || !strings.Contains(oe.Message, "max_tokens") {
			t.Errorf("error in OpenAI's shape: got type %q message %q", oe.Type, oe.Message)
		}
	})
}

// TestAzureUpstream: chat for a model goes to its Azure deployment with the
// configured api-version and the key in api-key.
func TestAzureUpstream(t *testing.T) {
	az := newMockUpstream(t, mock.Options{})
	e := newEnv(t, Config{Upstreams: []Upstream{{Name: "az", URL: az.srv.URL, Provider: ProviderAzure, APIKey: "az-key",
		APIVersion: "2024-10-21", Deployments: map[string]string{"gpt-4o": "prod-4o"}, Timeout: time.Minute}}}, nil)
	resp, body := e.post(t, routeChat, `{"model":"gpt-4o","max_tokens":3,"messages":[{"role":"user","content":"a b"}]}`,
		"user", "zed", "Authorization", "Bearer sk-client")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	head := az.last(t)
	if head.URL.Path != "/openai/deployments/prod-4o/chat/completions" || head.URL.Query().Get("api-version") != "2024-10-21" {
		t.Errorf("upstream URL: got %s", head.URL)
	}
	if head.Header.Get("Api-Key") != "az-key" || head.Header.Get("Authorization") != "" {
		t.Errorf("credentials: got api-key %q authorization %q, want az-key and none", head.Header.Get("Api-Key"), head.Header.Get("Authorization"))
	}
	if p, c := e.tokens("zed", "gpt-4o"); p != 2 || c != 3 {
		t.Errorf("metered: got %v/%v, want 2/3", p, c)
	}
	// A model without a mapping is its own deployment.
	resp, body = e.post(t, routeChat, `{"model":"o3","max_tokens":1,"messages":[{"role":"user","content":"a"}]}`, "user", "zed")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if got := az.last(t).URL.Path; got != "/openai/deployments/o3/chat/completions" {
		t.Errorf("unmapped model: got %s", got)
	}
}
