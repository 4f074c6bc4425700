package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// decodeHook is the mapstructure hook of every field. The tree holds strings
// for values (from the file, the variables, the flags and the defaults
// alike; its shapes were checked as it was built, see walker): the hook
// parses them into the field's type, with each problem in an operator's
// words, and completes limits and upstreams (see completeStruct).
func decodeHook(_, to reflect.Type, data any) (any, error) {
	switch d := data.(type) {
	case fieldError:
		return nil, d
	case map[string]any:
		return completeStruct(to, d), nil
	case string:
		return parseScalar(to, d)
	}
	return data, nil
}

// fieldError is a problem completeStruct finds in a field: put in place of
// the field's value, it is returned when the field is decoded, so that it is
// reported under the field's key and the other fields still decode.
type fieldError string

func (e fieldError) Error() string { return string(e) }

// completeStruct applies to the keys of a limit or an upstream what
// mapstructure cannot: a limit's `window: calendar_day` (or calendar_month)
// sets Limit.Calendar, so Window stays a duration, and the key calendar
// itself is refused; an upstream without timeout or weight gets 10m and 1,
// and a weight below 1 is refused (0 means 1 only in a Config built in code).
func completeStruct(to reflect.Type, m map[string]any) map[string]any {
	switch to {
	case reflect.TypeFor[Limit]():
		m = maps.Clone(m)
		if c := m["calendar"]; c != nil && c != "" {
			m["calendar"] = fieldError("unknown key (write window: calendar_day or window: calendar_month)")
		}
		w, _ := m["window"].(string)
		if t := strings.TrimSpace(w); t == CalendarDay || t == CalendarMonth {
			m["calendar"] = t
			delete(m, "window")
		} else if _, err := time.ParseDuration(t); err != nil && t != "" && !isNumber(t) {
			m["window"] = fieldError(fmt.Sprintf("%s is neither a duration (\"30s\", \"1h\") nor calendar_day or calendar_month", quote(w)))
		}
	case reflect.TypeFor[Upstream]():
		m = maps.Clone(m)
		if m["timeout"] == nil {
			m["timeout"] = defaultUpstreamTimeout.String()
		}
		if w, ok := m["weight"].(string); !ok {
			m["weight"] = "1"
		} else if n, err := parseInt(w); err == nil && n <= 0 {
			m["weight"] = fieldError(fmt.Sprintf("must be from 1 to %d; got %d", maxWeight, n))
		}
	}
	return m
}

// parseScalar parses a value for a field of type to: Go durations
// ("30s"), RFC 3339 times, booleans (also yes/no, on/off), integers (also
// 1_000, 0x1f, 1e6) and finite numbers; strings stay as they are.
func parseScalar(to reflect.Type, s string) (any, error) {
	t := strings.TrimSpace(s)
	switch {
	case to == reflect.TypeFor[time.Duration]():
		d, err := time.ParseDuration(t)
		if err == nil {
			return d, nil
		}
		what := "is not a duration"
		if isNumber(t) {
			what = "has no unit"
		}
		return nil, fmt.Errorf("%s %s: write a Go duration such as \"30s\", \"10m\" or \"1h\"", quote(s), what)
	case to == reflect.TypeFor[time.Time]():
		ts, err := time.Parse(time.RFC3339, t)
		if err != nil {
			return nil, fmt.Errorf("must be an RFC 3339 time such as 2027-06-30T00:00:00Z; got %s", quote(s))
		}
		return ts, nil
	case to.Kind() == reflect.Bool:
		return parseBool(s)
	case to.Kind() == reflect.Int, to.Kind() == reflect.Int64:
		return parseInt(s)
	case to.Kind() == reflect.Float64:
		f, err := strconv.ParseFloat(strings.ReplaceAll(strings.NewReplacer(".inf", "inf", ".nan", "nan").Replace(strings.ToLower(t)), "_", ""), 64)
		switch {
		case err != nil && !errors.Is(err, strconv.ErrRange):
			return nil, fmt.Errorf("%s is not a number", quote(s))
		case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
			return nil, fmt.Errorf("%s is not a finite number", quote(s))
		}
		return f, nil
	}
	return s, nil
}

// parseBool accepts true/false, yes/no and on/off in any case.
func parseBool(s string) (bool, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "true", "yes", "on":
		return true, nil
	case "false", "no", "off":
		return false, nil
	}
	return false, fmt.Errorf("%s is not a boolean (true or false)", quote(s))
}

// parseInt accepts decimal integers (with optional _ separators),
// 0x/0o/0b prefixes, and floats with no fraction such as 1e6.
func parseInt(s string) (int64, error) {
	t := strings.TrimSpace(s)
	base := 10
	if l := strings.ToLower(strings.TrimLeft(t, "+-")); strings.HasPrefix(l, "0x") || strings.HasPrefix(l, "0o") || strings.HasPrefix(l, "0b") {
		base = 0
	}
	if i, err := strconv.ParseInt(strings.ReplaceAll(t, "_", ""), base, 64); err == nil {
		return i, nil
	}
	if f, err := strconv.ParseFloat(t, 64); err == nil && f == math.Trunc(f) && math.Abs(f) <= 1<<53 {
		return int64(f), nil
	}
	return 0, fmt.Errorf("%s is not an integer", quote(s))
}

// isNumber reports whether s is a number (a duration without its unit).
func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}
