package provider

import (
	"bytes"
	"encoding/json"
	"strings"

	"github.com/tidwall/gjson"
)

// The conversation part of TranslateMessagesRequest: messages, their
// content blocks, tool uses and tool results.

// messages translates the conversation.
func (t *rtranslator) messages(v gjson.Result) error {
	if !v.IsArray() {
		return reqErr("messages", "must be an array")
	}
	n, err := each("messages", v, t.message)
	if err == nil && n == 0 {
		err = reqErr("messages", "must not be empty")
	}
	return err
}

func (t *rtranslator) message(param string, m gjson.Result) error {
	if !m.IsObject() {
		return reqErr(param, "must be an object")
	}
	var role, content gjson.Result
	var err error
	m.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "role":
			role = v
		case "content":
			content = v
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return err
	}
	if content.Type != gjson.String && !content.IsArray() {
		return reqErr(param+".content", "must be a string or an array of content blocks")
	}
	t.lastRole = role.Str
	switch role.Str {
	case "user":
		return t.userMessage(param+".content", content)
	case "assistant":
		return t.assistantMessage(param+".content", content)
	case "":
		return reqErr(param+".role", "missing required parameter")
	}
	return reqErr(param+".role", "must be user or assistant, got %s", truncate(role.Raw))
}

// userMessage translates a user turn: text and image blocks become one
// user message, each tool_result a tool message, in their order.
func (t *rtranslator) userMessage(param string, content gjson.Result) error {
	if content.Type == gjson.String {
		t.out.Messages = append(t.out.Messages, chatOutMessage{Role: "user", Content: json.RawMessage(content.Raw)})
		return nil
	}
	var parts []any
	flush := func() {
		if len(parts) > 0 {
			t.out.Messages = append(t.out.Messages, chatOutMessage{Role: "user", Content: parts})
			parts = nil
		}
	}
	n, err := each(param, content, func(pp string, b gjson.Result) error {
		switch typ := b.Get("type"); typ.Str {
		case "text":
			p, err := textBlock(pp, b)
			if err != nil {
				return err
			}
			parts = append(parts, p)
		case "image":
			p, err := imageBlock(pp, b)
			if err != nil {
				return err
			}
			parts = append(parts, p)
		case "tool_result":
			flush()
			msg, err := toolResultBlock(pp, b)
			if err != nil {
				return err
			}
			t.out.Messages = append(t.out.Messages, msg)
		default:
			return reqErr(pp+".type", "content block type %s cannot be translated to the chat completions API", truncate(typ.Raw))
		}
		return nil
	})
	flush()
	if err == nil && n == 0 {
		// No blocks: an empty turn, as the client sent it.
		t.out.Messages = append(t.out.Messages, chatOutMessage{Role: "user", Content: json.RawMessage(`""`)})
	}
	return err
}

// imageBlock translates an image block: a base64 source becomes a data:
// URL, a url source the URL.
func imageBlock(param string, b gjson.Result) (chatImagePart, error) {
	img := chatImagePart{Type: "image_url"}
	var src gjson.Result
	var err error
	b.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
		case "source":
			src = v
		case "cache_control":
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return img, err
	}
	if !src.IsObject() {
		return img, reqErr(param+".source", "must be an object")
	}
	var typ, mediaType, data, url gjson.Result
	src.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
			typ = v
		case "media_type":
			mediaType = v
		case "data":
			data = v
		case "url":
			url = v
		default:
			err = reqErr(param+".source."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return img, err
	}
	switch typ.Str {
	case "base64":
		if mediaType.Type != gjson.String || !strings.HasPrefix(mediaType.Str, "image/") || strings.ContainsAny(mediaType.Str, ";,") {
			return img, reqErr(param+".source.media_type", "must be an image media type")
		}
		if data.Type != gjson.String || data.Str == "" {
			return img, reqErr(param+".source.data", "must be a non-empty base64 string")
		}
		img.ImageURL.URL = "data:" + mediaType.Str + ";base64," + data.Str
	case "url":
		u := url.Str
		if url.Type != gjson.String || (!hasPrefixFold(u, "https://") && !hasPrefixFold(u, "http://")) {
			return img, reqErr(param+".source.url", "must be an http(s) URL")
		}
		img.ImageURL.URL = u
	default:
		return img, reqErr(param+".source.type", "image source type %s cannot be translated; base64 and url can", truncate(typ.Raw))
	}
	return img, nil
}

func hasPrefixFold(s, prefix string) bool {
	_, ok := cutPrefixFold(s, prefix)
	return ok
}

// toolResultBlock translates a tool_result block into a tool message.
func toolResultBlock(param string, b gjson.Result) (chatOutMessage, error) {
	msg := chatOutMessage{Role: "tool"}
	var id, content gjson.Result
	isError := false
	var err error
	b.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
		case "tool_use_id":
			id = v
		case "content":
			content = v
		case "is_error":
			if v.Type != gjson.True && v.Type != gjson.False && v.Type != gjson.Null {
				err = reqErr(param+".is_error", "must be a boolean")
			}
			isError = v.Type == gjson.True
		case "cache_control":
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	if err != nil {
		return msg, err
	}
	if id.Type != gjson.String || id.Str == "" {
		return msg, reqErr(param+".tool_use_id", "must be a non-empty string")
	}
	msg.ToolCallID = json.RawMessage(id.Raw)
	var parts []any
	if isError {
		parts = append(parts, chatTextPart{Type: "text", Text: toolErrorPrefix})
	}
	switch {
	case !content.Exists() || content.Type == gjson.Null:
		if !isError {
			msg.Content = json.RawMessage(`""`)
			return msg, nil
		}
	case content.Type == gjson.String:
		if !isError {
			msg.Content = json.RawMessage(content.Raw)
			return msg, nil
		}
		parts = append(parts, chatTextPart{Type: "text", Text: json.RawMessage(content.Raw)})
	case content.IsArray():
		if _, err := each(param+".content", content, func(pp string, c gjson.Result) error {
			if typ := c.Get("type"); typ.Str != "text" {
				return reqErr(pp+".type", "a tool result holding %s cannot be translated: chat completions tool messages hold text only", truncate(typ.Raw))
			}
			p, err := textBlock(pp, c)
			if err == nil {
				parts = append(parts, p)
			}
			return err
		}); err != nil {
			return msg, err
		}
	default:
		return msg, reqErr(param+".content", "must be a string or an array of text blocks")
	}
	if len(parts) == 0 {
		msg.Content = json.RawMessage(`""`)
	} else {
		msg.Content = parts
	}
	return msg, nil
}

// assistantMessage translates an assistant turn: text becomes the
// content, tool_use blocks the tool calls.
func (t *rtranslator) assistantMessage(param string, content gjson.Result) error {
	if content.Type == gjson.String {
		t.out.Messages = append(t.out.Messages, chatOutMessage{Role: "assistant", Content: json.RawMessage(content.Raw)})
		return nil
	}
	var texts []any
	msg := chatOutMessage{Role: "assistant"}
	if _, err := each(param, content, func(pp string, b gjson.Result) error {
		switch typ := b.Get("type"); typ.Str {
		case "text":
			p, err := textBlock(pp, b)
			if err != nil {
				return err
			}
			texts = append(texts, p)
		case "tool_use":
			tu, err := toolUseBlock(pp, b)
			if err != nil {
				return err
			}
			msg.ToolCalls = append(msg.ToolCalls, tu)
		case "thinking", "redacted_thinking":
			return reqErr(pp+".type", "thinking blocks cannot be translated to the chat completions API")
		default:
			return reqErr(pp+".type", "content block type %s cannot be translated to the chat completions API", truncate(typ.Raw))
		}
		return nil
	}); err != nil {
		return err
	}
	switch {
	case len(texts) == 1:
		msg.Content = texts[0].(chatTextPart).Text
	case len(texts) > 1:
		msg.Content = texts
	case len(msg.ToolCalls) == 0:
		msg.Content = json.RawMessage(`""`)
	}
	t.out.Messages = append(t.out.Messages, msg)
	return nil
}

// toolUseBlock translates a tool_use block into a tool call; its input, a
// JSON object, becomes the arguments' JSON text.
func toolUseBlock(param string, b gjson.Result) (chatOutToolUse, error) {
	tu := chatOutToolUse{Type: "function"}
	var id, name, input gjson.Result
	var err error
	b.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "type":
		case "id":
			id = v
		case "name":
			name = v
		case "input":
			input = v
		case "cache_control":
		default:
			err = reqErr(param+"."+k.Str, "unsupported field")
		}
		return err == nil
	})
	switch {
	case err != nil:
		return tu, err
	case id.Type != gjson.String || id.Str == "":
		return tu, reqErr(param+".id", "must be a non-empty string")
	case name.Type != gjson.String || name.Str == "":
		return tu, reqErr(param+".name", "must be a non-empty string")
	case !input.IsObject():
		return tu, reqErr(param+".input", "must be an object")
	}
	var args bytes.Buffer
	args.Grow(len(input.Raw))
	if err := json.Compact(&args, unsafeBytes(input.Raw)); err != nil {
		return tu, reqErr(param+".input", "must be an object")
	}
	tu.ID, tu.Function = json.RawMessage(id.Raw), chatOutCall{Name: json.RawMessage(name.Raw), Arguments: args.String()}
	return tu, nil
}
