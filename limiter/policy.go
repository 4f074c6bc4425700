package limiter

import (
	"errors"
	"fmt"
	"math"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metric names what a limit counts.
type Metric string

// The metrics a limit can count.
const (
	MetricPromptTokens     Metric = "prompt_tokens"     // prompt tokens; the estimate is reserved at admission
	MetricCompletionTokens Metric = "completion_tokens" // completion tokens; the requested max output is reserved, else admits while used < limit
	MetricTotalTokens      Metric = "total_tokens"      // prompt + completion; the prompt estimate plus the max output is reserved
	MetricRequests         Metric = "requests"          // requests; 1 is reserved at admission
	MetricCostUSD          Metric = "cost_usd"          // spend in nano-dollars (see Price); the priced estimate is reserved
)

// Values of Policy.MissingUser, and the shared user of MissingUserAnonymous.
const (
	MissingUserReject    = "reject"    // a request without a user is refused with ErrMissingUser
	MissingUserAnonymous = "anonymous" // requests without a user share the bucket of AnonymousUser
	AnonymousUser        = "anonymous" // user name of the shared bucket; a real user of that name shares it
)

// Limit is one rate limit, applied to each user separately. Its counters are keyed by Name, user,
// window start and window size, so an override that keeps the name and window shares the counters
// of the default it replaces.
type Limit struct {
	Name   string
	Metric Metric
	// Limit is at least 1, in the metric's unit: tokens, requests, or nano-dollars for
	// MetricCostUSD (NanoUSD converts dollars; at most MaxLimitUSD).
	Limit int64
	// Window is the sliding window, a whole number of milliseconds, at least 1ms; it must be 0
	// when Calendar is set.
	Window time.Duration
	Models []string // path.Match globs; empty = every model
	// Calendar, when set, makes the window the fixed calendar day or month (UTC) instead.
	Calendar Calendar
}

// Policy is the rate-limit configuration. Limits apply to every user; Overrides[user] lists
// complete limits for one user, each replacing the default of the same name or adding a limit.
// Prices price the models for cost_usd limits and for Limiter.Cost; they apply, and are
// validated, even when Enabled is false. A Policy handed to New or SetPolicy is copied; the
// caller may reuse it.
type Policy struct {
	Enabled     bool
	MissingUser string // MissingUserReject (also when empty) or MissingUserAnonymous
	Limits      []Limit
	Overrides   map[string][]Limit
	Prices      []Price
}

// compiled is an immutable, pre-computed Policy. Admit reads it through an atomic pointer, so it
// must never be modified once published.
type compiled struct {
	enabled   bool
	anonymous bool
	defaults  []*climit
	overrides map[string][]*climit // complete per-user lists: defaults with overrides applied
	prices    []*cprice            // in policy order: the first match prices a model
}

// priceFor returns the first price that matches model, or nil when none does.
func (c *compiled) priceFor(model string) *cprice {
	for _, p := range c.prices {
		if p.matches(model) {
			return p
		}
	}
	return nil
}

// climit is one compiled limit.
type climit struct {
	name     string
	metric   Metric
	limit    int64
	window   time.Duration
	size     int64    // window in ms; 0 for a calendar window
	calendar Calendar // "" for a sliding window
	models   []glob
	prompt   bool  // prompt_tokens, total_tokens or cost_usd: needs the prompt estimate
	escrow   bool  // the escrow rule is on for this limit (see escrowAllows)
	escrowAt int64 // floor(threshold*limit): admissions ending above it are escrowed

	limited prometheus.Counter // genai_gateway_rate_limited_requests_total{limit}
	escrows prometheus.Counter // genai_gateway_rate_limit_escrow_refusals_total{limit}
}

// limitsFor returns the limits of user (already resolved, never empty).
func (c *compiled) limitsFor(user string) []*climit {
	if ls, ok := c.overrides[user]; ok {
		return ls
	}
	return c.defaults
}

// matches reports whether the limit applies to model.
func (c *climit) matches(model string) bool {
	if len(c.models) == 0 {
		return true
	}
	for _, g := range c.models {
		if g.match(model) {
			return true
		}
	}
	return false
}

// glob is a path.Match pattern with fast paths for the common shapes "gpt-4o" and "gpt-4o*",
// which path.Match handles several times slower.
type glob struct {
	pattern string
	kind    globKind
	prefix  string // literal part for globExact and globPrefix
}

type globKind uint8

const (
	globMatch  globKind = iota // path.Match
	globExact                  // no metacharacter
	globPrefix                 // literal followed by one final '*'
)

// newGlob classifies a valid pattern.
func newGlob(p string) glob {
	meta := strings.IndexAny(p, `*?[\`)
	switch {
	case meta < 0:
		return glob{pattern: p, kind: globExact, prefix: p}
	case meta == len(p)-1 && p[meta] == '*':
		return glob{pattern: p, kind: globPrefix, prefix: p[:meta]}
	}
	return glob{pattern: p, kind: globMatch}
}

// match reports whether model matches, as path.Match(g.pattern, model) would.
func (g glob) match(model string) bool {
	switch g.kind {
	case globExact:
		return model == g.prefix
	case globPrefix: // '*' matches any run of non-'/' characters
		return strings.HasPrefix(model, g.prefix) && !strings.Contains(model[len(g.prefix):], "/")
	}
	ok, _ := path.Match(g.pattern, model)
	return ok
}

// need is what an admission asks of the limit, given the prompt estimate, the requested
// maximum output (0: not given) and the model's price (nil: unpriced): the prompt for
// prompt_tokens, both for total_tokens, the output for completion_tokens, the priced sum for
// cost_usd, 1 for requests.
func (c *climit) need(prompt, out int64, price *cprice) int64 {
	switch c.metric {
	case MetricPromptTokens:
		return prompt
	case MetricTotalTokens:
		return satAdd(prompt, out)
	case MetricCompletionTokens:
		return out
	case MetricCostUSD:
		return price.estimate(prompt, out)
	}
	return 1
}

// usesPrompt reports whether the limit's need depends on the prompt estimate for a model at
// price.
func (c *climit) usesPrompt(price *cprice) bool {
	return c.prompt && (c.metric != MetricCostUSD || price != nil && price.input > 0)
}

// open reports whether, besides used + need <= limit, the limit admits only while used < limit:
// completion_tokens when the request gives no maximum output (its need is then 0, its
// completion unknown), and cost_usd, whose budget once spent refuses even a request priced 0.
func (c *climit) open(need int64) bool {
	return c.metric == MetricCostUSD || c.metric == MetricCompletionTokens && need == 0
}

// span returns the window the limit counts in at nowMs.
func (c *climit) span(nowMs int64) span {
	if c.calendar != "" {
		return calendarSpan(c.calendar, nowMs)
	}
	return spanAt(nowMs, c.size)
}

// windowName is the window as /usage shows it: "1h", "calendar_month".
func (c *climit) windowName() string {
	if c.calendar != "" {
		return string(c.calendar)
	}
	return formatWindow(c.window)
}

// windowText is the window as messages say it: "1h", "calendar month (UTC)".
func (c *climit) windowText() string {
	if c.calendar != "" {
		return c.calendar.text()
	}
	return formatWindow(c.window)
}

// amount formats n in the limit's unit: a count, or US dollars for cost_usd.
func (c *climit) amount(n int64) string {
	if c.metric == MetricCostUSD {
		return "$" + formatUSD(n)
	}
	return strconv.FormatInt(n, 10)
}

// compile validates p and pre-computes everything Admit needs. A disabled policy is not
// validated: nothing of it is used. theta is the escrow threshold (see Options.EscrowThreshold).
func compile(p Policy, theta float64, m *metrics) (*compiled, error) {
	prices, errs := compilePrices(p.Prices)
	c := &compiled{enabled: p.Enabled, prices: prices}
	if !p.Enabled {
		return c, errors.Join(errs...)
	}
	switch p.MissingUser {
	case "", MissingUserReject:
	case MissingUserAnonymous:
		c.anonymous = true
	default:
		errs = append(errs, fmt.Errorf("missing_user: %q is neither %q nor %q",
			p.MissingUser, MissingUserReject, MissingUserAnonymous))
	}
	build := func(key string, in []Limit) []*climit {
		out := make([]*climit, 0, len(in))
		for i, l := range in {
			k := fmt.Sprintf("%s[%d]", key, i)
			if bad := validate(k, l); len(bad) > 0 {
				errs = append(errs, bad...)
				continue
			}
			if slices.ContainsFunc(out, func(o *climit) bool { return o.name == l.Name }) {
				errs = append(errs, fmt.Errorf("%s.name: duplicate limit %q", k, l.Name))
				continue
			}
			out = append(out, newClimit(l, theta, m))
		}
		return out
	}
	c.defaults = build("limits", p.Limits)
	users := make([]string, 0, len(p.Overrides))
	for u := range p.Overrides {
		users = append(users, u)
	}
	sort.Strings(users) // deterministic error order
	c.overrides = make(map[string][]*climit, len(users))
	for _, u := range users {
		if u == "" {
			errs = append(errs, errors.New("overrides: empty user name"))
			continue
		}
		own := build(fmt.Sprintf("overrides[%s]", u), p.Overrides[u])
		merged := slices.Clone(c.defaults)
		for _, o := range own {
			if i := slices.IndexFunc(merged, func(d *climit) bool { return d.name == o.name }); i >= 0 {
				merged[i] = o
			} else {
				merged = append(merged, o)
			}
		}
		c.overrides[u] = merged
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// validate checks one limit and returns its problems, each naming key.field.
func validate(key string, l Limit) []error {
	var errs []error
	if l.Name == "" {
		errs = append(errs, fmt.Errorf("%s.name: empty", key))
	}
	switch l.Metric {
	case MetricPromptTokens, MetricCompletionTokens, MetricTotalTokens, MetricRequests, MetricCostUSD:
	default:
		errs = append(errs, fmt.Errorf("%s.metric: unknown %q (want prompt_tokens, completion_tokens, total_tokens, requests or cost_usd)", key, l.Metric))
	}
	if l.Limit < 1 {
		errs = append(errs, fmt.Errorf("%s.limit: %d, want at least 1", key, l.Limit))
	}
	if l.Metric == MetricCostUSD && l.Limit > maxNanos {
		errs = append(errs, fmt.Errorf("%s.limit: %d nano-dollars, want at most %d (MaxLimitUSD)", key, l.Limit, int64(maxNanos)))
	}
	switch l.Calendar {
	case "":
		if l.Window < time.Millisecond || l.Window%time.Millisecond != 0 {
			errs = append(errs, fmt.Errorf("%s.window: %s, want a whole number of milliseconds, at least 1ms", key, l.Window))
		}
	case CalendarDay, CalendarMonth:
		if l.Window != 0 {
			errs = append(errs, fmt.Errorf("%s.window: %s with calendar %s, want one of the two", key, l.Window, l.Calendar))
		}
	default:
		errs = append(errs, fmt.Errorf("%s.calendar: unknown %q (want %s or %s)", key, l.Calendar, CalendarDay, CalendarMonth))
	}
	for i, g := range l.Models {
		if _, err := path.Match(g, ""); err != nil {
			errs = append(errs, fmt.Errorf("%s.models[%d]: %q: %w", key, i, g, err))
		}
	}
	return errs
}

// globs compiles valid patterns.
func globs(patterns []string) []glob {
	var out []glob
	for _, p := range patterns {
		out = append(out, newGlob(p))
	}
	return out
}

// newClimit pre-computes one valid limit.
func newClimit(l Limit, theta float64, m *metrics) *climit {
	c := &climit{
		name:     l.Name,
		metric:   l.Metric,
		limit:    l.Limit,
		window:   l.Window,
		size:     l.Window.Milliseconds(),
		calendar: l.Calendar,
		models:   globs(l.Models),
		prompt:   l.Metric == MetricPromptTokens || l.Metric == MetricTotalTokens || l.Metric == MetricCostUSD,
		limited:  m.limited.WithLabelValues(l.Name),
		escrows:  m.escrows.WithLabelValues(l.Name),
	}
	// A completion limit reserves only a requested maximum output; with none its need is 0,
	// which the share rule always admits, so the rule applies to every metric.
	if theta < 1 {
		c.escrow = true
		c.escrowAt = -1 // theta < 0: every admission is escrowed
		if theta >= 0 {
			c.escrowAt = int64(math.Floor(theta * float64(l.Limit)))
		}
	}
	return c
}
