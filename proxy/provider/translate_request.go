package provider

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"

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
	if err := eachField(root, func(k string, v gjson.Result) error { return t.field(k, v, &info) }); err != nil {
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
		return sampling(key, v, " for Anthropic models", &t.out.Temperature, &t.out.TopP)
	case "stop":
		return t.stop(v)
	case "stream":
		return optBool(key, v, &t.out.Stream)
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

// sampling reads temperature or top_p, the same in both APIs: null (unset)
// or a number from 0 to 1, kept as written into *temperature or *topP.
// where names the API a value out of range cannot be sent to.
func sampling(key string, v gjson.Result, where string, temperature, topP *json.RawMessage) error {
	if v.Type == gjson.Null {
		return nil
	}
	if v.Type != gjson.Number || v.Num < 0 || v.Num > 1 {
		return reqErr(key, "must be a number between 0 and 1%s, got %s", where, truncate(v.Raw))
	}
	if key == "temperature" {
		*temperature = json.RawMessage(v.Raw)
	} else {
		*topP = json.RawMessage(v.Raw)
	}
	return nil
}

// optBool reads a boolean field that may be null (false) into *dst.
func optBool(key string, v gjson.Result, dst *bool) error {
	if v.Type != gjson.True && v.Type != gjson.False && v.Type != gjson.Null {
		return reqErr(key, "must be a boolean")
	}
	*dst = v.Type == gjson.True
	return nil
}

// eachField calls fn for every key of the object root and its value,
// refusing a key given twice, and stops at the first error. Keys are
// looked up in a list up to fewKeys (requests have about ten), in a map
// past it, so a body of a million keys costs linear time.
func eachField(root gjson.Result, fn func(key string, v gjson.Result) error) error {
	const fewKeys = 32
	var err error
	var few []string
	var many map[string]struct{}
	root.ForEach(func(k, v gjson.Result) bool {
		var dup bool
		if many == nil && len(few) == fewKeys {
			many = make(map[string]struct{}, 2*fewKeys)
			for _, s := range few {
				many[s] = struct{}{}
			}
		}
		if many != nil {
			_, dup = many[k.Str]
			many[k.Str] = struct{}{}
		} else {
			dup = slices.Contains(few, k.Str)
			few = append(few, k.Str)
		}
		if dup {
			err = reqErr(k.Str, "repeated key")
		} else {
			err = fn(k.Str, v)
		}
		return err == nil
	})
	return err
}

// each calls fn for every element of the array arr with its parameter
// path, param[i], stopping at the first error, and returns how many
// elements it visited and that error.
func each(param string, arr gjson.Result, fn func(p string, v gjson.Result) error) (n int, err error) {
	arr.ForEach(func(_, v gjson.Result) bool {
		err = fn(param+"["+strconv.Itoa(n)+"]", v)
		n++
		return err == nil
	})
	return n, err
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
	_, err := each("tools", v, func(param string, tool gjson.Result) error {
		out, err := translateTool(param, tool)
		t.out.Tools = append(t.out.Tools, out)
		return err
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
