package proxy

import (
	"bytes"
	"path"
)

// cleanPath splits a request target into its cleaned path and its raw
// query. Paths are cleaned the way path.Clean does (`//`, `/./`, `/../`
// and a trailing `/` go), and percent-encoded unreserved characters
// (letters, digits, `-`, `_`, `~`: RFC 3986 6.2.2.2) are decoded, so that
// no spelling of a metered route (`/v1/chat/%63ompletions`) escapes
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
	decode := false
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
			case unreserved(v):
				decode = true
			}
		}
	}
	if decode {
		p = decodeUnreserved(p)
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

// unreserved reports whether c is an unreserved character of RFC 3986
// other than '.', which cleanPath refuses encoded.
func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '~'
}

// decodeUnreserved returns a copy of p, whose escapes cleanPath checked,
// with its percent-encoded unreserved characters decoded; other escapes
// stay as they are.
func decodeUnreserved(p []byte) []byte {
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] == '%' {
			if v := unhex(p[i+1])<<4 | unhex(p[i+2]); unreserved(v) {
				out = append(out, v)
				i += 2
				continue
			}
		}
		out = append(out, p[i])
	}
	return out
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
