package gateway

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/registrytoken"
)

// Key-set timings.
const (
	// DefaultKeyRefresh is how often the gateway fetches the auth service's
	// signing keys again.
	DefaultKeyRefresh = time.Minute
	// minKeyFetchGap bounds how often a token naming an unknown key, or a
	// failing auth service, makes the gateway fetch the keys: a flood of
	// forged key ids costs at most one fetch per gap.
	minKeyFetchGap = time.Second
	// keyFetchTimeout bounds a fetch made in the background.
	keyFetchTimeout = 10 * time.Second
)

// keySet verifies registry tokens locally with the auth service's public
// keys, so that a request with a bearer token costs no call to the auth
// service. It fetches the keys on first use, again in the background every
// refresh interval, and at once (rate-limited) when a token names a key it
// does not know, so keys rotate without a restart.
type keySet struct {
	client   authv1.AuthServiceClient
	audience string
	refresh  time.Duration

	mu       sync.Mutex
	verifier *registrytoken.Verifier
	// fetched is when the keys were last fetched; tried when a fetch was
	// last started.
	fetched, tried time.Time
	// inflight is closed when the running fetch ends; nil when none runs.
	inflight chan struct{}
}

func newKeySet(client authv1.AuthServiceClient, audience string, refresh time.Duration) *keySet {
	return &keySet{client: client, audience: audience, refresh: refresh}
}

// verify checks a registry token. It fails with UNAVAILABLE when no keys
// could be fetched yet, and with the verifier's error (never holding the
// token) when the token is not valid.
func (k *keySet) verify(ctx context.Context, token string) (registrytoken.Claims, error) {
	k.mu.Lock()
	v := k.verifier
	stale := time.Since(k.fetched) > k.refresh && k.inflight == nil &&
		time.Since(k.tried) >= minKeyFetchGap
	k.mu.Unlock()

	if v == nil {
		if err := registrytoken.CheckFormat(token); err != nil {
			return registrytoken.Claims{}, err
		}
		var err error
		if v, err = k.sync(ctx); err != nil {
			return registrytoken.Claims{}, fmt.Errorf("%w: %w",
				ocierr.New(ocierr.Unavailable, "token keys are not available"), err)
		}
	} else if stale {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), keyFetchTimeout)
			defer cancel()
			k.sync(ctx)
		}()
	}

	claims, err := v.Verify(token)
	if errors.Is(err, registrytoken.ErrUnknownKey) {
		if fresh, ferr := k.sync(ctx); ferr == nil && fresh != v {
			claims, err = fresh.Verify(token)
		}
	}
	return claims, err
}

// sync fetches the keys and returns the verifier. It waits for a fetch
// already running instead of starting another, and fetches at most once
// per minKeyFetchGap: sooner, it returns the verifier it has.
func (k *keySet) sync(ctx context.Context) (*registrytoken.Verifier, error) {
	k.mu.Lock()
	if ch := k.inflight; ch != nil {
		k.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return k.snapshot()
	}
	if time.Since(k.tried) < minKeyFetchGap {
		k.mu.Unlock()
		return k.snapshot()
	}
	ch := make(chan struct{})
	k.inflight, k.tried = ch, time.Now()
	k.mu.Unlock()

	v, err := k.load(ctx)

	k.mu.Lock()
	if err == nil {
		k.verifier, k.fetched = v, time.Now()
	}
	k.inflight = nil
	close(ch)
	k.mu.Unlock()
	return v, err
}

// snapshot returns the verifier, or an error when there is none.
func (k *keySet) snapshot() (*registrytoken.Verifier, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.verifier == nil {
		return nil, errors.New("no token keys fetched yet")
	}
	return k.verifier, nil
}

// load calls ListSigningKeys and checks every key it returns.
func (k *keySet) load(ctx context.Context) (*registrytoken.Verifier, error) {
	resp, err := k.client.ListSigningKeys(ctx, &authv1.ListSigningKeysRequest{})
	if err != nil {
		return nil, fmt.Errorf("fetch token keys: %w", err)
	}
	if resp.GetIssuer() == "" {
		return nil, errors.New("fetch token keys: the auth service names no issuer")
	}

	keys := make([]registrytoken.Key, 0, len(resp.GetKeys()))
	for _, sk := range resp.GetKeys() {
		key, err := parseSigningKey(sk)
		if err != nil {
			return nil, fmt.Errorf("fetch token keys: key %.64q: %w", sk.GetKid(), err)
		}
		keys = append(keys, key)
	}
	return registrytoken.NewVerifier(keys, resp.GetIssuer(), k.audience, nil), nil
}

// parseSigningKey checks one key: a PKIX key of the algorithm it claims.
func parseSigningKey(sk *authv1.SigningKey) (registrytoken.Key, error) {
	alg, err := jwtkey.ParseAlgorithm(sk.GetAlgorithm())
	if err != nil {
		return registrytoken.Key{}, err
	}
	pub, err := jwtkey.ParsePublicKeyDER(sk.GetPublicKey())
	if err != nil {
		return registrytoken.Key{}, err
	}
	if keyAlg, _ := jwtkey.AlgorithmOf(pub); keyAlg != alg {
		return registrytoken.Key{}, fmt.Errorf("a %s key is labelled %s", keyAlg, alg)
	}
	key := registrytoken.Key{ID: sk.GetKid(), Algorithm: alg, Public: pub}
	if sk.GetNotAfter() != nil {
		key.NotAfter = sk.GetNotAfter().AsTime()
	}
	return key, nil
}
