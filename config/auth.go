package config

import "time"

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
	// User is the identity for limits and metrics; default Name.
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
	Issuer      string        `yaml:"issuer" json:"issuer" mapstructure:"issuer"`
	Audience    string        `yaml:"audience" json:"audience" mapstructure:"audience"`
	JWKSURL     string        `yaml:"jwks_url" json:"jwks_url" mapstructure:"jwks_url"`
	JWKSFile    string        `yaml:"jwks_file" json:"jwks_file" mapstructure:"jwks_file"`
	UserClaim   string        `yaml:"user_claim" json:"user_claim" mapstructure:"user_claim"`
	ModelsClaim string        `yaml:"models_claim" json:"models_claim" mapstructure:"models_claim"`
	Leeway      time.Duration `yaml:"leeway" json:"leeway" mapstructure:"leeway"`
}

// auth checks the auth section.
func (p *problems) auth(a Auth) {
	// TODO(identity): validate keys and jwt.
	_ = a
}
