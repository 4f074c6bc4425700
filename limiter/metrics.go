package limiter

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the limiter's collectors, registered on the Registerer given to New.
type metrics struct {
	limited *prometheus.CounterVec
	escrows *prometheus.CounterVec
}

// newMetrics creates the collectors and registers them on reg (nil = not registered).
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genai_gateway_rate_limited_requests_total",
			Help: "Requests refused with 429, by the limit that refused them (escrow refusals included).",
		}, []string{"limit"}),
		escrows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "genai_gateway_rate_limit_escrow_refusals_total",
			Help: "Requests refused by the per-replica share rule near a limit, by limit.",
		}, []string{"limit"}),
	}
	if reg == nil {
		return m, nil
	}
	var errs []error
	for _, c := range []prometheus.Collector{m.limited, m.escrows} {
		if err := reg.Register(c); err != nil {
			errs = append(errs, fmt.Errorf("register metrics: %w", err))
		}
	}
	return m, errors.Join(errs...)
}
