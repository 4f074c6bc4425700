package limiter

import (
	"encoding/json"
	"net/http"
	"time"
)

// LimitUsage is one limit's state for one user, as GET /usage reports it. Limit, Used and
// Remaining are in the metric's unit: tokens, requests, or nano-dollars for cost_usd, which the
// JSON form shows in US dollars (limit 50, used 12.345) as the configuration gives them.
type LimitUsage struct {
	Name         string `json:"name"`
	Metric       string `json:"metric"`
	Window       string `json:"window"` // "1h", "1m", "30s", "calendar_day", "calendar_month"
	Limit        int64  `json:"limit"`
	Used         int64  `json:"used"`      // sliding usage, cluster-wide as this replica sees it
	Remaining    int64  `json:"remaining"` // max(0, limit - used)
	ResetSeconds int64  `json:"reset_seconds"`
}

// MarshalJSON writes u with the figures of a cost_usd limit in US dollars, exact to the
// nano-dollar; other limits are written as they are.
func (u LimitUsage) MarshalJSON() ([]byte, error) {
	type plain LimitUsage // the same fields, without this method
	if u.Metric != string(MetricCostUSD) {
		return json.Marshal(plain(u))
	}
	return json.Marshal(struct {
		Name         string      `json:"name"`
		Metric       string      `json:"metric"`
		Window       string      `json:"window"`
		Limit        json.Number `json:"limit"`
		Used         json.Number `json:"used"`
		Remaining    json.Number `json:"remaining"`
		ResetSeconds int64       `json:"reset_seconds"`
	}{u.Name, u.Metric, u.Window, json.Number(formatUSD(u.Limit)), json.Number(formatUSD(u.Used)),
		json.Number(formatUSD(u.Remaining)), u.ResetSeconds})
}

// usageResponse is the body of GET /usage.
type usageResponse struct {
	User   string       `json:"user"`
	Limits []LimitUsage `json:"limits"`
}

// Usage returns one entry per limit that applies to user for any model, in policy order
// (defaults, with overrides in place, then added ones). user is a bucket name: "" means what it
// means to Admit (the anonymous bucket, or nothing when anonymous requests are refused). With
// limiting off it returns an empty list. Usage reads only and is safe for concurrent use.
func (l *Limiter) Usage(user string) []LimitUsage {
	p := l.policy.Load()
	out := []LimitUsage{}
	if !p.enabled {
		return out
	}
	if user == "" {
		if !p.anonymous {
			return out
		}
		user = AnonymousUser
	}
	nowMs := l.now().UnixMilli()
	for _, c := range p.limitsFor(user) {
		s := c.span(nowMs)
		cur := l.store.Sum(c.name, user, s.start, s.size)
		var prev int64
		if !s.fixed {
			prev = l.store.Sum(c.name, user, s.start-s.size, s.size)
		}
		used := slidingUsed(cur, prev, s)
		reset := time.Duration(resetAfter(cur, prev, s)) * time.Millisecond
		out = append(out, LimitUsage{
			Name:         c.name,
			Metric:       string(c.metric),
			Window:       c.windowName(),
			Limit:        c.limit,
			Used:         used,
			Remaining:    max(c.limit-used, 0),
			ResetSeconds: int64((reset + time.Second - 1) / time.Second),
		})
	}
	return out
}

// UsageHandler serves GET /usage?user=U with {"user": U, "limits": [...]} (see Usage). A
// missing or empty user parameter gets 400, another method 405, both with an OpenAI-style
// error body. The handler is safe for concurrent use.
func (l *Limiter) UsageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed on /usage", "")
			return
		}
		user := r.URL.Query().Get("user")
		if user == "" {
			writeError(w, http.StatusBadRequest, "missing query parameter user: GET /usage?user=NAME", "user")
			return
		}
		writeJSON(w, http.StatusOK, usageResponse{User: user, Limits: l.Usage(user)})
	})
}

// apiError is the OpenAI error body.
type apiError struct {
	Error struct {
		Message string  `json:"message"`
		Type    string  `json:"type"`
		Param   *string `json:"param"`
		Code    *string `json:"code"`
	} `json:"error"`
}

// writeError writes an invalid_request_error; param "" is written as null.
func writeError(w http.ResponseWriter, status int, msg, param string) {
	var e apiError
	e.Error.Message = msg
	e.Error.Type = "invalid_request_error"
	if param != "" {
		e.Error.Param = &param
	}
	writeJSON(w, status, e)
}

// writeJSON writes v as the JSON body with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil { // cannot happen for the types above
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}
