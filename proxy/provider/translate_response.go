package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrUpstreamBody is returned for an upstream body that cannot be
// translated (not JSON, nested too deep, or not a Messages response); the
// proxy answers 502.
var ErrUpstreamBody = errors.New("malformed Messages API response")

// msgResponse is the part of a Messages API response the translation reads.
type msgResponse struct {
	ID         string            `json:"id"`
	Type       string            `json:"type"`
	Model      string            `json:"model"`
	Content    []msgContentBlock `json:"content"`
	StopReason *string           `json:"stop_reason"`
}

type msgContentBlock struct {
	Type  string          `json:"type"`
	Text  string          `json:"text"`
	ID    string          `json:"id"`
	Name  string          `json:"name"`
	Input json.RawMessage `json:"input"`
}

// chatCompletion is an OpenAI chat.completion as the translation writes it.
type chatCompletion struct {
	ID      string       `json:"id"`
	Object  string       `json:"object"`
	Created int64        `json:"created"`
	Model   string       `json:"model"`
	Choices []chatChoice `json:"choices"`
	Usage   *chatUsage   `json:"usage,omitempty"`
}

type chatChoice struct {
	Index        int             `json:"index"`
	Message      chatMessage     `json:"message"`
	Logprobs     json.RawMessage `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

type chatMessage struct {
	Role      string         `json:"role"`
	Content   *string        `json:"content"`
	Refusal   *string        `json:"refusal"`
	ToolCalls []chatToolCall `json:"tool_calls,omitempty"`
}

type chatToolCall struct {
	ID       string           `json:"id"`
	Type     string           `json:"type"`
	Function chatFunctionCall `json:"function"`
}

type chatFunctionCall struct {
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

type chatUsage struct {
	PromptTokens        int64             `json:"prompt_tokens"`
	CompletionTokens    int64             `json:"completion_tokens"`
	TotalTokens         int64             `json:"total_tokens"`
	PromptTokensDetails chatPromptDetails `json:"prompt_tokens_details"`
}

type chatPromptDetails struct {
	CachedTokens int64 `json:"cached_tokens"`
}

var jsonNull = json.RawMessage("null")

// FinishReason maps an Anthropic stop_reason to an OpenAI finish_reason:
// end_turn, stop_sequence and pause_turn → stop; max_tokens and
// model_context_window_exceeded → length; tool_use → tool_calls; refusal →
// content_filter. Unknown reasons map to stop.
func FinishReason(stopReason string) string {
	switch stopReason {
	case "max_tokens", "model_context_window_exceeded":
		return "length"
	case "tool_use":
		return "tool_calls"
	case "refusal":
		return "content_filter"
	}
	return "stop"
}

// TranslateMessagesResponse translates a non-streaming Messages API
// response body into an OpenAI chat.completion body. created is the
// completion's "created" time (Unix seconds; the Messages API has none).
// The id and model are Anthropic's; the text blocks are joined into
// message.content (null when there is only tool use), tool_use blocks become
// tool_calls with their input as JSON arguments, and usage is
// prompt = input + cache creation + cache read tokens, with the cache reads
// as prompt_tokens_details.cached_tokens (no usage object when the upstream
// sent none). Thinking and server-tool blocks have no chat completions
// equivalent and are left out. It is safe for concurrent use.
func TranslateMessagesResponse(body []byte, created int64) ([]byte, error) {
	if !depthOK(body, MaxDepth) {
		return nil, fmt.Errorf("%w: nested deeper than %d levels", ErrUpstreamBody, MaxDepth)
	}
	var in msgResponse
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUpstreamBody, err)
	}
	if in.Type != "message" {
		return nil, fmt.Errorf("%w: type is %q, want message", ErrUpstreamBody, in.Type)
	}
	out := chatCompletion{ID: in.ID, Object: "chat.completion", Created: created, Model: in.Model,
		Choices: []chatChoice{{Message: chatMessage{Role: "assistant"}, Logprobs: jsonNull}}}
	msg := &out.Choices[0].Message
	var text strings.Builder
	hasText := false
	for _, b := range in.Content {
		switch b.Type {
		case "text":
			text.WriteString(b.Text)
			hasText = true
		case "tool_use":
			args, err := compactObject(b.Input)
			if err != nil {
				return nil, fmt.Errorf("%w: tool_use input: %v", ErrUpstreamBody, err)
			}
			msg.ToolCalls = append(msg.ToolCalls, chatToolCall{ID: b.ID, Type: "function",
				Function: chatFunctionCall{Name: b.Name, Arguments: args}})
		}
	}
	if hasText || len(msg.ToolCalls) == 0 {
		s := text.String()
		msg.Content = &s
	}
	if in.StopReason != nil {
		fr := FinishReason(*in.StopReason)
		out.Choices[0].FinishReason = &fr
	}
	if u, ok := AnthropicUsage(body); ok {
		out.Usage = &chatUsage{PromptTokens: u.Prompt, CompletionTokens: u.Completion, TotalTokens: u.Total(),
			PromptTokensDetails: chatPromptDetails{CachedTokens: u.CacheRead}}
	}
	return marshal(&out)
}

// compactObject returns a tool input as compact JSON text; a missing input
// is {}.
func compactObject(raw json.RawMessage) (string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return "{}", nil
	}
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		return "", err
	}
	return b.String(), nil
}

// marshal encodes v without HTML escaping and without a trailing newline.
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, fmt.Errorf("encode: %w", err)
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
