package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestOpenAIClient drives the gateway with the official Go client.
func TestOpenAIClient(t *testing.T) {
	up := newFakeLLM(t)
	e := newEnv(t, upstreams(up), nil)
	client := openai.NewClient(
		option.WithBaseURL(e.srv.URL+"/v1/"),
		option.WithAPIKey("sk-test"),
		option.WithHTTPClient(e.client),
		option.WithMaxRetries(0),
		option.WithHeader("user", "ivy"),
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	params := openai.ChatCompletionNewParams{
		Model:     "gpt-4o",
		MaxTokens: openai.Int(4),
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hello there gateway")},
	}

	t.Run("chat", func(t *testing.T) {
		c, err := client.Chat.Completions.New(ctx, params)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Choices[0].Message.Content; got != "w1 w2 w3 w4" {
			t.Errorf("content: got %q, want %q", got, "w1 w2 w3 w4")
		}
		if c.Usage.PromptTokens != 3 || c.Usage.CompletionTokens != 4 {
			t.Errorf("usage: got %d/%d, want 3/4", c.Usage.PromptTokens, c.Usage.CompletionTokens)
		}
	})

	for _, include := range []bool{false, true} {
		name := "stream without usage"
		if include {
			name = "stream with usage"
		}
		t.Run(name, func(t *testing.T) {
			p := params
			if include {
				p.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			s := client.Chat.Completions.NewStreaming(ctx, p)
			var acc openai.ChatCompletionAccumulator
			usageChunks := 0
			for s.Next() {
				ch := s.Current()
				acc.AddChunk(ch)
				if len(ch.Choices) == 0 && ch.Usage.TotalTokens > 0 {
					usageChunks++
				}
			}
			if err := s.Err(); err != nil {
				t.Fatal(err)
			}
			s.Close()
			if got := acc.Choices[0].Message.Content; got != "w1 w2 w3 w4" {
				t.Errorf("content: got %q, want %q", got, "w1 w2 w3 w4")
			}
			want := 0
			if include {
				want = 1
			}
			if usageChunks != want {
				t.Errorf("usage chunks: got %d, want %d", usageChunks, want)
			}
			if include && (acc.Usage.PromptTokens != 3 || acc.Usage.CompletionTokens != 4) {
				t.Errorf("usage: got %d/%d, want 3/4", acc.Usage.PromptTokens, acc.Usage.CompletionTokens)
			}
		})
	}

	t.Run("embeddings", func(t *testing.T) {
		r, err := client.Embeddings.New(ctx, openai.EmbeddingNewParams{
			Model: "text-embedding-3-small",
			Input: openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"one two", "three"}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Data) != 1 || len(r.Data[0].Embedding) != 3 || r.Usage.PromptTokens != 3 {
			t.Errorf("embeddings response: %+v", r)
		}
	})

	e.idle(t)
	for _, c := range []struct {
		model              string
		prompt, completion float64
	}{{"gpt-4o", 9, 12}, {"text-embedding-3-small", 3, 0}} {
		if got := testutil.ToFloat64(e.p.m.promptByUserModel.WithLabelValues("ivy", c.model)); got != c.prompt {
			t.Errorf("%s prompt tokens: got %v, want %v", c.model, got, c.prompt)
		}
		if got := testutil.ToFloat64(e.p.m.completionByUserModel.WithLabelValues("ivy", c.model)); got != c.completion {
			t.Errorf("%s completion tokens: got %v, want %v", c.model, got, c.completion)
		}
	}
}
