package config

import (
	"cmp"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/viper"
)

// envKey is the key a GENAI_GATEWAY_ variable sets.
type envKey struct {
	path []string // in viper's tree; "#" stands for a list element's index
	typ  reflect.Type
}

// envKeys maps the variable name (without the prefix) of every key under
// struct type t to its key; "#" stands for a list element's index, as in
// UPSTREAMS_#_API_KEY for upstreams[N].api_key.
func envKeys(t reflect.Type, name string, path []string, out map[string]envKey) map[string]envKey {
	for i := range t.NumField() {
		f := t.Field(i)
		n, p := name+strings.ToUpper(tagName(f)), append(slices.Clip(path), tagName(f))
		out[n] = envKey{p, f.Type}
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeFor[time.Time]():
			envKeys(f.Type, n+"_", p, out)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct && !slices.Contains(p, "#"):
			out[n+"_#"] = envKey{append(slices.Clip(p), "#"), f.Type.Elem()}
			envKeys(f.Type.Elem(), n+"_#_", out[n+"_#"].path, out)
		}
	}
	return out
}

// applyEnv merges the GENAI_GATEWAY_ variables of environ into viper's
// config layer, over the file: whole values first, then those reaching into
// a list element by index, each group in name order. Viper's own
// environment layer (AutomaticEnv) reads the process environment, which
// Read must not: the command and the tests hand it one.
func (l *loader) applyEnv(v *viper.Viper) {
	keys := envKeys(reflect.TypeFor[Config](), "", nil, map[string]envKey{})
	type variable struct {
		name  string
		parts []string // the name's segments, the index as "#"
		index int      // -1: none
	}
	var vars []variable
	for name, val := range l.env {
		if !strings.HasPrefix(name, envPrefix) || name == envConfig || val == "" {
			continue
		}
		parts := strings.Split(strings.TrimPrefix(name, envPrefix), "_")
		i := slices.IndexFunc(parts, func(s string) bool { return s != "" && strings.Trim(s, "0123456789") == "" })
		index := -1
		if i >= 0 {
			var err error
			if index, err = strconv.Atoi(parts[i]); err != nil {
				index = math.MaxInt
			}
			parts[i] = "#"
		}
		vars = append(vars, variable{name, parts, index})
	}
	slices.SortFunc(vars, func(a, b variable) int {
		return cmp.Or(boolInt(a.index >= 0)-boolInt(b.index >= 0), strings.Compare(a.name, b.name))
	})
	for _, e := range vars {
		k, ok := keys[strings.Join(e.parts, "_")]
		if !ok {
			l.warn(e.name + ": no config key of that name, ignored")
			continue
		}
		key := strings.Replace(strings.Join(k.path, "."), ".#", fmt.Sprintf("[%d]", e.index), 1)
		before := len(l.errs)
		value := l.envValue(l.env[e.name], k.typ, key, e.name)
		if len(l.errs) > before {
			continue
		}
		path := k.path
		if i := slices.Index(path, "#"); i >= 0 {
			list, _ := v.Get(strings.Join(path[:i], ".")).([]any)
			if e.index >= len(list) {
				l.fail(key[:strings.IndexByte(key, ']')+1], fmt.Sprintf("no such element: %s has %d (from %s)", strings.Join(path[:i], "."), len(list), e.name))
				continue
			}
			if i == len(path)-1 {
				list[e.index] = value
			} else {
				elem, ok := list[e.index].(map[string]any)
				if !ok {
					elem = map[string]any{}
				}
				list[e.index] = setPath(elem, path[i+1:], value)
			}
			path, value = path[:i], list
		}
		_ = v.MergeConfigMap(setPath(map[string]any{}, path, value)) // cannot fail
		l.origins[key] = e.name
		if by, ok := l.legacyEnvSet[key]; ok {
			l.warn(fmt.Sprintf("%s: overrides %s", e.name, by))
		}
	}
}

// envValue turns a variable's text into a tree value for a field of type t:
// a list of strings takes comma-separated values or a YAML flow list,
// mappings and other lists take YAML, single values are kept as text.
func (l *loader) envValue(text string, t reflect.Type, key, name string) any {
	switch shapeOf(t) {
	case list:
		if t.Elem().Kind() == reflect.String && !strings.HasPrefix(strings.TrimSpace(text), "[") {
			out := []any{}
			for part := range strings.SplitSeq(text, ",") {
				if part = strings.TrimSpace(part); part != "" {
					out = append(out, part)
				}
			}
			return out
		}
		fallthrough
	case mapping:
		w := walker{l: l, from: " (from " + name + ")"}
		return w.document([]byte(text), t, key)
	}
	return text
}

// setPath sets value at path in tree m, making the maps on the way, and
// returns m.
func setPath(m map[string]any, path []string, value any) map[string]any {
	inner := m
	for _, k := range path[:len(path)-1] {
		next, ok := inner[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			inner[k] = next
		}
		inner = next
	}
	inner[path[len(path)-1]] = value
	return m
}
