package auth

import "bytes"

// MaxCredentialBytes bounds a credential before it is hashed or parsed. Keys
// are 47 bytes; identity providers' tokens stay well under 8 KiB.
const MaxCredentialBytes = 16 << 10

// The headers a credential is read from, in this order. Header lookups
// (fasthttp's Peek, net/http's Get) are case-insensitive.
const (
	HeaderAuthorization = "Authorization" // "Bearer X": OpenAI clients
	HeaderXAPIKey       = "X-Api-Key"     // Anthropic clients
	HeaderAPIKey        = "Api-Key"       // Azure clients
)

// credential returns the one credential a request carries. header returns a
// header's value, or nil/empty when absent. A header that is present but
// empty (after trimming spaces) counts as absent. When more than one header
// carries a credential they must be byte-for-byte equal (clients that send
// the same key twice keep working), otherwise the request is refused as
// ambiguous: the gateway must never authenticate one credential while
// another part of the stack reads a different one. The returned slice
// aliases header's memory.
func credential(header func(name string) []byte) ([]byte, error) {
	var cred []byte
	if v := trimSpace(header(HeaderAuthorization)); len(v) > 0 {
		token, ok := bearer(v)
		if !ok {
			return nil, errBadScheme
		}
		cred = token
	}
	for _, name := range [...]string{HeaderXAPIKey, HeaderAPIKey} {
		v := trimSpace(header(name))
		switch {
		case len(v) == 0:
		case cred == nil:
			cred = v
		case !bytes.Equal(cred, v):
			return nil, errAmbiguous
		}
	}
	switch {
	case cred == nil:
		return nil, errMissing
	case len(cred) > MaxCredentialBytes:
		return nil, errMalformed
	}
	for _, c := range cred {
		// Visible ASCII only: keys and JWTs are printable tokens (RFC 6750's
		// b64token is narrower still).
		if c <= ' ' || c >= 0x7f {
			return nil, errMalformed
		}
	}
	return cred, nil
}

// bearer returns the token of "Bearer TOKEN" (scheme case-insensitive, one
// or more spaces), and false for any other scheme or an empty token.
func bearer(v []byte) ([]byte, bool) {
	const scheme = "bearer"
	if len(v) <= len(scheme) || v[len(scheme)] != ' ' {
		return nil, false
	}
	for i := range len(scheme) {
		if v[i]|0x20 != scheme[i] {
			return nil, false
		}
	}
	token := trimSpace(v[len(scheme):])
	return token, len(token) > 0
}

// trimSpace trims spaces and tabs (HTTP's optional whitespace).
func trimSpace(v []byte) []byte {
	for len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
		v = v[1:]
	}
	for len(v) > 0 && (v[len(v)-1] == ' ' || v[len(v)-1] == '\t') {
		v = v[:len(v)-1]
	}
	return v
}

// looksLikeJWT reports whether cred has the shape of a JWS in compact form:
// three base64url segments separated by dots, the first two non-empty (an
// empty signature is the shape of alg none, which the JWT verifier refuses
// by name). Only the shape is checked; the JWT library does the parsing.
func looksLikeJWT(cred []byte) bool {
	segments, n := 1, 0
	for _, c := range cred {
		switch {
		case c == '.':
			if n == 0 {
				return false
			}
			segments, n = segments+1, 0
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
			n++
		default:
			return false
		}
	}
	return segments == 3
}
