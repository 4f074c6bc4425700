package proxy

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/genai-gateway/genai-gateway/proxy/route"
)

// maxModels caps the distinct values of the `model` label, as
// metricsOptions.MaxUsers caps `user`: a client cannot grow a replica's
// memory by inventing model names.
const maxModels = 1000

// otherLabel replaces user and model values past their caps (and status
// codes outside 100-599). A user who is really called "other" shares it.
const otherLabel = "other"

// maxLabelBytes caps every label value that comes from a client or an
// upstream (user, model), as the edge caps the user header. Longer values
// are cut, so two long values that share their first 256 bytes share a
// label.
const maxLabelBytes = 256

// metricsOptions bound the label values of the per-user metrics.
type metricsOptions struct {
	// MaxUsers caps the users with their own `user` label; later users
	// count as "other" until an idle user's slot is freed (10000 when 0).
	MaxUsers int
	// MaxSeries caps the (user, model) pairs of the per-user metrics; past
	// it a new pair counts as user "other" (100000 when 0).
	MaxSeries int
	// UserIdle is how long a user's series stay after its last request;
	// then they are deleted and its slot freed (1h when 0).
	UserIdle time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// metrics are the proxy's Prometheus collectors plus caches of their
// children, so the hot path does not hash label values into the vectors on
// every request. Every method is safe for concurrent use and none panics
// on any label value: values from clients and upstreams are made valid
// UTF-8 and cut to maxLabelBytes, and token figures are clamped to
// [0, maxUsageTokens].
//
// Idle users are swept lazily: the first addTokens after every UserIdle/10
// walks the users (O(users), under the write lock) and deletes the series
// of those idle for longer than UserIdle. No goroutine is involved.
type metrics struct {
	promptTotal, completionTotal, tokensTotal                   prometheus.Counter
	promptByModel, completionByModel, tokensByModel             *prometheus.CounterVec
	promptByUserModel, completionByUserModel, tokensByUserModel *prometheus.CounterVec
	costByUserModel                                             *prometheus.CounterVec // USD, from the configured prices

	requests       *prometheus.CounterVec
	upstreamInfo   *prometheus.GaugeVec // 1 per configured upstream and its provider
	duration       *prometheus.HistogramVec
	ttft           *prometheus.HistogramVec
	upstreamErrors *prometheus.CounterVec
	inFlight       prometheus.Gauge
	usageClamps    *prometheus.CounterVec

	maxUsers, maxSeries int
	idle, sweepEvery    int64 // nanoseconds
	now                 func() time.Time
	lastSweep           atomic.Int64 // unix nanoseconds

	mu      sync.RWMutex
	users   map[string]*userSeries // users with their own label (<= maxUsers)
	series  int                    // (user, model) pairs of those users (<= maxSeries)
	models  map[string]struct{}    // model label values in use (<= maxModels)
	tokens  map[labelPair]*tokenCounters
	reqs    map[requestKey]prometheus.Counter
	timings map[labelPair]*timingObservers
}

// userSeries is what a user with its own label holds.
type userSeries struct {
	last   atomic.Int64 // unix nanoseconds of its last request
	models []string     // model label values of its series
}

// labelPair is a (user, model) or (route, upstream) pair of label values.
type labelPair struct{ a, b string }

type requestKey struct {
	route, model, upstream string
	code                   int
}

// tokenCounters are the six labelled token counters of one (user, model).
type tokenCounters struct {
	user                                        *userSeries // nil for user "other"
	prompt, completion, total                   prometheus.Counter
	promptByUser, completionByUser, totalByUser prometheus.Counter
	costByUser                                  prometheus.Counter
}

type timingObservers struct{ duration, ttft prometheus.Observer }

// Buckets: LLM requests take from milliseconds (embeddings, errors) to
// minutes (long generations).
var (
	durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	ttftBuckets     = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
)

// newMetrics registers the proxy's collectors on reg.
func newMetrics(reg prometheus.Registerer, opts metricsOptions) (*metrics, error) {
	if opts.MaxUsers <= 0 {
		opts.MaxUsers = 10000
	}
	if opts.MaxSeries <= 0 {
		opts.MaxSeries = 100000
	}
	if opts.UserIdle <= 0 {
		opts.UserIdle = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	counter := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	vec := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	m := &metrics{
		promptTotal:           counter("prompt_tokens_total", "Prompt tokens of all requests."),
		completionTotal:       counter("completion_tokens_total", "Completion tokens of all requests."),
		tokensTotal:           counter("tokens_total", "Prompt plus completion tokens of all requests."),
		promptByModel:         vec("prompt_tokens_by_model_total", "Prompt tokens by model.", "model"),
		completionByModel:     vec("completion_tokens_by_model_total", "Completion tokens by model.", "model"),
		tokensByModel:         vec("tokens_by_model_total", "Prompt plus completion tokens by model.", "model"),
		promptByUserModel:     vec("prompt_tokens_by_user_by_model_total", "Prompt tokens by user and model.", "user", "model"),
		completionByUserModel: vec("completion_tokens_by_user_by_model_total", "Completion tokens by user and model.", "user", "model"),
		tokensByUserModel:     vec("tokens_by_user_by_model_total", "Prompt plus completion tokens by user and model.", "user", "model"),
		costByUserModel: vec("genai_gateway_cost_usd_total",
			"Spend in USD by user and model, priced by the configured prices (unpriced models cost 0).", "user", "model"),
		requests: vec("genai_gateway_requests_total",
			"Requests by route, model, upstream and status code (499: the client went away).",
			"route", "model", "upstream", "code"),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "genai_gateway_request_duration_seconds",
			Help:    "Time from request to the end of the response, streams included.",
			Buckets: durationBuckets,
		}, []string{"route", "upstream"}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "genai_gateway_time_to_first_token_seconds",
			Help:    "Time from request to the first byte of a successful response body (the first event of a stream).",
			Buckets: ttftBuckets,
		}, []string{"route", "upstream"}),
		upstreamErrors: vec("genai_gateway_upstream_errors_total",
			"Failed upstream exchanges by reason (timeout, unreachable, broken, canceled).", "upstream", "reason"),
		inFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "genai_gateway_requests_in_flight",
			Help: "Requests being proxied, streams included.",
		}),
		upstreamInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "genai_gateway_upstream_info",
			Help: "1 for every configured upstream, with the provider (openai, anthropic, azure) it speaks; join on upstream.",
		}, []string{"upstream", "provider"}),
		usageClamps: vec("genai_gateway_usage_clamped_total",
			"Responses whose usage figures were negative, too large, fractional or not numbers, and were clamped.", "upstream"),
		maxUsers:   opts.MaxUsers,
		maxSeries:  opts.MaxSeries,
		idle:       int64(opts.UserIdle),
		sweepEvery: max(int64(opts.UserIdle)/10, 1),
		now:        opts.Now,
		users:      make(map[string]*userSeries),
		models:     make(map[string]struct{}),
		tokens:     make(map[labelPair]*tokenCounters),
		reqs:       make(map[requestKey]prometheus.Counter),
		timings:    make(map[labelPair]*timingObservers),
	}
	m.lastSweep.Store(m.now().UnixNano())
	for _, c := range []prometheus.Collector{
		m.promptTotal, m.completionTotal, m.tokensTotal,
		m.promptByModel, m.completionByModel, m.tokensByModel,
		m.promptByUserModel, m.completionByUserModel, m.tokensByUserModel, m.costByUserModel,
		m.requests, m.duration, m.ttft, m.upstreamErrors, m.inFlight, m.usageClamps, m.upstreamInfo,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register proxy metrics: %w", err)
		}
	}
	return m, nil
}

// setUpstreams sets genai_gateway_upstream_info to the upstreams given as
// name -> provider pairs, in order.
func (m *metrics) setUpstreams(ups [][2]string) {
	m.upstreamInfo.Reset()
	for _, u := range ups {
		m.upstreamInfo.WithLabelValues(u[0], u[1]).Set(1)
	}
}

// labelValue returns s as a label value that cannot make a collector
// panic: valid UTF-8 (each run of invalid bytes becomes U+FFFD) of at most
// maxLabelBytes bytes, cut at a rune boundary. It allocates only when s
// needs changing.
func labelValue(s string) string {
	if len(s) <= maxLabelBytes && utf8.ValidString(s) {
		return s
	}
	if len(s) > maxLabelBytes {
		i := maxLabelBytes
		for j := 1; j < utf8.UTFMax && !utf8.RuneStart(s[i]); j++ {
			i-- // keep a rune that straddles the cut out whole
		}
		s = s[:i]
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) > maxLabelBytes { // replacements are longer than what they replace
		i := maxLabelBytes
		for !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	return s
}

// clampTokens bounds a token figure before it reaches a counter: a counter
// panics on a negative Add, and sums of unbounded figures overflow.
func clampTokens(n int64) int64 { return min(max(n, 0), maxUsageTokens) }

// capped returns v if it is in set or set still has room (adding it), else
// "other". The caller holds m.mu for writing.
func capped(set map[string]struct{}, v string, limit int) string {
	if _, ok := set[v]; ok {
		return v
	}
	if len(set) >= limit {
		return otherLabel
	}
	set[v] = struct{}{}
	return v
}

// modelLabel returns the capped model label value ("" stays "": unmetered).
func (m *metrics) modelLabel(model string) string {
	if model == "" {
		return ""
	}
	m.mu.RLock()
	_, ok := m.models[model]
	m.mu.RUnlock()
	if ok {
		return model
	}
	model = labelValue(model)
	m.mu.Lock()
	defer m.mu.Unlock()
	return capped(m.models, model, maxModels)
}

// addTokens counts the usage of one request in the nine token counters.
// user and model are raw values from the request; prompt and completion
// are clamped to [0, maxUsageTokens].
func (m *metrics) addTokens(user, model string, prompt, completion int64, costUSD float64) {
	prompt, completion = clampTokens(prompt), clampTokens(completion)
	if prompt == 0 && completion == 0 {
		return
	}
	now := m.now().UnixNano()
	m.maybeSweep(now)
	// Fast path: the raw values are the labels of an existing series.
	m.mu.RLock()
	c := m.tokens[labelPair{user, model}]
	if c != nil && c.user != nil {
		c.user.last.Store(now)
	}
	m.mu.RUnlock()
	if c == nil {
		c = m.counters(labelValue(user), labelValue(model), now)
	}
	p, q, t := float64(prompt), float64(completion), float64(prompt+completion)
	m.promptTotal.Add(p)
	m.completionTotal.Add(q)
	m.tokensTotal.Add(t)
	c.prompt.Add(p)
	c.completion.Add(q)
	c.total.Add(t)
	c.promptByUser.Add(p)
	c.completionByUser.Add(q)
	c.totalByUser.Add(t)
	if costUSD > 0 && costUSD <= maxCostUSD { // the limiter clamps; NaN fails both
		c.costByUser.Add(costUSD)
	}
}

// maxCostUSD bounds one request's spend in the metric, as the limiter
// bounds it.
const maxCostUSD = 1e9

// counters returns the counters of the safe label values (user, model),
// capped, creating them if needed. It marks the user seen at now.
func (m *metrics) counters(user, model string, now int64) *tokenCounters {
	m.mu.RLock()
	c := m.resolve(user, model, now, false)
	m.mu.RUnlock()
	if c != nil {
		return c
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.resolve(user, model, now, true)
}

// resolve finds the counters of (user, model) after the caps: the model
// past maxModels is "other"; a new pair past maxSeries, or of a new user
// past maxUsers, counts as ("other", model). Without create it returns nil
// where it would have to create something; the caller holds m.mu for
// reading, else for writing.
func (m *metrics) resolve(user, model string, now int64, create bool) *tokenCounters {
	if _, ok := m.models[model]; !ok {
		if len(m.models) < maxModels && !create {
			return nil
		}
		model = capped(m.models, model, maxModels)
	}
	if c := m.tokens[labelPair{user, model}]; c != nil {
		if c.user != nil {
			c.user.last.Store(now)
		}
		return c
	}
	us := m.users[user]
	if user != otherLabel && m.series < m.maxSeries && (us != nil || len(m.users) < m.maxUsers) {
		if !create {
			return nil
		}
		if us == nil {
			us = &userSeries{}
			m.users[user] = us
		}
		us.last.Store(now)
		us.models = append(us.models, model)
		m.series++
		return m.newCounters(us, user, model)
	}
	if c := m.tokens[labelPair{otherLabel, model}]; c != nil || !create {
		return c
	}
	return m.newCounters(nil, otherLabel, model)
}

// newCounters creates and caches the counters of a new (user, model); the
// caller holds m.mu for writing.
func (m *metrics) newCounters(us *userSeries, user, model string) *tokenCounters {
	c := &tokenCounters{
		user:             us,
		prompt:           m.promptByModel.WithLabelValues(model),
		completion:       m.completionByModel.WithLabelValues(model),
		total:            m.tokensByModel.WithLabelValues(model),
		promptByUser:     m.promptByUserModel.WithLabelValues(user, model),
		completionByUser: m.completionByUserModel.WithLabelValues(user, model),
		totalByUser:      m.tokensByUserModel.WithLabelValues(user, model),
		costByUser:       m.costByUserModel.WithLabelValues(user, model),
	}
	m.tokens[labelPair{user, model}] = c
	return c
}

// maybeSweep sweeps idle users if the last sweep is UserIdle/10 old; one
// caller at a time wins the right to.
func (m *metrics) maybeSweep(now int64) {
	last := m.lastSweep.Load()
	if now-last < m.sweepEvery || !m.lastSweep.CompareAndSwap(last, now) {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep(now)
}

// sweep deletes the series of every user whose last request is older than
// UserIdle and frees its slot; the caller holds m.mu for writing.
func (m *metrics) sweep(now int64) {
	cutoff := now - m.idle
	for user, us := range m.users {
		if us.last.Load() >= cutoff {
			continue
		}
		for _, model := range us.models {
			delete(m.tokens, labelPair{user, model})
			m.promptByUserModel.DeleteLabelValues(user, model)
			m.completionByUserModel.DeleteLabelValues(user, model)
			m.tokensByUserModel.DeleteLabelValues(user, model)
			m.costByUserModel.DeleteLabelValues(user, model)
		}
		m.series -= len(us.models)
		delete(m.users, user)
	}
}

// usageClamped counts a response from upstream whose usage had to be
// clamped (usage.clamped).
func (m *metrics) usageClamped(upstream string) {
	m.usageClamps.WithLabelValues(labelValue(upstream)).Inc()
}

// codeLabel is the `code` label of a status: its number for 100-599, else
// "other", so an upstream cannot mint label values with odd statuses.
func codeLabel(code int) string {
	if code < 100 || code > 599 {
		return otherLabel
	}
	return strconv.Itoa(code)
}

// request counts one finished request and its timings. model is the raw
// model ("" for unmetered routes); route and upstream come from the
// configuration; ttft < 0 means no body was sent.
func (m *metrics) request(route, model, upstream string, code int, seconds, ttft float64) {
	if code < 100 || code > 599 {
		code = 0 // one key and one label, "other", for every odd status
	}
	k := requestKey{route, m.modelLabel(model), upstream, code}
	t := labelPair{route, upstream}
	m.mu.RLock()
	c := m.reqs[k]
	o := m.timings[t]
	m.mu.RUnlock()
	if c == nil || o == nil {
		m.mu.Lock()
		if c = m.reqs[k]; c == nil {
			c = m.requests.WithLabelValues(labelValue(route), k.model, labelValue(upstream), codeLabel(code))
			m.reqs[k] = c
		}
		if o = m.timings[t]; o == nil {
			o = &timingObservers{
				duration: m.duration.WithLabelValues(labelValue(route), labelValue(upstream)),
				ttft:     m.ttft.WithLabelValues(labelValue(route), labelValue(upstream)),
			}
			m.timings[t] = o
		}
		m.mu.Unlock()
	}
	c.Inc()
	o.duration.Observe(seconds)
	if ttft >= 0 {
		o.ttft.Observe(ttft)
	}
}

// routeCollector exports the routing state of the current upstreams, read
// from their counters at scrape time so the request path only touches
// atomics: genai_gateway_upstream_attempts_total{upstream,outcome},
// genai_gateway_upstream_state{upstream,state} (healthy | cooling, 0 or 1;
// half-open counts as cooling until a probe succeeds) and
// genai_gateway_upstream_in_flight{upstream}. An upstream changed by a
// reload starts its counters afresh.
type routeCollector struct {
	p                         *Proxy
	attempts, state, inFlight *prometheus.Desc
}

func newRouteCollector(p *Proxy) routeCollector {
	return routeCollector{p: p,
		attempts: prometheus.NewDesc("genai_gateway_upstream_attempts_total",
			"Attempts to upstreams by outcome: ok, 429, 500, 502, 503, 504, 5xx (other), connect, timeout, broken (failed after the response head, never retried).",
			[]string{"upstream", "outcome"}, nil),
		state: prometheus.NewDesc("genai_gateway_upstream_state",
			"1 for the routing state each upstream is in (healthy, or cooling: skipped after a 429 or failures in a row, probed again by one request once the cool-down ends), 0 for the other.",
			[]string{"upstream", "state"}, nil),
		inFlight: prometheus.NewDesc("genai_gateway_upstream_in_flight",
			"Requests in flight on each upstream, streams included (what least_busy and max_in_flight count).",
			[]string{"upstream"}, nil),
	}
}

func (c routeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.attempts
	ch <- c.state
	ch <- c.inFlight
}

func (c routeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, u := range c.p.ups() {
		name := labelValue(u.Name)
		for o := range route.NumOutcomes {
			ch <- prometheus.MustNewConstMetric(c.attempts, prometheus.CounterValue, float64(u.node.Attempts(o)), name, o.String())
		}
		cooling := 0.0
		if u.node.Cooling() {
			cooling = 1
		}
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1-cooling, name, "healthy")
		ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, cooling, name, "cooling")
		ch <- prometheus.MustNewConstMetric(c.inFlight, prometheus.GaugeValue, float64(u.node.InFlight()), name)
	}
}
