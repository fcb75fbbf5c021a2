package stack

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/logintoken"
	"github.com/keel-registry/keel/services/auth"
)

// Bounds of the registry-token lifetime: Docker clients treat anything
// under a minute as a minute, and a long-lived token outlives revocations.
const (
	minTokenTTL = time.Minute
	maxTokenTTL = time.Hour
)

// authSettings reads the auth variables besides the users: the policy
// file, JWT logins, the token flow and the failure limit.
func (r *envReader) authSettings(c *Config) {
	c.AuthPolicy = r.getenv("KEEL_AUTH_POLICY")
	c.AuthFailureLimit = r.count("KEEL_AUTH_FAILURE_LIMIT")

	if v := r.getenv("KEEL_JWT_PUBLIC_KEY"); v != "" {
		key, err := jwtkey.ParsePublicKey(v)
		if err != nil {
			r.fail("KEEL_JWT_PUBLIC_KEY", truncate(v, 16)+"...", err)
		}
		c.JWTPublicKey = key
	}
	if v := r.getenv("KEEL_JWT_ALGORITHM"); v != "" {
		alg, err := jwtkey.ParseAlgorithm(v)
		if err != nil {
			r.fail("KEEL_JWT_ALGORITHM", v, err)
		}
		c.JWTAlgorithm = alg
	}
	c.JWTIssuer = r.getenv("KEEL_JWT_ISSUER")
	c.JWTAudience = r.getenv("KEEL_JWT_AUDIENCE")

	c.TokenAuth = r.bool("KEEL_TOKEN_AUTH")
	c.TokenRealm = r.getenv("KEEL_TOKEN_REALM")
	c.TokenService = r.getenv("KEEL_TOKEN_SERVICE")
	c.TokenIssuer = r.getenv("KEEL_TOKEN_ISSUER")
	c.TokenTTL = r.duration("KEEL_TOKEN_TTL")
	if v := r.getenv("KEEL_TOKEN_SIGNING_KEY"); v != "" {
		key, err := jwtkey.ParsePrivateKey(v)
		if err != nil {
			// The value is a private key: name the variable, not its value.
			r.errs = append(r.errs, fmt.Errorf("KEEL_TOKEN_SIGNING_KEY: %w", err))
		}
		c.TokenSigningKey = key
	}
	c.TokenKeyRotation = r.duration("KEEL_TOKEN_KEY_ROTATION")
	c.TrustedProxies = r.prefixes("KEEL_TRUSTED_PROXIES")
}

// count reads a non-negative integer.
func (r *envReader) count(name string) int {
	v := r.getenv(name)
	if v == "" {
		return 0
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		r.fail(name, v, errors.New("not a whole number of at least 0"))
	}
	return n
}

// prefixes reads comma-separated networks ("10.0.0.0/8") or addresses.
func (r *envReader) prefixes(name string) []netip.Prefix {
	v := r.getenv(name)
	if v == "" {
		return nil
	}
	var out []netip.Prefix
	for _, f := range strings.Split(v, ",") {
		f = strings.TrimSpace(f)
		p, err := netip.ParsePrefix(f)
		if err != nil {
			addr, aerr := netip.ParseAddr(f)
			if aerr != nil {
				r.fail(name, v, fmt.Errorf("%q is neither a network nor an address", f))
				continue
			}
			p = netip.PrefixFrom(addr, addr.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// validateAuth reports auth settings that cannot work together.
func (c Config) validateAuth() error {
	jwtSet := c.JWTAlgorithm != "" || c.JWTIssuer != "" || c.JWTAudience != ""
	if c.JWTPublicKey == nil && jwtSet {
		return errors.New("KEEL_JWT_ALGORITHM, KEEL_JWT_ISSUER and KEEL_JWT_AUDIENCE " +
			"need KEEL_JWT_PUBLIC_KEY")
	}
	if c.JWTPublicKey != nil {
		if c.JWTIssuer == "" || c.JWTAudience == "" {
			return errors.New("KEEL_JWT_PUBLIC_KEY needs KEEL_JWT_ISSUER and KEEL_JWT_AUDIENCE")
		}
		if _, err := c.loginVerifier(); err != nil {
			return fmt.Errorf("KEEL_JWT_ALGORITHM: %w", err)
		}
	}
	if c.TokenTTL != 0 && (c.TokenTTL < minTokenTTL || c.TokenTTL > maxTokenTTL) {
		return fmt.Errorf("KEEL_TOKEN_TTL %v is not between %v and %v",
			c.TokenTTL, minTokenTTL, maxTokenTTL)
	}
	rotation := c.TokenKeyRotation
	if rotation == 0 {
		rotation = auth.DefaultKeyRotation
	}
	ttl := c.TokenTTL
	if ttl == 0 {
		ttl = auth.DefaultTokenTTL
	}
	if rotation < auth.MinKeyRotation || rotation < 2*ttl {
		return fmt.Errorf("KEEL_TOKEN_KEY_ROTATION %v must be at least %v and twice "+
			"KEEL_TOKEN_TTL", rotation, auth.MinKeyRotation)
	}
	if c.TokenRealm != "" && !strings.HasPrefix(c.TokenRealm, "https://") &&
		!strings.HasPrefix(c.TokenRealm, "http://") {
		return fmt.Errorf("KEEL_TOKEN_REALM %q is not an http(s) URL", c.TokenRealm)
	}
	return nil
}

// loginVerifier returns the JWT login verifier, nil when JWT logins are
// off.
func (c Config) loginVerifier() (*logintoken.Verifier, error) {
	if c.JWTPublicKey == nil {
		return nil, nil
	}
	return logintoken.NewVerifier(logintoken.VerifierConfig{
		PublicKey: c.JWTPublicKey,
		Algorithm: c.JWTAlgorithm,
		Issuer:    c.JWTIssuer,
		Audience:  c.JWTAudience,
	})
}

// authConfig builds the auth service's configuration, less its keys.
func (p *process) authConfig() (auth.Config, error) {
	cfg := auth.Config{
		Users:         p.cfg.Users,
		AnonymousPull: p.cfg.AnonymousPull,
		Issuer:        p.cfg.TokenIssuer,
		Service:       p.cfg.TokenService,
		TokenTTL:      p.cfg.TokenTTL,
		FailureLimit:  p.cfg.AuthFailureLimit,
		Logger:        p.log.With("service", "auth"),
	}
	if p.cfg.AuthPolicy != "" {
		pol, err := auth.LoadPolicy(p.cfg.AuthPolicy)
		if err != nil {
			return auth.Config{}, err
		}
		cfg.Policy = pol
	}
	logins, err := p.cfg.loginVerifier()
	if err != nil {
		return auth.Config{}, err
	}
	cfg.Logins = logins
	return cfg, nil
}

// authKeyring returns the keys the auth service signs registry tokens
// with: the operator's key when one is configured; else keys in the object
// store, refreshed in the background until the process stops. An auth
// process without storage gets nil, and the service generates a key of its
// own.
func (p *process) authKeyring(ctx context.Context) (*auth.Keyring, error) {
	if p.cfg.TokenSigningKey != nil {
		return auth.StaticKeyring(p.cfg.TokenSigningKey)
	}
	if p.storage.Endpoint == "" {
		// This key exists in this process only: a second auth replica would
		// sign with another one, which gateways fetching keys from this
		// replica refuse.
		p.log.Warn("token signing key generated in this process: run ONE auth replica, " +
			"or set KEEL_S3_ENDPOINT (keys kept in the bucket) or KEEL_TOKEN_SIGNING_KEY")
		return nil, nil
	}

	store, err := p.openStore(ctx, "auth")
	if err != nil {
		return nil, err
	}
	openCtx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	keys, err := auth.OpenKeyring(openCtx, store, auth.KeyringOptions{
		Rotation: p.cfg.TokenKeyRotation,
		TokenTTL: p.cfg.TokenTTL,
	}, time.Now())
	if err != nil {
		return nil, fmt.Errorf("auth service: %w", err)
	}
	p.startKeyRefresh(keys)
	return keys, nil
}

// startKeyRefresh refreshes the keyring every RefreshInterval until the
// process stops.
func (p *process) startKeyRefresh(keys *auth.Keyring) {
	interval := keys.RefreshInterval()
	log := p.log.With("service", "auth", "task", "signing keys")
	p.periodic("token signing key refresh", interval, nil,
		func(ctx context.Context, now time.Time) {
			if err := keys.Refresh(ctx, now); err != nil && ctx.Err() == nil {
				log.Warn("refresh of the token signing keys failed", "error", err)
			}
		})
	log.Debug("signing key refresh started", "interval", interval)
}
