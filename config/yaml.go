package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Bounds of one YAML document, so that aliases fanning out into aliases
// cannot make a small file expensive.
const (
	maxNodes = 1 << 20
	maxDepth = 64
)

// dataMap is a mapping whose keys are data, not config keys: the users of
// rate_limit.overrides and the models of upstreams[].deployments. Viper
// lowercases the keys of every map[string]any it holds but leaves other
// types alone, so a dataMap keeps them as written: Alice and alice are two
// users. Mapstructure decodes it like any map.
type dataMap map[string]any

func (m dataMap) has(k string) bool { _, ok := m[k]; return ok }

// walker turns YAML text (the file, or a variable's value) into viper's
// tree, guided by the Go type each node decodes into: a map[string]any for
// a struct, with its keys lowercased as viper keys them; []any for a list;
// a dataMap for a map; a string for every value, which the decode hook
// types. Nulls are left out, so the key keeps its lower layer's value.
//
// The walk is the strict check of keys, rather than viper's UnmarshalExact
// alone, because viper drops a key whose value is null or {} before
// decoding (so `rate_limt: {}` would pass) and raw yaml.v3 errors do not
// name the key. On the way it refuses unknown keys (with a suggestion),
// keys given twice in any case, and values of the wrong shape, each named
// by its key path; resolves aliases and merge keys (<<); expands ${VAR}
// in values (see expand); and reads the list form of rate_limit.overrides.
// A refused value is left out and its problem recorded on the loader, so
// one load reports every problem at once.
type walker struct {
	l     *loader
	file  string            // names the problems of the whole document
	from  string            // appended to every message: " (from VARIABLE)"
	vars  map[string]string // ${VAR} values; nil: no expansion
	nodes int
	big   bool // refused as too large
}

// Shapes of values, as messages name them.
const (
	single  = "a single value"
	list    = "a list"
	mapping = "a mapping"
)

func (w *walker) fail(key, msg string) { w.l.fail(cmp.Or(key, w.file), msg+w.from) }

// within counts a node and reports whether the document is still within
// its bounds, refusing it (once) when it is not.
func (w *walker) within(key string, depth int) bool {
	if w.nodes++; !w.big && (w.nodes > maxNodes || depth > maxDepth) {
		w.big = true
		w.fail(key, "document too large, too deeply nested or too deeply aliased")
	}
	return !w.big
}

// document walks the single YAML document in data as a value of type t at key.
func (w *walker) document(data []byte, t reflect.Type, key string) (tree any) {
	defer func() {
		// The parser is third-party code reading untrusted bytes: a panic
		// is a problem of the document, not a crash at start-up.
		if r := recover(); r != nil {
			w.fail(key, fmt.Sprintf("yaml: cannot parse: %v", r))
			tree = nil
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc, next yaml.Node
	err := dec.Decode(&doc)
	if err == nil && !errors.Is(dec.Decode(&next), io.EOF) {
		err = errors.New("yaml: more than one document (only one is read)")
	}
	switch {
	case errors.Is(err, io.EOF) || err == nil && len(doc.Content) == 0:
		return nil
	case err != nil:
		w.fail(key, withLine(data, err.Error()))
		return nil
	}
	return w.value(doc.Content[0], t, key, 0)
}

// yamlLine matches the line yaml.v3 puts in a syntax error.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// withLine puts the line of a YAML syntax error into msg, the parser's
// message for data. yaml.v3 names the line where the enclosing block
// starts (a bad indent on line 9 is reported on line 4), or none at all
// ("did not find expected ',' or '}'"). The first prefix of whole lines
// that fails with the same message ends on the line at fault; the search
// parses at most maxLocateBytes in all, and msg stays as it is when it
// finds nothing.
func withLine(data []byte, msg string) string {
	want := yamlLine.ReplaceAllString(msg, "yaml: ")
	parsed := 0
	for end, line := 0, 1; end < len(data) && parsed <= maxLocateBytes; line++ {
		if i := bytes.IndexByte(data[end:], '\n'); i >= 0 {
			end += i + 1
		} else {
			end = len(data)
		}
		parsed += end
		var n yaml.Node
		if err := yaml.Unmarshal(data[:end], &n); err != nil && yamlLine.ReplaceAllString(err.Error(), "yaml: ") == want {
			return fmt.Sprintf("yaml: line %d: %s", line, strings.TrimPrefix(want, "yaml: "))
		}
	}
	return msg
}

// maxLocateBytes bounds the bytes withLine parses to find an error's line.
const maxLocateBytes = 16 << 20

// value turns node n into the tree value of a t at key, or nil.
func (w *walker) value(n *yaml.Node, t reflect.Type, key string, depth int) any {
	if !w.within(key, depth) {
		return nil
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	n, shape := deref(n), shapeOf(t)
	switch {
	case isNull(n):
		return nil
	case n.Kind == yaml.ScalarNode && (shape == single || shape == list && t.Elem().Kind() == reflect.String):
		s := n.Value
		if w.vars != nil {
			s = expand(s, w.vars, func(name string) {
				w.l.warn(fmt.Sprintf("%s: ${%s} is not set in the environment, it expands to \"\"", key, name))
			})
		}
		if shape == list { // a single string is a list of one
			return []any{s}
		}
		return s
	case n.Kind == yaml.SequenceNode && shape == list:
		out := make([]any, len(n.Content))
		for i, c := range n.Content {
			k := fmt.Sprintf("%s[%d]", key, i)
			if isNull(deref(c)) {
				w.fail(k, fmt.Sprintf("must be %s, got null", shapeOf(t.Elem())))
			}
			out[i] = w.value(c, t.Elem(), k, depth+1)
		}
		return out
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Struct:
		m, seen := map[string]any{}, map[string]bool{}
		for _, p := range w.pairs(n, key, 0) {
			name := strings.ToLower(p.k.Value)
			f, known := fieldByTag(t, name)
			switch {
			case seen[name] && !p.merged:
				w.fail(joinKey(key, p.k.Value), "key given more than once")
			case seen[name]: // a merged key, overridden
			case !known:
				w.fail(joinKey(key, p.k.Value), unknownKey(name, t))
			default:
				if v := w.value(p.v, f.Type, joinKey(key, name), depth+1); v != nil {
					m[name] = v
				}
			}
			seen[name] = true
		}
		return m
	case n.Kind == yaml.MappingNode && t.Kind() == reflect.Map:
		m := dataMap{}
		for _, p := range w.pairs(n, key, 0) {
			k := mapKey(key, p.k.Value)
			if !m.has(p.k.Value) {
				m[p.k.Value] = w.value(p.v, t.Elem(), k, depth+1)
			} else if !p.merged {
				w.fail(k, "key given more than once")
			}
		}
		return m
	case n.Kind == yaml.SequenceNode && t == reflect.TypeFor[map[string][]Limit]():
		// The list form of rate_limit.overrides, [{user: NAME, limits: [...]}], read as its map form.
		users := &yaml.Node{Kind: yaml.MappingNode}
		for i, c := range n.Content {
			var user, limits *yaml.Node
			seen := map[string]bool{}
			for _, p := range w.pairs(deref(c), key, 0) {
				name, k := strings.ToLower(p.k.Value), fmt.Sprintf("%s[%d].%s", key, i, p.k.Value)
				switch {
				case seen[name] && !p.merged:
					w.fail(k, "key given more than once")
				case seen[name]: // a merged key, overridden
				case name == "user":
					user = deref(p.v)
				case name == "limits":
					limits = p.v
				default:
					w.fail(k, "unknown key (an entry has user and limits)")
				}
				seen[name] = true
			}
			if user == nil || user.Kind != yaml.ScalarNode {
				w.fail(key, fmt.Sprintf("must be a mapping of user names to lists of limits (or a list of {user, limits}); entry %d is not {user, limits}", i))
				continue
			}
			// The user is a value here, expanded as values are, though it
			// becomes a key of the map form.
			u := *user
			if w.vars != nil {
				u.Value = expand(u.Value, w.vars, func(name string) {
					w.l.warn(fmt.Sprintf("%s[%d].user: ${%s} is not set in the environment, it expands to \"\"", key, i, name))
				})
			}
			users.Content = append(users.Content, &u, limits)
		}
		return w.value(users, t, key, depth)
	}
	w.fail(key, fmt.Sprintf("must be %s, got %s", shape, kindName(n)))
	return nil
}

// pair is one key of a mapping and its value; merged when it comes from a
// merge key (<<: *anchor), which the mapping's own keys override.
type pair struct {
	k, v   *yaml.Node
	merged bool
}

// pairs lists the keys of mapping n, then those of its merge sources.
func (w *walker) pairs(n *yaml.Node, key string, depth int) []pair {
	var own, merged []pair
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content) && w.within(key, depth); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		switch {
		case k == nil || k.Kind != yaml.ScalarNode:
			w.fail(key, "keys must be plain strings, got "+kindName(k))
		case k.ShortTag() != "!!merge":
			own = append(own, pair{k: k, v: v})
		default:
			sources := []*yaml.Node{deref(v)}
			if sources[0] != nil && sources[0].Kind == yaml.SequenceNode {
				sources = sources[0].Content
			}
			for _, s := range sources {
				if s = deref(s); s == nil || s.Kind != yaml.MappingNode {
					w.fail(key, "merge key (<<) must refer to a mapping, got "+kindName(s))
					continue
				}
				for _, p := range w.pairs(s, key, depth+1) {
					if w.within(key, depth) { // every merged key counts, so merges of merges stay bounded
						merged = append(merged, pair{p.k, p.v, true})
					}
				}
			}
		}
	}
	if w.big {
		return nil
	}
	return append(own, merged...)
}

// shapeOf is the shape of value a field of type t takes.
func shapeOf(t reflect.Type) string {
	switch {
	case t == reflect.TypeFor[time.Time]():
		return single
	case t.Kind() == reflect.Struct, t.Kind() == reflect.Map:
		return mapping
	case t.Kind() == reflect.Slice:
		return list
	}
	return single
}

// deref follows an alias node to the node it names.
func deref(n *yaml.Node) *yaml.Node {
	if n != nil && n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool { return n == nil || n.ShortTag() == "!!null" }

func kindName(n *yaml.Node) string {
	switch {
	case isNull(n):
		return "null"
	case n.Kind == yaml.MappingNode:
		return mapping
	case n.Kind == yaml.SequenceNode:
		return list
	}
	return single
}

// unknownKey is the message about key name, unknown in struct t, with the
// known key closest to it as a suggestion.
func unknownKey(name string, t reflect.Type) string {
	best, bestDist := "", 3
	for i := range t.NumField() {
		if k := tagName(t.Field(i)); editDistance(name, k) < bestDist {
			best, bestDist = k, editDistance(name, k)
		}
	}
	if best == "" {
		return "unknown key"
	}
	return "unknown key (did you mean " + best + "?)"
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return len(a) + len(b)
	}
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+boolInt(a[i-1] != b[j-1]))
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// varRef matches "$${" (a literal "${"), ${NAME} and ${NAME:-word}.
var varRef = regexp.MustCompile(`\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(:-([^}]*))?\}`)

// expand replaces ${NAME} with the variable's value in vars (empty, and
// reported through unset, when it is not set) and ${NAME:-word} with the
// value, or word when the variable is unset or empty. "$${" stands for a
// literal "${"; any other "$" is kept as it is. (os.Expand would also
// expand $NAME and know no default.)
func expand(s string, vars map[string]string, unset func(name string)) string {
	if !strings.Contains(s, "${") {
		return s
	}
	return varRef.ReplaceAllStringFunc(s, func(ref string) string {
		m := varRef.FindStringSubmatch(ref)
		val, ok := vars[m[1]]
		switch {
		case ref == "$${":
			return "${"
		case m[2] != "" && val == "":
			return m[3]
		case !ok:
			unset(m[1])
		}
		return val
	})
}
