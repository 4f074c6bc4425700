package provider

import (
	"net/http"

	"github.com/tidwall/gjson"
)

// Error bodies: OpenAI's {"error":{"message","type","param","code"}} and
// Anthropic's {"type":"error","error":{"type","message"}}. The status code is
// the caller's to keep; these functions only rewrite the body.

type openAIError struct {
	Error openAIErrorBody `json:"error"`
}

type openAIErrorBody struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

type anthropicError struct {
	Type  string             `json:"type"` // "error"
	Error anthropicErrorBody `json:"error"`
}

type anthropicErrorBody struct {
	Type    string `json:"type"`
	Message string `json:"message"`
}

// AnthropicErrorType returns the Anthropic error type for an HTTP status.
func AnthropicErrorType(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return "invalid_request_error"
	case http.StatusUnauthorized:
		return "authentication_error"
	case http.StatusPaymentRequired:
		return "billing_error"
	case http.StatusForbidden:
		return "permission_error"
	case http.StatusNotFound:
		return "not_found_error"
	case http.StatusRequestEntityTooLarge:
		return "request_too_large"
	case http.StatusTooManyRequests:
		return "rate_limit_error"
	case http.StatusGatewayTimeout:
		return "timeout_error"
	case 529, http.StatusServiceUnavailable:
		return "overloaded_error"
	}
	if status >= 400 && status < 500 {
		return "invalid_request_error"
	}
	return "api_error"
}

// AnthropicErrorBody returns Anthropic's error body with the given type and
// message, for errors the gateway itself produces on the Messages route.
func AnthropicErrorBody(typ, message string) []byte {
	b, _ := marshal(&anthropicError{Type: "error", Error: anthropicErrorBody{Type: typ, Message: message}})
	return b
}

// OpenAIErrorBody returns OpenAI's error body; empty param and code are
// written as null.
func OpenAIErrorBody(typ, code, param, message string) []byte {
	e := openAIError{Error: openAIErrorBody{Message: message, Type: typ}}
	if param != "" {
		e.Error.Param = &param
	}
	if code != "" {
		e.Error.Code = &code
	}
	b, _ := marshal(&e)
	return b
}

// AnthropicToOpenAIError rewrites an Anthropic error body, answered with
// status, as OpenAI's. The Anthropic type becomes the OpenAI type; the
// codes OpenAI clients look for are added (invalid_api_key for
// authentication_error, rate_limit_exceeded for rate_limit_error). A body
// that is not an Anthropic error gets a message naming the status. It is
// safe for concurrent use.
func AnthropicToOpenAIError(status int, body []byte) []byte {
	typ, msg := AnthropicErrorType(status), ""
	if depthOK(body, MaxDepth) {
		e := gjson.GetBytes(body, "error")
		if t := e.Get("type"); t.Type == gjson.String && t.Str != "" {
			typ = t.Str
		}
		msg = e.Get("message").Str
	}
	if msg == "" {
		msg = statusMessage(status)
	}
	code := ""
	switch typ {
	case "authentication_error":
		code = "invalid_api_key"
	case "rate_limit_error":
		code = "rate_limit_exceeded"
	}
	return OpenAIErrorBody(typ, code, "", msg)
}

// OpenAIToAnthropicError rewrites an OpenAI error body, answered with
// status, as Anthropic's: the type follows the status (Anthropic's types
// are few and fixed), the message is kept. It is safe for concurrent use.
func OpenAIToAnthropicError(status int, body []byte) []byte {
	msg := ""
	if depthOK(body, MaxDepth) {
		msg = gjson.GetBytes(body, "error.message").Str
	}
	if msg == "" {
		msg = statusMessage(status)
	}
	return AnthropicErrorBody(AnthropicErrorType(status), msg)
}

func statusMessage(status int) string {
	if t := http.StatusText(status); t != "" {
		return "upstream answered " + itoa(status) + " " + t
	}
	return "upstream answered " + itoa(status)
}
