package proxy

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestCountPiecesMatchesCount: cutting long runs of white space changes a
// count by at most one token per cut, and text without such runs not at all.
func TestCountPiecesMatchesCount(t *testing.T) {
	var tk tokenizers
	for _, model := range []string{"gpt-4o", "gpt-4"} {
		c := tk.codec(model)
		for _, s := range []string{
			"hello world, a short prompt",
			"func f() {\n\treturn 1\n}\n" + strings.Repeat("    x := y\n", 50),
			"para one" + strings.Repeat(" ", 200) + "para two" + strings.Repeat("\n", 130) + "end",
			strings.Repeat(" \n", 1000),
			strings.Repeat("\u3000\u2028", 300) + "漢字",
		} {
			whole, err := c.Count(s)
			if err != nil {
				t.Fatal(err)
			}
			got, err := countPieces(c, s)
			if err != nil {
				t.Fatal(err)
			}
			cuts := 0
			run := 0
			for _, r := range s {
				if strings.ContainsRune(" \t\n\r\v\f\u0085\u00a0\u2028\u2029\u3000", r) {
					if run++; run == maxSpaceRun {
						cuts, run = cuts+1, 0
					}
				} else {
					run = 0
				}
			}
			if d := got - whole; d < -cuts || d > cuts {
				t.Errorf("%s %q...: %d tokens in pieces, %d whole, %d cuts", model, s[:min(len(s), 20)], got, whole, cuts)
			}
		}
	}
}

// TestCountWhiteSpaceLinear: a run of mixed spaces and newlines, which the
// tokenizer's pre-split pattern backtracks over once per match, costs about
// what as much ordinary text does, not time quadratic in its length (it
// took 2 s for 64 KiB, 100 times 64 KiB of letters, in the same process).
func TestCountWhiteSpaceLinear(t *testing.T) {
	var tk tokenizers
	letters := strings.Repeat("lorem ipsum dolor sit amet ", 64<<10/27)
	spaces := strings.Repeat(" \n", 32<<10)
	timeOf := func(s string) time.Duration {
		best := time.Hour
		for range 3 {
			tk.cache = countCache{} // no cache hits
			start := time.Now()
			tk.count("gpt-4o", []byte(s))
			best = min(best, time.Since(start))
		}
		return best
	}
	base, ws := timeOf(letters), timeOf(spaces)
	if ws > 20*base+10*time.Millisecond {
		t.Errorf("64 KiB of \" \\n\" took %v, 64 KiB of words %v: want comparable, not quadratic", ws, base)
	}
}

// TestPromptTokenizeBudget: one request's prompt count tokenizes at most
// about requestTokenizeMax bytes, however many texts its body holds; the
// rest are counted at the tokens per byte seen so far, so the estimate
// stays close to the full count.
func TestPromptTokenizeBudget(t *testing.T) {
	var tk tokenizers
	var texts []string
	var msgs []string
	for i := range 40 {
		s := strings.Repeat(fmt.Sprintf("message %d says something about topic %d. ", i, i*7), 1500) // ~64 KiB
		texts = append(texts, s)
		msgs = append(msgs, `{"role":"user","content":"`+s+`"}`)
	}
	body := []byte(`{"model":"gpt-4o","messages":[` + strings.Join(msgs, ",") + `]}`)
	got := tk.estimatePrompt(routeChat, "gpt-4o", body)
	tokenized := 0
	var full int64
	for _, s := range texts {
		k := tk.cache.key(2, []byte(s))
		if _, ok := tk.cache.get(k); ok {
			tokenized++
		}
		full += tk.count("gpt-4o", []byte(s))
	}
	if tokenized > 5 { // 256 KiB and the text that crosses it
		t.Errorf("%d of 40 texts of 64 KiB were tokenized, want at most 5", tokenized)
	}
	if d := float64(got-full) / float64(full); d < -0.1 || d > 0.1 {
		t.Errorf("estimate %d, full count %d (+ overhead): off by %.0f%%", got, full, 100*d)
	}
}
