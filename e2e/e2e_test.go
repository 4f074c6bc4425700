package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
)

func client(base, user string) openai.Client {
	return openai.NewClient(
		option.WithBaseURL(base+"/v1/"),
		option.WithAPIKey("sk-e2e-client-secret"),
		option.WithMaxRetries(0),
		option.WithHeader("user", user),
		option.WithRequestTimeout(20*time.Second),
	)
}

// chat sends "hello there general kenobi" (4 prompt tokens at mockllm) asking for n tokens.
func chat(ctx context.Context, c openai.Client, n int64) (*openai.ChatCompletion, error) {
	return c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{
		Model:     "gpt-4o-mini",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there general kenobi")},
		MaxTokens: openai.Int(n),
	})
}

func statusOf(err error) int {
	var apiErr *openai.Error
	if errors.As(err, &apiErr) {
		return apiErr.StatusCode
	}
	return 0
}

func TestSingleReplicaMetersEveryRoute(t *testing.T) {
	mock := startMock(t)
	r := startReplica(t, replicaSpec{name: "solo", upstream: mock})
	waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 10*time.Second)
	ctx := context.Background()
	c := client(r.proxy, "alice")

	resp, err := chat(ctx, c, 5)
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got := resp.Usage.TotalTokens; got != 9 {
		t.Errorf("chat usage total: got %d, want 9", got)
	}

	// Streaming without include_usage: the client sees no usage chunk, the gateway meters.
	stream := c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:     "gpt-4o-mini",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two three")},
		MaxTokens: openai.Int(7),
	})
	var words []string
	for stream.Next() {
		ch := stream.Current()
		if ch.Usage.TotalTokens != 0 || len(ch.Choices) == 0 {
			t.Errorf("client that did not ask got a usage chunk: %s", ch.RawJSON())
		}
		for _, choice := range ch.Choices {
			if s := strings.TrimSpace(choice.Delta.Content); s != "" {
				words = append(words, s)
			}
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	if len(words) != 7 {
		t.Errorf("streamed words: got %d (%v), want 7", len(words), words)
	}

	// Streaming with include_usage: the client gets the usage chunk.
	stream = c.Chat.Completions.NewStreaming(ctx, openai.ChatCompletionNewParams{
		Model:         "gpt-4o-mini",
		Messages:      []openai.ChatCompletionMessageParamUnion{openai.UserMessage("a b")},
		MaxTokens:     openai.Int(3),
		StreamOptions: openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)},
	})
	var usageTotal int64
	for stream.Next() {
		if u := stream.Current().Usage; u.TotalTokens != 0 {
			usageTotal = u.TotalTokens
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("stream with usage: %v", err)
	}
	if usageTotal != 5 {
		t.Errorf("usage chunk total: got %d, want 5", usageTotal)
	}

	emb, err := c.Embeddings.New(ctx, openai.EmbeddingNewParams{
		Model: "text-embedding-3-small",
		Input: openai.EmbeddingNewParamsInputUnion{OfString: openai.String("six words of text to embed")},
	})
	if err != nil {
		t.Fatalf("embeddings: %v", err)
	}
	if len(emb.Data) != 1 || emb.Usage.PromptTokens != 6 {
		t.Errorf("embeddings: got %d vectors, %d prompt tokens; want 1, 6", len(emb.Data), emb.Usage.PromptTokens)
	}

	// Known traffic: chat 4+5, stream 3+7, stream 2+3, embeddings 6+0.
	want := map[string]float64{
		"prompt_tokens_total":     4 + 3 + 2 + 6,
		"completion_tokens_total": 5 + 7 + 3,
		"tokens_total":            9 + 10 + 5 + 6,
	}
	for name, v := range want {
		got, ok := metricValue(t, r.ops, name, "")
		if !ok || got != v {
			t.Errorf("%s: got %v (present %v), want %v", name, got, ok, v)
		}
	}
	got, _ := metricValue(t, r.ops, "tokens_by_user_by_model_total", `{model="gpt-4o-mini",user="alice"}`)
	if got != 24 {
		t.Errorf(`tokens_by_user_by_model_total{alice,gpt-4o-mini}: got %v, want 24`, got)
	}
	if out := r.out.String(); strings.Contains(out, "sk-e2e-client-secret") {
		t.Errorf("the client's API key appears in the gateway's output")
	}
}

func TestClusterLimitHoldsAcrossReplicasAndRestarts(t *testing.T) {
	mock := startMock(t)
	limits := `rate_limit:
  enabled: true
  user_header: user
  limits:
    - {name: hourly, metric: total_tokens, limit: 66, window: 1h}
`
	var ports [3][3]int
	for i := range ports {
		ports[i] = [3]int{freePort(t), freePort(t), freePort(t)}
	}
	gossip := func(i int) string { return fmt.Sprintf("127.0.0.1:%d", ports[i][2]) }
	spec := func(i int) replicaSpec {
		var join []string
		for j := range ports {
			if j != i {
				join = append(join, gossip(j))
			}
		}
		return replicaSpec{name: fmt.Sprintf("r%d", i+1), upstream: mock, extra: limits, cluster: true, join: join, ports: ports[i]}
	}
	rs := make([]*replica, 3)
	for i := range rs {
		rs[i] = startReplica(t, spec(i))
	}
	for _, r := range rs {
		waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 30*time.Second)
	}
	eventually(t, 20*time.Second, func() bool {
		var c struct {
			Members []struct{ State string } `json:"members"`
		}
		getJSON(t, rs[0].ops+"/cluster", &c)
		alive := 0
		for _, m := range c.Members {
			if m.State == "alive" {
				alive++
			}
		}
		return alive == 3
	}, "3 alive members in r1's /cluster")

	ctx := context.Background()
	// Each request costs 4 prompt + 5 completion = 9 tokens and is admitted on its estimate, the
	// prompt's tokens with the chat overhead plus max_tokens (about 17): 45 + 17 <= 66, so 6 fit;
	// 54 + 17 > 66, so the 7th is refused.
	alice1 := client(rs[0].proxy, "alice")
	admitted := 0
	for range 20 {
		_, err := chat(ctx, alice1, 5)
		if err != nil {
			if statusOf(err) != http.StatusTooManyRequests {
				t.Fatalf("through r1: got %v, want success or 429", err)
			}
			break
		}
		admitted++
	}
	if admitted != 6 {
		t.Errorf("admitted through r1: got %d, want 6 (limit 66, 9 tokens each, about 17 estimated)", admitted)
	}
	refusedAt := time.Now()

	for _, r := range rs[1:] {
		c := client(r.proxy, "alice")
		eventually(t, time.Second+time.Since(refusedAt), func() bool {
			_, err := chat(ctx, c, 5)
			return statusOf(err) == http.StatusTooManyRequests
		}, "%s refusing alice", r.name)
		t.Logf("%s refused alice %v after r1 did", r.name, time.Since(refusedAt).Round(time.Millisecond))
	}
	// Another user is not affected.
	if _, err := chat(ctx, client(rs[2].proxy, "bob"), 5); err != nil {
		t.Fatalf("bob through r3: %v", err)
	}

	// /usage agrees on every replica.
	for _, r := range rs {
		var u struct {
			Limits []struct {
				Name      string `json:"name"`
				Used      int64  `json:"used"`
				Remaining int64  `json:"remaining"`
			} `json:"limits"`
		}
		eventually(t, 5*time.Second, func() bool {
			getJSON(t, r.ops+"/usage?user=alice", &u)
			return len(u.Limits) == 1 && u.Limits[0].Used == 54
		}, "%s /usage for alice: used 54 (got %+v)", r.name, &u)
	}

	// kill -9 r2 and restart it under the same name: it must still refuse alice.
	rs[1].kill()
	rs[1] = startReplica(t, spec(1))
	waitHTTP(t, rs[1].proxy+"/readyz", http.StatusOK, 30*time.Second)
	_, err := chat(ctx, client(rs[1].proxy, "alice"), 5)
	if statusOf(err) != http.StatusTooManyRequests {
		t.Fatalf("restarted r2 for alice: got %v, want 429", err)
	}
	var apiErr *openai.Error
	if errors.As(err, &apiErr) && apiErr.Code != "rate_limit_exceeded" {
		t.Errorf("429 code: got %q, want rate_limit_exceeded", apiErr.Code)
	}
	// And it counts alice exactly once: 54 tokens, not double.
	var u struct {
		Limits []struct {
			Used int64 `json:"used"`
		} `json:"limits"`
	}
	getJSON(t, rs[1].ops+"/usage?user=alice", &u)
	if len(u.Limits) != 1 || u.Limits[0].Used != 54 {
		t.Errorf("restarted r2 /usage alice: got %+v, want used 54", u)
	}
}

func TestGracefulShutdownFinishesStreams(t *testing.T) {
	mock := startMock(t, "--token-latency", "40ms")
	r := startReplica(t, replicaSpec{name: "drain", upstream: mock})
	waitHTTP(t, r.proxy+"/readyz", http.StatusOK, 10*time.Second)

	body := `{"model":"gpt-4o-mini","stream":true,"max_tokens":25,"messages":[{"role":"user","content":"hi"}]}`
	req, _ := http.NewRequest(http.MethodPost, r.proxy+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() {
		t.Fatalf("no first line: %v", sc.Err())
	}
	exited := make(chan int, 1)
	go func() { exited <- r.stop(30 * time.Second) }()

	chunks, done := 0, false
	for sc.Scan() {
		line := sc.Text()
		if line == "data: [DONE]" {
			done = true
		} else if strings.HasPrefix(line, "data: ") {
			chunks++
		}
	}
	if !done {
		t.Errorf("stream cut by shutdown after %d chunks: no [DONE]", chunks)
	}
	if code := <-exited; code != 0 {
		t.Errorf("exit code after SIGTERM: got %d, want 0", code)
	}
}

func TestConfigErrorsExitTwo(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listen: \":8080\"\nrate_limit:\n  enabled: true\n  limits:\n    - {name: x, metric: bananas, limit: 0, window: 1h}\nunknown_key: 1\n"), 0o600)
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("listen: \"127.0.0.1:0\"\nupstreams:\n  - {name: a, url: \"http://127.0.0.1:1\"}\n"), 0o600)

	run := func(args ...string) (int, string) {
		cmd := exec.Command(filepath.Join(binDir, "genai-gateway"), args...)
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	code, out := run("check-config", "--config", bad)
	if code != 2 {
		t.Errorf("check-config bad: exit %d, want 2\n%s", code, out)
	}
	for _, key := range []string{"unknown_key", "rate_limit.limits[0].metric", "rate_limit.limits[0].limit"} {
		if !strings.Contains(out, key) {
			t.Errorf("check-config output does not name %s:\n%s", key, out)
		}
	}
	if code, out := run("check-config", "--config", good); code != 0 {
		t.Errorf("check-config good: exit %d, want 0\n%s", code, out)
	}
	if code, out := run("--config", bad); code != 2 {
		t.Errorf("start with bad config: exit %d, want 2\n%s", code, out)
	}
	if code, out := run("--version"); code != 0 || !strings.Contains(out, "genai-gateway") {
		t.Errorf("--version: exit %d, output %q", code, out)
	}
}
