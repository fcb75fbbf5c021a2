package auth

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/registrytoken"
)

// Defaults of KeyringOptions.
const (
	DefaultKeyRotation = 24 * time.Hour
	DefaultTokenTTL    = 5 * time.Minute
	// MinKeyRotation bounds KeyringOptions.Rotation from below, so that
	// every replica and gateway learns of a key long before it signs.
	MinKeyRotation = 10 * time.Minute
)

// keyIDFormat names a stored key after the start of its signing period.
const keyIDFormat = "20060102T150405Z"

// Keyring holds the keys that sign registry tokens.
//
// A store-backed keyring (OpenKeyring) keeps its keys in the object store,
// so that every auth replica signs with keys every gateway accepts. Time is
// cut into periods of Rotation; each period has one key, signing only
// within it. The key of the next period is created one whole period ahead,
// so replicas and gateways know it before it signs, and a key is kept (and
// published) until the tokens it signed have expired. Replicas race to
// create a period's key with a conditional write; the loser loads the
// winner's.
//
// A static keyring (StaticKeyring) has one key that never rotates.
type Keyring struct {
	store    *objstore.Store
	alg      jwtkey.Algorithm
	rotation time.Duration
	retain   time.Duration

	mu   sync.RWMutex
	keys []ringKey
}

// ringKey is a signing key and when it signs.
type ringKey struct {
	registrytoken.SigningKey
	// objectID names the stored object; "" for a static key.
	objectID string
	// from and until bound the signing period; zero for a static key.
	from, until time.Time
}

// signsAt reports whether k is the key for tokens issued at now.
func (k ringKey) signsAt(now time.Time) bool {
	if k.objectID == "" {
		return true
	}
	return !now.Before(k.from) && now.Before(k.until)
}

// storedKey is a key as the object store keeps it.
//
// The private key is stored unencrypted: anyone who can read the bucket can
// sign registry tokens that every gateway accepts. Sealing it with a key
// from the environment is not done yet; until then the bucket's credentials
// are as sensitive as the signing key.
type storedKey struct {
	Algorithm  string    `json:"algorithm"`
	PrivateKey string    `json:"private_key"`
	SignFrom   time.Time `json:"sign_from"`
	SignUntil  time.Time `json:"sign_until"`
	NotAfter   time.Time `json:"not_after"`
}

// StaticKeyring returns a keyring with one key that signs every token and
// never rotates: an operator-provided key (KEEL_TOKEN_SIGNING_KEY), which
// every auth replica is given alike.
func StaticKeyring(key crypto.Signer) (*Keyring, error) {
	alg, err := jwtkey.AlgorithmOf(key.Public())
	if err != nil {
		return nil, err
	}
	kid, err := jwtkey.KeyID(key.Public())
	if err != nil {
		return nil, err
	}
	sk := registrytoken.SigningKey{
		Key:     registrytoken.Key{ID: kid, Algorithm: alg, Public: key.Public()},
		Private: key,
	}
	return &Keyring{alg: alg, keys: []ringKey{{SigningKey: sk}}}, nil
}

// generatedKeyring returns a static keyring with a new ES256 key.
//
// Its key lives only in this process, so a second auth replica would sign
// with another key that gateways fetching from this one never learn: use
// it for tests and single-replica setups only. NewServer falls back to it
// when Config.Keys is nil; the stack always passes a store-backed or
// operator-provided keyring.
func generatedKeyring() (*Keyring, error) {
	key, err := jwtkey.Generate(jwtkey.ES256)
	if err != nil {
		return nil, fmt.Errorf("auth: generate a signing key: %w", err)
	}
	return StaticKeyring(key)
}

// KeyringOptions configures a store-backed keyring.
type KeyringOptions struct {
	// Algorithm of generated keys; "" means ES256.
	Algorithm jwtkey.Algorithm
	// Rotation is how long each key signs; 0 means DefaultKeyRotation. At
	// least MinKeyRotation and twice TokenTTL.
	Rotation time.Duration
	// TokenTTL is the lifetime of the tokens the keys sign, which a key is
	// kept for after it stopped signing; 0 means DefaultTokenTTL.
	TokenTTL time.Duration
}

// OpenKeyring returns a keyring kept in store, loaded (and its current and
// next keys created when missing) as of now.
func OpenKeyring(
	ctx context.Context, store *objstore.Store, opts KeyringOptions, now time.Time,
) (*Keyring, error) {
	if opts.Algorithm == "" {
		opts.Algorithm = jwtkey.ES256
	}
	if opts.Rotation == 0 {
		opts.Rotation = DefaultKeyRotation
	}
	if opts.TokenTTL == 0 {
		opts.TokenTTL = DefaultTokenTTL
	}
	if opts.Rotation < MinKeyRotation || opts.Rotation < 2*opts.TokenTTL {
		return nil, fmt.Errorf("auth: key rotation %v must be at least %v and twice the "+
			"token lifetime %v", opts.Rotation, MinKeyRotation, opts.TokenTTL)
	}
	if _, err := jwtkey.ParseAlgorithm(string(opts.Algorithm)); err != nil {
		return nil, err
	}

	k := &Keyring{
		store:    store,
		alg:      opts.Algorithm,
		rotation: opts.Rotation,
		// Tokens signed at the end of a period live TokenTTL; the leeway
		// covers clocks that disagree.
		retain: opts.TokenTTL + 2*registrytoken.Leeway,
	}
	if err := k.Refresh(ctx, now); err != nil {
		return nil, err
	}
	return k, nil
}

// RefreshInterval is how often Refresh should run: often enough that a
// replica learns another's new key well within one rotation period.
func (k *Keyring) RefreshInterval() time.Duration {
	return min(k.rotation/10, time.Minute)
}

// Refresh brings a store-backed keyring up to date as of now: it loads keys
// other replicas created, creates the current and next period's keys when
// missing, and deletes keys whose tokens have all expired. A static keyring
// has nothing to do. On error the keys loaded before stay in use.
func (k *Keyring) Refresh(ctx context.Context, now time.Time) error {
	if k.store == nil {
		return nil
	}

	known := map[string]ringKey{}
	k.mu.RLock()
	for _, rk := range k.keys {
		known[rk.objectID] = rk
	}
	k.mu.RUnlock()

	objects, _, _, err := k.store.List(ctx, layout.Key(layout.SigningKeys{}), "", "", 0)
	if err != nil {
		return fmt.Errorf("auth: list signing keys: %w", err)
	}
	var keys []ringKey
	var errs []error
	for _, obj := range objects {
		id := strings.TrimPrefix(obj, layout.Key(layout.SigningKeys{}))
		rk, ok := known[id]
		if !ok {
			rk, err = k.load(ctx, id)
			if errors.Is(err, objstore.ErrNotFound) {
				// Another replica deleted it since the listing: it expired.
				continue
			}
			if err != nil {
				errs = append(errs, err)
				continue
			}
		}
		if now.After(rk.NotAfter) {
			errs = append(errs, k.remove(ctx, id))
			continue
		}
		keys = append(keys, rk)
	}

	current := now.Truncate(k.rotation)
	for _, from := range []time.Time{current, current.Add(k.rotation)} {
		id := from.UTC().Format(keyIDFormat)
		if slices.ContainsFunc(keys, func(rk ringKey) bool { return rk.objectID == id }) {
			continue
		}
		rk, err := k.create(ctx, id, from)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		keys = append(keys, rk)
	}

	slices.SortFunc(keys, func(a, b ringKey) int { return b.from.Compare(a.from) })
	k.mu.Lock()
	k.keys = keys
	k.mu.Unlock()
	return errors.Join(errs...)
}

// load reads one stored key.
func (k *Keyring) load(ctx context.Context, id string) (ringKey, error) {
	raw, _, err := k.store.Get(ctx, layout.Key(layout.SigningKey{ID: id}))
	if err != nil {
		return ringKey{}, fmt.Errorf("auth: read signing key %s: %w", id, err)
	}
	var sk storedKey
	if err := json.Unmarshal(raw, &sk); err != nil {
		return ringKey{}, fmt.Errorf("auth: signing key %s is not valid JSON: %w", id, err)
	}
	priv, err := jwtkey.ParsePrivateKey(sk.PrivateKey)
	if err != nil {
		return ringKey{}, fmt.Errorf("auth: signing key %s: %w", id, err)
	}
	alg, err := jwtkey.AlgorithmOf(priv.Public())
	if err != nil || string(alg) != sk.Algorithm {
		return ringKey{}, fmt.Errorf("auth: signing key %s: algorithm %q does not fit the key",
			id, sk.Algorithm)
	}
	kid, err := jwtkey.KeyID(priv.Public())
	if err != nil {
		return ringKey{}, err
	}
	return ringKey{
		SigningKey: registrytoken.SigningKey{
			Key: registrytoken.Key{
				ID: kid, Algorithm: alg, Public: priv.Public(), NotAfter: sk.NotAfter,
			},
			Private: priv,
		},
		objectID: id,
		from:     sk.SignFrom,
		until:    sk.SignUntil,
	}, nil
}

// create makes the key of the period starting at from, unless another
// replica did first; then it loads that one.
func (k *Keyring) create(ctx context.Context, id string, from time.Time) (ringKey, error) {
	priv, err := jwtkey.Generate(k.alg)
	if err != nil {
		return ringKey{}, fmt.Errorf("auth: generate signing key %s: %w", id, err)
	}
	encoded, err := jwtkey.EncodePrivateKey(priv)
	if err != nil {
		return ringKey{}, err
	}
	until := from.Add(k.rotation)
	raw, err := json.Marshal(storedKey{
		Algorithm:  string(k.alg),
		PrivateKey: encoded,
		SignFrom:   from.UTC(),
		SignUntil:  until.UTC(),
		NotAfter:   until.Add(k.retain).UTC(),
	})
	if err != nil {
		return ringKey{}, err
	}

	key := layout.Key(layout.SigningKey{ID: id})
	_, err = k.store.Put(ctx, key, raw, objstore.Condition{IfNoneMatch: true})
	if err != nil && !errors.Is(err, objstore.ErrPreconditionFailed) {
		return ringKey{}, fmt.Errorf("auth: store signing key %s: %w", id, err)
	}
	// Read back what is stored, ours or the replica's that won the race.
	return k.load(ctx, id)
}

// remove deletes an expired key.
func (k *Keyring) remove(ctx context.Context, id string) error {
	if err := k.store.Delete(ctx, layout.Key(layout.SigningKey{ID: id})); err != nil {
		return fmt.Errorf("auth: delete expired signing key %s: %w", id, err)
	}
	return nil
}

// signingKey returns the key that signs tokens issued at now.
func (k *Keyring) signingKey(now time.Time) (registrytoken.SigningKey, error) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for _, rk := range k.keys {
		if rk.signsAt(now) {
			return rk.SigningKey, nil
		}
	}
	return registrytoken.SigningKey{}, errors.New("auth: no signing key for the current period")
}

// publicKeys returns the keys that may verify a token at now, newest first.
func (k *Keyring) publicKeys(now time.Time) []registrytoken.Key {
	k.mu.RLock()
	defer k.mu.RUnlock()
	out := make([]registrytoken.Key, 0, len(k.keys))
	for _, rk := range k.keys {
		if rk.NotAfter.IsZero() || !now.After(rk.NotAfter) {
			out = append(out, rk.Key)
		}
	}
	return out
}
