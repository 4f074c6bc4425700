package mock

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// chunk is the union of chat and completions stream chunks.
type chunk struct {
	ID      string `json:"id"`
	Object  string `json:"object"`
	Model   string `json:"model"`
	Choices []struct {
		Index int `json:"index"`
		Delta *struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		} `json:"delta"`
		Text         *string `json:"text"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage json.RawMessage `json:"usage"`
}

func TestStreams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, path, object string
		includeUsage       string // stream_options JSON, "" = absent
		noUsage            bool
		wantUsage          bool
	}{
		{"chat", "/v1/chat/completions", "chat.completion.chunk", "", false, false},
		{"chat include_usage false", "/v1/chat/completions", "chat.completion.chunk", `{"include_usage":false}`, false, false},
		{"chat include_usage", "/v1/chat/completions", "chat.completion.chunk", `{"include_usage":true}`, false, true},
		{"chat include_usage no-usage", "/v1/chat/completions", "chat.completion.chunk", `{"include_usage":true}`, true, false},
		{"completions", "/v1/completions", "text_completion", "", false, false},
		{"completions include_usage", "/v1/completions", "text_completion", `{"include_usage":true}`, false, true},
		{"completions include_usage no-usage", "/v1/completions", "text_completion", `{"include_usage":true}`, true, false},
	}
	for _, tt := range tests {
		for _, words := range []int{0, 1, 5} {
			t.Run(fmt.Sprintf("%s/%d words", tt.name, words), func(t *testing.T) {
				t.Parallel()
				srv := newServer(t, Options{NoUsage: tt.noUsage})
				body := fmt.Sprintf(`{"model":"gpt-x","stream":true,"max_tokens":%d,`+
					`"messages":[{"role":"user","content":"one two three"}],"prompt":"one two three"`, words)
				if tt.includeUsage != "" {
					body += `,"stream_options":` + tt.includeUsage
				}
				r := post(t, srv, tt.path, body+"}")
				if got := r.header.Get("Content-Type"); !strings.HasPrefix(got, "text/event-stream") {
					t.Errorf("got Content-Type %q, want text/event-stream", got)
				}
				checkStream(t, parseSSE(t, r.body), tt.object, words, tt.wantUsage)
			})
		}
	}
}

// checkStream checks the chunk sequence of a chat or completions stream of
// the given number of words, prompt "one two three" (3 tokens).
// While usage is on, every other chunk carries "usage": null.
func checkStream(t *testing.T, evs []event, object string, words int, wantUsage bool) {
	t.Helper()
	want := words + 2 // words, stop chunk, [DONE]
	if wantUsage {
		want++
	}
	if len(evs) != want {
		t.Fatalf("got %d events, want %d: %+v", len(evs), want, evs)
	}
	if last := evs[len(evs)-1]; last.data != "[DONE]" || last.name != "" {
		t.Fatalf("got last event %+v, want data [DONE]", last)
	}
	var text strings.Builder
	var id string
	for i, ev := range evs[:len(evs)-1] {
		var c chunk
		mustJSON(t, ev.data, &c)
		if c.Object != object || c.Model != "gpt-x" {
			t.Errorf("chunk %d: got object %q model %q, want %q gpt-x", i, c.Object, c.Model, object)
		}
		if i == 0 {
			id = c.ID
		} else if c.ID != id {
			t.Errorf("chunk %d: got id %q, want %q as in the first chunk", i, c.ID, id)
		}
		isUsage := wantUsage && i == len(evs)-2
		switch {
		case isUsage:
			if c.Choices == nil || len(c.Choices) != 0 {
				t.Errorf("usage chunk: got choices %s, want []", ev.data)
			}
			var u usage
			mustJSON(t, string(c.Usage), &u)
			if p, cmp, tot := u.figures(); p != 3 || cmp != int64(words) || tot != int64(3+words) {
				t.Errorf("got usage %d/%d/%d, want 3/%d/%d", p, cmp, tot, words, 3+words)
			}
			continue
		case wantUsage:
			if string(c.Usage) != "null" {
				t.Errorf("chunk %d: got usage %q, want null while include_usage is on", i, c.Usage)
			}
		default:
			if c.Usage != nil {
				t.Errorf("chunk %d: got usage %s, want none", i, c.Usage)
			}
		}
		if len(c.Choices) != 1 || c.Choices[0].Index != 0 {
			t.Fatalf("chunk %d: got %s, want one choice with index 0", i, ev.data)
		}
		ch := c.Choices[0]
		var piece string
		if object == "chat.completion.chunk" {
			if ch.Delta == nil {
				t.Fatalf("chunk %d: no delta in %s", i, ev.data)
			}
			if wantRole := i == 0; (ch.Delta.Role == "assistant") != wantRole {
				t.Errorf("chunk %d: got role %q, want assistant only in the first chunk", i, ch.Delta.Role)
			}
			if ch.Delta.Content != nil {
				piece = *ch.Delta.Content
			}
		} else if ch.Text != nil {
			piece = *ch.Text
		}
		stop := i == words
		if gotStop := ch.FinishReason != nil && *ch.FinishReason == "stop"; gotStop != stop {
			t.Errorf("chunk %d: got finish_reason %v, want stop only in chunk %d", i, ch.FinishReason, words)
		}
		if stop && piece != "" {
			t.Errorf("stop chunk: got text %q, want none", piece)
		}
		text.WriteString(piece)
	}
	if got, want := text.String(), wordsText(words); got != want {
		t.Errorf("got streamed text %q, want %q", got, want)
	}
}

// wordsText returns "w1 w2 ... wN".
func wordsText(n int) string {
	ws := make([]string, n)
	for i := range ws {
		ws[i] = fmt.Sprintf("w%d", i+1)
	}
	return strings.Join(ws, " ")
}

func TestResponsesStream(t *testing.T) {
	t.Parallel()
	for _, noUsage := range []bool{false, true} {
		t.Run(fmt.Sprintf("no-usage=%v", noUsage), func(t *testing.T) {
			t.Parallel()
			srv := newServer(t, Options{NoUsage: noUsage})
			r := post(t, srv, "/v1/responses", `{"model":"gpt-x","input":[{"role":"user","content":"a b c d"}],"max_output_tokens":3,"stream":true}`)
			evs := parseSSE(t, r.body)
			wantTypes := []string{"response.created", "response.in_progress", "response.output_item.added",
				"response.content_part.added", "response.output_text.delta", "response.output_text.delta",
				"response.output_text.delta", "response.output_text.done", "response.content_part.done",
				"response.output_item.done", "response.completed"}
			if len(evs) != len(wantTypes) {
				t.Fatalf("got %d events, want %d: %+v", len(evs), len(wantTypes), evs)
			}
			var text strings.Builder
			for i, ev := range evs {
				var got struct {
					Type     string `json:"type"`
					Seq      *int   `json:"sequence_number"`
					Delta    string `json:"delta"`
					Text     string `json:"text"`
					Response *struct {
						Status string `json:"status"`
						Model  string `json:"model"`
						Usage  *usage `json:"usage"`
					} `json:"response"`
				}
				mustJSON(t, ev.data, &got)
				if got.Type != wantTypes[i] || ev.name != wantTypes[i] {
					t.Errorf("event %d: got type %q (event %q), want %q", i, got.Type, ev.name, wantTypes[i])
				}
				if got.Seq == nil || *got.Seq != i {
					t.Errorf("event %d: got sequence_number %v, want %d", i, got.Seq, i)
				}
				text.WriteString(got.Delta)
				switch got.Type {
				case "response.output_text.done":
					if got.Text != "w1 w2 w3" {
						t.Errorf("got done text %q, want %q", got.Text, "w1 w2 w3")
					}
				case "response.created":
					if got.Response == nil || got.Response.Status != "in_progress" || got.Response.Model != "gpt-x" {
						t.Errorf("got created %s, want an in_progress gpt-x response", ev.data)
					}
				case "response.completed":
					if got.Response == nil || got.Response.Status != "completed" {
						t.Fatalf("got completed %s, want a completed response", ev.data)
					}
					u := got.Response.Usage
					if noUsage {
						if u != nil {
							t.Errorf("got usage %+v, want null", u)
						}
						continue
					}
					if u == nil {
						t.Fatalf("got no usage in %s", ev.data)
					}
					if p, c, tot := u.figures(); p != 4 || c != 3 || tot != 7 {
						t.Errorf("got usage %d/%d/%d, want 4/3/7", p, c, tot)
					}
				}
			}
			if got := text.String(); got != "w1 w2 w3" {
				t.Errorf("got deltas %q, want %q", got, "w1 w2 w3")
			}
		})
	}
}
