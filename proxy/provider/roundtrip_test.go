package provider

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
)

// The round trip: the official OpenAI client → a translating handler (the
// per-request steps the proxy takes, with net/http standing in for the
// proxy's HTTP stack) → mockllm's Messages API → translated back.

// translatingHandler serves OpenAI chat completions from the Messages API
// at upstream.
func translatingHandler(t *testing.T, upstream string, client *http.Client) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		if err != nil {
			t.Errorf("read request: %v", err)
			return
		}
		out, info, err := TranslateChatRequest(body)
		var re *RequestError
		if errors.As(err, &re) {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write(OpenAIErrorBody("invalid_request_error", "", re.Param, re.Error()))
			return
		}
		if err != nil {
			t.Errorf("translate request: %v", err)
			return
		}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodPost, upstream+"/v1/messages", bytes.NewReader(out))
		if err != nil {
			t.Errorf("new request: %v", err)
			return
		}
		req.Header.Set(AnthropicVersionHeader, AnthropicVersion)
		req.Header.Set(AnthropicKeyHeader, "sk-ant-upstream")
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("upstream: %v", err)
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b, _ := io.ReadAll(resp.Body)
			w.WriteHeader(resp.StatusCode)
			_, _ = w.Write(AnthropicToOpenAIError(resp.StatusCode, b))
			return
		}
		if !info.Stream {
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Errorf("read upstream: %v", err)
				return
			}
			chat, err := TranslateMessagesResponse(b, 1700000000)
			if err != nil {
				t.Errorf("translate response: %v", err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(chat)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fl := http.NewResponseController(w)
		s := NewChatStream(w, ChatStreamOptions{IncludeUsage: info.IncludeUsage, Created: 1700000000})
		for _, ev := range readSSEStream(t, resp.Body) {
			if err := s.Event(ev.name, []byte(ev.data)); err != nil {
				return
			}
			_ = fl.Flush()
		}
		if !s.Done() {
			_ = s.Fail("api_error", "upstream stream broke off")
		}
	})
}

// readSSEStream reads a whole event stream.
func readSSEStream(t *testing.T, r io.Reader) []sseEvent {
	b, err := io.ReadAll(bufio.NewReader(r))
	if err != nil {
		t.Errorf("read stream: %v", err)
	}
	return readSSE(t, b)
}

// newRoundTrip starts mockllm and the translating handler and returns an
// OpenAI client for it.
func newRoundTrip(t *testing.T, opts mock.Options) openai.Client {
	t.Helper()
	up := httptest.NewServer(mock.NewHandler(opts))
	t.Cleanup(up.Close)
	gw := httptest.NewServer(translatingHandler(t, up.URL, up.Client()))
	t.Cleanup(gw.Close)
	return openai.NewClient(option.WithBaseURL(gw.URL+"/v1/"), option.WithAPIKey("sk-test"),
		option.WithMaxRetries(0), option.WithHTTPClient(gw.Client()))
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestRoundTripChat(t *testing.T) {
	t.Parallel()
	tool := openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "say",
		Parameters: openai.FunctionParameters{"type": "object", "properties": map[string]any{"words": map[string]any{"type": "string"}}}})
	tests := []struct {
		name       string
		noUsage    bool
		params     openai.ChatCompletionNewParams
		wantText   string
		wantArgs   string
		wantFinish string
		wantUsage  [3]int64
	}{
		{"text", false, openai.ChatCompletionNewParams{
			Model:     "claude-sonnet-4-5",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be brief"), openai.UserMessage("say three words")},
			MaxTokens: openai.Int(3),
		}, "w1 w2 w3", "", "stop", [3]int64{5, 3, 8}},
		{"tool call", false, openai.ChatCompletionNewParams{
			Model:               "claude-sonnet-4-5",
			Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("call it")},
			MaxCompletionTokens: openai.Int(2),
			Tools:               []openai.ChatCompletionToolUnionParam{tool},
			ToolChoice:          openai.ToolChoiceOptionFunctionToolChoice(openai.ChatCompletionNamedToolChoiceFunctionParam{Name: "say"}),
		}, "", `{"words":"w1 w2"}`, "tool_calls", [3]int64{2, 2, 4}},
		{"no usage", true, openai.ChatCompletionNewParams{
			Model:     "claude-haiku-4-5",
			Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")},
			MaxTokens: openai.Int(1),
		}, "w1", "", "stop", [3]int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newRoundTrip(t, mock.Options{NoUsage: tt.noUsage})
			got, err := c.Chat.Completions.New(testContext(t), tt.params)
			if err != nil {
				t.Fatalf("chat: %v", err)
			}
			if got.Model != tt.params.Model || got.Object != "chat.completion" || len(got.Choices) != 1 {
				t.Fatalf("got model %q object %q %d choices, want %s chat.completion 1", got.Model, got.Object, len(got.Choices), tt.params.Model)
			}
			ch := got.Choices[0]
			if ch.Message.Content != tt.wantText || ch.FinishReason != tt.wantFinish {
				t.Errorf("got content %q finish %q, want %q %q", ch.Message.Content, ch.FinishReason, tt.wantText, tt.wantFinish)
			}
			if tt.wantArgs != "" {
				if len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Arguments != tt.wantArgs ||
					ch.Message.ToolCalls[0].Function.Name != "say" || !strings.HasPrefix(ch.Message.ToolCalls[0].ID, "toolu_") {
					t.Errorf("got tool calls %+v, want one say call with %s", ch.Message.ToolCalls, tt.wantArgs)
				}
			}
			u := got.Usage
			if gotU := [3]int64{u.PromptTokens, u.CompletionTokens, u.TotalTokens}; gotU != tt.wantUsage {
				t.Errorf("got usage %v, want %v", gotU, tt.wantUsage)
			}
		})
	}
}

func TestRoundTripChatStream(t *testing.T) {
	t.Parallel()
	tool := openai.ChatCompletionFunctionTool(openai.FunctionDefinitionParam{Name: "say"})
	tests := []struct {
		name         string
		includeUsage bool
		tool         bool
		wantText     string
		wantArgs     string
		wantFinish   string
		wantUsage    [3]int64
	}{
		{"text with usage", true, false, "w1 w2 w3 w4", "", "stop", [3]int64{4, 4, 8}},
		{"text without include_usage", false, false, "w1 w2 w3 w4", "", "stop", [3]int64{}},
		{"tool call with usage", true, true, "", `{"words": "w1 w2 w3 w4"}`, "tool_calls", [3]int64{4, 4, 8}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newRoundTrip(t, mock.Options{})
			params := openai.ChatCompletionNewParams{
				Model:     "claude-sonnet-4-5",
				Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two three four")},
				MaxTokens: openai.Int(4),
			}
			if tt.includeUsage {
				params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			if tt.tool {
				params.Tools = []openai.ChatCompletionToolUnionParam{tool}
				params.ToolChoice = openai.ChatCompletionToolChoiceOptionUnionParam{OfAuto: openai.String("required")}
			}
			stream := c.Chat.Completions.NewStreaming(testContext(t), params)
			var acc openai.ChatCompletionAccumulator
			chunks, usageChunks := 0, 0
			for stream.Next() {
				ch := stream.Current()
				chunks++
				if len(ch.Choices) == 0 {
					usageChunks++
				}
				if !acc.AddChunk(ch) {
					t.Fatalf("accumulator refused chunk %d: %s", chunks, ch.RawJSON())
				}
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if err := stream.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			wantUsageChunks := 0
			if tt.includeUsage {
				wantUsageChunks = 1
			}
			if usageChunks != wantUsageChunks {
				t.Errorf("got %d usage chunks, want %d", usageChunks, wantUsageChunks)
			}
			if len(acc.Choices) != 1 {
				t.Fatalf("got %d choices, want 1", len(acc.Choices))
			}
			ch := acc.Choices[0]
			if ch.Message.Content != tt.wantText || ch.FinishReason != tt.wantFinish || acc.Model != "claude-sonnet-4-5" {
				t.Errorf("got content %q finish %q model %q, want %q %q claude-sonnet-4-5",
					ch.Message.Content, ch.FinishReason, acc.Model, tt.wantText, tt.wantFinish)
			}
			if tt.tool {
				if len(ch.Message.ToolCalls) != 1 || ch.Message.ToolCalls[0].Function.Arguments != tt.wantArgs ||
					ch.Message.ToolCalls[0].Function.Name != "say" {
					t.Errorf("got tool calls %+v, want one say call with %s", ch.Message.ToolCalls, tt.wantArgs)
				}
			}
			u := acc.Usage
			if got := [3]int64{u.PromptTokens, u.CompletionTokens, u.TotalTokens}; got != tt.wantUsage {
				t.Errorf("got usage %v, want %v", got, tt.wantUsage)
			}
		})
	}
}

func TestRoundTripErrors(t *testing.T) {
	t.Parallel()
	c := newRoundTrip(t, mock.Options{})
	tests := []struct {
		name       string
		params     openai.ChatCompletionNewParams
		wantStatus int
		wantText   string
	}{
		{"untranslatable n", openai.ChatCompletionNewParams{Model: "claude-x", N: openai.Int(2),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("x")}}, 400, "n: value 2"},
		{"upstream refusal", openai.ChatCompletionNewParams{Model: "claude-x",
			Messages: []openai.ChatCompletionMessageParamUnion{{OfUser: &openai.ChatCompletionUserMessageParam{
				Content: openai.ChatCompletionUserMessageParamContentUnion{OfString: openai.String("x")}}}},
			MaxTokens: openai.Int(2_000_000)}, 400, "max_tokens: Input should be between"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := c.Chat.Completions.New(testContext(t), tt.params)
			var apiErr *openai.Error
			if !errors.As(err, &apiErr) {
				t.Fatalf("got error %v, want *openai.Error", err)
			}
			if apiErr.StatusCode != tt.wantStatus || !strings.Contains(apiErr.Message, tt.wantText) {
				t.Errorf("got %d %q, want %d containing %q", apiErr.StatusCode, apiErr.Message, tt.wantStatus, tt.wantText)
			}
		})
	}
}
