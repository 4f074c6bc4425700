package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// MaxJWKSBytes bounds a key set read from jwks_url or jwks_file.
const MaxJWKSBytes = 1 << 20

// Results of a JWKS fetch, the result label of
// genai_gateway_auth_jwks_fetches_total.
const (
	fetchOK        = "ok"
	fetchError     = "error"
	fetchThrottled = "throttled"
)

// remoteKeys is an oidc.RemoteKeySet with the HTTP client it fetches
// through. go-oidc's key set caches the issuer's keys and fetches the set
// again when a token names a kid it does not hold (key rotation); each fetch
// runs in a goroutine of its own that ends with the request. remoteKeys
// bounds those fetches: a time limit, a size limit, at most one fetch per
// minInterval (so that tokens with invented kids cannot make the gateway
// hammer the identity provider), and Close cancels fetches in flight and
// waits for them. It is shared by the Authenticators of successive configs
// while jwks_url stays the same, so a reload keeps the cached keys.
type remoteKeys struct {
	url        string
	timeout    time.Duration
	minRefetch time.Duration
	keySet     *oidc.RemoteKeySet
	fetcher    *fetcher
}

func newRemoteKeys(url string, timeout, minInterval time.Duration, now func() time.Time, log zerolog.Logger, fetches *prometheus.CounterVec) *remoteKeys {
	ctx, cancel := context.WithCancel(context.Background())
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConns = 1
	f := &fetcher{
		next: transport, transport: transport, now: now, minInterval: minInterval,
		log: log, fetches: fetches, ctx: ctx, cancel: cancel, refs: 1,
	}
	client := &http.Client{Timeout: timeout, Transport: f}
	return &remoteKeys{
		url:        url,
		timeout:    timeout,
		minRefetch: minInterval,
		keySet:     oidc.NewRemoteKeySet(oidc.ClientContext(ctx, client), url),
		fetcher:    f,
	}
}

// share returns r for one more owner; each owner calls release once.
func (r *remoteKeys) share() *remoteKeys {
	r.fetcher.mu.Lock()
	defer r.fetcher.mu.Unlock()
	r.fetcher.refs++
	return r
}

// release drops one owner; the last one cancels fetches in flight, waits for
// them and closes idle connections.
func (r *remoteKeys) release() {
	f := r.fetcher
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	if last {
		// Under the lock, so that RoundTrip either registered its fetch
		// before (and Wait waits for it) or sees the cancellation.
		f.cancel()
	}
	f.mu.Unlock()
	if !last {
		return
	}
	f.inflight.Wait()
	f.transport.CloseIdleConnections()
}

// fetcher is the http.RoundTripper of a remote key set.
type fetcher struct {
	next        http.RoundTripper
	transport   *http.Transport
	now         func() time.Time
	minInterval time.Duration
	log         zerolog.Logger
	fetches     *prometheus.CounterVec
	ctx         context.Context // cancelled when the last owner releases
	cancel      context.CancelFunc
	inflight    sync.WaitGroup

	mu   sync.Mutex
	refs int
	last time.Time // start of the last fetch
}

var errThrottled = errors.New("jwks fetched too recently")

// RoundTrip fetches the key set, unless one was fetched less than
// minInterval ago or the fetcher is released.
func (f *fetcher) RoundTrip(req *http.Request) (*http.Response, error) {
	f.mu.Lock()
	now := f.now()
	switch {
	case f.ctx.Err() != nil:
		f.mu.Unlock()
		return nil, f.ctx.Err()
	case !f.last.IsZero() && now.Sub(f.last) < f.minInterval && now.Sub(f.last) >= 0:
		f.mu.Unlock()
		f.fetches.WithLabelValues(fetchThrottled).Inc()
		return nil, errThrottled
	}
	f.last = now
	f.inflight.Add(1)
	f.mu.Unlock()

	ctx, cancel := context.WithCancel(req.Context())
	stop := context.AfterFunc(f.ctx, cancel)
	done := func() {
		stop()
		cancel()
		f.inflight.Done()
	}
	resp, err := f.next.RoundTrip(req.WithContext(ctx))
	if err != nil {
		done()
		f.fetches.WithLabelValues(fetchError).Inc()
		f.log.Warn().Err(err).Str("jwks_url", req.URL.Redacted()).Msg("jwks fetch failed")
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		f.fetches.WithLabelValues(fetchError).Inc()
		f.log.Warn().Int("status", resp.StatusCode).Str("jwks_url", req.URL.Redacted()).Msg("jwks fetch failed")
	} else {
		f.fetches.WithLabelValues(fetchOK).Inc()
		f.log.Debug().Str("jwks_url", req.URL.Redacted()).Msg("jwks fetched")
	}
	resp.Body = &limitedBody{r: resp.Body, left: MaxJWKSBytes, done: done}
	return resp, nil
}

// limitedBody fails reads past its limit and releases its fetch on Close.
type limitedBody struct {
	r    io.ReadCloser
	left int64
	done func()
	once sync.Once
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, fmt.Errorf("jwks larger than %d bytes", MaxJWKSBytes)
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error {
	err := b.r.Close()
	b.once.Do(b.done)
	return err
}

// staticKeys reads a JWKS document (RFC 7517) from a file: public
// signature keys only (RSA, EC, Ed25519). A private or symmetric key in the
// file is an error: the gateway verifies and must not hold signing secrets.
func staticKeys(path string) (*oidc.StaticKeySet, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxJWKSBytes {
		return nil, fmt.Errorf("larger than %d bytes", MaxJWKSBytes)
	}
	return parseStaticKeys(data)
}

func parseStaticKeys(data []byte) (*oidc.StaticKeySet, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWKS document: %w", err)
	}
	ks := &oidc.StaticKeySet{}
	for i, k := range set.Keys {
		if k.Use == "enc" {
			continue
		}
		switch k.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			ks.PublicKeys = append(ks.PublicKeys, k.Key)
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return nil, fmt.Errorf("keys[%d] is a private key: publish only the public keys", i)
		default:
			return nil, fmt.Errorf("keys[%d] is not an RSA, EC or Ed25519 public key (symmetric keys are refused)", i)
		}
	}
	if len(ks.PublicKeys) == 0 {
		return nil, errors.New("no signature keys")
	}
	return ks, nil
}
