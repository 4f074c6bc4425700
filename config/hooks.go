package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
)

// decodeHook is the mapstructure hook of every field: it turns the tree's
// values (strings from the file, the environment and the flags; lists and
// maps from the file) into the field's type, or says what is wrong in the
// words an operator reads. A string given where a mapping or a list is
// expected is read as YAML text, as variables and flags carry structured
// values (GENAI_GATEWAY_UPSTREAMS='[{name: a, url: "http://a"}]').
func decodeHook(_, to reflect.Type, data any) (any, error) {
	if e, ok := data.(fieldError); ok { // a problem found by the hook of the enclosing struct
		return nil, e
	}
	switch to {
	case reflect.TypeFor[time.Duration]():
		s, err := scalar(data)
		if err != nil {
			return nil, err
		}
		return parseDuration(s)
	case reflect.TypeFor[time.Time]():
		s, err := scalar(data)
		if err != nil {
			return nil, err
		}
		ts, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return nil, fmt.Errorf("must be an RFC 3339 time such as 2027-06-30T00:00:00Z; got %s", quote(s))
		}
		return ts, nil
	case reflect.TypeFor[map[string][]Limit]():
		return overrides(data)
	case reflect.TypeFor[map[string]string]():
		return deployments(data)
	}
	switch to.Kind() {
	case reflect.Struct:
		m, ok := structured(data).(map[string]any)
		if !ok {
			return nil, fmt.Errorf("must be a mapping of keys, got %s", shape(structured(data)))
		}
		if to == reflect.TypeFor[Limit]() {
			return calendarWindow(m)
		}
		if _, set := m["timeout"]; to == reflect.TypeFor[Upstream]() && (!set || m["timeout"] == nil) {
			m = withKey(m, "timeout", defaultUpstreamTimeout.String())
		}
		if w, set := m["weight"]; to == reflect.TypeFor[Upstream]() {
			// 0 is the zero value of a Config built in code (weight 1); in
			// a file or variable it is refused, as it would read as "drain".
			if ws, ok := w.(string); ok {
				if n, err := strconv.Atoi(strings.TrimSpace(ws)); err == nil && n <= 0 {
					m = withKey(m, "weight", fieldError(fmt.Sprintf("must be from 1 to %d; got %d", maxWeight, n)))
				}
			} else if !set || w == nil {
				m = withKey(m, "weight", "1")
			}
		}
		return m, nil
	case reflect.Slice:
		if to.Elem().Kind() == reflect.String {
			return stringList(data)
		}
		if list, ok := structured(data).([]any); ok {
			return list, nil
		}
		return nil, fmt.Errorf("must be a list, got %s", shape(structured(data)))
	case reflect.String:
		return scalar(data)
	case reflect.Bool:
		s, err := scalar(data)
		if err != nil {
			return nil, err
		}
		return parseBool(s)
	case reflect.Int, reflect.Int64:
		s, err := scalar(data)
		if err != nil {
			return nil, err
		}
		return parseInt(s)
	case reflect.Float64:
		s, err := scalar(data)
		if err != nil {
			return nil, err
		}
		return parseFloat(s)
	}
	return data, nil
}

// fieldError is a problem the hook of a struct finds in one of its fields:
// put in place of the field's value, it is returned when the field is
// decoded, so the problem is reported under the field's key and the other
// fields still decode.
type fieldError string

func (e fieldError) Error() string { return string(e) }

// calendarWindow moves a limit's `window: calendar_day` or `window:
// calendar_month` to Limit.Calendar, so Window stays a time.Duration. The
// calendar key is internal: written in a file or a variable it is refused.
func calendarWindow(m map[string]any) (map[string]any, error) {
	if c, set := m["calendar"]; set && c != "" && c != nil { // the defaults' tree holds ""
		m = withKey(m, "calendar", fieldError("unknown key (write window: calendar_day or window: calendar_month)"))
	}
	w, _ := m["window"].(string)
	switch t := strings.TrimSpace(w); t {
	case CalendarDay, CalendarMonth:
		m = withKey(m, "calendar", t)
		delete(m, "window")
	case "":
	default:
		if _, err := time.ParseDuration(t); err != nil && !isNumber(t) {
			m = withKey(m, "window", fieldError(fmt.Sprintf("%s is neither a duration (\"30s\", \"1h\") nor calendar_day or calendar_month", quote(w))))
		}
	}
	return m, nil
}

// isNumber reports whether s is a number, which parseDuration reports as a
// duration without a unit.
func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

// structured reads a string as YAML text; other values are returned as they are.
func structured(data any) any {
	s, ok := data.(string)
	if !ok {
		return data
	}
	v, errs := parseTree(s, "")
	if len(errs) > 0 {
		return yamlError{errs}
	}
	return v
}

// yamlError is YAML text that could not be read.
type yamlError struct{ errs []error }

// scalar returns the text of a single value.
func scalar(data any) (string, error) {
	if s, ok := data.(string); ok {
		return s, nil
	}
	return "", fmt.Errorf("must be a single value, got %s", shape(data))
}

// stringList accepts a list of strings, or a single string as a list of
// one. An empty list gives an empty, non-nil slice.
func stringList(data any) ([]string, error) {
	switch v := data.(type) {
	case string:
		if strings.HasPrefix(strings.TrimSpace(v), "[") {
			return stringList(structured(v))
		}
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		var errs []error
		for i, e := range v {
			s, ok := e.(string)
			if !ok {
				msg := "must be a string, got null"
				if e != nil {
					msg = "must be a single value, got " + shape(e)
				}
				errs = append(errs, &problem{key: fmt.Sprintf("[%d]", i), msg: msg})
				continue
			}
			out = append(out, s)
		}
		return out, errors.Join(errs...)
	}
	return nil, fmt.Errorf("must be a list of strings, got %s", shape(data))
}

// overrides accepts rate_limit.overrides as a map of user names to limits,
// or as the list form [{user: NAME, limits: [...]}] that the file's map
// becomes in the tree (see yamlCodec), and returns the map.
func overrides(data any) (any, error) {
	data = structured(data)
	if m, ok := data.(map[string]any); ok {
		return m, nil
	}
	list, ok := data.([]any)
	const want = "must be a mapping of user names to lists of limits (or a list of {user, limits})"
	if !ok {
		return nil, fmt.Errorf("%s, got %s", want, shape(data))
	}
	out := make(map[string]any, len(list))
	var errs []error
	for i, e := range list {
		entry, ok := e.(map[string]any)
		user, isString := entry["user"].(string)
		if !ok || !isString {
			errs = append(errs, fmt.Errorf("%s; entry %d is not {user, limits}", want, i))
			continue
		}
		for k := range entry {
			if k != "user" && k != "limits" {
				errs = append(errs, &problem{key: fmt.Sprintf("[%d].%s", i, k), msg: "unknown key (an entry has user and limits)"})
			}
		}
		if _, dup := out[user]; dup {
			errs = append(errs, &problem{key: mapKey("", user), msg: "user given more than once"})
			continue
		}
		out[user] = entry["limits"]
	}
	return out, errors.Join(errs...)
}

// deployments accepts upstreams[].deployments as a map of model names to
// deployment names, or as the list form [{model, deployment}] that the
// file's map becomes in the tree (see yamlCodec), and returns the map.
func deployments(data any) (any, error) {
	data = structured(data)
	if m, ok := data.(map[string]any); ok {
		return m, nil
	}
	list, ok := data.([]any)
	const want = "must be a mapping of model names to deployment names"
	if !ok {
		return nil, fmt.Errorf("%s, got %s", want, shape(data))
	}
	out := make(map[string]any, len(list))
	var errs []error
	for i, e := range list {
		entry, _ := e.(map[string]any)
		model, isString := entry["model"].(string)
		d, dString := entry["deployment"].(string)
		if !isString || !dString {
			errs = append(errs, fmt.Errorf("%s; entry %d is not model: deployment", want, i))
			continue
		}
		if _, dup := out[model]; dup {
			errs = append(errs, &problem{key: mapKey("", model), msg: "model given more than once"})
			continue
		}
		out[model] = d
	}
	return out, errors.Join(errs...)
}

// shape names the kind of a tree value for messages.
func shape(v any) string {
	switch v := v.(type) {
	case nil:
		return "nothing"
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case yamlError:
		return "text that is not valid YAML: " + errors.Join(v.errs...).Error()
	}
	return "a single value"
}

// withKey returns a copy of m with k set to v.
func withKey(m map[string]any, k string, v any) map[string]any {
	out := make(map[string]any, len(m)+1)
	for key, val := range m {
		out[key] = val
	}
	out[k] = v
	return out
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
	lower := strings.ToLower(strings.TrimLeft(t, "+-"))
	base := 10
	if strings.HasPrefix(lower, "0x") || strings.HasPrefix(lower, "0o") || strings.HasPrefix(lower, "0b") {
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

// parseFloat accepts finite decimal numbers (with optional _ separators),
// such as 50, 12.5 or 1e-3.
func parseFloat(s string) (float64, error) {
	t := strings.TrimSpace(s)
	f, err := strconv.ParseFloat(strings.ReplaceAll(t, "_", ""), 64)
	switch {
	case slices.Contains([]string{".nan", ".inf", "+.inf", "-.inf"}, strings.ToLower(t)): // YAML's forms
		return 0, fmt.Errorf("%s is not a finite number", quote(s))
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%s is not a number", quote(s))
	case err != nil || math.IsNaN(f) || math.IsInf(f, 0):
		return 0, fmt.Errorf("%s is not a finite number", quote(s))
	}
	return f, nil
}

// parseDuration accepts Go durations such as "30s", "1m30s" or "1h".
func parseDuration(s string) (time.Duration, error) {
	t := strings.TrimSpace(s)
	d, err := time.ParseDuration(t)
	if err == nil {
		return d, nil
	}
	if _, perr := strconv.ParseFloat(t, 64); perr == nil {
		return 0, fmt.Errorf("%s has no unit: write a Go duration such as \"30s\", \"10m\" or \"1h\"", quote(s))
	}
	return 0, fmt.Errorf("%s is not a duration: write a Go duration such as \"30s\", \"10m\" or \"1h\"", quote(s))
}
