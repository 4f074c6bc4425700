package auth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/rs/zerolog"
)

// signingAlgs are the algorithms tokens may be signed with: asymmetric only.
// "none" and the HMAC family (HS256, ...) are refused by the JWS parser
// before any key is looked at, which also closes the attack of an HMAC
// token keyed with the issuer's public key.
var signingAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.EdDSA,
}

// Bounds of the models claim.
const (
	maxModelsClaim    = 256 // patterns
	maxModelGlobBytes = 256
)

// jwtVerifier verifies tokens of one issuer.
type jwtVerifier struct {
	verifier    *oidc.IDTokenVerifier
	issuer      string
	audience    string
	userClaim   string
	modelsClaim string
	remote      *remoteKeys // nil with a static key set
}

func newJWTVerifier(cfg JWTConfig, now func() time.Time, log zerolog.Logger, m *metrics, prev *remoteKeys) (*jwtVerifier, error) {
	switch {
	case cfg.Audience == "":
		return nil, errors.New("audience: required")
	case (cfg.JWKSURL == "") == (cfg.JWKSFile == ""):
		return nil, errors.New("exactly one of jwks_url and jwks_file must be set")
	case cfg.Leeway < 0 || cfg.Leeway > MaxLeeway:
		return nil, fmt.Errorf("leeway: must be from 0 to %s", MaxLeeway)
	}
	v := &jwtVerifier{
		issuer:      cfg.Issuer,
		audience:    cfg.Audience,
		userClaim:   cfg.UserClaim,
		modelsClaim: cfg.ModelsClaim,
	}
	if v.userClaim == "" {
		v.userClaim = DefaultUserClaim
	}
	var keySet oidc.KeySet
	if cfg.JWKSFile != "" {
		ks, err := staticKeys(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_file: %w", err)
		}
		keySet = ks
	} else {
		u, err := url.Parse(cfg.JWKSURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return nil, errors.New("jwks_url: must be an absolute http:// or https:// URL")
		}
		timeout, minRefetch := cfg.FetchTimeout, cfg.MinRefetch
		if timeout <= 0 {
			timeout = DefaultFetchTimeout
		}
		if minRefetch <= 0 {
			minRefetch = DefaultMinRefetch
		}
		if prev != nil && prev.url == cfg.JWKSURL && prev.timeout == timeout && prev.minRefetch == minRefetch {
			v.remote = prev.share()
		} else {
			v.remote = newRemoteKeys(cfg.JWKSURL, timeout, minRefetch, now, log, m.fetches)
		}
		keySet = v.remote.keySet
	}
	leeway := cfg.Leeway
	v.verifier = oidc.NewVerifier(cfg.Issuer, keySet, &oidc.Config{
		SupportedSigningAlgs: signingAlgs,
		// go-oidc reports a wrong issuer or audience as untyped errors; they
		// are compared below instead, on the verified token, so each refusal
		// has its reason. Signature, alg, exp and nbf stay go-oidc's.
		SkipIssuerCheck:   true,
		SkipClientIDCheck: true,
		// exp is checked as exp < Now(): moving the clock back by the leeway
		// accepts a token until exp + leeway.
		Now: func() time.Time { return now().Add(-leeway) },
	})
	return v, nil
}

// verify checks a token and returns its identity.
func (v *jwtVerifier) verify(ctx context.Context, raw string) (Identity, error) {
	tok, err := v.verifier.Verify(ctx, raw)
	if err != nil {
		if _, ok := errors.AsType[*oidc.TokenExpiredError](err); ok {
			return Identity{}, errTokenExpired
		}
		return Identity{}, errBadToken
	}
	if tok.Issuer != v.issuer {
		return Identity{}, errWrongIssuer
	}
	if !slices.Contains(tok.Audience, v.audience) {
		return Identity{}, errWrongAudience
	}
	var claims map[string]json.RawMessage
	if err := tok.Claims(&claims); err != nil {
		return Identity{}, errBadToken
	}
	user, ok := stringClaim(claims[v.userClaim])
	if !ok || CheckUser(user) != nil {
		return Identity{}, errNoUser
	}
	id := Identity{User: user, Kind: KindJWT}
	if v.modelsClaim != "" {
		if id.Models, ok = modelsClaim(claims[v.modelsClaim]); !ok {
			return Identity{}, errBadModels
		}
	}
	return id, nil
}

// stringClaim reads a claim that is a JSON string or number.
func stringClaim(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err == nil
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", false
	}
	return n.String(), true
}

// modelsClaim reads the model globs of a token: a JSON array of strings or
// one space-separated string. An absent or null claim allows no model.
func modelsClaim(raw json.RawMessage) ([]string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return []string{}, true
	}
	var globs []string
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false
		}
		globs = strings.Fields(s)
	} else if err := json.Unmarshal(raw, &globs); err != nil {
		return nil, false
	}
	if len(globs) > maxModelsClaim {
		return nil, false
	}
	for _, g := range globs {
		if _, err := path.Match(g, ""); err != nil || g == "" || len(g) > maxModelGlobBytes {
			return nil, false
		}
	}
	if globs == nil {
		globs = []string{}
	}
	return globs, true
}
