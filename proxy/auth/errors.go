package auth

import "errors"

// Reasons a credential is refused: the values of the reason label of
// genai_gateway_auth_failures_total and of Reason. They are fixed strings, so
// the label has a bounded set of values whatever clients send.
const (
	// ReasonMissing: no credential in any of the three headers.
	ReasonMissing = "missing"
	// ReasonMalformed: an Authorization header that is not "Bearer X", or a
	// credential that is too long or holds bytes no key or token holds.
	ReasonMalformed = "malformed"
	// ReasonAmbiguous: two of the headers carry different credentials.
	ReasonAmbiguous = "ambiguous"
	// ReasonUnknown: no configured key has the credential's SHA-256.
	ReasonUnknown = "unknown"
	// ReasonExpired: the key's expires or the token's exp (plus leeway) has
	// passed.
	ReasonExpired = "expired"
	// ReasonBadToken: a JWT whose signature does not verify with the issuer's
	// keys (unknown kid, alg none, HMAC, bad encoding, not yet valid).
	ReasonBadToken = "bad_token"
	// ReasonWrongIssuer: a verified JWT from another issuer.
	ReasonWrongIssuer = "wrong_issuer"
	// ReasonWrongAudience: a verified JWT not issued for this gateway.
	ReasonWrongAudience = "wrong_audience"
	// ReasonBadClaims: a verified JWT whose user claim is missing, empty,
	// longer than MaxUserBytes or not printable text, or whose models claim
	// is not a list of strings.
	ReasonBadClaims = "bad_claims"
)

// reasons lists every reason, in a fixed order.
var reasons = [...]string{
	ReasonMissing, ReasonMalformed, ReasonAmbiguous, ReasonUnknown, ReasonExpired,
	ReasonBadToken, ReasonWrongIssuer, ReasonWrongAudience, ReasonBadClaims,
}

// Error is a refused credential. Its message is one of a few fixed texts: it
// never holds the credential, a claim value or a library's error text, so it
// is safe to log and to send to the client.
type Error struct {
	// Reason is one of the Reason* constants.
	Reason string
	msg    string
}

// Error returns "auth: " and a fixed description of the refusal.
func (e *Error) Error() string { return "auth: " + e.msg }

// The refusals; each is a distinct value so that errors.Is works, and none
// allocates when returned.
var (
	errMissing       = &Error{ReasonMissing, "no credential: send Authorization: Bearer KEY, x-api-key or api-key"}
	errMalformed     = &Error{ReasonMalformed, "malformed credential"}
	errBadScheme     = &Error{ReasonMalformed, "the Authorization header must be \"Bearer KEY\""}
	errAmbiguous     = &Error{ReasonAmbiguous, "different credentials in Authorization, x-api-key and api-key; send one"}
	errUnknown       = &Error{ReasonUnknown, "unknown API key"}
	errKeyExpired    = &Error{ReasonExpired, "API key expired"}
	errTokenExpired  = &Error{ReasonExpired, "token expired"}
	errBadToken      = &Error{ReasonBadToken, "token signature or format not valid"}
	errWrongIssuer   = &Error{ReasonWrongIssuer, "token from another issuer"}
	errWrongAudience = &Error{ReasonWrongAudience, "token not issued for this gateway (audience)"}
	errNoUser        = &Error{ReasonBadClaims, "token names no valid user"}
	errBadModels     = &Error{ReasonBadClaims, "token's models claim is not a list of model patterns"}
)

// Reason returns the reason of a refusal returned by Authenticate, or "" when
// err is nil or not a refusal.
func Reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}
