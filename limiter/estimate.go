package limiter

// Estimate is a request's prompt tokens as Admit sees them before the request goes upstream,
// in two prices: a bound and a cheap guess known without tokenizing, and an exact count that
// costs a tokenizer pass and is asked for only when the bound cannot decide.
//
// For every prompt_tokens or total_tokens limit that applies, Admit first decides on Bound: if
// used + Bound <= limit (and the escrow rule near the limit admits Bound), the request fits
// whatever its exact count, since that count is at most Bound; Admit then reserves Cheap and
// never calls Exact. Otherwise the answer depends on the count: Admit calls Exact once, outside
// any lock, and decides and reserves on it as it would have without a bound. Either way
// settlement corrects the reservation to the upstream's true usage.
//
// The zero Estimate is 0 tokens. Without Exact, Cheap is taken as the count itself (Bound is
// not used); with Exact and Bound <= 0 no bound is known and Exact always decides.
//
// MaxOutput is the output the request asks for at most, counted at admission as OpenAI counts
// its own token limits: total_tokens limits need the prompt plus MaxOutput, completion_tokens
// limits need MaxOutput, cost_usd limits the prompt at the input price plus MaxOutput at the
// output price; settlement corrects each to the true usage. 0 means the request gives none:
// completion_tokens limits then admit while used < limit, and the others count the prompt only.
type Estimate struct {
	// Bound is an upper bound on Exact's result, cheap to compute: for a BPE tokenizer, the
	// byte length of the prompt texts plus the per-message overhead. A Bound below the exact
	// count makes Admit admit what the count would refuse; it is the caller's contract.
	Bound int64
	// Cheap is what Admit reserves when Bound decides: a guess at Exact's result, clamped to
	// [0, Bound].
	Cheap int64
	// Exact returns the prompt tokens, tokenizing. Admit calls it at most once, lazily, never
	// while holding a lock; it must be safe to call from Admit's goroutine.
	Exact func() int64
	// MaxOutput is the request's max_tokens, max_completion_tokens or max_output_tokens, 0
	// when it gives none; negative counts as 0 and absurd values are clamped to 2^53.
	MaxOutput int64
}

// Tokens returns the Estimate of a count known exactly: n tokens, nothing left to compute.
func Tokens(n int64) Estimate { return Estimate{Cheap: n} }

// estimate is an Estimate as one Admit works through it: the amount each token limit is
// checked against and the amount reserved, first from the bound, then, if a limit needs it,
// from the exact count.
type estimate struct {
	src     Estimate
	decide  int64 // checked against the limits: Bound, or the exact count
	reserve int64 // reserved on admission: Cheap, or the exact count
	exact   bool  // decide and reserve are the exact count (or all there is)
	out     int64 // MaxOutput, clamped
}

// start sets e from src before any lock is taken; it calls Exact only when there is no bound.
func (e *estimate) start(src Estimate) {
	e.src = src
	e.out = clampTokens(src.MaxOutput)
	switch {
	case src.Exact == nil:
		e.settle(src.Cheap)
	case src.Bound <= 0:
		e.settle(src.Exact())
	default:
		e.decide = src.Bound
		e.reserve = min(max(src.Cheap, 0), src.Bound)
	}
}

// refine calls Exact, the bound having failed to decide some limit.
func (e *estimate) refine() { e.settle(e.src.Exact()) }

func (e *estimate) settle(n int64) {
	n = clampTokens(n)
	e.decide, e.reserve, e.exact = n, n, true
}
