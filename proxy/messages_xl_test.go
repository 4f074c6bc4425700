package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/anthropics/anthropic-sdk-go/v2"
	aoption "github.com/anthropics/anthropic-sdk-go/v2/option"
	"github.com/openai/openai-go/v3"

	"github.com/genai-gateway/genai-gateway/cmd/mockllm/mock"
	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// TestReverseAnthropicClient: the official Anthropic client calls gpt-4o,
// served by an OpenAI-compatible upstream, unchanged: the gateway sends
// chat completions and answers in the Messages API's shape (plain,
// streamed, tool use both ways, errors), metered from the chat answer's
// usage under the caller's user and charged to the limiter.
func TestReverseAnthropicClient(t *testing.T) {
	store := newMapStore()
	pe := newProviderEnv(t, newRealLimiter(t, store, 1000, 0))
	client := pe.anthropic()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params := anthropic.MessageNewParams{
		Model:     "gpt-4o",
		MaxTokens: 4,
		System:    []anthropic.TextBlockParam{{Text: "be brief"}},
		Messages:  []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("hello there gateway"))},
	}

	t.Run("messages", func(t *testing.T) {
		msg, err := client.Messages.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if len(msg.Content) != 1 || msg.Content[0].Type != "text" || msg.Content[0].Text != "w1 w2 w3 w4" {
			t.Errorf("content: got %+v, want one text block w1 w2 w3 w4", msg.Content)
		}
		if msg.StopReason != anthropic.StopReasonEndTurn || msg.Role != "assistant" || msg.Model != "gpt-4o" {
			t.Errorf("got stop_reason %q role %q model %q, want end_turn, assistant, gpt-4o", msg.StopReason, msg.Role, msg.Model)
		}
		// Prompt: "be brief" + "hello there gateway".
		if msg.Usage.InputTokens != 5 || msg.Usage.OutputTokens != 4 {
			t.Errorf("usage: got %d/%d, want 5/4", msg.Usage.InputTokens, msg.Usage.OutputTokens)
		}
		pe.idle(t)
		if p, c := pe.tokens("ann", "gpt-4o"); p != 5 || c != 4 {
			t.Errorf("metered: got %v/%v, want 5/4", p, c)
		}
		if got := store.total("tokens", "ann"); got != 9 {
			t.Errorf("limiter counter: got %d, want 9", got)
		}
		head := pe.openai.last(t)
		if head.URL.Path != "/v1/chat/completions" || head.Header.Get("Authorization") != "Bearer sk-ant-client" ||
			head.Header.Get("X-Api-Key") != "" || head.Header.Get("Anthropic-Version") != "" {
			t.Errorf("upstream request: got %s authorization %q x-api-key %q anthropic-version %q, want chat completions with the client's key as a bearer token",
				head.URL.Path, head.Header.Get("Authorization"), head.Header.Get("X-Api-Key"), head.Header.Get("Anthropic-Version"))
		}
		if pe.claude.count() != 0 {
			t.Errorf("anthropic upstream got %d requests, want 0", pe.claude.count())
		}
	})

	t.Run("stream", func(t *testing.T) {
		s := client.Messages.NewStreaming(ctx, params)
		var acc anthropic.Message
		events := map[string]int{}
		for s.Next() {
			ev := s.Current()
			events[ev.Type]++
			if err := acc.Accumulate(ev); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if len(acc.Content) != 1 || acc.Content[0].Text != "w1 w2 w3 w4" {
			t.Errorf("content: got %+v, want w1 w2 w3 w4", acc.Content)
		}
		if acc.StopReason != anthropic.StopReasonEndTurn || acc.Usage.InputTokens != 5 || acc.Usage.OutputTokens != 4 {
			t.Errorf("got stop_reason %q usage %d/%d, want end_turn 5/4", acc.StopReason, acc.Usage.InputTokens, acc.Usage.OutputTokens)
		}
		for name, want := range map[string]int{"message_start": 1, "content_block_start": 1, "content_block_delta": 4,
			"content_block_stop": 1, "message_delta": 1, "message_stop": 1} {
			if events[name] != want {
				t.Errorf("%s events: got %d, want %d (%v)", name, events[name], want, events)
			}
		}
		pe.idle(t)
		if p, c := pe.tokens("ann", "gpt-4o"); p != 10 || c != 8 {
			t.Errorf("metered after the stream: got %v/%v, want 10/8", p, c)
		}
		if got := store.total("tokens", "ann"); got != 18 {
			t.Errorf("limiter counter: got %d, want 18", got)
		}
	})

	toolParams := params
	toolParams.Tools = []anthropic.ToolUnionParam{anthropic.ToolUnionParamOfTool(anthropic.ToolInputSchemaParam{
		Properties: map[string]any{"words": map[string]any{"type": "string"}}}, "lookup")}
	toolParams.ToolChoice = anthropic.ToolChoiceParamOfTool("lookup")
	checkToolUse := func(t *testing.T, what string, msg anthropic.Message) anthropic.ToolUseBlock {
		t.Helper()
		if msg.StopReason != anthropic.StopReasonToolUse || len(msg.Content) != 1 || msg.Content[0].Type != "tool_use" {
			t.Fatalf("%s: got stop_reason %q content %+v, want one tool_use block", what, msg.StopReason, msg.Content)
		}
		tu := msg.Content[0].AsToolUse()
		var in struct{ Words string }
		if err := json.Unmarshal(tu.Input, &in); err != nil || tu.Name != "lookup" || tu.ID == "" || in.Words != "w1 w2 w3 w4" {
			t.Fatalf("%s: got tool_use %s %s(%s) %v, want lookup with words w1 w2 w3 w4", what, tu.ID, tu.Name, tu.Input, err)
		}
		return tu
	}

	t.Run("tool use round trip", func(t *testing.T) {
		msg, err := client.Messages.New(ctx, toolParams)
		if err != nil {
			t.Fatal(err)
		}
		tu := checkToolUse(t, "tool_use", *msg)
		next := params
		next.MaxTokens = 2
		next.Messages = append(append([]anthropic.MessageParam{}, params.Messages...), msg.ToParam(),
			anthropic.NewUserMessage(anthropic.NewToolResultBlock(tu.ID, "found five more words here", false)))
		answer, err := client.Messages.New(ctx, next)
		if err != nil {
			t.Fatal(err)
		}
		if len(answer.Content) != 1 || answer.Content[0].Text != "w1 w2" {
			t.Errorf("answer after the tool result: got %+v, want w1 w2", answer.Content)
		}
		// Prompt: "be brief" + "hello there gateway" + the tool result's 5 words.
		if answer.Usage.InputTokens != 10 {
			t.Errorf("input tokens with the tool result: got %d, want 10", answer.Usage.InputTokens)
		}
	})

	t.Run("tool use stream", func(t *testing.T) {
		s := client.Messages.NewStreaming(ctx, toolParams)
		var acc anthropic.Message
		for s.Next() {
			if err := acc.Accumulate(s.Current()); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		checkToolUse(t, "streamed tool_use", acc)
		if acc.Usage.OutputTokens != 4 {
			t.Errorf("output tokens: got %d, want 4", acc.Usage.OutputTokens)
		}
	})

	t.Run("untranslatable", func(t *testing.T) {
		before := pe.openai.count()
		_, err := client.Messages.New(ctx, params, aoption.WithJSONSet("top_k", 5))
		var ae *anthropic.Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest {
			t.Fatalf("error: got %v, want a 400 *anthropic.Error", err)
		}
		var body struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal([]byte(ae.RawJSON()), &body); err != nil {
			t.Fatalf("body %q: %v", ae.RawJSON(), err)
		}
		if body.Type != "error" || body.Error.Type != "invalid_request_error" || !strings.Contains(body.Error.Message, "top_k") {
			t.Errorf("body: got %+v, want Anthropic's invalid_request_error naming top_k", body)
		}
		if pe.openai.count() != before {
			t.Error("an untranslatable request reached the upstream")
		}
	})

	t.Run("upstream error", func(t *testing.T) {
		// The mock refuses more than MaxCompletionWords, as OpenAI refuses
		// more than a model's output limit.
		free := newProviderEnv(t, nil) // no limit: the request reaches the upstream
		resp, body := free.post(t, routeMessages, `{"model":"gpt-4o","max_tokens":`+strconv.Itoa(mock.MaxCompletionWords+1)+
			`,"messages":[{"role":"user","content":"a"}]}`, "user", "ann", "anthropic-version", "2023-06-01")
		var e struct {
			Type  string `json:"type"`
			Error struct{ Type, Message string }
		}
		if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != http.StatusBadRequest {
			t.Fatalf("got %d %s (%v), want the upstream's 400", resp.StatusCode, body, err)
		}
		if e.Type != "error" || e.Error.Type != "invalid_request_error" || !strings.Contains(e.Error.Message, "max_tokens") {
			t.Errorf("body: got %s, want the upstream's message in Anthropic's shape", body)
		}
	})

	t.Run("count_tokens", func(t *testing.T) {
		before := pe.openai.count()
		n, err := client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{
			Model:    "gpt-4o",
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("one two three four"))},
		})
		if err != nil {
			t.Fatal(err)
		}
		// The chat request's count: OpenAI's 3 tokens a message, the role,
		// the four words, 3 tokens priming the reply.
		want := pe.p.tok.estimatePrompt(routeChat, "gpt-4o", []byte(`{"messages":[{"role":"user","content":"one two three four"}]}`))
		if n.InputTokens != want || want < 8 {
			t.Errorf("input_tokens: got %d, want the gateway's count %d", n.InputTokens, want)
		}
		if pe.openai.count() != before {
			t.Error("count_tokens reached the chat completions upstream")
		}
		_, err = client.Messages.CountTokens(ctx, anthropic.MessageCountTokensParams{Model: "gpt-4o", Messages: []anthropic.MessageParam{
			anthropic.NewUserMessage(anthropic.NewDocumentBlock(anthropic.PlainTextSourceParam{Data: "x"}))}})
		var ae *anthropic.Error
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusBadRequest || !strings.Contains(ae.RawJSON(), "content[0].type") {
			t.Errorf("untranslatable count_tokens: got %v, want a 400 naming the block", err)
		}
	})

	if !strings.Contains(pe.logs.String(), `"path":"/v1/messages"`) {
		t.Error("access log: no line carries the path /v1/messages")
	}
}

// TestReverseSharedLimit: one total_tokens limit is charged by gpt-4o and
// by a Claude model, both called through /v1/messages, and refuses the
// next request of either once spent, in Anthropic's shape.
func TestReverseSharedLimit(t *testing.T) {
	store := newMapStore()
	pe := newProviderEnv(t, newRealLimiter(t, store, 40, 0))
	hdr := []string{"user", "sam", "anthropic-version", "2023-06-01"}
	resp, body := pe.post(t, routeMessages, `{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"a b c"}]}`, hdr...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("gpt-4o: %d %s", resp.StatusCode, body)
	}
	if got := store.total("tokens", "sam"); got != 8 {
		t.Fatalf("after gpt-4o: counter %d, want 8 (3 + 5)", got)
	}
	resp, body = pe.post(t, routeMessages, `{"model":"claude-haiku-4-5","max_tokens":6,"messages":[{"role":"user","content":"a b c d"}]}`, hdr...)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("claude: %d %s", resp.StatusCode, body)
	}
	if got := store.total("tokens", "sam"); got != 18 {
		t.Fatalf("after claude: counter %d, want 18 (8 + 4 + 6)", got)
	}
	resp, body = pe.post(t, routeMessages, `{"model":"gpt-4o","max_tokens":7,"stream":true,"messages":[{"role":"user","content":"a b"}]}`, hdr...)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "event: message_stop") {
		t.Fatalf("gpt-4o streamed: %d %s", resp.StatusCode, body)
	}
	pe.idle(t)
	if got := store.total("tokens", "sam"); got != 27 {
		t.Fatalf("after gpt-4o streamed: counter %d, want 27 (18 + 2 + 7)", got)
	}
	for _, model := range []string{"gpt-4o", "claude-haiku-4-5"} {
		resp, body = pe.post(t, routeMessages, `{"model":"`+model+`","max_tokens":20,"messages":[{"role":"user","content":"a b"}]}`, hdr...)
		if resp.StatusCode != http.StatusTooManyRequests || !strings.Contains(string(body), `"rate_limit_error"`) {
			t.Errorf("%s over the shared limit: got %d %s, want 429 rate_limit_error", model, resp.StatusCode, body)
		}
	}
	if n := pe.openai.count(); n != 2 {
		t.Errorf("openai upstream got %d requests, want 2 (refusals never reach it)", n)
	}
}

// TestReverseAzure: a Messages request for a model an azure upstream
// serves goes to the deployment's chat completions path with the
// upstream's key in api-key, and without a key of its own the upstream
// gets the client's x-api-key there.
func TestReverseAzure(t *testing.T) {
	az := newMockUpstream(t, mock.Options{})
	for _, key := range []string{"az-key", ""} {
		e := newEnv(t, Config{Upstreams: []Upstream{{Name: "az", URL: az.srv.URL, Provider: ProviderAzure, APIKey: key,
			APIVersion: "2024-10-21", Deployments: map[string]string{"gpt-4o": "prod-4o"}, Timeout: time.Minute}}}, nil)
		resp, body := e.post(t, routeMessages, `{"model":"gpt-4o","max_tokens":3,"messages":[{"role":"user","content":"a b"}]}`,
			"user", "zed", "x-api-key", "sk-client", "anthropic-version", "2023-06-01")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d: %s", resp.StatusCode, body)
		}
		var msg struct {
			Type    string
			Content []struct{ Type, Text string }
			Usage   struct {
				InputTokens  int64 `json:"input_tokens"`
				OutputTokens int64 `json:"output_tokens"`
			}
		}
		if err := json.Unmarshal(body, &msg); err != nil || msg.Type != "message" || len(msg.Content) != 1 || msg.Content[0].Text != "w1 w2 w3" ||
			msg.Usage.InputTokens != 2 || msg.Usage.OutputTokens != 3 {
			t.Errorf("got %s (%v), want a message w1 w2 w3 with usage 2/3", body, err)
		}
		head := az.last(t)
		if head.URL.Path != "/openai/deployments/prod-4o/chat/completions" || head.URL.Query().Get("api-version") != "2024-10-21" {
			t.Errorf("upstream URL: got %s", head.URL)
		}
		want := key
		if want == "" {
			want = "sk-client"
		}
		if head.Header.Get("Api-Key") != want || head.Header.Get("X-Api-Key") != "" || head.Header.Get("Authorization") != "" {
			t.Errorf("credentials: got api-key %q x-api-key %q authorization %q, want %q alone",
				head.Header.Get("Api-Key"), head.Header.Get("X-Api-Key"), head.Header.Get("Authorization"), want)
		}
		if p, c := e.tokens("zed", "gpt-4o"); p != 2 || c != 3 {
			t.Errorf("metered: got %v/%v, want 2/3", p, c)
		}
	}
}

// TestReverseBrokenStream: a chat stream the upstream cuts before [DONE]
// ends with an Anthropic error event, which the SDK raises, and is
// metered for what was streamed.
func TestReverseBrokenStream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, word := range []string{"w1", " w2"} {
			fmt.Fprintf(w, "data: {\"id\":\"c\",\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\n", word)
			w.(http.Flusher).Flush()
		}
	}))
	t.Cleanup(up.Close)
	e := newEnv(t, Config{Upstreams: []Upstream{{Name: "oa", URL: up.URL, Timeout: time.Minute}}}, nil)
	resp, body := e.post(t, routeMessages, `{"model":"gpt-4o","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"a b"}]}`,
		"user", "cut", "anthropic-version", "2023-06-01")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	if !strings.HasSuffix(string(body), "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\""+errStreamBrokeOff+"\"}}\n\n") {
		t.Errorf("got %q, want the stream to end with an error event", body)
	}
	e.idle(t)
	if _, c := e.tokens("cut", "gpt-4o"); c < 1 || c > 8 {
		t.Errorf("metered completion: got %v, want what was streamed (1 to 8)", c)
	}
}

// TestReversePool: a model served by an anthropic and an openai upstream
// in one pool is sent native or translated by the upstream each attempt
// goes to: a retry after a dead upstream crosses formats either way, and
// a body only the Messages API can take skips the chat upstream.
func TestReversePool(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadURL := "http://" + dead.Addr().String()
	dead.Close()
	routing := Routing{Strategy: "priority", Retries: 2, RetryOn: route.DefaultRetryOn, Cooldown: time.Second}
	const body = `{"model":"mix-1","max_tokens":3,"messages":[{"role":"user","content":"a b"}]}`
	hdr := []string{"user", "pat", "anthropic-version", "2023-06-01"}
	check := func(t *testing.T, resp *http.Response, body []byte) {
		t.Helper()
		var msg struct {
			Type    string
			Content []struct{ Text string }
		}
		if err := json.Unmarshal(body, &msg); err != nil || resp.StatusCode != http.StatusOK || msg.Type != "message" ||
			len(msg.Content) != 1 || msg.Content[0].Text != "w1 w2 w3" {
			t.Fatalf("got %d %s (%v), want a Messages answer w1 w2 w3", resp.StatusCode, body, err)
		}
	}

	t.Run("anthropic down, chat upstream answers", func(t *testing.T) {
		oa := newMockUpstream(t, mock.Options{})
		e := newEnv(t, Config{Routing: routing, Upstreams: []Upstream{
			{Name: "claude", URL: deadURL, Provider: ProviderAnthropic, Models: []string{"mix-*"}, Timeout: time.Minute},
			{Name: "oa", URL: oa.srv.URL, Models: []string{"mix-*"}, Timeout: time.Minute},
		}}, nil)
		resp, b := e.post(t, routeMessages, body, hdr...)
		check(t, resp, b)
		if got := oa.last(t).URL.Path; got != routeChat {
			t.Errorf("openai upstream path: got %s, want %s", got, routeChat)
		}
		if p, c := e.tokens("pat", "mix-1"); p != 2 || c != 3 {
			t.Errorf("metered: got %v/%v, want 2/3", p, c)
		}
	})

	t.Run("chat upstream down, anthropic answers natively", func(t *testing.T) {
		claude := newMockUpstream(t, mock.Options{})
		e := newEnv(t, Config{Routing: routing, Upstreams: []Upstream{
			{Name: "oa", URL: deadURL, Models: []string{"mix-*"}, Timeout: time.Minute},
			{Name: "claude", URL: claude.srv.URL, Provider: ProviderAnthropic, Models: []string{"mix-*"}, Timeout: time.Minute},
		}}, nil)
		resp, b := e.post(t, routeMessages, body, hdr...)
		check(t, resp, b)
		if got := claude.last(t).URL.Path; got != routeMessages {
			t.Errorf("anthropic upstream path: got %s, want %s", got, routeMessages)
		}
	})

	t.Run("count_tokens goes to the anthropic upstream", func(t *testing.T) {
		oa, claude := newMockUpstream(t, mock.Options{}), newMockUpstream(t, mock.Options{})
		e := newEnv(t, Config{Routing: routing, Upstreams: []Upstream{
			{Name: "oa", URL: oa.srv.URL, Models: []string{"mix-*"}, Timeout: time.Minute},
			{Name: "claude", URL: claude.srv.URL, Provider: ProviderAnthropic, Models: []string{"mix-*"}, Timeout: time.Minute},
		}}, nil)
		resp, b := e.post(t, routeCountTokens, `{"model":"mix-1","messages":[{"role":"user","content":"a b c"}]}`, hdr...)
		if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != `{"input_tokens":3}` {
			t.Errorf("got %d %s, want the anthropic upstream's count 3", resp.StatusCode, b)
		}
		if oa.count() != 0 || claude.count() != 1 {
			t.Errorf("got %d chat and %d Messages requests upstream, want 0 and 1", oa.count(), claude.count())
		}
	})

	t.Run("untranslatable body skips the chat upstream", func(t *testing.T) {
		oa, claude := newMockUpstream(t, mock.Options{}), newMockUpstream(t, mock.Options{})
		e := newEnv(t, Config{Routing: routing, Upstreams: []Upstream{
			{Name: "oa", URL: oa.srv.URL, Models: []string{"mix-*"}, Timeout: time.Minute},
			{Name: "claude", URL: claude.srv.URL, Provider: ProviderAnthropic, Models: []string{"mix-*"}, Timeout: time.Minute},
		}}, nil)
		resp, b := e.post(t, routeMessages, strings.Replace(body, `"max_tokens"`, `"top_k":5,"max_tokens"`, 1), hdr...)
		check(t, resp, b)
		if oa.count() != 0 || claude.count() != 1 {
			t.Errorf("got %d chat and %d Messages requests upstream, want 0 and 1", oa.count(), claude.count())
		}
	})
}

// TestReverseUpstreamAnswers: what a chat completions upstream answers
// that is not a chat completion gets 502 in Anthropic's shape and is not
// charged; its 429 reaches the client as Anthropic's rate_limit_error with
// its retry-after.
func TestReverseUpstreamAnswers(t *testing.T) {
	tests := []struct {
		name       string
		status     int
		body       string
		wantStatus int
		wantType   string
	}{
		{"not a chat completion", http.StatusOK, `{"object":"list","data":[]}`, http.StatusBadGateway, "api_error"},
		{"arguments not an object", http.StatusOK, `{"id":"c","model":"gpt-4o","choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"t","type":"function","function":{"name":"f","arguments":"{\"a\":"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":1}}`,
			http.StatusBadGateway, "api_error"},
		{"rate limited", http.StatusTooManyRequests, `{"error":{"message":"Rate limit reached for gpt-4o","type":"requests","param":null,"code":"rate_limit_exceeded"}}`,
			http.StatusTooManyRequests, "rate_limit_error"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.Header().Set("Retry-After", "7")
				w.WriteHeader(tt.status)
				_, _ = w.Write([]byte(tt.body))
			}))
			t.Cleanup(up.Close)
			store := newMapStore()
			e := newEnv(t, Config{Upstreams: []Upstream{{Name: "oa", URL: up.URL, Timeout: time.Minute}}}, newRealLimiter(t, store, 1000, 0))
			resp, body := e.post(t, routeMessages, `{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"a b"}]}`,
				"user", "uma", "anthropic-version", "2023-06-01")
			var got struct {
				Type  string
				Error struct{ Type, Message string }
			}
			if err := json.Unmarshal(body, &got); err != nil || resp.StatusCode != tt.wantStatus || got.Type != "error" ||
				got.Error.Type != tt.wantType || got.Error.Message == "" {
				t.Fatalf("got %d %s (%v), want %d with Anthropic's %s", resp.StatusCode, body, err, tt.wantStatus, tt.wantType)
			}
			if tt.status == http.StatusTooManyRequests && resp.Header.Get("Retry-After") != "7" {
				t.Errorf("retry-after: got %q, want the upstream's 7", resp.Header.Get("Retry-After"))
			}
			e.idle(t)
			if n := store.total("tokens", "uma"); n != 0 {
				t.Errorf("limiter counter: got %d, want 0 (a failed request is not charged)", n)
			}
		})
	}
}

// TestOneEntryPoint is issue #10's "done when": through one gateway, the
// official OpenAI client and the official Anthropic client each reach a
// Claude model and an OpenAI model, every call metered under the caller's
// user and charged to one shared limit.
func TestOneEntryPoint(t *testing.T) {
	store := newMapStore()
	pe := newProviderEnv(t, newRealLimiter(t, store, 1000, 0))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	oc, ac := pe.openaiClient(), pe.anthropic()
	var charged int64
	for _, model := range []string{"gpt-4o", "claude-sonnet-4-5"} {
		c, err := oc.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: model, MaxTokens: openai.Int(2),
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two three")}})
		if err != nil {
			t.Fatalf("openai client, %s: %v", model, err)
		}
		if c.Choices[0].Message.Content != "w1 w2" || c.Usage.PromptTokens != 3 || c.Usage.CompletionTokens != 2 {
			t.Errorf("openai client, %s: got %q usage %d/%d, want w1 w2 and 3/2", model, c.Choices[0].Message.Content, c.Usage.PromptTokens, c.Usage.CompletionTokens)
		}
		m, err := ac.Messages.New(ctx, anthropic.MessageNewParams{Model: model, MaxTokens: 3,
			Messages: []anthropic.MessageParam{anthropic.NewUserMessage(anthropic.NewTextBlock("one two"))}})
		if err != nil {
			t.Fatalf("anthropic client, %s: %v", model, err)
		}
		if m.Content[0].Text != "w1 w2 w3" || m.Usage.InputTokens != 2 || m.Usage.OutputTokens != 3 {
			t.Errorf("anthropic client, %s: got %q usage %d/%d, want w1 w2 w3 and 2/3", model, m.Content[0].Text, m.Usage.InputTokens, m.Usage.OutputTokens)
		}
		pe.idle(t)
		if p, c := pe.tokens("ann", model); p != 5 || c != 5 {
			t.Errorf("%s metered: got %v/%v, want 5/5 (both clients)", model, p, c)
		}
		charged += 10
		if got := store.total("tokens", "ann"); got != charged {
			t.Errorf("after %s: shared limit counter %d, want %d", model, got, charged)
		}
	}
	if pe.openai.count() != 2 || pe.claude.count() != 2 {
		t.Errorf("got %d requests to the openai upstream and %d to the anthropic one, want 2 and 2", pe.openai.count(), pe.claude.count())
	}
}

// TestReverseStreamWithoutDone: an upstream stream that sent its
// finish_reason and ended without [DONE] (some OpenAI-compatible servers
// do) is a complete answer, not a broken one.
func TestReverseStreamWithoutDone(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, `data: {"id":"c","model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"w1"}}]}`+"\n\n")
		fmt.Fprint(w, `data: {"id":"c","model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":2,"completion_tokens":1}}`+"\n\n")
	}))
	t.Cleanup(up.Close)
	e := newEnv(t, Config{Upstreams: []Upstream{{Name: "local", URL: up.URL, Timeout: time.Minute}}}, nil)
	resp, body := e.post(t, routeMessages, `{"model":"llama-3","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"a b"}]}`,
		"user", "lee", "anthropic-version", "2023-06-01")
	if resp.StatusCode != http.StatusOK || strings.Contains(string(body), "event: error") ||
		!strings.HasSuffix(string(body), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") ||
		!strings.Contains(string(body), `"stop_reason":"end_turn"`) {
		t.Fatalf("got %d %q, want a complete Messages stream", resp.StatusCode, body)
	}
	e.idle(t)
	if p, c := e.tokens("lee", "llama-3"); p != 2 || c != 1 {
		t.Errorf("metered: got %v/%v, want the upstream's 2/1", p, c)
	}
}
