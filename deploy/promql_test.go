package deploy_test

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// A small PromQL reader, enough to check the dashboard's and the rules' expressions without
// importing Prometheus: which metric names an expression reads, which labels it groups by, and
// the operands of its top-level comparisons and set operations (an alert's expression is empty
// while it does not fire; its operands must not be).

// promToken is one lexical token of a PromQL expression.
type promToken struct {
	kind  byte // 'i' identifier, 'n' number, 's' string, '{' matchers, '[' range, 'o' operator or punctuation
	text  string
	start int // byte offset in the expression
	end   int
}

// promKeywords are identifiers that are neither metric names nor functions.
var promKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": true, "and": true, "or": true, "unless": true,
	"offset": true, "inf": true, "nan": true, "atan2": true,
}

// groupingKeywords are followed by a parenthesised list of label names.
var groupingKeywords = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

func isIdentStart(c byte) bool {
	return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }

// skipQuoted returns the index just past the string literal starting at i.
func skipQuoted(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch {
		case s[j] == '\\' && q != '`':
			j++
		case s[j] == q:
			return j + 1
		}
	}
	return len(s)
}

// skipBracketed returns the index just past the bracket opened at i, strings inside skipped.
func skipBracketed(s string, i int, open, close byte) int {
	depth := 0
	for j := i; j < len(s); j++ {
		switch s[j] {
		case '"', '\'', '`':
			j = skipQuoted(s, j) - 1
		case open:
			depth++
		case close:
			depth--
			if depth == 0 {
				return j + 1
			}
		}
	}
	return len(s)
}

// promTokens splits a PromQL expression into tokens; label matchers and ranges are one token each.
func promTokens(s string) []promToken {
	var toks []promToken
	for i := 0; i < len(s); {
		c := s[i]
		start := i
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case c == '#': // comment to the end of the line
			for i < len(s) && s[i] != '\n' {
				i++
			}
			continue
		case c == '"' || c == '\'' || c == '`':
			i = skipQuoted(s, i)
			toks = append(toks, promToken{'s', s[start:i], start, i})
		case c == '{':
			i = skipBracketed(s, i, '{', '}')
			toks = append(toks, promToken{'{', s[start:i], start, i})
		case c == '[':
			i = skipBracketed(s, i, '[', ']')
			toks = append(toks, promToken{'[', s[start:i], start, i})
		case isIdentStart(c):
			for i < len(s) && isIdentChar(s[i]) {
				i++
			}
			toks = append(toks, promToken{'i', s[start:i], start, i})
		case (c >= '0' && c <= '9') || c == '.':
			for i < len(s) && (isIdentChar(s[i]) || s[i] == '.' ||
				((s[i] == '+' || s[i] == '-') && (s[i-1] == 'e' || s[i-1] == 'E'))) {
				i++
			}
			toks = append(toks, promToken{'n', s[start:i], start, i})
		default:
			i++
			if i < len(s) && s[i] == '=' && strings.ContainsRune("=!<>", rune(c)) {
				i++
			} else if c == '=' && i < len(s) && s[i] == '~' {
				i++
			}
			toks = append(toks, promToken{'o', s[start:i], start, i})
		}
	}
	return toks
}

// metricNames returns the metric names an expression selects, sorted.
func metricNames(expr string) []string {
	toks := promTokens(expr)
	set := map[string]bool{}
	for i := 0; i < len(toks); i++ {
		tk := toks[i]
		if tk.kind != 'i' {
			continue
		}
		low := strings.ToLower(tk.text)
		if groupingKeywords[low] {
			// skip the label list that follows
			if i+1 < len(toks) && toks[i+1].text == "(" {
				for i++; i < len(toks) && toks[i].text != ")"; i++ {
				}
			}
			continue
		}
		if promKeywords[low] {
			if low == "offset" && i+1 < len(toks) {
				i++ // the duration
			}
			continue
		}
		if i+1 < len(toks) && (toks[i+1].text == "(" ||
			toks[i+1].kind == 'i' && (strings.EqualFold(toks[i+1].text, "by") || strings.EqualFold(toks[i+1].text, "without"))) {
			continue // a function or an aggregation
		}
		set[tk.text] = true
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// groupingLabels returns the labels named in the expression's `by (...)` clauses, sorted.
func groupingLabels(expr string) []string {
	toks := promTokens(expr)
	set := map[string]bool{}
	for i := 0; i < len(toks); i++ {
		if toks[i].kind != 'i' || strings.ToLower(toks[i].text) != "by" || i+1 >= len(toks) || toks[i+1].text != "(" {
			continue
		}
		for i += 2; i < len(toks) && toks[i].text != ")"; i++ {
			if toks[i].kind == 'i' {
				set[toks[i].text] = true
			}
		}
	}
	out := make([]string, 0, len(set))
	for l := range set {
		out = append(out, l)
	}
	sort.Strings(out)
	return out
}

// operands splits an expression at its top-level set operations (or, and, unless) and then at
// its top-level comparisons (==, !=, <, >, <=, >=), recursively, and returns the parts that are
// not number literals. Vector-matching modifiers (bool, on(...), ignoring(...), group_left(...),
// group_right(...)) are removed from the right operand. An expression with no such operator is
// its own only operand.
func operands(expr string) []string {
	expr = strings.TrimSpace(expr)
	toks := promTokens(expr)
	split := func(isOp func(promToken) bool) []string {
		depth := 0
		var parts []string
		last := 0
		for _, tk := range toks {
			switch {
			case tk.text == "(":
				depth++
			case tk.text == ")":
				depth--
			case depth == 0 && isOp(tk):
				parts = append(parts, expr[last:tk.start])
				last = tk.end
			}
		}
		if parts == nil {
			return nil
		}
		return append(parts, expr[last:])
	}
	parts := split(func(tk promToken) bool { return tk.kind == 'i' && strings.ToLower(tk.text) == "or" })
	if parts == nil {
		parts = split(func(tk promToken) bool {
			return tk.kind == 'i' && (strings.ToLower(tk.text) == "and" || strings.ToLower(tk.text) == "unless")
		})
	}
	if parts == nil {
		parts = split(func(tk promToken) bool {
			return tk.kind == 'o' && slices.Contains([]string{"==", "!=", "<", ">", "<=", ">="}, tk.text)
		})
	}
	if parts == nil {
		if _, err := strconv.ParseFloat(expr, 64); err == nil {
			return nil
		}
		return []string{expr}
	}
	var out []string
	for _, p := range parts {
		out = append(out, operands(stripModifiers(p))...)
	}
	return out
}

var modifierRE = regexp.MustCompile(`^\s*(?:bool\b|(?:on|ignoring|group_left|group_right)\s*(?:\([^)]*\))?)`)

// stripModifiers removes leading vector-matching modifiers from a right-hand operand.
func stripModifiers(s string) string {
	for {
		loc := modifierRE.FindStringIndex(s)
		if loc == nil || loc[1] == 0 {
			return strings.TrimSpace(s)
		}
		s = s[loc[1]:]
	}
}

func TestPromQLReader(t *testing.T) {
	t.Run("metricNames", func(t *testing.T) {
		tests := []struct {
			expr string
			want []string
		}{
			{`sum by (code) (rate(genai_gateway_requests_total{job=~"$job",code=~"5.."}[5m]))`, []string{"genai_gateway_requests_total"}},
			{`histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{a="or b"}[1m])))`, []string{"x_bucket"}},
			{`a{state="alive"} < on() group_left() count(up{job="g"} == 1)`, []string{"a", "up"}},
			{`(sum(rate(a[1m])) or vector(0)) / sum(rate(b[1m] offset 5m))`, []string{"a", "b"}},
			{`topk(10, sum without (instance) (c)) > bool 1e3`, []string{"c"}},
		}
		for _, tt := range tests {
			if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
				t.Errorf("metricNames(%q): got %v, want %v", tt.expr, got, tt.want)
			}
		}
	})
	t.Run("groupingLabels", func(t *testing.T) {
		got := groupingLabels(`histogram_quantile(0.9, sum by (le, route) (x)) / on(route) sum by (route) (y)`)
		if want := []string{"le", "route"}; !slices.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("operands", func(t *testing.T) {
		tests := []struct {
			expr string
			want []string
		}{
			{`up{job="g"} == 0`, []string{`up{job="g"}`}},
			{"a{s=\"x\"}\n  < on() group_left()\ncount(up == 1)", []string{`a{s="x"}`, `count(up == 1)`}},
			{`sum(a) / sum(b) > 0.05`, []string{`sum(a) / sum(b)`}},
			{`x > 1 or y{l="a or b"} < 2`, []string{`x`, `y{l="a or b"}`}},
			{`rate(a[5m])`, []string{`rate(a[5m])`}},
		}
		for _, tt := range tests {
			if got := operands(tt.expr); !slices.Equal(got, tt.want) {
				t.Errorf("operands(%q): got %q, want %q", tt.expr, got, tt.want)
			}
		}
	})
}
