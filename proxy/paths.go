package proxy

import (
	"bytes"
	"path"
)

// cleanPath splits a request target into its cleaned path and its raw
// query. Paths are cleaned the way path.Clean does (`//`, `/./`, `/../`
// and a trailing `/` go), so that no spelling of a metered route escapes
// metering. A path that cannot be cleaned safely is refused (ok false):
// not absolute, percent-encoded dots, slashes, backslashes, semicolons or
// control bytes (`%2e%2e`, `%2f`, `%00`), a `;` parameter, a backslash, or
// a control byte: what such a path means depends on who decodes it, and
// the upstream must never read a different path than the gateway routed.
func cleanPath(target []byte) (clean string, query []byte, ok bool) {
	p := target
	if i := bytes.IndexByte(p, '?'); i >= 0 {
		p, query = p[:i], p[i+1:]
	}
	if len(p) == 0 || p[0] != '/' {
		return "", nil, false
	}
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c < 0x20 || c == 0x7f || c == '\\' || c == ';' || c == '#':
			return "", nil, false
		case c == '%':
			if i+2 >= len(p) || !isHexDigit(p[i+1]) || !isHexDigit(p[i+2]) {
				return "", nil, false
			}
			switch v := unhex(p[i+1])<<4 | unhex(p[i+2]); {
			case v < 0x20 || v == 0x7f || v == '.' || v == '/' || v == '\\' || v == ';' || v == '%' || v == '?' || v == '#':
				return "", nil, false
			}
		}
	}
	if r := knownRoute(p); r != "" {
		return r, query, true // no allocation for the common case
	}
	s := string(p)
	if !needsClean(s) {
		return s, query, true
	}
	return path.Clean(s), query, true
}

// needsClean reports whether path.Clean would change s (fast path: most
// requests are already clean).
func needsClean(s string) bool {
	if len(s) > 1 && s[len(s)-1] == '/' {
		return true
	}
	for i := 0; i+1 < len(s); i++ {
		if s[i] == '/' && (s[i+1] == '/' || s[i+1] == '.') {
			return true
		}
	}
	return false
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// knownRoute returns p as the constant of the metered route it spells
// exactly, or "".
func knownRoute(p []byte) string {
	switch string(p) { // no allocation: the conversion is only compared
	case routeChat:
		return routeChat
	case routeCompletions:
		return routeCompletions
	case routeEmbeddings:
		return routeEmbeddings
	case routeResponses:
		return routeResponses
	case routeMessages:
		return routeMessages
	case routeCountTokens:
		return routeCountTokens
	}
	return ""
}
