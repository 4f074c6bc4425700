package limiter

import (
	"fmt"
	"math"
	"math/bits"
	"path"
	"strconv"
	"sync"

	"github.com/rs/zerolog"
)

// Price is the list price of the models its globs match, in USD per million tokens. The first
// Price of Policy.Prices whose globs match a model prices it; a model no Price matches costs 0
// and is logged as unpriced, once per Limiter, when there are prices or a cost_usd limit covers it.
type Price struct {
	Models []string // path.Match globs, at least one ("*" for every model)
	// Input prices the prompt tokens that were neither read from nor written to the
	// provider's prompt cache, CachedInput those read from it (Usage.CachedPromptTokens),
	// CacheWrite those written to it (Usage.CacheWritePromptTokens; Anthropic bills them above
	// the input price), Output the completion tokens. Each is finite and in [0, MaxPriceUSD].
	Input, CachedInput, CacheWrite, Output float64
}

// Bounds of the figures of spend, so that no price, limit or token count, however hostile, can
// overflow the integer nano-dollars the counters hold.
const (
	// MaxPriceUSD is the largest price accepted, in USD per million tokens: far above any list
	// price, low enough to catch a price per token entered as one per billion.
	MaxPriceUSD = 10_000
	// MaxLimitUSD is the largest cost_usd limit, in USD: 10^18 nano-dollars, with room to add
	// three such figures in an int64.
	MaxLimitUSD = 1e9
	// maxNanos is MaxLimitUSD in nano-dollars; every cost is clamped to it.
	maxNanos = 1_000_000_000 * 1_000_000_000
	// maxTokens bounds every token count before it is priced or added (2^53, far above any
	// context window), so usage an upstream reports as absurd cannot wrap a counter.
	maxTokens = 1 << 53
)

// NanoUSD returns usd in integer nano-dollars, the unit of cost_usd counters and of the Limit of
// a cost_usd limit, rounded to the nearest and clamped to [0, MaxLimitUSD]; NaN is 0.
func NanoUSD(usd float64) int64 {
	switch {
	case !(usd > 0): // also NaN
		return 0
	case usd >= MaxLimitUSD:
		return maxNanos
	}
	return int64(math.Round(usd * 1e9))
}

// USD returns nanos nano-dollars in US dollars.
func USD(nanos int64) float64 { return float64(nanos) / 1e9 }

// formatUSD writes nanos as an exact decimal number of dollars, without trailing zeros:
// 50, 0.15, 0.000000001. It is the JSON and message form of a cost_usd figure.
func formatUSD(nanos int64) string {
	neg := nanos < 0
	u := uint64(nanos)
	if neg {
		u = -u
	}
	s := strconv.FormatUint(u/1e9, 10)
	if frac := u % 1e9; frac != 0 {
		f := fmt.Sprintf("%09d", frac)
		for f[len(f)-1] == '0' {
			f = f[:len(f)-1]
		}
		s += "." + f
	}
	if neg {
		s = "-" + s
	}
	return s
}

// cprice is a compiled Price: nano-dollars per million tokens (at most 10^13).
type cprice struct {
	models                       []glob
	input, cached, write, output int64
}

// matches reports whether the price applies to model.
func (p *cprice) matches(model string) bool {
	for _, g := range p.models {
		if g.match(model) {
			return true
		}
	}
	return false
}

// estimate is the cost of prompt tokens at the input price and out tokens at the output
// price, in nano-dollars: what a request may cost before it is forwarded. A nil price is 0.
func (p *cprice) estimate(prompt, out int64) int64 {
	if p == nil {
		return 0
	}
	return min(satAdd(tokenCost(prompt, p.input), tokenCost(out, p.output)), maxNanos)
}

// cost is the cost of the true usage u in nano-dollars, prompt tokens read from and written
// to the cache at their prices. A nil price is 0.
func (p *cprice) cost(u Usage) int64 {
	if p == nil {
		return 0
	}
	prompt := clampTokens(u.PromptTokens)
	cached := min(clampTokens(u.CachedPromptTokens), prompt)
	written := min(clampTokens(u.CacheWritePromptTokens), prompt-cached)
	c := satAdd(tokenCost(prompt-cached-written, p.input), tokenCost(cached, p.cached))
	c = satAdd(c, tokenCost(written, p.write))
	return min(satAdd(c, tokenCost(clampTokens(u.CompletionTokens), p.output)), maxNanos)
}

// tokenCost returns ceil(n * perMillion / 10^6) nano-dollars for n tokens at perMillion
// nano-dollars per million, clamped to maxNanos: rounding up means a request is never priced
// below its cost, by less than one nano-dollar per term.
func tokenCost(n, perMillion int64) int64 {
	hi, lo := bits.Mul64(uint64(clampTokens(n)), uint64(max(perMillion, 0)))
	if hi >= 1_000_000 { // the quotient would not fit in 64 bits
		return maxNanos
	}
	q, r := bits.Div64(hi, lo, 1_000_000)
	if r != 0 {
		q++
	}
	return int64(min(q, maxNanos))
}

// clampTokens bounds a token count to [0, maxTokens].
func clampTokens(n int64) int64 { return min(max(n, 0), maxTokens) }

// compilePrices validates prices and compiles them, in order. Problems name prices[i].field.
func compilePrices(prices []Price) ([]*cprice, []error) {
	var errs []error
	out := make([]*cprice, 0, len(prices))
	for i, p := range prices {
		key := fmt.Sprintf("prices[%d]", i)
		bad := false
		if len(p.Models) == 0 {
			errs = append(errs, fmt.Errorf("%s.models: empty, want at least one glob (\"*\" for every model)", key))
			bad = true
		}
		for j, g := range p.Models {
			if _, err := path.Match(g, ""); err != nil || g == "" {
				errs = append(errs, fmt.Errorf("%s.models[%d]: %q is not a valid glob", key, j, g))
				bad = true
			}
		}
		for _, f := range []struct {
			name string
			usd  float64
		}{{"input", p.Input}, {"cached_input", p.CachedInput}, {"cache_write", p.CacheWrite}, {"output", p.Output}} {
			if math.IsNaN(f.usd) || f.usd < 0 || f.usd > MaxPriceUSD {
				errs = append(errs, fmt.Errorf("%s.%s: %v, want USD per million tokens from 0 to %d", key, f.name, f.usd, MaxPriceUSD))
				bad = true
			}
		}
		if bad {
			continue
		}
		out = append(out, &cprice{models: globs(p.Models),
			input: NanoUSD(p.Input), cached: NanoUSD(p.CachedInput), write: NanoUSD(p.CacheWrite), output: NanoUSD(p.Output)})
	}
	return out, errs
}

// maxUnpriced bounds the distinct model names remembered as already logged unpriced: model names
// come from clients.
const maxUnpriced = 1024

// unpricedLog logs each unpriced model once. The Limiter keeps one for its life, so a reload
// (SetPolicy) does not log the same models again. It is safe for concurrent use.
type unpricedLog struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

// report logs model as unpriced the first time it is seen; past maxUnpriced models it logs once
// that it stops naming them.
func (u *unpricedLog) report(log zerolog.Logger, model string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.seen[model]; ok || len(u.seen) > maxUnpriced {
		return
	}
	if u.seen == nil {
		u.seen = map[string]struct{}{}
	}
	u.seen[model] = struct{}{}
	if len(u.seen) > maxUnpriced {
		log.Warn().Int("models", maxUnpriced).Msg("more unpriced models than logged; no further ones are named")
		return
	}
	log.Warn().Str("model", truncate(model, 256)).Msg("model has no price: its requests cost 0 (add it to prices)")
}

// truncate shortens s to at most n bytes for a log line.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// Cost prices the true usage u of a request for model with the current policy's prices: prompt
// tokens neither read from nor written to the cache at the input price, u.CachedPromptTokens at
// the cached-input price, u.CacheWritePromptTokens at the cache-write price, completion tokens at
// the output price. It returns the cost in US dollars (exact to the
// nano-dollar, each term rounded up) and whether model has a price; a model without one costs 0
// and, when the policy has prices, is logged as unpriced, once per Limiter (reloads included). Token counts are clamped to [0, 2^53], the cached count to
// the prompt count and the written count to the prompt count less the cached one. Cost works whether or not limiting is enabled; it is what the proxy adds to
// genai_gateway_cost_usd_total and writes in the access log. It is safe for concurrent use and
// allocates nothing for a priced model.
func (l *Limiter) Cost(model string, u Usage) (usd float64, priced bool) {
	p := l.policy.Load()
	price := p.priceFor(model)
	if price == nil {
		if len(p.prices) > 0 { // without prices nothing is priced, and nothing is missing
			l.unpriced.report(l.log, model)
		}
		return 0, false
	}
	return USD(price.cost(u)), true
}
