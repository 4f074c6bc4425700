package auth

import "path"

// Kinds of credential an Identity was proved with.
const (
	KindKey = "key" // a gateway-issued API key
	KindJWT = "jwt" // a token of the configured OIDC issuer
)

// Identity is who a request proved to be.
type Identity struct {
	// User is the identity limits, spend, metrics and logs use: the key's
	// user (default its name), or the token's user claim.
	User string
	// KeyName is the key's name, for logs and /usage; "" for tokens.
	KeyName string
	// Models are path.Match globs of the models the caller may call; nil
	// means every model, an empty non-nil slice none. The slice is shared
	// with the Authenticator: read it, never modify it.
	Models []string
	// OnBehalf lets the user header name an end user of this key, counted as
	// User + "/" + end user. Always false for tokens.
	OnBehalf bool
	// Kind is KindKey or KindJWT.
	Kind string
}

// Allows reports whether the identity may call model. It does not allocate.
func (id Identity) Allows(model string) bool {
	if id.Models == nil {
		return true
	}
	for _, g := range id.Models {
		if ok, err := path.Match(g, model); ok && err == nil {
			return true
		}
	}
	return false
}
