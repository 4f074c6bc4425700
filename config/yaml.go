package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Limits of one YAML document, so that aliases fanning out into aliases
// cannot make a small file expensive.
const (
	maxTreeNodes = 1 << 20
	maxTreeDepth = 64
)

// overridesKey is the one map of the file whose keys are data (user names,
// case kept) rather than config keys.
const overridesKey = "rate_limit.overrides"

// isDeploymentsKey reports whether key is upstreams[N].deployments, a map
// whose keys are model names (case kept), turned into the list form
// [{model, deployment}] like the overrides.
func isDeploymentsKey(key string) bool {
	rest, ok := strings.CutPrefix(key, "upstreams[")
	if !ok {
		return false
	}
	i := strings.IndexByte(rest, ']')
	return i > 0 && rest[i+1:] == ".deployments"
}

// yamlCodec is viper's decoder for the file. It turns the YAML document into
// viper's tree (map[string]any, []any, string scalars, nil for null), which
// the decode hook then types field by field, and on the way:
//   - expands ${VAR} and ${VAR:-word} in values (never in keys) from vars;
//   - names every problem by its key (duplicate keys, merge keys that name
//     no mapping, keys that are not strings);
//   - turns the rate_limit.overrides map into its list form [{user, limits}],
//     so that viper, which lowercases every map key, keeps user names as
//     written (Alice and alice are two users); upstreams[].deployments
//     likewise becomes [{model, deployment}], keeping model names as written.
//
// It records problems and warnings on the loader rather than failing, so
// one load reports every problem of the file at once.
type yamlCodec struct {
	l    *loader
	file string // the file's path, the key of problems with the whole document
	vars map[string]string
}

// Decode implements viper.Decoder.
func (c yamlCodec) Decode(data []byte, out map[string]any) error {
	t := &treeBuilder{l: c.l, vars: c.vars, file: c.file}
	root, err := parseYAML(data)
	switch {
	case err != nil:
		c.l.fail(c.file, err.Error())
	case root == nil:
	case root.Kind != yaml.MappingNode:
		c.l.fail(c.file, "must be a mapping of keys, got "+kindName(root))
	default:
		if m, ok := t.value(root, "", 0).(map[string]any); ok {
			for _, p := range vanishingKeys(m, reflect.TypeFor[Config](), "") {
				c.l.fail(p.key, p.msg)
			}
			for k, v := range m {
				out[k] = v
			}
		}
	}
	return nil
}

// Encode implements viper.Encoder; the gateway never writes its file.
func (yamlCodec) Encode(map[string]any) ([]byte, error) {
	return nil, errors.New("config: writing the file is not supported")
}

// vanishingKeys returns the unknown keys of mapping m, of struct type st at
// key, whose value is null or an empty mapping: viper drops such keys
// (it keeps no key without a value), so its strict decoding never sees them.
func vanishingKeys(m map[string]any, st reflect.Type, key string) []*problem {
	var out []*problem
	for k, v := range m {
		f, known := fieldByTag(st, strings.ToLower(k))
		sub, isMap := v.(map[string]any)
		switch {
		case !known && (v == nil || isMap && len(sub) == 0):
			msg := "unknown key"
			if s := suggest(k, st); s != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", s)
			}
			out = append(out, &problem{key: joinKey(key, k), msg: msg})
		case known && isMap:
			out = append(out, vanishingKeys(sub, f.Type, joinKey(key, k))...)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key < out[j].key })
	return out
}

// parseTree parses YAML text from a variable or a flag into a tree, without
// ${VAR} expansion. Problems are returned under keys relative to key.
func parseTree(text, key string) (any, []error) {
	l := &loader{decodeKeys: map[string]bool{}}
	t := &treeBuilder{l: l}
	root, err := parseYAML([]byte(text))
	if err != nil {
		return nil, []error{&problem{key: key, msg: err.Error()}}
	}
	if root == nil {
		return nil, nil
	}
	v := t.value(root, key, 0)
	return v, l.errs
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

// treeBuilder converts YAML nodes into viper's tree.
type treeBuilder struct {
	l     *loader
	file  string            // the key of problems with the document itself
	vars  map[string]string // ${VAR} source; nil: no expansion
	nodes int
}

func (t *treeBuilder) value(n *yaml.Node, key string, depth int) any {
	if t.nodes++; t.nodes > maxTreeNodes || depth > maxTreeDepth {
		if t.nodes == maxTreeNodes+1 || depth == maxTreeDepth+1 {
			t.l.fail(key, "document too large, too deeply nested or too deeply aliased")
		}
		return nil
	}
	n = deref(n)
	switch {
	case n == nil:
		return nil
	case n.Kind == yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			return nil
		}
		if t.vars == nil {
			return n.Value
		}
		return expand(n.Value, t.vars, func(name string) {
			t.l.warn(fmt.Sprintf("%s: ${%s} is not set in the environment, it expands to \"\"", key, name))
		})
	case n.Kind == yaml.SequenceNode:
		list := make([]any, len(n.Content))
		for i, c := range n.Content {
			list[i] = t.value(c, fmt.Sprintf("%s[%d]", key, i), depth+1)
		}
		return list
	case n.Kind == yaml.MappingNode && key == overridesKey:
		var list []any
		t.pairs(n, key, map[string]bool{}, 0, true, func(user string, v *yaml.Node) {
			list = append(list, map[string]any{"user": user, "limits": t.value(v, mapKey(key, user), depth+1)})
		})
		if list == nil {
			list = []any{}
		}
		return list
	case n.Kind == yaml.MappingNode && isDeploymentsKey(key):
		var list []any
		t.pairs(n, key, map[string]bool{}, 0, true, func(model string, v *yaml.Node) {
			list = append(list, map[string]any{"model": model, "deployment": t.value(v, mapKey(key, model), depth+1)})
		})
		if list == nil {
			list = []any{}
		}
		return list
	case n.Kind == yaml.MappingNode:
		m := map[string]any{}
		t.pairs(n, key, map[string]bool{}, 0, false, func(k string, v *yaml.Node) {
			m[k] = t.value(v, joinKey(key, k), depth+1)
		})
		return m
	}
	t.l.fail(key, "unexpected YAML node")
	return nil
}

// pairs calls fn for every key of mapping n in order, refusing duplicate
// keys (in any case, as viper folds the case of config keys, unless
// caseKept), then for the keys of YAML merge sources (<<: *anchor) not
// already given: explicit keys win, as the merge-key specification says.
func (t *treeBuilder) pairs(n *yaml.Node, key string, seen map[string]bool, depth int, caseKept bool, fn func(string, *yaml.Node)) {
	var merges []*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			t.l.fail(cmp.Or(key, t.file), "keys must be plain strings, got "+kindName(k))
			continue
		}
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			merges = append(merges, val)
			continue
		}
		id := k.Value
		if !caseKept {
			id = strings.ToLower(id)
		}
		if seen[id] {
			if depth == 0 {
				t.l.fail(mapKey(key, k.Value), "key given more than once")
			}
			continue
		}
		seen[id] = true
		fn(k.Value, val)
	}
	for _, m := range merges {
		m = deref(m)
		sources := []*yaml.Node{m}
		if m != nil && m.Kind == yaml.SequenceNode {
			sources = m.Content
		}
		for _, s := range sources {
			if t.nodes++; t.nodes > maxTreeNodes || depth > 16 {
				t.l.fail(key, "merge keys (<<) nested too deeply")
				return
			}
			if s = deref(s); s == nil || s.Kind != yaml.MappingNode {
				t.l.fail(key, "merge key (<<) must refer to a mapping, got "+kindName(s))
				continue
			}
			t.pairs(s, key, seen, depth+1, caseKept, fn)
		}
	}
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
		name, word, hasWord := "", "", false
		if strings.HasPrefix(s, "${") && end > 0 {
			name, word, hasWord = strings.Cut(s[2:end], ":-")
		}
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

// quote quotes a value for a message, cut to a readable length.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		return strconv.Quote(s[:max]) + "..."
	}
	return strconv.Quote(s)
}
