// Package auth turns a request's credential into an Identity: a
// gateway-issued API key, looked up by its SHA-256, or a JWT of the
// configured OIDC issuer, verified locally with github.com/coreos/go-oidc.
//
// The package knows no HTTP server: Authenticate reads headers through a
// function, so the proxy can hand it fasthttp's Peek or net/http's Get. It
// counts refusals in genai_gateway_auth_failures_total{reason} on the
// registerer given to New; the proxy maps every refusal to 401 and a model
// the Identity does not allow (Identity.Allows) to 403.
//
// A reloaded config gets a new Authenticator (New, or Reload to keep the
// JWT issuer's cached keys) that the proxy swaps in atomically; building one
// for keys costs one map insert per key.
package auth

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// MaxUserBytes bounds a user name, as the user header is bounded.
const MaxUserBytes = 256

// Defaults of JWTConfig.
const (
	DefaultUserClaim    = "sub"
	DefaultFetchTimeout = 10 * time.Second
	DefaultMinRefetch   = 10 * time.Second
	// MaxLeeway bounds JWTConfig.Leeway.
	MaxLeeway = 5 * time.Minute
)

// Config is what an Authenticator accepts. cmd builds it from config.Auth.
type Config struct {
	// Keys are gateway-issued API keys.
	Keys []Key
	// JWT verifies tokens of an OIDC issuer; off when JWT.Issuer is "".
	JWT JWTConfig
	// Now is the clock for key and token expiry; nil means time.Now.
	Now func() time.Time
}

// Key is one gateway-issued API key.
type Key struct {
	// Name identifies the key in logs and /usage; unique, not empty.
	Name string
	// User is the identity the key proves; "" means Name. Not longer than
	// MaxUserBytes, printable UTF-8, no "/" (it separates a key's user from
	// its end users under OnBehalf).
	User string
	// SHA256 is the hex SHA-256 of the key (either case); unique.
	SHA256 string
	// Models are path.Match globs of the models the key may call; nil or
	// empty means every model.
	Models []string
	// OnBehalf lets the user header name an end user of the key.
	OnBehalf bool
	// Expires, when not zero, is the moment the key stops working.
	Expires time.Time
}

// JWTConfig configures verification of an OIDC issuer's tokens.
type JWTConfig struct {
	// Issuer is the exact iss claim tokens must carry; "" turns JWT off.
	Issuer string
	// Audience must be one of the token's aud values; required.
	Audience string
	// JWKSURL is where the issuer publishes its keys; fetched when a token
	// names a key ID not yet held. Exactly one of JWKSURL and JWKSFile.
	JWKSURL string
	// JWKSFile is a JWKS document on disk, read by New.
	JWKSFile string
	// UserClaim names the claim holding the user (string or number); "" means
	// DefaultUserClaim.
	UserClaim string
	// ModelsClaim, when set, names a claim listing the model globs the
	// token may call (a JSON array of strings, or one space-separated
	// string). A token without it may call no model.
	ModelsClaim string
	// Leeway is the clock skew tolerated on exp, 0 to MaxLeeway. (nbf gets
	// go-oidc's fixed 5 minutes, less Leeway.)
	Leeway time.Duration
	// FetchTimeout bounds one fetch of JWKSURL; 0 means DefaultFetchTimeout.
	FetchTimeout time.Duration
	// MinRefetch is the shortest time between two fetches of JWKSURL, so
	// that tokens with invented key IDs cannot flood the issuer; 0 means
	// DefaultMinRefetch. A key published less than this after the last
	// fetch is learnt at the next fetch.
	MinRefetch time.Duration
}

// Authenticator checks credentials. It is safe for concurrent use and
// immutable once built: a new config gets a new Authenticator.
type Authenticator struct {
	keys      map[[sha256.Size]byte]*entry
	jwt       *jwtVerifier // nil: JWT off
	now       func() time.Time
	log       zerolog.Logger
	m         *metrics
	closeOnce sync.Once
}

// entry is a key's precomputed identity.
type entry struct {
	id      Identity
	expires time.Time
}

// New builds an Authenticator for cfg and registers its collectors on reg
// (reusing them when an earlier Authenticator registered them there; nil
// registers nothing). An Authenticator with neither keys nor JWT refuses
// every credential. With JWKSFile, New reads the file; with JWKSURL it
// fetches nothing until the first token arrives.
func New(cfg Config, log zerolog.Logger, reg prometheus.Registerer) (*Authenticator, error) {
	m, err := newMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("auth metrics: %w", err)
	}
	return build(cfg, log.With().Str("component", "auth").Logger(), m, nil)
}

// Reload builds the Authenticator of a new config, counting on the same
// collectors. When the JWKS URL, fetch timeout and refetch interval are
// unchanged the two share the issuer's cached keys, so tokens keep
// verifying without a fetch. a stays usable; Close it once it is swapped
// out.
func (a *Authenticator) Reload(cfg Config) (*Authenticator, error) {
	var prev *remoteKeys
	if a.jwt != nil && a.jwt.remote != nil {
		prev = a.jwt.remote
	}
	return build(cfg, a.log, a.m, prev)
}

func build(cfg Config, log zerolog.Logger, m *metrics, prev *remoteKeys) (*Authenticator, error) {
	a := &Authenticator{
		keys: make(map[[sha256.Size]byte]*entry, len(cfg.Keys)),
		now:  cfg.Now,
		log:  log,
		m:    m,
	}
	if a.now == nil {
		a.now = time.Now
	}
	var errs []error
	names := make(map[string]int, len(cfg.Keys))
	for i, k := range cfg.Keys {
		if err := a.addKey(k, i, names); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.JWT.Issuer != "" {
		v, err := newJWTVerifier(cfg.JWT, a.now, log, m, prev)
		if err != nil {
			errs = append(errs, fmt.Errorf("jwt: %w", err))
		} else {
			a.jwt = v
		}
	}
	if err := errors.Join(errs...); err != nil {
		a.Close()
		return nil, err
	}
	return a, nil
}

func (a *Authenticator) addKey(k Key, i int, names map[string]int) error {
	if k.Name == "" {
		return fmt.Errorf("keys[%d].name: must not be empty", i)
	}
	if j, dup := names[k.Name]; dup {
		return fmt.Errorf("keys[%d].name: %q is already the name of keys[%d]", i, k.Name, j)
	}
	names[k.Name] = i
	var sum [sha256.Size]byte
	if len(k.SHA256) != hex.EncodedLen(sha256.Size) {
		return fmt.Errorf("keys[%d].sha256: must be %d hex digits", i, hex.EncodedLen(sha256.Size))
	}
	if _, err := hex.Decode(sum[:], []byte(k.SHA256)); err != nil {
		return fmt.Errorf("keys[%d].sha256: must be %d hex digits", i, hex.EncodedLen(sha256.Size))
	}
	if e, dup := a.keys[sum]; dup {
		return fmt.Errorf("keys[%d].sha256: same as key %q", i, e.id.KeyName)
	}
	user := k.User
	if user == "" {
		user = k.Name
	}
	if err := CheckUser(user); err != nil {
		return fmt.Errorf("keys[%d].user: %w", i, err)
	}
	var models []string
	for j, g := range k.Models {
		if _, err := path.Match(g, ""); err != nil || g == "" {
			return fmt.Errorf("keys[%d].models[%d]: not a valid glob pattern", i, j)
		}
	}
	if len(k.Models) > 0 {
		models = append([]string(nil), k.Models...)
	}
	a.keys[sum] = &entry{
		id:      Identity{User: user, KeyName: k.Name, Models: models, OnBehalf: k.OnBehalf, Kind: KindKey},
		expires: k.Expires,
	}
	return nil
}

// CheckUser reports what is wrong with a user name, or nil: it must be 1 to
// MaxUserBytes bytes of printable UTF-8 without "/", the separator of a key's
// user and its end users. Both key users and token users are checked.
func CheckUser(user string) error {
	switch {
	case user == "":
		return errors.New("must not be empty")
	case len(user) > MaxUserBytes:
		return fmt.Errorf("must be at most %d bytes", MaxUserBytes)
	case !utf8.ValidString(user):
		return errors.New("must be valid UTF-8")
	case strings.Contains(user, "/"):
		return errors.New(`must not contain "/"`)
	case strings.IndexFunc(user, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0:
		return errors.New("must hold only printable characters")
	}
	return nil
}

// Authenticate returns the identity a request's credential proves, or an
// *Error whose Reason says why it was refused (counted in
// genai_gateway_auth_failures_total). header returns the value of a request
// header, nil or empty when absent; the credential is read from
// Authorization ("Bearer X"), X-Api-Key or Api-Key (see HeaderAuthorization),
// and two headers with different credentials are refused as ambiguous.
//
// A credential shaped like a JWT (three dot-separated base64url segments)
// is verified as a token when JWT is configured; anything else is a key,
// hashed with SHA-256 and looked up by its hash. The lookup is a map access
// keyed by the digest: its timing depends on the digest, which an attacker
// cannot steer towards a stored hash without a SHA-256 preimage, so it
// leaks nothing useful, and no plaintext key is held to compare against.
//
// A key check does not allocate. A token check may wait for a fetch of the
// issuer's keys, bounded by JWTConfig.FetchTimeout and by ctx (fasthttp's
// RequestCtx is a context.Context). Safe for concurrent use.
func (a *Authenticator) Authenticate(ctx context.Context, header func(name string) []byte) (Identity, error) {
	id, err := a.authenticate(ctx, header)
	if err != nil {
		a.m.failed(err)
		return Identity{}, err
	}
	return id, nil
}

func (a *Authenticator) authenticate(ctx context.Context, header func(name string) []byte) (Identity, error) {
	cred, err := credential(header)
	if err != nil {
		return Identity{}, err
	}
	if a.jwt != nil && looksLikeJWT(cred) {
		return a.jwt.verify(ctx, string(cred))
	}
	e, ok := a.keys[sha256.Sum256(cred)]
	switch {
	case !ok:
		return Identity{}, errUnknown
	case !e.expires.IsZero() && !a.now().Before(e.expires):
		return Identity{}, errKeyExpired
	}
	return e.id, nil
}

// Close releases the JWT key set's HTTP client: it cancels fetches in
// flight and waits for them, unless an Authenticator built by Reload still
// shares it. Keys keep working after Close. Idempotent.
func (a *Authenticator) Close() {
	a.closeOnce.Do(func() {
		if a.jwt != nil && a.jwt.remote != nil {
			a.jwt.remote.release()
		}
	})
}
