package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"
)

// TestProvidersPoolsAndFallbacks runs a real gateway process in front of a
// real mockllm process, configured as an operator would for two providers:
// gpt-4o's pool starts with an upstream that refuses connections, Claude
// models go to an anthropic upstream, and o3-pro, served only by the dead
// upstream, falls back to claude-sonnet-4-5. Through both official SDKs,
// streamed and not, every request is answered, translated where the
// upstream speaks the other API, metered under the model that answered and
// charged once.
func TestProvidersPoolsAndFallbacks(t *testing.T) {
	mock := startMock(t)
	dead := fmt.Sprintf("http://127.0.0.1:%d", freePort(t)) // nothing listens there
	r := startReplica(t, replicaSpec{name: "providers",
		upstreams: fmt.Sprintf(`upstreams:
  - {name: dead, url: %q, models: [gpt-4o, o3-pro], timeout: 5s}
  - {name: oa, url: %q, models: ["gpt-4o*"], timeout: 30s}
  - {name: claude, url: %q, provider: anthropic, api_key: sk-ant-e2e-upstream, models: ["claude-*"], timeout: 30s}
`, dead, mock, mock),
		extra: `routing:
  retries: 2
  fallbacks: {o3-pro: [claude-sonnet-4-5]}
rate_limit:
  enabled: true
  limits:
    - {name: req, metric: requests, limit: 1000, window: 1h}
    - {name: tok, metric: total_tokens, limit: 100000, window: 1h}
    - {name: o3-tok, metric: total_tokens, limit: 100000, window: 1h, models: [o3-pro]}
`})
	waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 10*time.Second)
	ctx := context.Background()
	const prompt = "hello there general kenobi" // 4 tokens at mockllm

	openaiChat := func(t *testing.T, user, model string, stream bool) (answered string, total int64) {
		t.Helper()
		c := client(r.proxy, user)
		params := openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(5),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage(prompt)}}
		if !stream {
			resp, err := c.Chat.Completions.New(ctx, params)
			if err != nil {
				t.Fatalf("chat %s: %v", model, err)
			}
			return resp.Model, resp.Usage.TotalTokens
		}
		params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
		s := c.Chat.Completions.NewStreaming(ctx, params)
		var acc openai.ChatCompletionAccumulator
		for s.Next() {
			acc.AddChunk(s.Current())
		}
		if err := s.Err(); err != nil {
			t.Fatalf("chat stream %s: %v", model, err)
		}
		if len(acc.Choices) == 0 || acc.Choices[0].Message.Content == "" {
			t.Errorf("chat stream %s: no content", model)
		}
		return acc.Model, acc.Usage.TotalTokens
	}
	anthropicMessages := func(t *testing.T, user, model string, stream bool) (answered string, total int64) {
		t.Helper()
		c := anthropic.NewClient(aoption.WithBaseURL(r.proxy), aoption.WithAPIKey("sk-ant-e2e-client"),
			aoption.WithMaxRetries(0), aoption.WithHeader("user", user), aoption.WithRequestTimeout(20*time.Second))
		params := anthropic.MessageNewParams{Model: anthropic.Model(model), MaxTokens: 5,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock(prompt))}}
		if !stream {
			msg, err := c.Messages.New(ctx, params)
			if err != nil {
				t.Fatalf("messages %s: %v", model, err)
			}
			return string(msg.Model), msg.Usage.InputTokens + msg.Usage.OutputTokens
		}
		s := c.Messages.NewStreaming(ctx, params)
		var acc anthropic.Message
		for s.Next() {
			if err := acc.Accumulate(s.Current()); err != nil {
				t.Fatalf("accumulate: %v", err)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatalf("messages stream %s: %v", model, err)
		}
		if len(acc.Content) == 0 || acc.Content[0].Text == "" {
			t.Errorf("messages stream %s: no content", model)
		}
		return string(acc.Model), acc.Usage.InputTokens + acc.Usage.OutputTokens
	}

	for _, tt := range []struct {
		name, user, model, answers string
		call                       func(*testing.T, string, string, bool) (string, int64)
		o3                         bool // charged to o3-tok: o3-pro was asked for
	}{
		{"OpenAI chat, retried past the dead upstream", "u-chat", "gpt-4o", "gpt-4o", openaiChat, false},
		{"Anthropic Messages, native", "u-messages", "claude-sonnet-4-5", "claude-sonnet-4-5", anthropicMessages, false},
		{"OpenAI chat to an anthropic upstream", "u-chat-xl", "claude-sonnet-4-5", "claude-sonnet-4-5", openaiChat, false},
		{"Anthropic Messages to an OpenAI upstream, retried", "u-messages-xl", "gpt-4o", "gpt-4o", anthropicMessages, false},
		{"OpenAI chat, model fallback to Claude", "u-fallback", "o3-pro", "claude-sonnet-4-5", openaiChat, true},
		{"Anthropic Messages, model fallback", "u-fallback-m", "o3-pro", "claude-sonnet-4-5", anthropicMessages, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for _, stream := range []bool{false, true} {
				answered, total := tt.call(t, tt.user, tt.model, stream)
				if answered != tt.answers || total != 9 {
					t.Errorf("stream %v: answered by %q with %d tokens, want %s with 4 + 5", stream, answered, total, tt.answers)
				}
			}
			want := map[string]int64{"req": 2, "tok": 18, "o3-tok": 0}
			if tt.o3 {
				want["o3-tok"] = 18
			}
			// A stream is settled and metered once its answer has ended,
			// which may be just after the client read it.
			eventually(t, 5*time.Second, func() bool { return fmt.Sprint(usedByLimit(t, r, tt.user)) == fmt.Sprint(want) },
				"/usage of %s: want %v (each request charged once)", tt.user, want)
			eventually(t, 5*time.Second, func() bool {
				v, _ := metricValue(t, r.ops, "tokens_by_user_by_model_total", fmt.Sprintf(`{model=%q,user=%q}`, tt.answers, tt.user))
				return v == 18
			}, "18 tokens metered under %s for %s", tt.answers, tt.user)
		})
	}

	// The access log names the requested model and each failed attempt. A
	// request's line is written once its answer has ended, which may be
	// after the client has read it.
	eventually(t, 5*time.Second, func() bool { return strings.Count(r.out.String(), `"user":"u-fallback`) == 4 },
		"4 access log lines of fallback requests")
	var fallbacks int
	sc := bufio.NewScanner(strings.NewReader(r.out.String()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var l struct {
			Message   string `json:"message"`
			User      string `json:"user"`
			Model     string `json:"model"`
			Requested string `json:"requested_model"`
			Upstream  string `json:"upstream"`
			Retried   []struct {
				Upstream, Model, Outcome string
			} `json:"retried"`
		}
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Message != "request" || !strings.HasPrefix(l.User, "u-fallback") {
			continue
		}
		fallbacks++
		if l.Model != "claude-sonnet-4-5" || l.Requested != "o3-pro" || l.Upstream != "claude" ||
			len(l.Retried) != 1 || l.Retried[0].Upstream != "dead" || l.Retried[0].Model != "o3-pro" || l.Retried[0].Outcome != "connect" {
			t.Errorf("access log of a fallback: %s", sc.Text())
		}
	}
	if fallbacks != 4 {
		t.Errorf("access log: %d lines of fallback requests, want 4", fallbacks)
	}
}

// usedByLimit is what GET /usage reports user has used, by limit name.
func usedByLimit(t *testing.T, r *replica, user string) map[string]int64 {
	t.Helper()
	var u struct {
		Limits []struct {
			Name string `json:"name"`
			Used int64  `json:"used"`
		} `json:"limits"`
	}
	getJSON(t, r.ops+"/usage?user="+user, &u)
	out := map[string]int64{}
	for _, l := range u.Limits {
		out[l.Name] = l.Used
	}
	return out
}
