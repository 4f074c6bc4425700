package provider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// DefaultMaxTokens is the max_tokens of a translated request whose client
// named neither max_tokens nor max_completion_tokens: the Messages API
// requires one, OpenAI's does not. 4096 is what every current Claude model
// can produce, and what LiteLLM chooses too.
const DefaultMaxTokens = 4096

// RequestError is a client request that cannot be translated; the proxy
// answers it with 400 and the OpenAI error body, param naming Param.
type RequestError struct {
	Param   string // the offending field, as a path ("messages[2].content[0].type")
	Message string
}

func (e *RequestError) Error() string {
	if e.Param == "" {
		return e.Message
	}
	return e.Param + ": " + e.Message
}

func reqErr(param, format string, args ...any) *RequestError {
	return &RequestError{Param: param, Message: fmt.Sprintf(format, args...)}
}

// ChatRequest is what the proxy needs to know of a translated request.
type ChatRequest struct {
	Model        string
	Stream       bool
	IncludeUsage bool  // stream_options.include_usage: send the usage chunk to the client
	MaxTokens    int64 // max_tokens as sent upstream
}

// TranslateChatRequest translates an OpenAI chat completions request body
// into a Messages API request body. Every field is either translated,
// accepted because it asks for what the Messages API does anyway (n: 1,
// logprobs: false, response_format text, ...; see acceptNoop), or refused
// with a *RequestError naming it: nothing is dropped silently.
//
// The mapping: system and developer messages, wherever they are, become the
// top-level system prompt in order; user and assistant content becomes text
// and image blocks (data: URLs as base64 sources, http(s) URLs as url
// sources); assistant tool_calls become tool_use blocks; tool messages become
// tool_result blocks, consecutive ones in one user turn; tools, tool_choice
// (auto, none, required → any, a function → tool) and parallel_tool_calls:
// false (disable_parallel_tool_use) map directly; stop becomes
// stop_sequences; max_completion_tokens or max_tokens becomes max_tokens
// (DefaultMaxTokens without either); user or safety_identifier becomes
// metadata.user_id. The body is bounded in depth (MaxDepth) before it is
// parsed. It is safe for concurrent use.
func TranslateChatRequest(body []byte) ([]byte, ChatRequest, error) {
	var info ChatRequest
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
	t := translator{out: msgRequest{MaxTokens: DefaultMaxTokens}}
	var err error
	var seen []string
	root.ForEach(func(k, v gjson.Result) bool {
		if slices.Contains(seen, k.Str) {
			err = reqErr(k.Str, "repeated key")
			return false
		}
		seen = append(seen, k.Str)
		err = t.field(k.Str, v, &info)
		return err == nil
	})
	if err != nil {
		return nil, info, err
	}
	if t.out.Model == "" {
		return nil, info, reqErr("model", "missing required parameter")
	}
	if !t.haveMessages {
		return nil, info, reqErr("messages", "missing required parameter")
	}
	if t.maxCompletion > 0 {
		t.out.MaxTokens = t.maxCompletion
	}
	if err := t.finishToolChoice(); err != nil {
		return nil, info, err
	}
	t.finishSystem()
	info.Model, info.Stream, info.MaxTokens = t.out.Model, t.out.Stream, t.out.MaxTokens
	if !info.Stream {
		info.IncludeUsage = false
	}

	var buf bytes.Buffer
	buf.Grow(len(body) + 64)
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&t.out); err != nil {
		// Only an unrepresentable value can get here; the input was valid.
		return nil, info, fmt.Errorf("encode messages request: %w", err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), info, nil
}

// msgRequest is a Messages API request as the translation writes it.
// Strings taken from the client are kept as their raw JSON (json.RawMessage),
// already validated, so text is copied rather than unescaped and re-escaped.
type msgRequest struct {
	Model         string          `json:"model"`
	System        any             `json:"system,omitempty"` // raw string or []msgText
	Messages      []msgMessage    `json:"messages"`
	MaxTokens     int64           `json:"max_tokens"`
	Metadata      *msgMetadata    `json:"metadata,omitempty"`
	StopSequences []string        `json:"stop_sequences,omitempty"`
	Stream        bool            `json:"stream,omitempty"`
	Temperature   json.RawMessage `json:"temperature,omitempty"`
	TopP          json.RawMessage `json:"top_p,omitempty"`
	Tools         []msgTool       `json:"tools,omitempty"`
	ToolChoice    *msgToolChoice  `json:"tool_choice,omitempty"`
}

type msgMetadata struct {
	UserID json.RawMessage `json:"user_id"`
}

type msgMessage struct {
	Role    string `json:"role"`
	Content any    `json:"content"` // raw string or []any of blocks
}

type msgText struct {
	Type string          `json:"type"` // "text"
	Text json.RawMessage `json:"text"`
}

type msgImage struct {
	Type   string         `json:"type"` // "image"
	Source msgImageSource `json:"source"`
}

type msgImageSource struct {
	Type      string `json:"type"` // "base64" or "url"
	MediaType string `json:"media_type,omitempty"`
	Data      string `json:"data,omitempty"`
	URL       string `json:"url,omitempty"`
}

type msgToolUse struct {
	Type  string          `json:"type"` // "tool_use"
	ID    json.RawMessage `json:"id"`
	Name  json.RawMessage `json:"name"`
	Input json.RawMessage `json:"input"`
}

type msgToolResult struct {
	Type      string          `json:"type"` // "tool_result"
	ToolUseID json.RawMessage `json:"tool_use_id"`
	Content   any             `json:"content"` // raw string or []msgText
}

type msgTool struct {
	Name        json.RawMessage `json:"name"`
	Description json.RawMessage `json:"description,omitempty"`
	InputSchema json.RawMessage `json:"input_schema"`
	Strict      json.RawMessage `json:"strict,omitempty"`
}

type msgToolChoice struct {
	Type                   string          `json:"type"` // auto, any, tool, none
	Name                   json.RawMessage `json:"name,omitempty"`
	DisableParallelToolUse bool            `json:"disable_parallel_tool_use,omitempty"`
}

// emptySchema is the input_schema of a function declared without parameters.
var emptySchema = json.RawMessage(`{"type":"object","properties":{}}`)

// translator accumulates one request's translation.
type translator struct {
	out           msgRequest
	system        []msgText
	haveMessages  bool
	maxCompletion int64 // max_completion_tokens, which wins over max_tokens
	toolChoice    gjson.Result
	noParallel    bool
}

// field translates one top-level member of the request.
func (t *translator) field(key string, v gjson.Result, info *ChatRequest) error {
	switch key {
	case "model":
		if v.Type != gjson.String || v.Str == "" {
			return reqErr(key, "must be a non-empty string")
		}
		t.out.Model = v.Str
	case "messages":
		t.haveMessages = true
		return t.messages(v)
	case "max_tokens", "max_completion_tokens":
		if v.Type == gjson.Null {
			return nil
		}
		n, err := positiveInt(key, v)
		if err != nil {
			return err
		}
		if key == "max_tokens" {
			t.out.MaxTokens = n
		} else {
			t.maxCompletion = n
		}
	case "temperature", "top_p":
		if v.Type == gjson.Null {
			return nil
		}
		if v.Type != gjson.Number || v.Num < 0 || v.Num > 1 {
			return reqErr(key, "must be a number between 0 and 1 for Anthropic models, got %s", v.Raw)
		}
		if key == "temperature" {
			t.out.Temperature = json.RawMessage(v.Raw)
		} else {
			t.out.TopP = json.RawMessage(v.Raw)
		}
	case "stop":
		return t.stop(v)
	case "stream":
		if v.Type != gjson.True && v.Type != gjson.False && v.Type != gjson.Null {
			return reqErr(key, "must be a boolean")
		}
		t.out.Stream = v.Type == gjson.True
	case "stream_options":
		return streamOptions(v, info)
	case "tools":
		return t.tools(v)
	case "tool_choice":
		t.toolChoice = v
	case "parallel_tool_calls":
		if v.Type != gjson.True && v.Type != gjson.False && v.Type != gjson.Null {
			return reqErr(key, "must be a boolean")
		}
		t.noParallel = v.Type == gjson.False
	case "user", "safety_identifier":
		if v.Type == gjson.Null {
			return nil
		}
		if v.Type != gjson.String {
			return reqErr(key, "must be a string")
		}
		if v.Str == "" {
			return nil
		}
		if t.out.Metadata != nil && t.out.Metadata.UserID != nil && string(t.out.Metadata.UserID) != v.Raw {
			return reqErr(key, "user and safety_identifier differ; the Messages API has one metadata.user_id")
		}
		t.out.Metadata = &msgMetadata{UserID: json.RawMessage(v.Raw)}
	default:
		return acceptNoop(key, v)
	}
	return nil
}

// acceptNoop accepts the fields whose value asks for what the Messages API
// does anyway (null, or the OpenAI default) and refuses everything else.
func acceptNoop(key string, v gjson.Result) error {
	if v.Type == gjson.Null {
		switch key {
		case "n", "logprobs", "top_logprobs", "response_format", "frequency_penalty", "presence_penalty",
			"seed", "logit_bias", "store", "metadata", "service_tier", "modalities", "reasoning_effort",
			"prompt_cache_key", "verbosity", "audio", "prediction", "web_search_options",
			"functions", "function_call":
			return nil
		}
	}
	ok := false
	switch key {
	case "n":
		ok = v.Type == gjson.Number && v.Num == 1
	case "logprobs", "store":
		ok = v.Type == gjson.False
	case "frequency_penalty", "presence_penalty":
		ok = v.Type == gjson.Number && v.Num == 0
	case "logit_bias", "metadata":
		ok = v.IsObject() && len(v.Map()) == 0
	case "response_format":
		ok = v.IsObject() && v.Get("type").Str == "text"
	case "service_tier":
		ok = v.Str == "auto" || v.Str == "default"
	case "modalities":
		arr := v.Array()
		ok = v.IsArray() && len(arr) == 1 && arr[0].Type == gjson.String && arr[0].Str == "text"
	default:
		return reqErr(key, "unsupported field: it cannot be translated to the Anthropic Messages API")
	}
	if !ok {
		return reqErr(key, "value %s cannot be translated to the Anthropic Messages API", truncate(v.Raw))
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func positiveInt(key string, v gjson.Result) (int64, error) {
	if v.Type != gjson.Number || v.Num < 1 || v.Num != float64(int64(v.Num)) || v.Num > MaxTokens {
		return 0, reqErr(key, "must be a positive integer, got %s", truncate(v.Raw))
	}
	return int64(v.Num), nil
}

func streamOptions(v gjson.Result, info *ChatRequest) error {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsObject() {
		return reqErr("stream_options", "must be an object")
	}
	var err error
	v.ForEach(func(k, o gjson.Result) bool {
		switch k.Str {
		case "include_usage":
			if o.Type != gjson.True && o.Type != gjson.False && o.Type != gjson.Null {
				err = reqErr("stream_options.include_usage", "must be a boolean")
			}
			info.IncludeUsage = o.Type == gjson.True
		case "include_obfuscation":
			// Obfuscation pads OpenAI's deltas; Anthropic sends none, so
			// there is nothing to turn off.
		default:
			err = reqErr("stream_options."+k.Str, "unsupported field")
		}
		return err == nil
	})
	return err
}

func (t *translator) stop(v gjson.Result) error {
	switch {
	case v.Type == gjson.Null:
	case v.Type == gjson.String:
		t.out.StopSequences = []string{v.Str}
	case v.IsArray():
		var err error
		v.ForEach(func(k, s gjson.Result) bool {
			if s.Type != gjson.String {
				err = reqErr("stop", "must be a string or an array of strings")
				return false
			}
			t.out.StopSequences = append(t.out.StopSequences, s.Str)
			return true
		})
		return err
	default:
		return reqErr("stop", "must be a string or an array of strings")
	}
	return nil
}

// finishSystem sets the system prompt: a string when it is one text, text
// blocks otherwise.
func (t *translator) finishSystem() {
	switch len(t.system) {
	case 0:
	case 1:
		t.out.System = t.system[0].Text
	default:
		t.out.System = t.system
	}
}

func (t *translator) tools(v gjson.Result) error {
	if v.Type == gjson.Null {
		return nil
	}
	if !v.IsArray() {
		return reqErr("tools", "must be an array")
	}
	var err error
	i := 0
	v.ForEach(func(_, tool gjson.Result) bool {
		param := "tools[" + strconv.Itoa(i) + "]"
		i++
		var out msgTool
		out, err = translateTool(param, tool)
		t.out.Tools = append(t.out.Tools, out)
		return err == nil
	})
	return err
}

func translateTool(param string, tool gjson.Result) (msgTool, error) {
	var out msgTool
	if !tool.IsObject() {
		return out, reqErr(param, "must be an object")
	}
	var fn gjson.Result
	var err error
	tool.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			if v.Str != "function" {
				err = reqErr(param+".type", "tool type %s cannot be translated; only function tools can", truncate(v.Raw))
			}
		case "function":
			fn = v
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return out, err
	}
	if !fn.IsObject() {
		return out, reqErr(param+".function", "missing required object")
	}
	out.InputSchema = emptySchema
	fn.ForEach(func(k, v gjson.Result) bool {
		p := param + ".function." + k.Str
		switch k.Str {
		case "name":
			if v.Type != gjson.String || v.Str == "" {
				err = reqErr(p, "must be a non-empty string")
			}
			out.Name = json.RawMessage(v.Raw)
		case "description":
			if v.Type != gjson.String && v.Type != gjson.Null {
				err = reqErr(p, "must be a string")
			} else if v.Type == gjson.String {
				out.Description = json.RawMessage(v.Raw)
			}
		case "parameters":
			if !v.IsObject() && v.Type != gjson.Null {
				err = reqErr(p, "must be a JSON Schema object")
			} else if v.IsObject() {
				out.InputSchema = json.RawMessage(v.Raw)
			}
		case "strict":
			switch v.Type {
			case gjson.True:
				out.Strict = json.RawMessage(v.Raw)
			case gjson.False, gjson.Null:
			default:
				err = reqErr(p, "must be a boolean")
			}
		default:
			err = reqErr(p, "unsupported field")
		}
		return err == nil
	})
	if err == nil && out.Name == nil {
		err = reqErr(param+".function.name", "missing required parameter")
	}
	return out, err
}

// finishToolChoice translates tool_choice and parallel_tool_calls.
func (t *translator) finishToolChoice() error {
	v := t.toolChoice
	var tc msgToolChoice
	switch {
	case !v.Exists() || v.Type == gjson.Null:
		if !t.noParallel || len(t.out.Tools) == 0 {
			return nil
		}
		tc.Type = "auto"
	case v.Type == gjson.String:
		switch v.Str {
		case "auto":
			tc.Type = "auto"
		case "none":
			tc.Type = "none"
		case "required":
			tc.Type = "any"
		default:
			return reqErr("tool_choice", "must be auto, none, required or a function, got %s", truncate(v.Raw))
		}
	case v.IsObject():
		name := v.Get("function.name")
		if v.Get("type").Str != "function" || name.Type != gjson.String || name.Str == "" {
			return reqErr("tool_choice", "only {\"type\":\"function\",\"function\":{\"name\":...}} objects can be translated")
		}
		var err error
		v.ForEach(func(k, _ gjson.Result) bool {
			if k.Str != "type" && k.Str != "function" {
				err = reqErr("tool_choice."+k.Str, "unsupported field")
			}
			return err == nil
		})
		v.Get("function").ForEach(func(k, _ gjson.Result) bool {
			if k.Str != "name" {
				err = reqErr("tool_choice.function."+k.Str, "unsupported field")
			}
			return err == nil
		})
		if err != nil {
			return err
		}
		tc.Type, tc.Name = "tool", json.RawMessage(name.Raw)
	default:
		return reqErr("tool_choice", "must be a string or an object")
	}
	// "none" calls no tool, so there is nothing to run in parallel.
	tc.DisableParallelToolUse = t.noParallel && tc.Type != "none"
	t.out.ToolChoice = &tc
	return nil
}

// messages translates the conversation.
func (t *translator) messages(v gjson.Result) error {
	if !v.IsArray() {
		return reqErr("messages", "must be an array")
	}
	var err error
	i := 0
	prevTool := false // the last output message holds tool results
	v.ForEach(func(_, m gjson.Result) bool {
		param := "messages[" + strconv.Itoa(i) + "]"
		i++
		prevTool, err = t.message(param, m, prevTool)
		return err == nil
	})
	if err == nil && i == 0 {
		err = reqErr("messages", "must not be empty")
	}
	return err
}

// message translates one message; it reports whether the message was a
// tool result, so the next one can join its user turn.
func (t *translator) message(param string, m gjson.Result, prevTool bool) (bool, error) {
	if !m.IsObject() {
		return false, reqErr(param, "must be an object")
	}
	var role, content, toolCalls, toolCallID, refusal gjson.Result
	var err error
	m.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "role":
			role = v
		case "content":
			content = v
		case "tool_calls":
			toolCalls = v
		case "tool_call_id":
			toolCallID = v
		case "refusal":
			refusal = v
		case "name":
			if v.Type != gjson.Null {
				err = reqErr(param+".name", "participant names cannot be translated to the Anthropic Messages API")
			}
		case "function_call", "audio":
			if v.Type != gjson.Null {
				err = reqErr(param+"."+k.Str, "unsupported field: it cannot be translated to the Anthropic Messages API")
			}
		case "annotations":
			// Citations of an earlier answer replayed by the client:
			// metadata of that output, not input to the model.
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return false, err
	}
	switch role.Str {
	case "system", "developer":
		return false, t.systemMessage(param, content)
	case "user":
		c, err := userContent(param+".content", content)
		if err != nil {
			return false, err
		}
		t.out.Messages = append(t.out.Messages, msgMessage{Role: "user", Content: c})
		return false, nil
	case "assistant":
		c, err := assistantContent(param, content, refusal, toolCalls)
		if err != nil {
			return false, err
		}
		t.out.Messages = append(t.out.Messages, msgMessage{Role: "assistant", Content: c})
		return false, nil
	case "tool":
		res, err := toolResult(param, toolCallID, content)
		if err != nil {
			return false, err
		}
		if prevTool {
			last := &t.out.Messages[len(t.out.Messages)-1]
			last.Content = append(last.Content.([]any), res)
		} else {
			t.out.Messages = append(t.out.Messages, msgMessage{Role: "user", Content: []any{res}})
		}
		return true, nil
	case "":
		return false, reqErr(param+".role", "missing required parameter")
	}
	return false, reqErr(param+".role", "role %s cannot be translated to the Anthropic Messages API", truncate(role.Raw))
}

func (t *translator) systemMessage(param string, content gjson.Result) error {
	if content.Type == gjson.String {
		t.system = append(t.system, msgText{Type: "text", Text: json.RawMessage(content.Raw)})
		return nil
	}
	texts, err := textParts(param+".content", content, false)
	t.system = append(t.system, texts...)
	return err
}

// textParts translates content that may only hold text: a string, or an
// array of text parts (refusal parts too, when refusals is set).
func textParts(param string, content gjson.Result, refusals bool) ([]msgText, error) {
	if content.Type == gjson.String {
		return []msgText{{Type: "text", Text: json.RawMessage(content.Raw)}}, nil
	}
	if !content.IsArray() {
		return nil, reqErr(param, "must be a string or an array of text parts")
	}
	var out []msgText
	var err error
	j := 0
	content.ForEach(func(_, p gjson.Result) bool {
		pp := param + "[" + strconv.Itoa(j) + "]"
		j++
		typ := p.Get("type").Str
		field := "text"
		if refusals && typ == "refusal" {
			field = "refusal"
		} else if typ != "text" {
			err = reqErr(pp+".type", "only text parts can be translated here, got %s", truncate(p.Get("type").Raw))
			return false
		}
		text, e := partField(pp, p, field)
		if e != nil {
			err = e
			return false
		}
		out = append(out, msgText{Type: "text", Text: json.RawMessage(text.Raw)})
		return true
	})
	return out, err
}

// partField returns the string field of a content part that has only "type"
// and that field.
func partField(param string, p gjson.Result, field string) (gjson.Result, error) {
	var v gjson.Result
	var err error
	p.ForEach(func(k, f gjson.Result) bool {
		switch k.Str {
		case "type":
		case field:
			v = f
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err == nil && v.Type != gjson.String {
		err = reqErr(param+"."+field, "must be a string")
	}
	return v, err
}

// userContent translates a user message's content: a string stays a string,
// parts become text and image blocks.
func userContent(param string, content gjson.Result) (any, error) {
	if content.Type == gjson.String {
		return json.RawMessage(content.Raw), nil
	}
	if !content.IsArray() {
		return nil, reqErr(param, "must be a string or an array of content parts")
	}
	blocks := []any{}
	var err error
	j := 0
	content.ForEach(func(_, p gjson.Result) bool {
		pp := param + "[" + strconv.Itoa(j) + "]"
		j++
		switch typ := p.Get("type"); typ.Str {
		case "text":
			var text gjson.Result
			if text, err = partField(pp, p, "text"); err == nil {
				blocks = append(blocks, msgText{Type: "text", Text: json.RawMessage(text.Raw)})
			}
		case "image_url":
			var img msgImage
			if img, err = imagePart(pp, p); err == nil {
				blocks = append(blocks, img)
			}
		default:
			err = reqErr(pp+".type", "content part type %s cannot be translated to the Anthropic Messages API", truncate(typ.Raw))
		}
		return err == nil
	})
	return blocks, err
}

// imagePart translates an image_url part: a data: URL with base64 data
// becomes a base64 source, an http(s) URL a url source. detail is a hint
// of OpenAI's resizing with no Anthropic equivalent; it changes the price,
// not the meaning, and is accepted.
func imagePart(param string, p gjson.Result) (msgImage, error) {
	img := msgImage{Type: "image"}
	var iu gjson.Result
	var err error
	p.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
		case "image_url":
			iu = v
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return img, err
	}
	if !iu.IsObject() {
		return img, reqErr(param+".image_url", "must be an object with a url")
	}
	var url string
	iu.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "url":
			if v.Type != gjson.String {
				err = reqErr(param+".image_url.url", "must be a string")
			}
			url = v.Str
		case "detail":
			if v.Type != gjson.String && v.Type != gjson.Null {
				err = reqErr(param+".image_url.detail", "must be a string")
			}
		default:
			err = reqErr(param+".image_url."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return img, err
	}
	param += ".image_url.url"
	if rest, ok := cutPrefixFold(url, "data:"); ok {
		meta, data, ok := strings.Cut(rest, ",")
		mediaType, isBase64 := strings.CutSuffix(meta, ";base64")
		if !ok || !isBase64 || !strings.HasPrefix(mediaType, "image/") || data == "" {
			return img, reqErr(param, "data URLs must be data:image/TYPE;base64,DATA")
		}
		img.Source = msgImageSource{Type: "base64", MediaType: mediaType, Data: data}
		return img, nil
	}
	if _, ok := cutPrefixFold(url, "https://"); !ok {
		if _, ok := cutPrefixFold(url, "http://"); !ok {
			return img, reqErr(param, "must be a data: URL or an http(s) URL")
		}
	}
	img.Source = msgImageSource{Type: "url", URL: url}
	return img, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// assistantContent translates an assistant message: its text (a string or
// text and refusal parts), a refusal, and tool calls as tool_use blocks.
func assistantContent(param string, content, refusal, toolCalls gjson.Result) (any, error) {
	hasCalls := toolCalls.IsArray() && len(toolCalls.Array()) > 0
	if toolCalls.Exists() && toolCalls.Type != gjson.Null && !toolCalls.IsArray() {
		return nil, reqErr(param+".tool_calls", "must be an array")
	}
	if refusal.Exists() && refusal.Type != gjson.Null && refusal.Type != gjson.String {
		return nil, reqErr(param+".refusal", "must be a string")
	}
	hasRefusal := refusal.Str != ""
	if content.Type == gjson.String && !hasCalls && !hasRefusal {
		return json.RawMessage(content.Raw), nil
	}
	blocks := []any{}
	switch {
	case !content.Exists() || content.Type == gjson.Null:
	case content.Type == gjson.String:
		if content.Str != "" {
			blocks = append(blocks, msgText{Type: "text", Text: json.RawMessage(content.Raw)})
		}
	default:
		texts, err := textParts(param+".content", content, true)
		if err != nil {
			return nil, err
		}
		for _, t := range texts {
			blocks = append(blocks, t)
		}
	}
	if hasRefusal {
		blocks = append(blocks, msgText{Type: "text", Text: json.RawMessage(refusal.Raw)})
	}
	var err error
	k := 0
	toolCalls.ForEach(func(_, tc gjson.Result) bool {
		var tu msgToolUse
		tu, err = toolUse(param+".tool_calls["+strconv.Itoa(k)+"]", tc)
		k++
		blocks = append(blocks, tu)
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	if len(blocks) == 0 {
		return json.RawMessage(`""`), nil
	}
	return blocks, nil
}

// toolUse translates one tool call; its arguments, a JSON text in a string,
// must hold an object (an empty string counts as {}).
func toolUse(param string, tc gjson.Result) (msgToolUse, error) {
	tu := msgToolUse{Type: "tool_use"}
	if !tc.IsObject() {
		return tu, reqErr(param, "must be an object")
	}
	var fn gjson.Result
	var err error
	tc.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "id":
			if v.Type != gjson.String || v.Str == "" {
				err = reqErr(param+".id", "must be a non-empty string")
			}
			tu.ID = json.RawMessage(v.Raw)
		case "type":
			if v.Str != "function" {
				err = reqErr(param+".type", "only function tool calls can be translated")
			}
		case "function":
			fn = v
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return tu, err
	}
	if tu.ID == nil {
		return tu, reqErr(param+".id", "missing required parameter")
	}
	name, args := fn.Get("name"), fn.Get("arguments")
	if name.Type != gjson.String || name.Str == "" {
		return tu, reqErr(param+".function.name", "must be a non-empty string")
	}
	if args.Type != gjson.String {
		return tu, reqErr(param+".function.arguments", "must be a string")
	}
	tu.Name = json.RawMessage(name.Raw)
	switch a := strings.TrimSpace(args.Str); {
	case a == "":
		tu.Input = json.RawMessage(`{}`)
	case depthOK([]byte(a), MaxDepth) && gjson.Valid(a) && gjson.Parse(a).IsObject():
		tu.Input = json.RawMessage(a)
	default:
		return tu, reqErr(param+".function.arguments", "must be a JSON object")
	}
	return tu, nil
}

// toolResult translates a tool message into a tool_result block.
func toolResult(param string, id, content gjson.Result) (msgToolResult, error) {
	res := msgToolResult{Type: "tool_result"}
	if id.Type != gjson.String || id.Str == "" {
		return res, reqErr(param+".tool_call_id", "must be a non-empty string")
	}
	res.ToolUseID = json.RawMessage(id.Raw)
	if content.Type == gjson.String {
		res.Content = json.RawMessage(content.Raw)
		return res, nil
	}
	texts, err := textParts(param+".content", content, false)
	res.Content = texts
	return res, err
}
