// Package registrytoken is the format of the bearer tokens keel's auth
// service issues and its gateway verifies: JWTs in Docker's registry token
// format, with an "access" claim listing the resources and actions granted,
// signed with one of the auth service's rotating keys and naming it in the
// "kid" header.
package registrytoken

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/keel-registry/keel/internal/jwtkey"
)

// Leeway is the clock skew allowed when checking exp, nbf and iat.
const Leeway = 30 * time.Second

// ErrUnknownKey reports a token signed with a key the verifier does not
// have; the caller may fetch the key set again and retry.
var ErrUnknownKey = errors.New("registrytoken: unknown signing key")

// Access is one entry of the access claim: actions on one resource, as in
// the scope "repository:team/app:pull,push".
type Access struct {
	// Type is "repository" or "registry".
	Type string `json:"type"`
	// Name is a repository name, or "catalog".
	Name string `json:"name"`
	// Actions are "pull", "push", "delete" or "*".
	Actions []string `json:"actions"`
}

// Claims is a registry token's payload.
type Claims struct {
	jwt.RegisteredClaims
	// Access is what the token grants.
	Access []Access `json:"access"`
}

// Key is the public half of a signing key.
type Key struct {
	// ID names the key in the kid header.
	ID string
	// Algorithm is the only algorithm the key verifies.
	Algorithm jwtkey.Algorithm
	// Public is the public key.
	Public crypto.PublicKey
	// NotAfter is when the key stops verifying; zero means never.
	NotAfter time.Time
}

// SigningKey is a key with its private half.
type SigningKey struct {
	Key
	// Private signs.
	Private crypto.Signer
}

// Sign signs claims with key, naming the key in the kid header.
func Sign(key SigningKey, claims Claims) (string, error) {
	method := key.Algorithm.Method()
	if method == nil {
		return "", fmt.Errorf("registrytoken: key %s has no known algorithm", key.ID)
	}
	token := jwt.NewWithClaims(method, claims)
	token.Header["kid"] = key.ID
	signed, err := token.SignedString(key.Private)
	if err != nil {
		return "", fmt.Errorf("registrytoken: sign: %w", err)
	}
	return signed, nil
}

// Verifier checks registry tokens against one key set.
type Verifier struct {
	keys   map[string]Key
	now    func() time.Time
	parser *jwt.Parser
}

// NewVerifier returns a verifier that accepts tokens signed by one of keys
// with that key's algorithm, issued by issuer for audience. now returns the
// current time; nil means time.Now.
func NewVerifier(keys []Key, issuer, audience string, now func() time.Time) *Verifier {
	if now == nil {
		now = time.Now
	}
	v := &Verifier{keys: make(map[string]Key, len(keys)), now: now}
	// Not nil even without keys: golang-jwt skips the algorithm check for a
	// nil list.
	algs := make([]string, 0, len(keys))
	for _, k := range keys {
		v.keys[k.ID] = k
		if !slices.Contains(algs, string(k.Algorithm)) {
			algs = append(algs, string(k.Algorithm))
		}
	}
	v.parser = jwt.NewParser(
		jwt.WithValidMethods(algs),
		jwt.WithIssuer(issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	)
	return v
}

// Verify checks a token's signature and claims and returns its claims. A
// token naming a key the verifier lacks fails with an error matching
// ErrUnknownKey. The error never holds the token.
func (v *Verifier) Verify(token string) (Claims, error) {
	var claims Claims
	_, err := v.parser.ParseWithClaims(token, &claims, v.key)
	if err != nil {
		return Claims{}, fmt.Errorf("registrytoken: %w", err)
	}
	for _, a := range claims.Access {
		if a.Type == "" || a.Name == "" {
			return Claims{}, errors.New("registrytoken: access entry without type or name")
		}
	}
	return claims, nil
}

// key finds the verification key a token names and checks that the
// token's algorithm is that key's one. golang-jwt has already refused an
// algorithm that no key of the set uses.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	kid, _ := t.Header["kid"].(string)
	k, ok := v.keys[kid]
	if !ok {
		return nil, ErrUnknownKey
	}
	if t.Method == nil || t.Method.Alg() != string(k.Algorithm) {
		return nil, fmt.Errorf("registrytoken: key %s does not verify this algorithm", kid)
	}
	if !k.NotAfter.IsZero() && v.now().After(k.NotAfter) {
		return nil, fmt.Errorf("registrytoken: key %s is retired", kid)
	}
	return k.Public, nil
}

// CheckFormat reports whether token is shaped like a JWS naming a key,
// without verifying anything, so that garbage is refused before any key is
// fetched.
func CheckFormat(token string) error {
	var claims Claims
	t, _, err := jwt.NewParser().ParseUnverified(token, &claims)
	if err != nil {
		return fmt.Errorf("registrytoken: %w", err)
	}
	if kid, _ := t.Header["kid"].(string); kid == "" {
		return errors.New("registrytoken: token names no key")
	}
	return nil
}
