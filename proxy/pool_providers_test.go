package proxy

import (
	"strings"
	"testing"
	"time"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// TestPoolAcrossProviders: a chat request whose pool mixes an anthropic
// upstream and an OpenAI-compatible one is translated for the attempt
// that goes to the anthropic one only, whichever fails first, plain and
// streamed.
func TestPoolAcrossProviders(t *testing.T) {
	for _, tt := range []struct {
		name         string
		failFirst    string // provider of the failing first upstream
		stream       bool
		wantPath     string // what the answering upstream got
		wantInAnswer string
	}{
		{"anthropic fails, openai answers", ProviderAnthropic, false, "/v1/chat/completions", `"object":"chat.completion"`},
		{"openai fails, anthropic answers", ProviderOpenAI, false, "/v1/messages", `"object":"chat.completion"`},
		{"openai fails, anthropic streams", ProviderOpenAI, true, "/v1/messages", `"object":"chat.completion.chunk"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bad := newFlaky(t, mode503)
			good := newMockUpstream(t, mock.Options{})
			second := ProviderAnthropic
			if tt.failFirst == ProviderAnthropic {
				second = ProviderOpenAI
			}
			cfg := Config{
				Routing: Routing{Retries: 2, RetryOn: route.DefaultRetryOn},
				Upstreams: []Upstream{
					{Name: "bad", URL: bad.srv.URL, Provider: tt.failFirst, Models: []string{"claude-*"}, Timeout: time.Minute},
					{Name: "good", URL: good.srv.URL, Provider: second, Models: []string{"claude-*"}, Timeout: time.Minute},
				},
			}
			e := newEnv(t, cfg, nil)
			body := `{"model":"claude-haiku-4-5","max_tokens":3,"messages":[{"role":"user","content":"hi"}]}`
			if tt.stream {
				body = strings.Replace(body, `"max_tokens":3`, `"max_tokens":3,"stream":true`, 1)
			}
			resp, got := e.post(t, routeChat, body)
			if resp.StatusCode != 200 || !strings.Contains(string(got), tt.wantInAnswer) {
				t.Fatalf("got %d %s, want 200 with %s", resp.StatusCode, got, tt.wantInAnswer)
			}
			if bad.all.Load() != 1 {
				t.Errorf("failing upstream: got %d requests, want 1", bad.all.Load())
			}
			if p := good.last(t).URL.Path; p != tt.wantPath {
				t.Errorf("answering upstream got %s, want %s", p, tt.wantPath)
			}
			if tt.stream && strings.Contains(string(got), `"usage"`) {
				t.Errorf("stream: got a usage chunk the client did not ask for: %s", got)
			}
		})
	}
}
