package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxDecodeSteps bounds the nodes one decoder visits, so that aliases
// fanning out into aliases cannot make a small document expensive.
const maxDecodeSteps = 1 << 20

// decoder decodes YAML nodes into the config types strictly: every key must
// be known, every value must have the field's type, and each problem is
// recorded under the dotted key it concerns (rate_limit.limits[0].limit).
//
// It is a small hand-written walker rather than yaml.Node.Decode so that
// errors name full keys, user names in rate_limit.overrides keep their case,
// a null value leaves the field's previous value (its default) alone, and
// lists are decoded onto fresh elements that carry their own defaults.
type decoder struct {
	l      *loader
	root   string            // key used for problems of the document itself
	origin string            // " (from NAME)" appended to messages, or ""
	vars   map[string]string // ${VAR} source; nil: no expansion
	steps  int
}

// document decodes one YAML document held in data onto v. An empty document
// leaves v unchanged.
func (d *decoder) document(data []byte, v reflect.Value, key string) {
	root, err := parseYAML(data)
	if err != nil {
		d.fail(key, "%s", err.Error())
		return
	}
	if root != nil {
		d.value(root, v, key)
	}
}

// parseYAML returns the single document's root node, nil when empty.
func parseYAML(data []byte) (root *yaml.Node, err error) {
	defer func() {
		// The parser is third-party code reading untrusted bytes: turn a
		// panic into an error rather than crash start-up.
		if r := recover(); r != nil {
			root, err = nil, fmt.Errorf("yaml: cannot parse: %v", r)
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, errors.New("yaml: more than one document (only one is read)")
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		return doc.Content[0], nil
	}
	return &doc, nil
}

// fail records a problem with the value at key.
func (d *decoder) fail(key, format string, args ...any) {
	if key == "" {
		key = d.root
	}
	d.l.fail(key, fmt.Sprintf(format, args...)+d.origin)
}

// value decodes n onto v, which must be settable. A null node leaves v as it is.
func (d *decoder) value(n *yaml.Node, v reflect.Value, key string) {
	if d.steps++; d.steps > maxDecodeSteps {
		if d.steps == maxDecodeSteps+1 {
			d.fail(key, "document too large or too deeply aliased")
		}
		return
	}
	n = deref(n)
	if n == nil || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null") {
		return
	}
	switch {
	case v.Type() == reflect.TypeFor[time.Duration]():
		s, ok := d.scalar(n, key)
		if !ok {
			return
		}
		dur, err := parseDuration(s)
		if err != nil {
			d.fail(key, "%s", err)
			return
		}
		v.SetInt(int64(dur))
	case v.Type() == reflect.TypeFor[time.Time]():
		s, ok := d.scalar(n, key)
		if !ok {
			return
		}
		ts, err := time.Parse(time.RFC3339, s)
		if err != nil {
			d.fail(key, "must be an RFC 3339 time such as 2027-06-30T00:00:00Z; got %s", quote(s))
			return
		}
		v.Set(reflect.ValueOf(ts))
	case v.Kind() == reflect.Struct:
		d.structure(n, v, key)
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.String:
		d.strings(n, v, key)
	case v.Kind() == reflect.Slice:
		d.sequence(n, v, key)
	case v.Kind() == reflect.Map:
		d.mapping(n, v, key)
	case v.Kind() == reflect.String:
		if s, ok := d.scalar(n, key); ok {
			v.SetString(s)
		}
	case v.Kind() == reflect.Bool:
		if s, ok := d.scalar(n, key); ok {
			b, err := parseBool(s)
			if err != nil {
				d.fail(key, "%s", err)
				return
			}
			v.SetBool(b)
		}
	case v.Kind() == reflect.Int || v.Kind() == reflect.Int64:
		if s, ok := d.scalar(n, key); ok {
			i, err := parseInt(s)
			if err != nil {
				d.fail(key, "%s", err)
				return
			}
			v.SetInt(i)
		}
	default:
		// Unreachable with the config types; a guard for future fields.
		d.fail(key, "unsupported field type %s", v.Type())
	}
}

// structure decodes a mapping onto the fields of struct v, by yaml tag.
func (d *decoder) structure(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.fail(key, "must be a mapping of keys, got %s", kindName(n))
		return
	}
	t := v.Type()
	d.pairs(n, key, map[string]bool{}, 0, func(name string, val *yaml.Node) {
		for i := range t.NumField() {
			if tagName(t.Field(i)) == name {
				d.value(val, v.Field(i), joinKey(key, name))
				return
			}
		}
		msg := "unknown key"
		if s := suggest(name, t); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		}
		d.fail(joinKey(key, name), "%s", msg)
	})
}

// mapping decodes a mapping into a new map[string]T replacing v.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.MappingNode {
		d.fail(key, "must be a mapping, got %s", kindName(n))
		return
	}
	m := reflect.MakeMap(v.Type())
	d.pairs(n, key, map[string]bool{}, 0, func(name string, val *yaml.Node) {
		e := reflect.New(v.Type().Elem()).Elem()
		d.value(val, e, mapKey(key, name))
		m.SetMapIndex(reflect.ValueOf(name), e)
	})
	v.Set(m)
}

// pairs calls fn for every key of mapping n in order, refusing duplicate
// keys, then for the keys of YAML merge sources (<<: *anchor) not already
// given: explicit keys win, as the merge-key specification says.
func (d *decoder) pairs(n *yaml.Node, key string, seen map[string]bool, depth int, fn func(string, *yaml.Node)) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			d.fail(key, "keys must be plain strings, got %s", kindName(k))
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			merges = append(merges, val)
			continue
		}
		if seen[k.Value] {
			if depth == 0 {
				d.fail(mapKey(key, k.Value), "key given more than once")
			}
			continue
		}
		seen[k.Value] = true
		fn(k.Value, val)
	}
	for _, m := range merges {
		m = deref(m)
		sources := []*yaml.Node{m}
		if m != nil && m.Kind == yaml.SequenceNode {
			sources = m.Content
		}
		for _, s := range sources {
			if d.steps++; d.steps > maxDecodeSteps || depth > 16 {
				d.fail(key, "merge keys (<<) nested too deeply")
				return
			}
			if s = deref(s); s == nil || s.Kind != yaml.MappingNode {
				d.fail(key, "merge key (<<) must refer to a mapping, got %s", kindName(s))
				continue
			}
			d.pairs(s, key, seen, depth+1, fn)
		}
	}
}

// sequence decodes a list into a new slice replacing v. Every element starts
// from its type's defaults (see elemDefault).
func (d *decoder) sequence(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(key, "must be a list, got %s", kindName(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, c := range n.Content {
		e := s.Index(i)
		e.Set(elemDefault(e.Type()))
		d.value(c, e, fmt.Sprintf("%s[%d]", key, i))
	}
	v.Set(s)
}

// strings decodes a list of strings, or a single string as a list of one,
// into a new slice replacing v. An empty list gives an empty, non-nil slice.
func (d *decoder) strings(n *yaml.Node, v reflect.Value, key string) {
	if n.Kind == yaml.ScalarNode {
		if s, ok := d.scalar(n, key); ok {
			v.Set(reflect.ValueOf([]string{s}).Convert(v.Type()))
		}
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(key, "must be a list of strings, got %s", kindName(n))
		return
	}
	out := make([]string, 0, len(n.Content))
	for i, c := range n.Content {
		c = deref(c)
		k := fmt.Sprintf("%s[%d]", key, i)
		if c != nil && c.Kind == yaml.ScalarNode && c.ShortTag() == "!!null" {
			d.fail(k, "must be a string, got null")
			continue
		}
		if s, ok := d.scalar(c, k); ok {
			out = append(out, s)
		}
	}
	v.Set(reflect.ValueOf(out).Convert(v.Type()))
}

// scalar returns the text of a scalar node, ${VAR}-expanded when the
// decoder reads a file.
func (d *decoder) scalar(n *yaml.Node, key string) (string, bool) {
	if n == nil || n.Kind != yaml.ScalarNode {
		d.fail(key, "must be a single value, got %s", kindName(n))
		return "", false
	}
	if d.vars == nil {
		return n.Value, true
	}
	return expand(n.Value, d.vars, func(name string) {
		d.l.warn(fmt.Sprintf("%s: ${%s} is not set in the environment, it expands to \"\"", key, name))
	}), true
}

// elemDefault is the value a new list element starts from: upstreams get
// the default timeout, so that an upstream without `timeout` waits 10m.
func elemDefault(t reflect.Type) reflect.Value {
	if t == reflect.TypeFor[Upstream]() {
		return reflect.ValueOf(Upstream{Timeout: defaultUpstreamTimeout})
	}
	return reflect.Zero(t)
}

// deref follows alias nodes to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	if n != nil && n.Kind == yaml.AliasNode {
		return nil
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch {
	case n == nil:
		return "nothing"
	case n.Kind == yaml.MappingNode:
		return "a mapping"
	case n.Kind == yaml.SequenceNode:
		return "a list"
	case n.Kind == yaml.ScalarNode:
		return "a single value"
	}
	return "an unexpected node"
}

// tagName is the key a struct field is known by: its yaml tag.
func tagName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	return name
}

// joinKey appends a struct field's key to a dotted key path.
func joinKey(key, name string) string {
	if key == "" {
		return name
	}
	return key + "." + name
}

// mapKey appends a map key (a user name) to a key path, quoting it when it
// holds characters other than letters, digits, '-' and '_'.
func mapKey(key, name string) string {
	plain := name != ""
	for _, r := range name {
		if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			plain = false
			break
		}
	}
	if !plain {
		return fmt.Sprintf("%s[%s]", key, quote(name))
	}
	return joinKey(key, name)
}

// quote quotes a value for a message, cut to a readable length.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}

// suggest returns the known key of struct t closest to name, if close.
func suggest(name string, t reflect.Type) string {
	best, bestDist := "", 3
	for i := range t.NumField() {
		k := tagName(t.Field(i))
		if dist := editDistance(strings.ToLower(name), k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return math.MaxInt
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
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

// expand replaces ${NAME} with the variable's value in vars (empty, and
// reported through unset, when it is not set) and ${NAME:-word} with the
// value, or word when the variable is unset or empty. "$${" stands for a
// literal "${"; any other "$" is kept as it is.
func expand(s string, vars map[string]string, unset func(name string)) string {
	if !strings.Contains(s, "${") {
		return s
	}
	var b strings.Builder
	for {
		i := strings.IndexByte(s, '$')
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i])
		s = s[i:]
		if strings.HasPrefix(s, "$${") {
			b.WriteString("${")
			s = s[3:]
			continue
		}
		end := strings.IndexByte(s, '}')
		if !strings.HasPrefix(s, "${") || end < 0 {
			b.WriteByte('$')
			s = s[1:]
			continue
		}
		name, word, hasWord := strings.Cut(s[2:end], ":-")
		if !isVarName(name) {
			b.WriteByte('$')
			s = s[1:]
			continue
		}
		val, ok := vars[name]
		switch {
		case hasWord && val == "":
			b.WriteString(word)
		case !ok:
			unset(name)
		default:
			b.WriteString(val)
		}
		s = s[end+1:]
	}
}

// isVarName reports whether s is a shell variable name.
func isVarName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if !(r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}
