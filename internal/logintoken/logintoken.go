// Package logintoken is keel's JWT login: a token an operator signs with
// a private key and a client sends as the password of a basic login. The
// auth service verifies it against the configured public key, with the
// algorithm, issuer and audience pinned by configuration.
//
// A login token names its subject (sub), when it is valid (nbf, exp), and
// what it may do at most: capabilities (pull, push, delete, catalog) and,
// optionally, repository patterns. The auth service grants the
// intersection of that and what its policy allows the subject.
package logintoken

import (
	"crypto"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/repopattern"
)

// Leeway is the clock skew allowed when checking exp and nbf.
const Leeway = 30 * time.Second

// Capability is an action a login token allows.
type Capability string

// The capabilities of a login token.
const (
	Pull    Capability = "pull"
	Push    Capability = "push"
	Delete  Capability = "delete"
	Catalog Capability = "catalog"
)

// ParseCapability reads a capability name.
func ParseCapability(s string) (Capability, error) {
	switch c := Capability(s); c {
	case Pull, Push, Delete, Catalog:
		return c, nil
	}
	return "", fmt.Errorf("logintoken: capability %q is not pull, push, delete or catalog", s)
}

// Claims is a login token's payload.
type Claims struct {
	jwt.RegisteredClaims
	// Capabilities are the actions the token allows at most.
	Capabilities []string `json:"capabilities,omitempty"`
	// Repositories are the repository patterns the token is limited to;
	// none means no limit beyond the auth service's policy.
	Repositories []string `json:"repositories,omitempty"`
}

// Login is a verified login token.
type Login struct {
	// Subject is the token's sub claim.
	Subject string
	// Capabilities are the actions the token allows at most.
	Capabilities []Capability
	// Repositories limit the token to matching repositories; nil means
	// every repository.
	Repositories []repopattern.Pattern
	// Expires is the token's exp claim.
	Expires time.Time
}

// Allows reports whether the login's own claims allow capability c on
// repository name (ignored for Catalog).
func (l Login) Allows(c Capability, name string) bool {
	if !slices.Contains(l.Capabilities, c) {
		return false
	}
	if c == Catalog || l.Repositories == nil {
		return true
	}
	for _, p := range l.Repositories {
		if p.Match(name) {
			return true
		}
	}
	return false
}

// VerifierConfig configures a Verifier.
type VerifierConfig struct {
	// PublicKey verifies the signatures.
	PublicKey crypto.PublicKey
	// Algorithm is the only algorithm accepted; "" means the one
	// PublicKey is for (see jwtkey.AlgorithmOf).
	Algorithm jwtkey.Algorithm
	// Issuer is the iss every token must carry. Required.
	Issuer string
	// Audience must be among every token's aud. Required.
	Audience string
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Verifier checks login tokens.
type Verifier struct {
	key    crypto.PublicKey
	parser *jwt.Parser
}

// NewVerifier returns a verifier for cfg. The algorithm must be the one the
// key is for, so that a token cannot pick another (such as HS256 with the
// public key as its secret, or "none").
func NewVerifier(cfg VerifierConfig) (*Verifier, error) {
	keyAlg, err := jwtkey.AlgorithmOf(cfg.PublicKey)
	if err != nil {
		return nil, err
	}
	alg := cfg.Algorithm
	if alg == "" {
		alg = keyAlg
	}
	if alg != keyAlg {
		return nil, fmt.Errorf("logintoken: algorithm %s does not fit a key for %s", alg, keyAlg)
	}
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("logintoken: an issuer and an audience are required")
	}

	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{string(alg)}),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(Leeway),
		jwt.WithStrictDecoding(),
	}
	if cfg.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(cfg.Now))
	}
	return &Verifier{key: cfg.PublicKey, parser: jwt.NewParser(opts...)}, nil
}

// Verify checks a token's signature and claims and returns what it allows.
// The error says why a token was refused, without the token itself.
func (v *Verifier) Verify(token string) (Login, error) {
	var claims Claims
	_, err := v.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) {
		return v.key, nil
	})
	if err != nil {
		return Login{}, fmt.Errorf("logintoken: %w", err)
	}
	if claims.Subject == "" {
		return Login{}, errors.New("logintoken: token has no subject")
	}

	login := Login{Subject: claims.Subject, Expires: claims.ExpiresAt.Time}
	for _, s := range claims.Capabilities {
		c, err := ParseCapability(s)
		if err != nil {
			return Login{}, err
		}
		login.Capabilities = append(login.Capabilities, c)
	}
	for _, s := range claims.Repositories {
		p, err := repopattern.Compile(s)
		if err != nil {
			return Login{}, fmt.Errorf("logintoken: %w", err)
		}
		login.Repositories = append(login.Repositories, p)
	}
	return login, nil
}

// IssueOptions describes a login token to sign.
type IssueOptions struct {
	// Key signs the token.
	Key crypto.Signer
	// Algorithm is the signing algorithm; "" means the one Key is for.
	Algorithm jwtkey.Algorithm
	// Subject, Issuer and Audience become sub, iss and aud. All required.
	Subject, Issuer, Audience string
	// TTL is how long the token is valid from NotBefore. Required.
	TTL time.Duration
	// NotBefore is when the token becomes valid; zero means now.
	NotBefore time.Time
	// Capabilities are the actions the token allows. At least one.
	Capabilities []Capability
	// Repositories limit the token to matching repositories; none means
	// every repository the policy allows the subject.
	Repositories []string
	// Now is the issue time; zero means time.Now().
	Now time.Time
}

// Issue signs a login token.
func Issue(o IssueOptions) (string, error) {
	if o.Key == nil {
		return "", errors.New("logintoken: a signing key is required")
	}
	keyAlg, err := jwtkey.AlgorithmOf(o.Key.Public())
	if err != nil {
		return "", err
	}
	if o.Algorithm == "" {
		o.Algorithm = keyAlg
	}
	if o.Algorithm != keyAlg {
		return "", fmt.Errorf("logintoken: algorithm %s does not fit a key for %s",
			o.Algorithm, keyAlg)
	}
	if o.Subject == "" || o.Issuer == "" || o.Audience == "" {
		return "", errors.New("logintoken: subject, issuer and audience are required")
	}
	if o.TTL <= 0 {
		return "", errors.New("logintoken: the time to live must be positive")
	}
	if len(o.Capabilities) == 0 {
		return "", errors.New("logintoken: at least one capability is required")
	}

	claims := Claims{Repositories: o.Repositories}
	for _, c := range o.Capabilities {
		if _, err := ParseCapability(string(c)); err != nil {
			return "", err
		}
		claims.Capabilities = append(claims.Capabilities, string(c))
	}
	for _, r := range o.Repositories {
		if _, err := repopattern.Compile(r); err != nil {
			return "", fmt.Errorf("logintoken: %w", err)
		}
	}
	now := o.Now
	if now.IsZero() {
		now = time.Now()
	}
	nbf := o.NotBefore
	if nbf.IsZero() {
		nbf = now
	}
	claims.RegisteredClaims = jwt.RegisteredClaims{
		Subject:   o.Subject,
		Issuer:    o.Issuer,
		Audience:  jwt.ClaimStrings{o.Audience},
		IssuedAt:  jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(nbf),
		ExpiresAt: jwt.NewNumericDate(nbf.Add(o.TTL)),
	}

	signed, err := jwt.NewWithClaims(o.Algorithm.Method(), claims).SignedString(o.Key)
	if err != nil {
		return "", fmt.Errorf("logintoken: sign: %w", err)
	}
	return signed, nil
}
