package mock

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode"
	"unicode/utf8"
)

// DefaultMaxTokens is the number of completion words produced when the
// request names no max_tokens, max_completion_tokens or max_output_tokens.
const DefaultMaxTokens = 16

// MaxCompletionWords caps the completion length a request may ask for, so a
// typo in a test cannot make the mock build a gigabyte response.
const MaxCompletionWords = 1_000_000

// request holds the fields of every endpoint's body that the mock reads.
// Everything else in the body is accepted and ignored.
type request struct {
	Model               string          `json:"model"`
	Messages            []message       `json:"messages"`
	Prompt              json.RawMessage `json:"prompt"`
	Input               json.RawMessage `json:"input"`
	MaxTokens           *int64          `json:"max_tokens"`
	MaxCompletionTokens *int64          `json:"max_completion_tokens"`
	MaxOutputTokens     *int64          `json:"max_output_tokens"`
	Stream              bool            `json:"stream"`
	StreamOptions       *streamOptions  `json:"stream_options"`
	EncodingFormat      string          `json:"encoding_format"`
	Dimensions          *int64          `json:"dimensions"`
	Tools               []chatTool      `json:"tools"`
	ToolChoice          json.RawMessage `json:"tool_choice"`
}

// chatTool is a chat completions tool; only a function's name is read.
type chatTool struct {
	Function struct {
		Name string `json:"name"`
	} `json:"function"`
}

// toolName returns the function a chat answer calls: the named one for
// tool_choice {"type":"function","function":{"name":T}}, the first tool for
// "required", or "" (a text answer).
func (r *request) toolName() string {
	switch kind(r.ToolChoice) {
	case '"':
		var s string
		if json.Unmarshal(r.ToolChoice, &s) == nil && s == "required" && len(r.Tools) > 0 {
			return r.Tools[0].Function.Name
		}
	case '{':
		var c struct {
			Type     string `json:"type"`
			Function struct {
				Name string `json:"name"`
			} `json:"function"`
		}
		if json.Unmarshal(r.ToolChoice, &c) == nil && c.Type == "function" {
			return c.Function.Name
		}
	}
	return ""
}

type streamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// message is a chat message or a Responses API input item. Content is a
// string or an array of parts with a text field.
type message struct {
	Content json.RawMessage `json:"content"`
}

type part struct {
	Text string `json:"text"`
}

// badRequest is a client error reported as a 400 OpenAI error body.
type badRequest struct {
	msg   string
	param string
}

func (e *badRequest) Error() string { return e.msg }

// decode parses body into a request. The error is always a *badRequest.
func decode(body []byte) (*request, error) {
	var req request
	if err := json.Unmarshal(body, &req); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return nil, &badRequest{
				msg:   fmt.Sprintf("Invalid type for '%s': %v", typeErr.Field, err),
				param: typeErr.Field,
			}
		}
		return nil, &badRequest{msg: "We could not parse the JSON body of your request. " +
			"(HINT: This likely means you aren't using your HTTP library correctly. " +
			"The OpenAI API expects a JSON payload, but what was sent was not valid JSON.)"}
	}
	return &req, nil
}

// completionWords returns N, the number of words to generate: the first of
// max_tokens, max_completion_tokens and max_output_tokens that is set, or
// DefaultMaxTokens.
func (r *request) completionWords() (int64, error) {
	for _, f := range []struct {
		name string
		v    *int64
	}{
		{"max_tokens", r.MaxTokens},
		{"max_completion_tokens", r.MaxCompletionTokens},
		{"max_output_tokens", r.MaxOutputTokens},
	} {
		if f.v == nil {
			continue
		}
		n := *f.v
		if n < 0 || n > MaxCompletionWords {
			return 0, &badRequest{
				msg: fmt.Sprintf("Invalid '%s': integer out of range. Expected a value between 0 and %d, but got %d instead.",
					f.name, MaxCompletionWords, n),
				param: f.name,
			}
		}
		return n, nil
	}
	return DefaultMaxTokens, nil
}

// includeUsage reports whether stream_options.include_usage is true.
func (r *request) includeUsage() bool {
	return r.StreamOptions != nil && r.StreamOptions.IncludeUsage
}

// chatPromptWords counts the words of every message's content.
func chatPromptWords(msgs []message) (int64, error) {
	var n int64
	for _, m := range msgs {
		c, err := contentWords(m.Content)
		if err != nil {
			return 0, &badRequest{msg: "Invalid 'messages': content must be a string or an array of parts.", param: "messages"}
		}
		n += c
	}
	return n, nil
}

// contentWords counts the words of a message content: a string, an array of
// parts (their text fields), or null/absent.
func contentWords(raw json.RawMessage) (int64, error) {
	switch kind(raw) {
	case 0, 'n':
		return 0, nil
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		return countWords(s), nil
	case '[':
		var parts []part
		if err := json.Unmarshal(raw, &parts); err != nil {
			return 0, err
		}
		var n int64
		for _, p := range parts {
			n += countWords(p.Text)
		}
		return n, nil
	}
	return 0, errors.New("content must be a string or an array")
}

// textInput is one completions prompt or embeddings input.
type textInput struct {
	words int64  // its word count (a token array counts its length)
	key   string // the text, or the raw JSON of a token array
}

// textInputs parses a completions prompt or an embeddings input: a string,
// an array of strings, an array of token ids or an array of token-id arrays.
func textInputs(raw json.RawMessage, param string) ([]textInput, error) {
	bad := &badRequest{
		msg:   fmt.Sprintf("Invalid '%s': expected a string, an array of strings or an array of token arrays.", param),
		param: param,
	}
	switch kind(raw) {
	case 0, 'n':
		return nil, &badRequest{msg: fmt.Sprintf("Missing required parameter: '%s'.", param), param: param}
	case '"':
		in, err := stringInput(raw)
		if err != nil {
			return nil, bad
		}
		return []textInput{in}, nil
	case '[':
		var items []json.RawMessage
		if err := json.Unmarshal(raw, &items); err != nil {
			return nil, bad
		}
		if len(items) > 0 && kind(items[0]) != '"' && kind(items[0]) != '[' {
			// A single array of token ids.
			in, err := tokensInput(raw)
			if err != nil {
				return nil, bad
			}
			return []textInput{in}, nil
		}
		ins := make([]textInput, len(items))
		for i, it := range items {
			var err error
			switch kind(it) {
			case '"':
				ins[i], err = stringInput(it)
			case '[':
				ins[i], err = tokensInput(it)
			default:
				err = bad
			}
			if err != nil {
				return nil, bad
			}
		}
		return ins, nil
	}
	return nil, bad
}

// stringInput decodes a JSON string input.
func stringInput(raw json.RawMessage) (textInput, error) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return textInput{}, err
	}
	return textInput{words: countWords(s), key: s}, nil
}

// tokensInput decodes a JSON array of token ids.
func tokensInput(raw json.RawMessage) (textInput, error) {
	var toks []int64
	if err := json.Unmarshal(raw, &toks); err != nil {
		return textInput{}, err
	}
	return textInput{words: int64(len(toks)), key: fmt.Sprint(toks)}, nil
}

// responsesInputWords counts the words of a Responses API input: a string,
// or an array of items whose content is counted like a chat message's.
func responsesInputWords(raw json.RawMessage) (int64, error) {
	bad := &badRequest{msg: "Invalid 'input': expected a string or an array of input items.", param: "input"}
	switch kind(raw) {
	case 0, 'n':
		return 0, nil
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, bad
		}
		return countWords(s), nil
	case '[':
		var items []message
		if err := json.Unmarshal(raw, &items); err != nil {
			return 0, bad
		}
		n, err := chatPromptWords(items)
		if err != nil {
			return 0, bad
		}
		return n, nil
	}
	return 0, bad
}

// kind returns the first byte of a raw JSON value ('"', '[', '{', 'n', ...),
// or 0 when raw is empty.
func kind(raw json.RawMessage) byte {
	for _, c := range raw {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		}
		return c
	}
	return 0
}

// countWords returns len(strings.Fields(s)) without allocating.
func countWords(s string) int64 {
	var n int64
	inWord := false
	for i := 0; i < len(s); {
		c := s[i]
		var space bool
		if c < utf8.RuneSelf {
			space = c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r'
			i++
		} else {
			r, size := utf8.DecodeRuneInString(s[i:])
			space = unicode.IsSpace(r)
			i += size
		}
		if space {
			inWord = false
		} else if !inWord {
			inWord = true
			n++
		}
	}
	return n
}
