// Package route chooses the upstream of each attempt of a request: the pool
// of upstreams whose models match the request's model (in file order), a
// strategy over it (priority, weighted, least_busy), passive health
// (cool-down after a 429 or after FailuresToCool failures in a row,
// half-open probing by real traffic once it ends) and a cap on requests in
// flight per upstream. It knows nothing of HTTP: the proxy reports each
// attempt's Outcome, and asks whether it may retry it.
//
// Everything here is safe for concurrent use, allocates nothing on the
// path of a request whose pool is cached, and takes time from an injected
// clock.
package route

import (
	"fmt"
	"time"
)

// Strategy orders the healthy members of a pool.
type Strategy uint8

const (
	// Priority takes the first healthy member in file order: with one
	// healthy upstream per model it is "first match wins".
	Priority Strategy = iota
	// Weighted spreads requests by the members' weights with nginx's
	// smooth weighted round robin.
	Weighted
	// LeastBusy takes the member with the fewest requests in flight (the
	// first in file order on a tie).
	LeastBusy
)

// Strategy names, as written in the configuration.
const (
	NamePriority  = "priority"
	NameWeighted  = "weighted"
	NameLeastBusy = "least_busy"
)

// ParseStrategy reads a strategy name; "" is Priority.
func ParseStrategy(s string) (Strategy, error) {
	switch s {
	case "", NamePriority:
		return Priority, nil
	case NameWeighted:
		return Weighted, nil
	case NameLeastBusy:
		return LeastBusy, nil
	}
	return Priority, fmt.Errorf("routing strategy must be priority, weighted or least_busy; got %q", s)
}

func (s Strategy) String() string {
	switch s {
	case Weighted:
		return NameWeighted
	case LeastBusy:
		return NameLeastBusy
	}
	return NamePriority
}

// Outcome is how one attempt to an upstream ended, as far as routing cares.
type Outcome uint8

const (
	// OK: the upstream answered with a status that is not a failure of its
	// own (2xx, 3xx, and 4xx other than 429, which are the caller's).
	OK Outcome = iota
	Status429
	Status500
	Status502
	Status503
	Status504
	Status5xx // any other 5xx
	// Connect: no response head at all and no timeout: refused, reset,
	// closed, unresolvable, TLS failure.
	Connect
	// Timeout: no response head (or no first body byte) within the
	// upstream's timeout.
	Timeout
	// Broken: a response head came, then the connection failed before the
	// first body byte. The upstream may have run the request: never
	// retried.
	Broken
	// NumOutcomes is the number of outcomes.
	NumOutcomes
)

var outcomeNames = [NumOutcomes]string{"ok", "429", "500", "502", "503", "504", "5xx", "connect", "timeout", "broken"}

// String is the outcome's name: its retry_on value and metric label.
func (o Outcome) String() string {
	if o >= NumOutcomes {
		return "other"
	}
	return outcomeNames[o]
}

// StatusOutcome is the outcome of a response with status code.
func StatusOutcome(code int) Outcome {
	switch {
	case code == 429:
		return Status429
	case code == 500:
		return Status500
	case code == 502:
		return Status502
	case code == 503:
		return Status503
	case code == 504:
		return Status504
	case code >= 500:
		return Status5xx
	}
	return OK
}

// OutcomeSet is a set of outcomes (retry_on).
type OutcomeSet uint16

// Has reports whether o is in s.
func (s OutcomeSet) Has(o Outcome) bool { return s&(1<<o) != 0 }

// RetryOnValues are the values retry_on takes: the names of the outcomes
// that may be retried ("5xx" names every 5xx status).
var RetryOnValues = []string{"connect", "timeout", "429", "500", "502", "503", "504", "5xx"}

// DefaultRetryOn is SPEC's default retry_on.
var DefaultRetryOn = []string{"connect", "429", "500", "502", "503", "504", "timeout"}

// ParseRetryOn reads retry_on values. Broken and OK are never retried.
func ParseRetryOn(vals []string) (OutcomeSet, error) {
	var s OutcomeSet
	for _, v := range vals {
		switch v {
		case "5xx":
			s |= 1<<Status500 | 1<<Status502 | 1<<Status503 | 1<<Status504 | 1<<Status5xx
		case "connect", "timeout", "429", "500", "502", "503", "504":
			for o := range NumOutcomes {
				if o.String() == v {
					s |= 1 << o
				}
			}
		default:
			return 0, fmt.Errorf("retry_on: %q is not one of connect, timeout, 429, 500, 502, 503, 504, 5xx", v)
		}
	}
	return s, nil
}

// Cool-down bounds.
const (
	// FailuresToCool is how many failures in a row (connect, timeout,
	// broken, 5xx) cool an upstream down. One is a blip; three in a row
	// within the traffic of a pool is an upstream that is down.
	FailuresToCool = 3
	// MaxCooldown bounds the cool-down an upstream's Retry-After can ask
	// for: a hostile or mistaken header must not take a healthy upstream
	// out of the pool for a day.
	MaxCooldown = 10 * time.Minute
	// DefaultCooldown is the cool-down when Config.Cooldown is 0.
	DefaultCooldown = 30 * time.Second
)

// RetryAfter reads an upstream's retry-after-ms and Retry-After header
// values (either may be empty) into a duration, clamped to [0,
// MaxCooldown]: milliseconds first (OpenAI sends both), then whole seconds
// or an HTTP date. Anything else is 0.
func RetryAfter(ms, value []byte, now time.Time) time.Duration {
	if d, ok := digits(ms, 9); ok {
		return min(time.Duration(d)*time.Millisecond, MaxCooldown)
	}
	if d, ok := digits(value, 7); ok {
		return min(time.Duration(d)*time.Second, MaxCooldown)
	}
	if len(value) == 0 || len(value) > 64 {
		return 0
	}
	if t, err := time.Parse(time.RFC1123, string(value)); err == nil {
		return min(max(t.Sub(now), 0), MaxCooldown)
	}
	return 0
}

// digits parses b as a decimal of at most n digits (spaces around allowed).
func digits(b []byte, n int) (int64, bool) {
	for len(b) > 0 && b[0] == ' ' {
		b = b[1:]
	}
	for len(b) > 0 && b[len(b)-1] == ' ' {
		b = b[:len(b)-1]
	}
	if len(b) == 0 || len(b) > n {
		return 0, false
	}
	var v int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + int64(c-'0')
	}
	return v, true
}
