package mock

import (
	"context"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/responses"
)

// newClient returns an official OpenAI client talking to a fresh mock.
func newClient(t *testing.T, opts Options) openai.Client {
	t.Helper()
	srv := newServer(t, opts)
	return openai.NewClient(
		option.WithBaseURL(srv.URL+"/v1/"),
		option.WithAPIKey("sk-test"),
		option.WithMaxRetries(0),
		option.WithHTTPClient(srv.Client()),
	)
}

// testContext returns a context that ends with the test, bounded in time.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestClientChat(t *testing.T) {
	t.Parallel()
	c := newClient(t, Options{})
	got, err := c.Chat.Completions.New(testContext(t), openai.ChatCompletionNewParams{
		Model:     "gpt-4o-mini",
		Messages:  []openai.ChatCompletionMessageParamUnion{openai.SystemMessage("be short"), openai.UserMessage("say three words")},
		MaxTokens: openai.Int(3),
	})
	if err != nil {
		t.Fatalf("chat: %v", err)
	}
	if got.Model != "gpt-4o-mini" || got.Object != "chat.completion" || got.ID == "" || got.Created != 1700000000 {
		t.Errorf("got model %q object %q id %q created %d, want gpt-4o-mini chat.completion, an id, 1700000000",
			got.Model, got.Object, got.ID, got.Created)
	}
	if len(got.Choices) != 1 {
		t.Fatalf("got %d choices, want 1", len(got.Choices))
	}
	ch := got.Choices[0]
	if ch.Message.Content != "w1 w2 w3" || ch.FinishReason != "stop" || ch.Message.Role != "assistant" {
		t.Errorf("got message %q role %q finish %q, want \"w1 w2 w3\" assistant stop", ch.Message.Content, ch.Message.Role, ch.FinishReason)
	}
	if u := got.Usage; u.PromptTokens != 5 || u.CompletionTokens != 3 || u.TotalTokens != 8 {
		t.Errorf("got usage %d/%d/%d, want 5/3/8", u.PromptTokens, u.CompletionTokens, u.TotalTokens)
	}
}

func TestClientChatStream(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		includeUsage bool
		noUsage      bool
		wantUsage    bool
	}{
		{"with usage", true, false, true},
		{"without include_usage", false, false, false},
		{"no-usage server", true, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, Options{NoUsage: tt.noUsage})
			params := openai.ChatCompletionNewParams{
				Model:               "gpt-4o-mini",
				Messages:            []openai.ChatCompletionMessageParamUnion{openai.UserMessage("one two three four")},
				MaxCompletionTokens: openai.Int(6),
			}
			if tt.includeUsage {
				params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
			}
			stream := c.Chat.Completions.NewStreaming(testContext(t), params)
			var acc openai.ChatCompletionAccumulator
			chunks := 0
			for stream.Next() {
				if !acc.AddChunk(stream.Current()) {
					t.Fatalf("accumulator refused chunk %d: %s", chunks, stream.Current().RawJSON())
				}
				chunks++
			}
			if err := stream.Err(); err != nil {
				t.Fatalf("stream: %v", err)
			}
			if err := stream.Close(); err != nil {
				t.Fatalf("close: %v", err)
			}
			wantChunks := 7
			if tt.wantUsage {
				wantChunks++
			}
			if chunks != wantChunks {
				t.Errorf("got %d chunks, want %d", chunks, wantChunks)
			}
			if len(acc.Choices) != 1 || acc.Choices[0].Message.Content != "w1 w2 w3 w4 w5 w6" {
				t.Fatalf("got choices %+v, want one with \"w1 w2 w3 w4 w5 w6\"", acc.Choices)
			}
			if acc.Choices[0].FinishReason != "stop" {
				t.Errorf("got finish_reason %q, want stop", acc.Choices[0].FinishReason)
			}
			u := acc.Usage
			wantP, wantC := int64(0), int64(0)
			if tt.wantUsage {
				wantP, wantC = 4, 6
			}
			if u.PromptTokens != wantP || u.CompletionTokens != wantC || u.TotalTokens != wantP+wantC {
				t.Errorf("got usage %d/%d/%d, want %d/%d/%d", u.PromptTokens, u.CompletionTokens, u.TotalTokens, wantP, wantC, wantP+wantC)
			}
		})
	}
}

func TestClientEmbeddings(t *testing.T) {
	t.Parallel()
	c := newClient(t, Options{})
	var vectors [2][]float64
	for i, format := range []openai.EmbeddingNewParamsEncodingFormat{
		openai.EmbeddingNewParamsEncodingFormatFloat, openai.EmbeddingNewParamsEncodingFormatBase64,
	} {
		got, err := c.Embeddings.New(testContext(t), openai.EmbeddingNewParams{
			Model:          "text-embedding-3-small",
			Input:          openai.EmbeddingNewParamsInputUnion{OfArrayOfStrings: []string{"a b c", "d"}},
			EncodingFormat: format,
		})
		if err != nil {
			t.Fatalf("embeddings %s: %v", format, err)
		}
		if len(got.Data) != 2 || len(got.Data[0].Embedding) != DefaultDimensions || got.Data[1].Index != 1 {
			t.Fatalf("embeddings %s: got %s, want 2 vectors of %d", format, got.RawJSON(), DefaultDimensions)
		}
		if u := got.Usage; u.PromptTokens != 4 || u.TotalTokens != 4 {
			t.Errorf("embeddings %s: got usage %d/%d, want 4/4", format, u.PromptTokens, u.TotalTokens)
		}
		vectors[i] = got.Data[0].Embedding
	}
	for i := range vectors[0] {
		// Floats travel as shortest float32 text, base64 as exact float32 bits.
		if float32(vectors[0][i]) != float32(vectors[1][i]) {
			t.Fatalf("got float %v and base64 %v, want the same vector", vectors[0], vectors[1])
		}
	}
}

func TestClientCompletions(t *testing.T) {
	t.Parallel()
	c := newClient(t, Options{})
	params := openai.CompletionNewParams{
		Model:     "gpt-3.5-turbo-instruct",
		Prompt:    openai.CompletionNewParamsPromptUnion{OfString: openai.String("once upon a time")},
		MaxTokens: openai.Int(2),
	}
	got, err := c.Completions.New(testContext(t), params)
	if err != nil {
		t.Fatalf("completions: %v", err)
	}
	if len(got.Choices) != 1 || got.Choices[0].Text != "w1 w2" || got.Choices[0].FinishReason != "stop" {
		t.Fatalf("got %s, want one choice \"w1 w2\" stop", got.RawJSON())
	}
	if u := got.Usage; u.PromptTokens != 4 || u.CompletionTokens != 2 || u.TotalTokens != 6 {
		t.Errorf("got usage %d/%d/%d, want 4/2/6", u.PromptTokens, u.CompletionTokens, u.TotalTokens)
	}

	params.StreamOptions = openai.ChatCompletionStreamOptionsParam{IncludeUsage: openai.Bool(true)}
	stream := c.Completions.NewStreaming(testContext(t), params)
	var text string
	var last openai.Completion
	for stream.Next() {
		last = stream.Current()
		for _, ch := range last.Choices {
			text += ch.Text
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("completions stream: %v", err)
	}
	_ = stream.Close()
	if text != "w1 w2" {
		t.Errorf("got streamed text %q, want \"w1 w2\"", text)
	}
	if u := last.Usage; u.PromptTokens != 4 || u.CompletionTokens != 2 || u.TotalTokens != 6 {
		t.Errorf("got stream usage %d/%d/%d, want 4/2/6", u.PromptTokens, u.CompletionTokens, u.TotalTokens)
	}
}

func TestClientResponses(t *testing.T) {
	t.Parallel()
	c := newClient(t, Options{})
	params := responses.ResponseNewParams{
		Model:           "gpt-4o",
		Input:           responses.ResponseNewParamsInputUnion{OfString: openai.String("write a haiku")},
		MaxOutputTokens: openai.Int(5),
	}
	got, err := c.Responses.New(testContext(t), params)
	if err != nil {
		t.Fatalf("responses: %v", err)
	}
	if got.OutputText() != "w1 w2 w3 w4 w5" || got.Status != "completed" || got.Model != "gpt-4o" {
		t.Errorf("got text %q status %q model %q, want \"w1 w2 w3 w4 w5\" completed gpt-4o", got.OutputText(), got.Status, got.Model)
	}
	if u := got.Usage; u.InputTokens != 3 || u.OutputTokens != 5 || u.TotalTokens != 8 {
		t.Errorf("got usage %d/%d/%d, want 3/5/8", u.InputTokens, u.OutputTokens, u.TotalTokens)
	}

	stream := c.Responses.NewStreaming(testContext(t), params)
	var deltas string
	var completed *responses.Response
	for stream.Next() {
		ev := stream.Current()
		switch ev.Type {
		case "response.output_text.delta":
			deltas += ev.AsResponseOutputTextDelta().Delta
		case "response.completed":
			r := ev.AsResponseCompleted().Response
			completed = &r
		}
	}
	if err := stream.Err(); err != nil {
		t.Fatalf("responses stream: %v", err)
	}
	_ = stream.Close()
	if deltas != "w1 w2 w3 w4 w5" {
		t.Errorf("got deltas %q, want \"w1 w2 w3 w4 w5\"", deltas)
	}
	if completed == nil {
		t.Fatal("got no response.completed event")
	}
	if u := completed.Usage; u.InputTokens != 3 || u.OutputTokens != 5 || u.TotalTokens != 8 {
		t.Errorf("got stream usage %d/%d/%d, want 3/5/8", u.InputTokens, u.OutputTokens, u.TotalTokens)
	}
	if completed.OutputText() != "w1 w2 w3 w4 w5" {
		t.Errorf("got completed text %q, want \"w1 w2 w3 w4 w5\"", completed.OutputText())
	}
}

func TestClientModels(t *testing.T) {
	t.Parallel()
	c := newClient(t, Options{})
	page, err := c.Models.List(testContext(t))
	if err != nil {
		t.Fatalf("models: %v", err)
	}
	if len(page.Data) != len(Models()) || page.Data[0].ID != Models()[0] {
		t.Errorf("got %d models (first %q), want %d (first %q)", len(page.Data), page.Data[0].ID, len(Models()), Models()[0])
	}
}
