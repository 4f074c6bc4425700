package provider

import (
	"encoding/json"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// The conversation part of TranslateChatRequest: messages, their content
// parts, tool calls and tool results.

// messages translates the conversation.
func (t *translator) messages(v gjson.Result) error {
	if !v.IsArray() {
		return reqErr("messages", "must be an array")
	}
	prevTool := false // the last output message holds tool results
	n, err := each("messages", v, func(param string, m gjson.Result) (err error) {
		prevTool, err = t.message(param, m, prevTool)
		return err
	})
	if err == nil && n == 0 {
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
	_, err := each(param, content, func(pp string, p gjson.Result) error {
		typ := p.Get("type").Str
		field := "text"
		if refusals && typ == "refusal" {
			field = "refusal"
		} else if typ != "text" {
			return reqErr(pp+".type", "only text parts can be translated here, got %s", truncate(p.Get("type").Raw))
		}
		text, err := partField(pp, p, field)
		if err != nil {
			return err
		}
		out = append(out, msgText{Type: "text", Text: json.RawMessage(text.Raw)})
		return nil
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
	_, err := each(param, content, func(pp string, p gjson.Result) error {
		switch typ := p.Get("type"); typ.Str {
		case "text":
			text, err := partField(pp, p, "text")
			if err != nil {
				return err
			}
			blocks = append(blocks, msgText{Type: "text", Text: json.RawMessage(text.Raw)})
		case "image_url":
			img, err := imagePart(pp, p)
			if err != nil {
				return err
			}
			blocks = append(blocks, img)
		default:
			return reqErr(pp+".type", "content part type %s cannot be translated to the Anthropic Messages API", truncate(typ.Raw))
		}
		return nil
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
