package config

import (
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Auth configures who may call the proxy port. With neither keys nor jwt
// set, the gateway does not authenticate callers (trusted networks only).
type Auth struct {
	// Keys are gateway-issued API keys, stored as their SHA-256.
	Keys []APIKey `yaml:"keys" json:"keys" mapstructure:"keys"`
	// JWT verifies tokens of an OIDC identity provider; off when Issuer is "".
	JWT JWT `yaml:"jwt" json:"jwt" mapstructure:"jwt"`
}

// Enabled reports whether callers must authenticate.
func (a Auth) Enabled() bool { return len(a.Keys) > 0 || a.JWT.Issuer != "" }

// APIKey is one gateway-issued key.
type APIKey struct {
	// Name is shown in logs and /usage; unique.
	Name string `yaml:"name" json:"name" mapstructure:"name"`
	// User is the identity for limits and metrics; default Name (see
	// EffectiveUser). At most 256 bytes of printable UTF-8 without "/".
	User string `yaml:"user" json:"user" mapstructure:"user"`
	// SHA256 is the hex SHA-256 of the key.
	SHA256 string `yaml:"sha256" json:"sha256" mapstructure:"sha256"`
	// Models are globs of the models the key may call; empty = all.
	Models []string `yaml:"models" json:"models" mapstructure:"models"`
	// OnBehalf lets the user header name an end user of this key,
	// counted as USER/ENDUSER.
	OnBehalf bool `yaml:"on_behalf" json:"on_behalf" mapstructure:"on_behalf"`
	// Expires, when set, is the moment the key stops working (RFC 3339).
	Expires time.Time `yaml:"expires" json:"expires" mapstructure:"expires"`
}

// JWT configures verification of OIDC tokens.
type JWT struct {
	// Issuer is the exact iss claim of accepted tokens, an http(s) URL; ""
	// turns JWT off.
	Issuer string `yaml:"issuer" json:"issuer" mapstructure:"issuer"`
	// Audience must be among the token's aud; required with Issuer.
	Audience string `yaml:"audience" json:"audience" mapstructure:"audience"`
	// JWKSURL is where the issuer publishes its keys; exactly one of
	// JWKSURL and JWKSFile.
	JWKSURL string `yaml:"jwks_url" json:"jwks_url" mapstructure:"jwks_url"`
	// JWKSFile is a JWKS document on disk.
	JWKSFile string `yaml:"jwks_file" json:"jwks_file" mapstructure:"jwks_file"`
	// UserClaim names the claim holding the user; default "sub" (see
	// EffectiveUserClaim).
	UserClaim string `yaml:"user_claim" json:"user_claim" mapstructure:"user_claim"`
	// ModelsClaim, optional, names a claim listing the model globs a token
	// may call.
	ModelsClaim string `yaml:"models_claim" json:"models_claim" mapstructure:"models_claim"`
	// Leeway is the clock skew tolerated on a token's exp, 0 to 5m.
	Leeway time.Duration `yaml:"leeway" json:"leeway" mapstructure:"leeway"`
}

// Bounds of the auth section.
const (
	maxUserBytes = 256
	maxLeeway    = 5 * time.Minute
	// DefaultUserClaim is the claim naming the user when user_claim is "".
	DefaultUserClaim = "sub"
)

// EffectiveUser is the key's user: User, or Name when User is "".
func (k APIKey) EffectiveUser() string {
	if k.User != "" {
		return k.User
	}
	return k.Name
}

// EffectiveUserClaim is UserClaim, or DefaultUserClaim when it is "".
func (j JWT) EffectiveUserClaim() string {
	if j.UserClaim != "" {
		return j.UserClaim
	}
	return DefaultUserClaim
}

// auth checks the auth section. Messages never repeat a hash or a URL that
// might hold credentials.
func (p *problems) auth(a Auth) {
	names, hashes := map[string]int{}, map[string]int{}
	for i, k := range a.Keys {
		key := fmt.Sprintf("auth.keys[%d]", i)
		p.when(k.Name == "", key+".name", "must not be empty")
		p.unique(names, k.Name, i, key+".name", "auth.keys")
		if user := k.EffectiveUser(); user == "" {
			p.add(key+".user", "must not be empty (it defaults to the name)")
		} else if msg := checkUser(user); msg != "" {
			p.add(key+".user", "%s", msg)
		}
		h := strings.ToLower(k.SHA256)
		_, err := hex.DecodeString(h)
		if j, dup := hashes[h]; len(h) != 64 || err != nil {
			p.add(key+".sha256", "must be the 64 hex digits of the key's SHA-256 (genai-gateway keygen prints it)")
		} else if dup {
			p.add(key+".sha256", "same hash as auth.keys[%d]: every key must be different", j)
		} else {
			hashes[h] = i
		}
		p.globs(key+".models", k.Models)
	}
	j := a.JWT
	if j.Issuer == "" {
		p.when(j != (JWT{}), "auth.jwt.issuer", "must be set when other auth.jwt keys are")
		return
	}
	if msg := checkURL(j.Issuer); msg != "" {
		p.add("auth.jwt.issuer", "%s", msg)
	}
	p.when(j.Audience == "", "auth.jwt.audience", "must be set with auth.jwt.issuer: tokens issued for other applications must not pass")
	switch {
	case j.JWKSURL == "" && j.JWKSFile == "":
		p.add("auth.jwt.jwks_url", "one of auth.jwt.jwks_url and auth.jwt.jwks_file must be set")
	case j.JWKSURL != "" && j.JWKSFile != "":
		p.add("auth.jwt.jwks_url", "must not be set together with auth.jwt.jwks_file; choose one")
	case j.JWKSURL != "":
		if msg := checkJWKSURL(j.JWKSURL); msg != "" {
			p.add("auth.jwt.jwks_url", "%s", msg)
		}
	}
	c := j.EffectiveUserClaim()
	p.when(strings.TrimSpace(c) != c, "auth.jwt.user_claim", "must not start or end with spaces; got %s", quote(c))
	p.when(j.Leeway < 0 || j.Leeway > maxLeeway, "auth.jwt.leeway", "must be from 0s to %s; got %s", maxLeeway, j.Leeway)
}

// checkUser returns what is wrong with a user name, or "".
func checkUser(user string) string {
	switch {
	case len(user) > maxUserBytes:
		return fmt.Sprintf("must be at most %d bytes; got %d", maxUserBytes, len(user))
	case !utf8.ValidString(user):
		return "must be valid UTF-8"
	case strings.Contains(user, "/"):
		return fmt.Sprintf("must not contain \"/\" (it separates a key's user from its end users); got %s", quote(user))
	case strings.IndexFunc(user, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return "must hold only printable characters"
	}
	return ""
}

// checkJWKSURL returns what is wrong with a JWKS URL, or "". Unlike an
// upstream's, it may carry a query.
func checkJWKSURL(s string) string {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "not a valid URL"
	case u.Scheme != "http" && u.Scheme != "https":
		return "must be an absolute http:// or https:// URL"
	case u.Hostname() == "":
		return "must include a host"
	case u.User != nil:
		return "must not hold credentials"
	}
	return ""
}
