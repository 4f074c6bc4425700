package proxy

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/genai-gateway/genai-gateway/limiter"
)

// benchSystem is a typical system prompt, resent with every request.
const benchSystem = "You are a helpful assistant for an online bookstore. Answer questions about orders, shipping, returns and book recommendations. If you do not know the answer, say so and offer to connect the customer with a human agent."

// corpusBody returns the chat body of corpus text i with benchSystem, made distinct by n.
func corpusBody(i, n int) []byte {
	user, _ := json.Marshal(fmt.Sprintf("%s (%d)", promptCorpus[i%len(promptCorpus)].text, n))
	return chatBody(benchSystem, string(user[1:len(user)-1]))
}

// BenchmarkPromptEstimate is the estimate's cost per request: the bound and guess (the common
// path) against the tokenizer, on prompts it has not seen (cold: every user message differs,
// the system prompt and roles are cached) and on a prompt it has (cached).
func BenchmarkPromptEstimate(b *testing.B) {
	const distinct = 20_000 // more texts than the cache holds, so a body comes back uncached
	bodies := make([][]byte, distinct)
	for i := range bodies {
		bodies[i] = corpusBody(i, i)
	}
	b.Run("bound", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			promptBound(routeChat, "gpt-4o", bodies[i%distinct])
			i++
		}
	})
	b.Run("exact/cold", func(b *testing.B) {
		var tok tokenizers
		tok.estimatePrompt(routeChat, "gpt-4o", bodies[0]) // build the encoder outside the loop
		b.ReportAllocs()
		i := 1
		for b.Loop() {
			tok.estimatePrompt(routeChat, "gpt-4o", bodies[i%distinct])
			i++
		}
	})
	b.Run("exact/cached", func(b *testing.B) {
		var tok tokenizers
		tok.estimatePrompt(routeChat, "gpt-4o", bodies[0])
		b.ReportAllocs()
		for b.Loop() {
			tok.estimatePrompt(routeChat, "gpt-4o", bodies[0])
		}
	})
}

// BenchmarkCount is the tokenizer on a short text, uncached (a fresh cache every time would
// rebuild nothing but the map) and cached: what caching texts under 64 bytes buys.
func BenchmarkCount(b *testing.B) {
	var tok tokenizers
	c := tok.codec("gpt-4o")
	b.Run("tokenize", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = c.Count("user")
		}
	})
	b.Run("cached", func(b *testing.B) {
		tok.count("gpt-4o", []byte("user"))
		b.ReportAllocs()
		for b.Loop() {
			tok.count("gpt-4o", []byte("user"))
		}
	})
}

// memStore is a one-replica limiter.Store.
type memStore struct {
	mu sync.Mutex
	m  map[string]int64
}

func (s *memStore) key(limit, user string, start, size int64) string {
	return fmt.Sprint(limit, "\x00", user, "\x00", start, "\x00", size)
}

func (s *memStore) Add(limit, user string, start, size, delta int64) {
	s.mu.Lock()
	s.m[s.key(limit, user, start, size)] += delta
	s.mu.Unlock()
}

func (s *memStore) Sum(limit, user string, start, size int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m[s.key(limit, user, start, size)]
}

// newPromptLimiter returns a limiter with one prompt_tokens limit of limit per hour, a fixed
// clock and its store.
func newPromptLimiter(tb testing.TB, limit int64) (*limiter.Limiter, *memStore) {
	tb.Helper()
	st := &memStore{m: map[string]int64{}}
	at := time.UnixMilli(1_700_000_000_000 / 3_600_000 * 3_600_000) // a window boundary
	p := limiter.Policy{Enabled: true, MissingUser: limiter.MissingUserReject, Limits: []limiter.Limit{
		{Name: "prompt-hourly", Metric: limiter.MetricPromptTokens, Limit: limit, Window: time.Hour},
	}}
	l, err := limiter.New(p, st, limiter.Options{Now: func() time.Time { return at }}, zerolog.Nop(), nil)
	if err != nil {
		tb.Fatal(err)
	}
	return l, st
}

// requestEstimate is the Estimate the proxy builds for a request: the bound and guess at once,
// the tokenizer behind Exact, counted in *calls.
func requestEstimate(tok *tokenizers, body []byte, calls *int) limiter.Estimate {
	bound, cheap := promptBound(routeChat, "gpt-4o", body)
	return limiter.Estimate{Bound: bound, Cheap: cheap, Exact: func() int64 {
		*calls++
		return tok.estimatePrompt(routeChat, "gpt-4o", body)
	}}
}

// BenchmarkAdmitPrompt is Admit with the real estimate for a user far from the limit and for
// one whose remaining is 600 tokens (every request sees the same remaining: each is settled to
// 0 at once), over the corpus's chat bodies (about 90 to 900 bytes of text). It reports how
// many Admits tokenized.
func BenchmarkAdmitPrompt(b *testing.B) {
	bodies := make([][]byte, len(promptCorpus))
	for i := range bodies {
		bodies[i] = corpusBody(i, 0)
	}
	for _, bc := range []struct {
		name      string
		remaining int64
	}{{"far", 1 << 40}, {"near", 600}} {
		b.Run(bc.name, func(b *testing.B) {
			const limit = 1 << 40
			l, st := newPromptLimiter(b, limit)
			var tok tokenizers
			for _, body := range bodies { // build the encoder and fill the cache
				tok.estimatePrompt(routeChat, "gpt-4o", body)
			}
			calls := 0
			r, err := l.Admit("u", "gpt-4o", requestEstimate(&tok, bodies[0], &calls))
			if err != nil {
				b.Fatal(err)
			}
			r.Settle(limiter.Usage{PromptTokens: limit - bc.remaining}) // used = limit - remaining
			_ = st
			calls = 0
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				r, err := l.Admit("u", "gpt-4o", requestEstimate(&tok, bodies[i%len(bodies)], &calls))
				if err == nil {
					r.Settle(limiter.Usage{}) // back to limit - remaining
				}
				i++
			}
			b.ReportMetric(float64(calls)/float64(i), "tokenized/op")
		})
	}
}

// simulation is one run of a user sending the corpus's chat bodies in turn against a
// prompt_tokens limit, inFlight requests at a time: request i is settled to its exact count
// (standing in for the upstream's usage) when request i+inFlight is admitted.
type simulation struct {
	admitted, refused, tokenized int
	tokenizedRefused             int       // of tokenized: Admits that refused (a refusal names the exact count)
	trueUsed                     int64     // exact tokens of every admitted request
	reserveErr                   []float64 // (reserved - exact) / exact of admissions on the bound
}

func simulate(tb testing.TB, tok *tokenizers, limit int64, inFlight, requests int, bounded bool) simulation {
	tb.Helper()
	l, _ := newPromptLimiter(tb, limit)
	var sim simulation
	type pending struct {
		r     *limiter.Reservation
		exact int64
	}
	var queue []pending
	for i := range requests {
		body := corpusBody(i, 0)
		exact := tok.estimatePrompt(routeChat, "gpt-4o", body)
		calls := 0
		est := requestEstimate(tok, body, &calls)
		if !bounded {
			est.Bound = 0 // no bound: Exact decides every time, as before
		}
		r, err := l.Admit("u", "gpt-4o", est)
		sim.tokenized += calls
		if err != nil {
			sim.refused++
			sim.tokenizedRefused += calls
		} else {
			sim.admitted++
			sim.trueUsed += exact
			if calls == 0 {
				sim.reserveErr = append(sim.reserveErr, float64(est.Cheap-exact)/float64(exact))
			}
			queue = append(queue, pending{r, exact})
		}
		for len(queue) > inFlight {
			queue[0].r.Settle(limiter.Usage{PromptTokens: queue[0].exact})
			queue = queue[1:]
		}
	}
	return sim
}

// TestAdmissionError measures the admission error of deciding on the bound: how many Admits
// tokenize, how far the reserved guess is from the exact count, and how the decisions differ
// from tokenizing every request. With every request settled before the next (inFlight 0) the
// decisions must be the same; with requests in flight, reservations on the guess may let the
// limit be overshot by what they under-reserve until they settle.
func TestAdmissionError(t *testing.T) {
	var tok tokenizers
	const limit, requests = 20_000, 200
	for _, inFlight := range []int{0, 4, 16} {
		t.Run(fmt.Sprint("in flight ", inFlight), func(t *testing.T) {
			exact := simulate(t, &tok, limit, inFlight, requests, false)
			bound := simulate(t, &tok, limit, inFlight, requests, true)
			g := statsOf(bound.reserveErr)
			t.Logf("tokenized %d of %d Admits, %d of them refusals (exact mode %d); admitted %d (exact mode %d); true usage %d (exact mode %d) of limit %d",
				bound.tokenized, requests, bound.tokenizedRefused, exact.tokenized, bound.admitted, exact.admitted, bound.trueUsed, exact.trueUsed, limit)
			t.Logf("reserved guess vs exact on %d bound admissions: mean %+.1f%%, mean |err| %.1f%%, p95 |err| %.1f%%",
				len(bound.reserveErr), 100*g.mean, 100*g.meanAbs, 100*g.p95Abs)
			if exact.tokenized != requests {
				t.Errorf("exact mode tokenized %d, want %d", exact.tokenized, requests)
			}
			if bound.tokenized >= requests/2 {
				t.Errorf("bound mode tokenized %d of %d, want under half", bound.tokenized, requests)
			}
			if inFlight == 0 && (bound.admitted != exact.admitted || bound.trueUsed != exact.trueUsed) {
				t.Errorf("settled at once: got %d admitted, %d used; want the exact mode's %d, %d",
					bound.admitted, bound.trueUsed, exact.admitted, exact.trueUsed)
			}
			if over := bound.trueUsed - limit; over > 0 && math.Abs(g.mean) > 0.1 {
				t.Errorf("overshoot %d with a guess biased %+.2f, want bias within 10%%", over, g.mean)
			}
		})
	}
}
