package config

import (
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// applyEnv applies the GENAI_GATEWAY_ variables of environ, merged into
// viper's config layer over the file: whole values first, then those
// reaching into a list element by index, each group in name order. (Viper's
// own environment layer reads the process environment, which Load must not.)
func (l *loader) applyEnv(v *viper.Viper) {
	var whole, indexed []string
	for name, val := range l.env {
		if !strings.HasPrefix(name, envPrefix) || name == envConfig || val == "" {
			continue
		}
		if hasIndex(name) {
			indexed = append(indexed, name)
		} else {
			whole = append(whole, name)
		}
	}
	sort.Strings(whole)
	sort.Strings(indexed)
	for _, name := range append(whole, indexed...) {
		t, found := findEnvTarget(reflect.TypeFor[Config](), strings.TrimPrefix(name, envPrefix), "", nil, envTarget{})
		if !found {
			l.warn(name + ": no config key of that name, ignored")
			continue
		}
		value, errs := envValue(l.env[name], t.typ, t.key)
		for _, err := range errs {
			p := err.(*problem)
			l.fail(p.key, p.msg+" (from "+name+")")
		}
		if m, ok := value.(map[string]any); ok && t.typ.Kind() == reflect.Struct {
			for _, p := range vanishingKeys(m, t.typ, t.key) {
				errs = append(errs, p)
				l.fail(p.key, p.msg+" (from "+name+")")
			}
		}
		if len(errs) > 0 {
			continue
		}
		if t.list != "" {
			list, _ := v.Get(t.list).([]any)
			if t.index >= len(list) {
				l.fail(fmt.Sprintf("%s[%d]", t.list, t.index), fmt.Sprintf("no such element: %s has %d (from %s)", t.list, len(list), name))
				continue
			}
			list = deepCopy(list).([]any)
			if len(t.path) == 0 {
				list[t.index] = value
			} else {
				elem, ok := list[t.index].(map[string]any)
				if !ok {
					elem = map[string]any{}
				}
				list[t.index] = withPath(elem, t.path, value)
			}
			value = list
		}
		_ = v.MergeConfigMap(withPath(nil, t.treePath(), value)) // cannot fail
		l.origins[t.key] = name
		if by, ok := l.legacyEnvSet[t.key]; ok {
			l.warn(fmt.Sprintf("%s: overrides %s", name, by))
		}
	}
}

// envTarget is the key a GENAI_GATEWAY_ variable sets.
type envTarget struct {
	key      string // rate_limit.user_header, upstreams[0].api_key
	list     string // for a variable reaching into a list element, the list (upstreams)
	listPath []string
	index    int
	path     []string // the key's segments, from the element when list is set
	typ      reflect.Type
}

// treePath is the path of the value merged into viper's tree.
func (t envTarget) treePath() []string {
	if t.list != "" {
		return t.listPath
	}
	return t.path
}

// findEnvTarget finds the key of a variable name (without the prefix) under
// struct type st at key, guided by the config's keys: RATE_LIMIT_USER_HEADER
// is rate_limit.user_header, UPSTREAMS_0_URL is upstreams[0].url.
func findEnvTarget(st reflect.Type, name, key string, path []string, t envTarget) (envTarget, bool) {
	for i := range st.NumField() {
		f := st.Field(i)
		tag := tagName(f)
		if tag == "" {
			continue
		}
		upper := strings.ToUpper(tag)
		fk, fp := joinKey(key, tag), append(slices.Clone(path), tag)
		if name == upper {
			t.key, t.path, t.typ = fk, fp, f.Type
			return t, true
		}
		rest, ok := strings.CutPrefix(name, upper+"_")
		switch {
		case !ok:
		case f.Type.Kind() == reflect.Struct:
			if found, ok := findEnvTarget(f.Type, rest, fk, fp, t); ok {
				return found, true
			}
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && t.list == "":
			digits, after, _ := strings.Cut(rest, "_")
			idx, err := strconv.Atoi(digits)
			if err != nil || idx < 0 || digits != strconv.Itoa(idx) {
				continue
			}
			e := envTarget{list: fk, listPath: fp, index: idx, key: fmt.Sprintf("%s[%d]", fk, idx), typ: f.Type.Elem()}
			if after == "" {
				return e, true
			}
			if found, ok := findEnvTarget(f.Type.Elem(), after, e.key, nil, e); ok {
				return found, true
			}
		}
	}
	return envTarget{}, false
}

// envValue turns a variable's text into a tree value for a field of type
// t: a list of strings takes comma-separated values or a YAML flow list,
// mappings and other lists take YAML, single values are kept as text.
func envValue(text string, t reflect.Type, key string) (any, []error) {
	switch {
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String && !strings.HasPrefix(strings.TrimSpace(text), "["):
		list := []any{}
		for part := range strings.SplitSeq(text, ",") {
			if part = strings.TrimSpace(part); part != "" {
				list = append(list, part)
			}
		}
		return list, nil
	case t.Kind() == reflect.Struct && t != reflect.TypeFor[time.Time](), t.Kind() == reflect.Slice, t.Kind() == reflect.Map:
		return parseTree(text, key)
	}
	return text, nil
}

// hasIndex reports whether a variable name has an all-digit segment.
func hasIndex(name string) bool {
	for part := range strings.SplitSeq(name, "_") {
		if part != "" && strings.Trim(part, "0123456789") == "" {
			return true
		}
	}
	return false
}

// withPath returns m (a new map when nil) with value set at path, creating
// or copying the maps on the way.
func withPath(m map[string]any, path []string, value any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	if len(path) == 1 {
		out[path[0]] = value
		return out
	}
	inner, _ := out[path[0]].(map[string]any)
	out[path[0]] = withPath(inner, path[1:], value)
	return out
}

// deepCopy copies a tree value, so that changing it leaves viper's alone.
func deepCopy(v any) any {
	switch v := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(v))
		for k, e := range v {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, e := range v {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}
