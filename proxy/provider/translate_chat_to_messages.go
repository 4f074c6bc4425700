package provider

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// ErrUpstreamChat is returned for an upstream body that cannot be
// translated into a Messages response (not JSON, nested too deep, not a
// chat completion, or a tool call whose arguments are not a JSON object);
// the proxy answers 502.
var ErrUpstreamChat = errors.New("malformed chat completions response")

// StopReason maps an OpenAI finish_reason to an Anthropic stop_reason:
// stop → end_turn (stop_sequence when the upstream names the stop string
// that ended the answer, as vLLM does in the choice's stop_reason);
// length → max_tokens; tool_calls and function_call → tool_use;
// content_filter → refusal. Anything else (and no reason) is end_turn.
func StopReason(finishReason string, stopString gjson.Result) (reason string, sequence gjson.Result) {
	switch finishReason {
	case "length":
		return "max_tokens", gjson.Result{}
	case "tool_calls", "function_call":
		return "tool_use", gjson.Result{}
	case "content_filter":
		return "refusal", gjson.Result{}
	case "stop":
		if stopString.Type == gjson.String && stopString.Str != "" {
			return "stop_sequence", stopString
		}
	}
	return "end_turn", gjson.Result{}
}

// ChatUsage reads the usage object of a chat completion or chunk: prompt
// tokens (cached ones included, as OpenAI counts them), completion tokens
// and prompt_tokens_details.cached_tokens, each clamped to [0, MaxTokens]
// and cached to at most the prompt. ok is false when v is not an object.
func ChatUsage(v gjson.Result) (u Usage, ok bool) {
	if !v.IsObject() {
		return Usage{}, false
	}
	u.Prompt = number(v.Get("prompt_tokens"))
	u.Completion = number(v.Get("completion_tokens"))
	u.CacheRead = min(number(v.Get("prompt_tokens_details.cached_tokens")), u.Prompt)
	return u, true
}

// appendMessagesUsage appends Anthropic's usage object for u: input_tokens
// without the cache reads, which Anthropic counts apart.
func appendMessagesUsage(b []byte, u Usage) []byte {
	b = append(b, `{"input_tokens":`...)
	b = strconv.AppendInt(b, u.Prompt-u.CacheRead, 10)
	b = append(b, `,"cache_creation_input_tokens":0,"cache_read_input_tokens":`...)
	b = strconv.AppendInt(b, u.CacheRead, 10)
	b = append(b, `,"output_tokens":`...)
	b = strconv.AppendInt(b, u.Completion, 10)
	return append(b, '}')
}

// TranslateChatResponse translates a non-streaming chat completion body
// into a Messages API response body. The first choice's content becomes a
// text block, its refusal a text block (stop_reason refusal), its tool
// calls tool_use blocks with their arguments parsed as the input object;
// finish_reason maps by StopReason; usage maps to input_tokens (prompt
// minus cached), cache_read_input_tokens (cached) and output_tokens, or is
// fallback when the upstream sent none (the gateway's own count). The id
// and model are the upstream's. It is safe for concurrent use.
func TranslateChatResponse(body []byte, fallback Usage) ([]byte, error) {
	if !depthOK(body, MaxDepth) {
		return nil, fmt.Errorf("%w: nested deeper than %d levels", ErrUpstreamChat, MaxDepth)
	}
	js := unsafeString(body)
	if !gjson.Valid(js) {
		return nil, fmt.Errorf("%w: not JSON", ErrUpstreamChat)
	}
	root := gjson.Parse(js)
	choice := root.Get("choices.0")
	if !root.IsObject() || !choice.IsObject() {
		return nil, fmt.Errorf("%w: no choices", ErrUpstreamChat)
	}
	msg := choice.Get("message")
	if !msg.IsObject() {
		return nil, fmt.Errorf("%w: choice without a message", ErrUpstreamChat)
	}
	b := make([]byte, 0, len(body)+128)
	b = append(b, `{"id":`...)
	b = appendString(b, root.Get("id"))
	b = append(b, `,"type":"message","role":"assistant","model":`...)
	b = appendString(b, root.Get("model"))
	b = append(b, `,"content":[`...)
	n := 0
	block := func() {
		if n > 0 {
			b = append(b, ',')
		}
		n++
	}
	switch c := msg.Get("content"); {
	case c.Type == gjson.String:
		if c.Str != "" {
			block()
			b = append(b, `{"type":"text","text":`...)
			b = appendString(b, c)
			b = append(b, '}')
		}
	case c.Exists() && c.Type != gjson.Null:
		return nil, fmt.Errorf("%w: message content is not a string", ErrUpstreamChat)
	}
	refused := false
	if r := msg.Get("refusal"); r.Type == gjson.String && r.Str != "" {
		refused = true
		block()
		b = append(b, `{"type":"text","text":`...)
		b = appendString(b, r)
		b = append(b, '}')
	}
	var err error
	msg.Get("tool_calls").ForEach(func(_, tc gjson.Result) bool {
		var input string
		if input, err = toolInput(tc); err != nil {
			return false
		}
		block()
		b = append(b, `{"type":"tool_use","id":`...)
		b = appendString(b, tc.Get("id"))
		b = append(b, `,"name":`...)
		b = appendString(b, tc.Get("function.name"))
		b = append(b, `,"input":`...)
		b = append(b, input...)
		b = append(b, '}')
		return true
	})
	if err != nil {
		return nil, err
	}
	reason, seq := StopReason(choice.Get("finish_reason").Str, choice.Get("stop_reason"))
	if refused {
		reason, seq = "refusal", gjson.Result{}
	}
	b = append(b, `],"stop_reason":"`...)
	b = append(b, reason...)
	b = append(b, `","stop_sequence":`...)
	if seq.Exists() {
		b = appendString(b, seq)
	} else {
		b = append(b, "null"...)
	}
	u, ok := ChatUsage(root.Get("usage"))
	if !ok {
		u = Usage{Prompt: clamp(fallback.Prompt), Completion: clamp(fallback.Completion)}
	}
	b = append(b, `,"usage":`...)
	b = appendMessagesUsage(b, u)
	return append(b, '}'), nil
}

// toolInput returns a tool call's arguments as the input object: compact
// JSON; empty arguments are {}.
func toolInput(tc gjson.Result) (string, error) {
	if t := tc.Get("type"); t.Exists() && t.Str != "function" {
		return "", fmt.Errorf("%w: tool call of type %s", ErrUpstreamChat, truncate(t.Raw))
	}
	args := tc.Get("function.arguments")
	if args.Type != gjson.String {
		return "", fmt.Errorf("%w: tool call arguments are not a string", ErrUpstreamChat)
	}
	a := strings.TrimSpace(args.Str)
	if a == "" {
		return "{}", nil
	}
	if !depthOK(unsafeBytes(a), MaxDepth) || !gjson.Valid(a) || !gjson.Parse(a).IsObject() {
		return "", fmt.Errorf("%w: tool call arguments are not a JSON object", ErrUpstreamChat)
	}
	var out bytes.Buffer
	out.Grow(len(a))
	if err := json.Compact(&out, unsafeBytes(a)); err != nil {
		return "", fmt.Errorf("%w: tool call arguments: %v", ErrUpstreamChat, err)
	}
	return out.String(), nil
}
