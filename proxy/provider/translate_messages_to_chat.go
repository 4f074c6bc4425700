package provider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/tidwall/gjson"
)

// The reverse direction: an Anthropic client (POST /v1/messages) calling a
// model that an OpenAI-compatible (or Azure) upstream serves. The Messages
// request becomes a chat completions request here; the answer comes back
// through TranslateChatResponse and MessagesStream.

// maxStopSequences is the most stop sequences a chat completions request
// takes (OpenAI's limit); more are refused rather than cut.
const maxStopSequences = 4

// MessagesRequest is what the proxy needs to know of a Messages request
// translated to chat completions.
type MessagesRequest struct {
	Model     string
	Stream    bool
	MaxTokens int64 // max_tokens of the client's request
}

// TranslateMessagesRequest translates an Anthropic Messages API request body
// into an OpenAI chat completions request body. Every field is translated,
// accepted because it changes what a request costs or how it is cached
// rather than what the model is asked (cache_control, thinking disabled,
// service_tier auto), or refused with a *RequestError naming it: nothing is
// dropped silently.
//
// The mapping: system (a string or text blocks) becomes the first, system,
// message; user text and image blocks (base64 sources as data: URLs, url
// sources as URLs) become content parts; tool_result blocks become tool
// messages, in their place in the conversation (is_error: true prefixes
// the result with "Error:", as OpenAI has no such flag); assistant text
// becomes content and tool_use blocks tool_calls with their input as JSON
// arguments; tools become function tools (input_schema as parameters);
// tool_choice auto, any, tool and none become auto, required, a named
// function and none, disable_parallel_tool_use parallel_tool_calls: false;
// stop_sequences becomes stop (at most 4); temperature and top_p pass;
// metadata.user_id becomes user; max_tokens becomes max_completion_tokens
// for OpenAI's reasoning models (o1, o3, o4, gpt-5, which refuse
// max_tokens) and max_tokens for every other model (what every
// OpenAI-compatible server takes); stream asks for the usage chunk too
// (stream_options.include_usage), so a stream is metered from the
// upstream's own figures. Refused: top_k, thinking, documents, server
// tools, thinking blocks in the history, images in tool results, and a
// final assistant message (a prefill: chat completions cannot continue a
// partial answer). The body is bounded in depth (MaxDepth) before it is
// parsed. It is safe for concurrent use.
func TranslateMessagesRequest(body []byte) ([]byte, MessagesRequest, error) {
	return translateMessages(body, false)
}

// TranslateCountTokensRequest translates a count_tokens request body (a
// Messages request without max_tokens, which it may not hold) as
// TranslateMessagesRequest does, for the gateway to count the prompt a
// chat completions model would read. It is safe for concurrent use.
func TranslateCountTokensRequest(body []byte) ([]byte, error) {
	out, _, err := translateMessages(body, true)
	return out, err
}

func translateMessages(body []byte, countOnly bool) ([]byte, MessagesRequest, error) {
	var info MessagesRequest
	if !depthOK(body, MaxDepth) {
		return nil, info, reqErr("", "JSON nested deeper than %d levels", MaxDepth)
	}
	js := unsafeString(body)
	if !gjson.Valid(js) {
		return nil, info, reqErr("", "body is not valid JSON")
	}
	root := gjson.Parse(js)
	if !root.IsObject() {
		return nil, info, reqErr("", "body must be a JSON object")
	}
	var t rtranslator
	if err := eachField(root, t.field); err != nil {
		return nil, info, err
	}
	switch {
	case t.out.Model == "":
		return nil, info, reqErr("model", "missing required parameter")
	case !t.haveMessages:
		return nil, info, reqErr("messages", "missing required parameter")
	case t.maxTokens == 0 && !countOnly:
		return nil, info, reqErr("max_tokens", "missing required parameter")
	case t.maxTokens != 0 && countOnly:
		return nil, info, reqErr("max_tokens", "unsupported field: count_tokens takes none")
	}
	if t.lastRole == "assistant" && !countOnly {
		return nil, info, reqErr("messages", "a final assistant message (prefill) cannot be translated: chat completions models do not continue a partial answer")
	}
	if err := t.finishToolChoice(); err != nil {
		return nil, info, err
	}
	if reasoningModel(t.out.Model) {
		t.out.MaxCompletionTokens = t.maxTokens
	} else {
		t.out.MaxTokens = t.maxTokens
	}
	switch len(t.system) {
	case 0:
	case 1:
		t.out.Messages = slices.Insert(t.out.Messages, 0, chatOutMessage{Role: "system", Content: t.system[0].(chatTextPart).Text})
	default:
		t.out.Messages = slices.Insert(t.out.Messages, 0, chatOutMessage{Role: "system", Content: t.system})
	}
	if t.out.Stream {
		t.out.StreamOptions = &chatStreamOptions{IncludeUsage: true}
	}
	info.Model, info.Stream, info.MaxTokens = t.out.Model, t.out.Stream, t.maxTokens

	var buf bytes.Buffer
	buf.Grow(len(body) + 128)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&t.out); err != nil {
		// Only an unrepresentable value can get here; the input was valid.
		return nil, info, fmt.Errorf("encode chat request: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), info, nil
}

// reasoningModel reports whether model is one of OpenAI's reasoning
// models, which take max_completion_tokens and refuse max_tokens.
func reasoningModel(model string) bool {
	for _, p := range [...]string{"o1", "o3", "o4", "gpt-5"} {
		if strings.HasPrefix(model, p) {
			return true
		}
	}
	return false
}

// chatOutRequest is a chat completions request as the reverse translation
// writes it. Strings taken from the client are kept as their raw JSON,
// already validated, so text is copied rather than unescaped and
// re-escaped.
type chatOutRequest struct {
	Model               string             `json:"model"`
	Messages            []chatOutMessage   `json:"messages"`
	MaxTokens           int64              `json:"max_tokens,omitempty"`
	MaxCompletionTokens int64              `json:"max_completion_tokens,omitempty"`
	Stop                []json.RawMessage  `json:"stop,omitempty"`
	Stream              bool               `json:"stream,omitempty"`
	StreamOptions       *chatStreamOptions `json:"stream_options,omitempty"`
	Temperature         json.RawMessage    `json:"temperature,omitempty"`
	TopP                json.RawMessage    `json:"top_p,omitempty"`
	Tools               []chatOutTool      `json:"tools,omitempty"`
	ToolChoice          any                `json:"tool_choice,omitempty"` // string or chatNamedChoice
	ParallelToolCalls   *bool              `json:"parallel_tool_calls,omitempty"`
	User                json.RawMessage    `json:"user,omitempty"`
	ServiceTier         string             `json:"service_tier,omitempty"`
}

type chatStreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

type chatOutMessage struct {
	Role       string           `json:"role"`
	Content    any              `json:"content"` // raw string, []any of parts, or nil (null)
	ToolCalls  []chatOutToolUse `json:"tool_calls,omitempty"`
	ToolCallID json.RawMessage  `json:"tool_call_id,omitempty"`
}

type chatTextPart struct {
	Type string          `json:"type"` // "text"
	Text json.RawMessage `json:"text"`
}

type chatImagePart struct {
	Type     string       `json:"type"` // "image_url"
	ImageURL chatImageURL `json:"image_url"`
}

type chatImageURL struct {
	URL string `json:"url"`
}

type chatOutToolUse struct {
	ID       json.RawMessage `json:"id"`
	Type     string          `json:"type"` // "function"
	Function chatOutCall     `json:"function"`
}

type chatOutCall struct {
	Name      json.RawMessage `json:"name"`
	Arguments string          `json:"arguments"`
}

type chatOutTool struct {
	Type     string          `json:"type"` // "function"
	Function chatOutFunction `json:"function"`
}

type chatOutFunction struct {
	Name        json.RawMessage `json:"name"`
	Description json.RawMessage `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters"`
	Strict      json.RawMessage `json:"strict,omitempty"`
}

type chatNamedChoice struct {
	Type     string         `json:"type"` // "function"
	Function chatChoiceName `json:"function"`
}

type chatChoiceName struct {
	Name json.RawMessage `json:"name"`
}

// toolErrorPrefix starts the content of a tool result the client marked
// is_error: chat completions has no such flag, so the model reads it.
var toolErrorPrefix = json.RawMessage(`"Error:"`)

// rtranslator accumulates one reverse translation.
type rtranslator struct {
	out          chatOutRequest
	system       []any // text parts of the system prompt
	haveMessages bool
	lastRole     string
	maxTokens    int64
	toolChoice   gjson.Result
}

// field translates one top-level member of the request.
func (t *rtranslator) field(key string, v gjson.Result) error {
	switch key {
	case "model":
		if v.Type != gjson.String || v.Str == "" {
			return reqErr(key, "must be a non-empty string")
		}
		t.out.Model = v.Str
	case "messages":
		t.haveMessages = true
		return t.messages(v)
	case "system":
		return t.systemPrompt(v)
	case "max_tokens":
		n, err := positiveInt(key, v)
		if err != nil {
			return err
		}
		t.maxTokens = n
	case "temperature", "top_p":
		return sampling(key, v, "", &t.out.Temperature, &t.out.TopP)
	case "stop_sequences":
		return t.stopSequences(v)
	case "stream":
		return optBool(key, v, &t.out.Stream)
	case "tools":
		return t.tools(v)
	case "tool_choice":
		t.toolChoice = v
	case "metadata":
		return t.metadata(v)
	case "service_tier":
		switch {
		case v.Type == gjson.Null || (v.Type == gjson.String && v.Str == "auto"):
		case v.Type == gjson.String && v.Str == "standard_only":
			t.out.ServiceTier = "default"
		default:
			return reqErr(key, "must be auto or standard_only, got %s", truncate(v.Raw))
		}
	case "thinking":
		// Disabled thinking asks for what a chat completions model does.
		if v.Type != gjson.Null && !(v.IsObject() && v.Get("type").Str == "disabled") {
			return reqErr(key, "extended thinking cannot be translated to the chat completions API")
		}
	default:
		if v.Type == gjson.Null {
			return nil
		}
		return reqErr(key, "unsupported field: it cannot be translated to the chat completions API")
	}
	return nil
}

func (t *rtranslator) stopSequences(v gjson.Result) error {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsArray() {
		return reqErr("stop_sequences", "must be an array of strings")
	}
	var err error
	v.ForEach(func(_, s gjson.Result) bool {
		if s.Type != gjson.String {
			err = reqErr("stop_sequences", "must be an array of strings")
			return false
		}
		t.out.Stop = append(t.out.Stop, json.RawMessage(s.Raw))
		return true
	})
	if err == nil && len(t.out.Stop) > maxStopSequences {
		err = reqErr("stop_sequences", "chat completions models take at most %d stop sequences, got %d", maxStopSequences, len(t.out.Stop))
	}
	return err
}

func (t *rtranslator) metadata(v gjson.Result) error {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsObject() {
		return reqErr("metadata", "must be an object")
	}
	var err error
	v.ForEach(func(k, u gjson.Result) bool {
		switch {
		case k.Str != "user_id":
			err = reqErr("metadata."+k.Str, "unsupported field")
		case u.Type == gjson.String:
			if u.Str != "" {
				t.out.User = json.RawMessage(u.Raw)
			}
		case u.Type != gjson.Null:
			err = reqErr("metadata.user_id", "must be a string")
		}
		return err == nil
	})
	return err
}

// systemPrompt translates system: a string, or text blocks.
func (t *rtranslator) systemPrompt(v gjson.Result) error {
	switch {
	case v.Type == gjson.Null:
		return nil
	case v.Type == gjson.String:
		if v.Str != "" {
			t.system = append(t.system, chatTextPart{Type: "text", Text: json.RawMessage(v.Raw)})
		}
		return nil
	case !v.IsArray():
		return reqErr("system", "must be a string or an array of text blocks")
	}
	_, err := each("system", v, func(param string, b gjson.Result) error {
		p, err := textBlock(param, b)
		if err == nil {
			t.system = append(t.system, p)
		}
		return err
	})
	return err
}

// textBlock translates a text block: its text, and the fields that do not
// change what the model reads (cache_control, no citations).
func textBlock(param string, b gjson.Result) (chatTextPart, error) {
	if !b.IsObject() {
		return chatTextPart{}, reqErr(param, "must be an object")
	}
	var text gjson.Result
	var err error
	b.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			if v.Str != "text" {
				err = reqErr(param+".type", "only text blocks can be translated here, got %s", truncate(v.Raw))
			}
		case "text":
			text = v
		case "cache_control":
			// A caching hint: OpenAI caches prompt prefixes by itself.
		case "citations":
			if v.Type != gjson.Null && !(v.IsArray() && len(v.Array()) == 0) {
				err = reqErr(param+".citations", "citations cannot be translated to the chat completions API")
			}
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err == nil && text.Type != gjson.String {
		err = reqErr(param+".text", "must be a string")
	}
	return chatTextPart{Type: "text", Text: json.RawMessage(text.Raw)}, err
}

// tools translates the tool definitions; only client tools (a name and an
// input_schema) can be.
func (t *rtranslator) tools(v gjson.Result) error {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsArray() {
		return reqErr("tools", "must be an array")
	}
	_, err := each("tools", v, func(param string, tool gjson.Result) error {
		out, err := clientTool(param, tool)
		if err == nil {
			t.out.Tools = append(t.out.Tools, out)
		}
		return err
	})
	return err
}

func clientTool(param string, tool gjson.Result) (chatOutTool, error) {
	out := chatOutTool{Type: "function"}
	if !tool.IsObject() {
		return out, reqErr(param, "must be an object")
	}
	var err error
	var schema gjson.Result
	tool.ForEach(func(k, v gjson.Result) bool {
		p := param + "." + k.Str
		switch k.Str {
		case "type":
			if v.Type != gjson.Null && v.Str != "custom" {
				err = reqErr(p, "tool type %s cannot be translated: server tools run on Anthropic's side", truncate(v.Raw))
			}
		case "name":
			if v.Type != gjson.String || v.Str == "" {
				err = reqErr(p, "must be a non-empty string")
			}
			out.Function.Name = json.RawMessage(v.Raw)
		case "description":
			if v.Type == gjson.String {
				out.Function.Description = json.RawMessage(v.Raw)
			} else if v.Type != gjson.Null {
				err = reqErr(p, "must be a string")
			}
		case "input_schema":
			schema = v
		case "strict":
			switch v.Type {
			case gjson.True:
				out.Function.Strict = json.RawMessage(v.Raw)
			case gjson.False, gjson.Null:
			default:
				err = reqErr(p, "must be a boolean")
			}
		case "cache_control":
		default:
			err = reqErr(p, "unsupported field")
		}
		return err == nil
	})
	switch {
	case err != nil:
		return out, err
	case out.Function.Name == nil:
		return out, reqErr(param+".name", "missing required parameter")
	case !schema.IsObject():
		return out, reqErr(param+".input_schema", "must be a JSON Schema object")
	}
	out.Function.Parameters = json.RawMessage(schema.Raw)
	return out, nil
}

// finishToolChoice translates tool_choice.
func (t *rtranslator) finishToolChoice() error {
	v := t.toolChoice
	if !v.Exists() || v.Type == gjson.Null {
		return nil
	}
	if !v.IsObject() {
		return reqErr("tool_choice", "must be an object")
	}
	var typ, name gjson.Result
	noParallel := false
	var err error
	v.ForEach(func(k, f gjson.Result) bool {
		switch k.Str {
		case "type":
			typ = f
		case "name":
			name = f
		case "disable_parallel_tool_use":
			if f.Type != gjson.True && f.Type != gjson.False && f.Type != gjson.Null {
				err = reqErr("tool_choice.disable_parallel_tool_use", "must be a boolean")
			}
			noParallel = f.Type == gjson.True
		default:
			err = reqErr("tool_choice."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	switch typ.Str {
	case "auto":
		t.out.ToolChoice = "auto"
	case "any":
		t.out.ToolChoice = "required"
	case "none":
		t.out.ToolChoice = "none"
		noParallel = false // no tool is called, so none in parallel
	case "tool":
		if name.Type != gjson.String || name.Str == "" {
			return reqErr("tool_choice.name", "must be a non-empty string")
		}
		t.out.ToolChoice = chatNamedChoice{Type: "function", Function: chatChoiceName{Name: json.RawMessage(name.Raw)}}
	default:
		return reqErr("tool_choice.type", "must be auto, any, tool or none, got %s", truncate(typ.Raw))
	}
	if typ.Str != "tool" && name.Exists() && name.Type != gjson.Null {
		return reqErr("tool_choice.name", "only a tool_choice of type tool names a tool")
	}
	if noParallel && len(t.out.Tools) > 0 {
		f := false
		t.out.ParallelToolCalls = &f
	}
	return nil
}
