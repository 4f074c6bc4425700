package auth

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the package's collectors. Authenticators built on the same
// registerer (one per config reload) share them.
type metrics struct {
	failures map[string]prometheus.Counter // by reason, every reason present
	fetches  *prometheus.CounterVec        // JWKS fetches by result
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	failures := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "genai_gateway_auth_failures_total",
		Help: "Requests refused for their credential, by reason (missing, malformed, ambiguous, unknown, expired, bad_token, wrong_issuer, wrong_audience, bad_claims).",
	}, []string{"reason"})
	fetches := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "genai_gateway_auth_jwks_fetches_total",
		Help: "Fetches of the JWT issuer's key set (auth.jwt.jwks_url), by result (ok, error, throttled).",
	}, []string{"result"})
	var err error
	if failures, err = register(reg, failures); err != nil {
		return nil, err
	}
	if fetches, err = register(reg, fetches); err != nil {
		return nil, err
	}
	m := &metrics{failures: make(map[string]prometheus.Counter, len(reasons)), fetches: fetches}
	for _, r := range reasons {
		m.failures[r] = failures.WithLabelValues(r)
	}
	for _, r := range [...]string{fetchOK, fetchError, fetchThrottled} {
		fetches.WithLabelValues(r)
	}
	return m, nil
}

// register registers c on reg, or returns the collector already registered
// under the same description, so that the Authenticator of a reloaded
// config keeps counting on the same series. A nil reg registers nothing.
func register(reg prometheus.Registerer, c *prometheus.CounterVec) (*prometheus.CounterVec, error) {
	if reg == nil {
		return c, nil
	}
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.CounterVec); ok {
				return existing, nil
			}
		}
		return nil, err
	}
	return c, nil
}

// failed counts a refusal.
func (m *metrics) failed(err error) {
	if c, ok := m.failures[Reason(err)]; ok {
		c.Inc()
	}
}
