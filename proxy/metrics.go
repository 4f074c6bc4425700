package proxy

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// maxModels caps the distinct values of the `model` label, as
// Config.MaxUsers caps `user`: a client cannot grow a replica's memory by
// inventing model names.
const maxModels = 1000

// otherLabel replaces user and model values past their caps.
const otherLabel = "other"

// metrics are the proxy's Prometheus collectors plus caches of their
// children, so the hot path does not hash label values into the vectors on
// every request. Safe for concurrent use.
type metrics struct {
	promptTotal, completionTotal, tokensTotal                   prometheus.Counter
	promptByModel, completionByModel, tokensByModel             *prometheus.CounterVec
	promptByUserModel, completionByUserModel, tokensByUserModel *prometheus.CounterVec

	requests       *prometheus.CounterVec
	duration       *prometheus.HistogramVec
	ttft           *prometheus.HistogramVec
	upstreamErrors *prometheus.CounterVec
	inFlight       prometheus.Gauge

	maxUsers int

	mu      sync.RWMutex
	users   map[string]struct{} // user label values in use (<= maxUsers)
	models  map[string]struct{} // model label values in use (<= maxModels)
	tokens  map[labelPair]*tokenCounters
	reqs    map[requestKey]prometheus.Counter
	timings map[labelPair]*timingObservers
}

// labelPair is a (user, model) or (route, upstream) pair of label values.
type labelPair struct{ a, b string }

type requestKey struct {
	route, model, upstream string
	code                   int
}

// tokenCounters are the six labelled token counters of one (user, model).
type tokenCounters struct {
	prompt, completion, total                   prometheus.Counter
	promptByUser, completionByUser, totalByUser prometheus.Counter
}

type timingObservers struct{ duration, ttft prometheus.Observer }

// Buckets: LLM requests take from milliseconds (embeddings, errors) to
// minutes (long generations).
var (
	durationBuckets = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}
	ttftBuckets     = []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60}
)

func newMetrics(reg prometheus.Registerer, maxUsers int) (*metrics, error) {
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
		maxUsers: maxUsers,
		users:    make(map[string]struct{}),
		models:   make(map[string]struct{}),
		tokens:   make(map[labelPair]*tokenCounters),
		reqs:     make(map[requestKey]prometheus.Counter),
		timings:  make(map[labelPair]*timingObservers),
	}
	for _, c := range []prometheus.Collector{
		m.promptTotal, m.completionTotal, m.tokensTotal,
		m.promptByModel, m.completionByModel, m.tokensByModel,
		m.promptByUserModel, m.completionByUserModel, m.tokensByUserModel,
		m.requests, m.duration, m.ttft, m.upstreamErrors, m.inFlight,
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register proxy metrics: %w", err)
		}
	}
	return m, nil
}

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

// labels returns the capped user and model label values.
func (m *metrics) labels(user, model string) (string, string) {
	m.mu.RLock()
	_, uok := m.users[user]
	_, mok := m.models[model]
	m.mu.RUnlock()
	if uok && mok {
		return user, model
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return capped(m.users, user, m.maxUsers), capped(m.models, model, maxModels)
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
	m.mu.Lock()
	defer m.mu.Unlock()
	return capped(m.models, model, maxModels)
}

// addTokens counts the usage of one request in the nine token counters.
func (m *metrics) addTokens(user, model string, prompt, completion int64) {
	if prompt == 0 && completion == 0 {
		return
	}
	user, model = m.labels(user, model)
	k := labelPair{user, model}
	m.mu.RLock()
	c := m.tokens[k]
	m.mu.RUnlock()
	if c == nil {
		c = &tokenCounters{
			prompt:           m.promptByModel.WithLabelValues(model),
			completion:       m.completionByModel.WithLabelValues(model),
			total:            m.tokensByModel.WithLabelValues(model),
			promptByUser:     m.promptByUserModel.WithLabelValues(user, model),
			completionByUser: m.completionByUserModel.WithLabelValues(user, model),
			totalByUser:      m.tokensByUserModel.WithLabelValues(user, model),
		}
		m.mu.Lock()
		if old := m.tokens[k]; old != nil {
			c = old
		} else {
			m.tokens[k] = c
		}
		m.mu.Unlock()
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
}

// request counts one finished request and its timings. model is the raw
// model ("" for unmetered routes); ttft < 0 means no body was sent.
func (m *metrics) request(route, model, upstream string, code int, seconds, ttft float64) {
	k := requestKey{route, m.modelLabel(model), upstream, code}
	t := labelPair{route, upstream}
	m.mu.RLock()
	c := m.reqs[k]
	o := m.timings[t]
	m.mu.RUnlock()
	if c == nil || o == nil {
		m.mu.Lock()
		if c = m.reqs[k]; c == nil {
			c = m.requests.WithLabelValues(route, k.model, upstream, strconv.Itoa(code))
			m.reqs[k] = c
		}
		if o = m.timings[t]; o == nil {
			o = &timingObservers{
				duration: m.duration.WithLabelValues(route, upstream),
				ttft:     m.ttft.WithLabelValues(route, upstream),
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
