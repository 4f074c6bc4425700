package proxy

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"
	"unicode/utf8"
)

// boundModels are one model of each encoding.
var boundModels = []string{"gpt-4o", "gpt-3.5-turbo"}

// checkBound fails if promptBound is not an upper bound on estimatePrompt for body, or if its
// guess is outside [0, bound].
func checkBound(t *testing.T, tok *tokenizers, route string, body []byte) {
	t.Helper()
	for _, model := range boundModels {
		bound, cheap := promptBound(route, model, body)
		exact := tok.estimatePrompt(route, model, body)
		if bound < exact {
			t.Errorf("%s %s %q: bound %d < exact %d, want bound >= exact", route, model, body, bound, exact)
		}
		if cheap < 0 || cheap > bound {
			t.Errorf("%s %s %q: cheap %d, want within [0, %d]", route, model, body, cheap, bound)
		}
	}
}

func TestPromptBound(t *testing.T) {
	tests := []struct {
		name      string
		route     string
		body      string
		wantBound int64
	}{
		{"chat", routeChat, `{"messages":[{"role":"user","content":"hello"}]}`, 3 + 4 + 5 + 3},
		{"chat with name", routeChat, `{"messages":[{"role":"user","name":"bo","content":"hi"}]}`, 3 + 4 + 1 + 2 + 2 + 3},
		{"chat parts", routeChat, `{"messages":[{"role":"user","content":[{"type":"text","text":"ab"},{"type":"image_url","image_url":{"url":"http://x"}}]}]}`, 3 + 4 + 2 + 3},
		{"chat no messages", routeChat, `{"model":"m"}`, 3},
		{"escapes decode", routeChat, `{"messages":[{"role":"user","content":"a\nb\"\\"}]}`, 3 + 4 + 5 + 3},
		{"unicode escape CJK", routeChat, `{"messages":[{"role":"user","content":"\u4e2d\u6587"}]}`, 3 + 4 + 6 + 3},
		{"surrogate pair", routeChat, `{"messages":[{"role":"user","content":"\ud83d\ude00"}]}`, 3 + 4 + 4 + 3},
		{"lone surrogate", routeChat, `{"messages":[{"role":"user","content":"\ud83dx"}]}`, 3 + 4 + 3 + 1 + 3},
		{"raw UTF-8", routeChat, `{"messages":[{"role":"user","content":"中文😀"}]}`, 3 + 4 + 10 + 3},
		{"invalid UTF-8 counts as U+FFFD", routeChat, "{\"messages\":[{\"role\":\"user\",\"content\":\"a\xffb\"}]}", 3 + 4 + 5 + 3},
		{"non-string content", routeChat, `{"messages":[{"role":"user","content":42}]}`, 3 + 4 + 3},
		{"completions string", routeCompletions, `{"prompt":"hello world"}`, 11},
		{"completions token ids", routeCompletions, `{"prompt":[1,2,3]}`, 3},
		{"completions id arrays", routeCompletions, `{"prompt":[[1,2],[3],"ab"]}`, 3 + 2},
		{"embeddings", routeEmbeddings, `{"input":["ab","cde"]}`, 5},
		{"responses string", routeResponses, `{"instructions":"be brief","input":"hi"}`, 8 + 2},
		{"responses items", routeResponses, `{"input":[{"role":"user","content":"hi"},{"type":"function_call_output","output":"42"}]}`, 3 + 4 + 2 + 3 + 2 + 3},
		{"other route", "other", `{"messages":[{"role":"user","content":"hello"}]}`, 0},
	}
	var tok tokenizers
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, model := range boundModels {
				if got, _ := promptBound(tt.route, model, []byte(tt.body)); got != tt.wantBound {
					t.Errorf("%s: bound got %d, want %d", model, got, tt.wantBound)
				}
			}
			checkBound(t, &tok, tt.route, []byte(tt.body))
		})
	}
}

// randomText returns a JSON string literal mixing ASCII words, escapes, CJK, emoji, invalid
// UTF-8 and broken escapes: the texts where a bound on bytes could go wrong.
func randomText(r *rand.Rand) string {
	pieces := []string{"hello", " world", "  ", "\\n", "\\t", "\\\"", "\\\\", "\\/", "\\u4e2d", "\\u00e9",
		"\\ud83d\\ude00", "\\ud83d", "\\ude00", "\\u12", "\\uZZZZ", "\\ud83d\\u0041", "中文", "😀", "é", "Привет",
		"\xff", "\xe4\xb8", "\x80", "\xed\xa0\x80", "12345678", "3.14", "!!!", "{}[]", "\t\n", "x"}
	var b strings.Builder
	b.WriteByte('"')
	for range r.IntN(24) {
		b.WriteString(pieces[r.IntN(len(pieces))])
	}
	b.WriteByte('"')
	return b.String()
}

// randomBody returns a body for route with random texts in the places estimatePrompt counts.
func randomBody(r *rand.Rand, route string) []byte {
	var b strings.Builder
	switch route {
	case routeChat:
		b.WriteString(`{"model":"m","messages":[`)
		for i := range r.IntN(5) {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(`{"role":` + randomText(r))
			if r.IntN(3) == 0 {
				b.WriteString(`,"name":` + randomText(r))
			}
			if r.IntN(2) == 0 {
				b.WriteString(`,"content":` + randomText(r) + `}`)
			} else {
				b.WriteString(`,"content":[{"type":"text","text":` + randomText(r) + `},{"text":` + randomText(r) + `}]}`)
			}
		}
		b.WriteString(`]}`)
	case routeCompletions, routeEmbeddings:
		key := "prompt"
		if route == routeEmbeddings {
			key = "input"
		}
		b.WriteString(`{"` + key + `":[` + randomText(r) + `,[1,2,3],7,` + randomText(r) + `]}`)
	case routeResponses:
		b.WriteString(`{"instructions":` + randomText(r) + `,"input":[{"role":"user","content":` + randomText(r) + `},{"output":` + randomText(r) + `}]}`)
	}
	return []byte(b.String())
}

// TestPromptBoundRandom checks bound >= exact with the real tokenizers on random bodies.
func TestPromptBoundRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var tok tokenizers
	for _, route := range []string{routeChat, routeCompletions, routeEmbeddings, routeResponses} {
		t.Run(route, func(t *testing.T) {
			for range 300 {
				checkBound(t, &tok, route, randomBody(r, route))
			}
		})
	}
}

// FuzzPromptBound checks bound >= exact for any body, valid JSON or not.
func FuzzPromptBound(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	routes := []string{routeChat, routeCompletions, routeEmbeddings, routeResponses}
	for i, route := range routes {
		f.Add(uint8(i), randomBody(r, route))
	}
	f.Add(uint8(0), []byte(`{"messages":[{"role":"user","content":"\ud83d\ude00\u4e2d"}]}`))
	var tok tokenizers
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		checkBound(t, &tok, routes[int(route)%len(routes)], body)
	})
}

// TestPromptBoundAllocs checks that promptBound allocates nothing of its own: only gjson's
// unescaped copy of a text with a backslash in it.
func TestPromptBoundAllocs(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		want float64
	}{
		{"no escapes", chatBody("You are a helpful assistant.", "What is the capital of France?"), 0},
		{"one escaped text", chatBody("You are a helpful assistant.", "\\u4e2d\\u6587 with escapes\\n"), 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := testing.AllocsPerRun(100, func() { promptBound(routeChat, "gpt-4o", tt.body) }); got != tt.want {
				t.Errorf("allocations per promptBound: got %v, want %v", got, tt.want)
			}
		})
	}
}

// chatBody returns a chat request with a system and a user message, both JSON-encoded except
// that user is inserted raw (so a test can put escapes in it).
func chatBody(system, user string) []byte {
	sys, _ := json.Marshal(system)
	return []byte(`{"model":"gpt-4o","messages":[{"role":"system","content":` + string(sys) +
		`},{"role":"user","content":"` + user + `"}],"max_tokens":256}`)
}

// guessStats are the relative errors (guess-exact)/exact of a guess over the corpus.
type guessStats struct{ mean, meanAbs, p95Abs float64 }

func statsOf(errs []float64) guessStats {
	var s guessStats
	abs := make([]float64, len(errs))
	for i, e := range errs {
		s.mean += e / float64(len(errs))
		s.meanAbs += math.Abs(e) / float64(len(errs))
		abs[i] = math.Abs(e)
	}
	sort.Float64s(abs)
	s.p95Abs = abs[int(math.Ceil(0.95*float64(len(abs))))-1]
	return s
}

// TestPromptGuessError measures the cheap guess against the tokenizer on the corpus, each text
// alone as a completions prompt, and compares it with bytes/4. It fails if the guess is not
// clearly better than bytes/4 or its errors pass the bounds below.
func TestPromptGuessError(t *testing.T) {
	var tok tokenizers
	for _, model := range boundModels {
		t.Run(model, func(t *testing.T) {
			var guess, quarter []float64
			for _, c := range promptCorpus {
				body, _ := json.Marshal(map[string]string{"prompt": c.text})
				exact := float64(tok.estimatePrompt(routeCompletions, model, body))
				_, cheap := promptBound(routeCompletions, model, body)
				guess = append(guess, (float64(cheap)-exact)/exact)
				quarter = append(quarter, (float64(len(c.text))/4-exact)/exact)
				t.Logf("%-10s %4d bytes %4.0f tokens: guess %+4.0f%%, bytes/4 %+4.0f%%", c.name, len(c.text), exact,
					100*guess[len(guess)-1], 100*quarter[len(quarter)-1])
			}
			g, q := statsOf(guess), statsOf(quarter)
			t.Logf("guess:   mean %+.1f%%, mean |err| %.1f%%, p95 |err| %.1f%%", 100*g.mean, 100*g.meanAbs, 100*g.p95Abs)
			t.Logf("bytes/4: mean %+.1f%%, mean |err| %.1f%%, p95 |err| %.1f%%", 100*q.mean, 100*q.meanAbs, 100*q.p95Abs)
			if g.meanAbs > 0.15 || g.p95Abs > 0.35 {
				t.Errorf("guess error: got mean |err| %.3f, p95 %.3f; want <= 0.15, <= 0.35", g.meanAbs, g.p95Abs)
			}
			if g.meanAbs >= q.meanAbs {
				t.Errorf("guess mean |err| %.3f, want below bytes/4's %.3f", g.meanAbs, q.meanAbs)
			}
		})
	}
}

// TestCountCachesShortTexts checks that a short text is counted once and served from the cache.
func TestCountCachesShortTexts(t *testing.T) {
	var tok tokenizers
	want := tok.count("gpt-4o", []byte("user"))
	if n := len(tok.cache.m); n != 1 {
		t.Fatalf("cache entries: got %d, want 1", n)
	}
	if got := tok.count("gpt-4o", []byte("user")); got != want {
		t.Errorf("cached count: got %d, want %d", got, want)
	}
	if !utf8.ValidString("user") || want != 1 {
		t.Errorf("count(user): got %d, want 1", want)
	}
}
