package provider

import (
	"strings"
	"testing"
)

func TestAnthropicToOpenAIError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"invalid request", 400, `{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: Field required"}}`,
			`{"error":{"message":"max_tokens: Field required","type":"invalid_request_error","param":null,"code":null}}`},
		{"auth", 401, `{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}`,
			`{"error":{"message":"invalid x-api-key","type":"authentication_error","param":null,"code":"invalid_api_key"}}`},
		{"rate limit", 429, `{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}`,
			`{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"}}`},
		{"html", 502, `<html>bad gateway</html>`,
			`{"error":{"message":"upstream answered 502 Bad Gateway","type":"api_error","param":null,"code":null}}`},
		{"overloaded without body", 529, ``,
			`{"error":{"message":"upstream answered 529","type":"overloaded_error","param":null,"code":null}}`},
		{"deep", 500, strings.Repeat("[", 1000),
			`{"error":{"message":"upstream answered 500 Internal Server Error","type":"api_error","param":null,"code":null}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := string(AnthropicToOpenAIError(tt.status, []byte(tt.body))); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestOpenAIToAnthropicError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"rate limit", 429, `{"error":{"message":"Rate limit reached","type":"tokens","param":null,"code":"rate_limit_exceeded"}}`,
			`{"type":"error","error":{"type":"rate_limit_error","message":"Rate limit reached"}}`},
		{"model not allowed", 403, `{"error":{"message":"no <claude> for you","type":"invalid_request_error","code":"model_not_allowed"}}`,
			`{"type":"error","error":{"type":"permission_error","message":"no <claude> for you"}}`},
		{"not found", 404, `{}`, `{"type":"error","error":{"type":"not_found_error","message":"upstream answered 404 Not Found"}}`},
		{"too large", 413, `x`, `{"type":"error","error":{"type":"request_too_large","message":"upstream answered 413 Request Entity Too Large"}}`},
		{"timeout", 504, `{"error":{"message":"upstream timed out"}}`, `{"type":"error","error":{"type":"timeout_error","message":"upstream timed out"}}`},
		{"unreachable", 502, `{"error":{"message":"unreachable"}}`, `{"type":"error","error":{"type":"api_error","message":"unreachable"}}`},
		{"other 4xx", 418, ``, `{"type":"error","error":{"type":"invalid_request_error","message":"upstream answered 418 I'm a teapot"}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := string(OpenAIToAnthropicError(tt.status, []byte(tt.body))); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
