package stack

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keel-registry/keel/internal/jwtkey"
)

func TestConfigFromEnvAuthVariables(t *testing.T) {
	loginKey, _ := jwtkey.Generate(jwtkey.EdDSA)
	loginPub, _ := jwtkey.EncodePublicKey(loginKey.Public())
	signing, _ := jwtkey.Generate(jwtkey.ES256)
	signingText, _ := jwtkey.EncodePrivateKey(signing)

	cfg, err := ConfigFromEnv(env(map[string]string{
		"KEEL_AUTH_POLICY":        "/etc/keel/policy.yaml",
		"KEEL_AUTH_FAILURE_LIMIT": "20",
		"KEEL_JWT_PUBLIC_KEY":     loginPub,
		"KEEL_JWT_ALGORITHM":      "EdDSA",
		"KEEL_JWT_ISSUER":         "ops",
		"KEEL_JWT_AUDIENCE":       "keel",
		"KEEL_TOKEN_AUTH":         "true",
		"KEEL_TOKEN_REALM":        "https://registry.example/token",
		"KEEL_TOKEN_SERVICE":      "registry.example",
		"KEEL_TOKEN_ISSUER":       "registry.example/auth",
		"KEEL_TOKEN_TTL":          "10m",
		"KEEL_TOKEN_SIGNING_KEY":  signingText,
		"KEEL_TOKEN_KEY_ROTATION": "12h",
		"KEEL_TRUSTED_PROXIES":    "10.0.0.0/8, 192.0.2.1",
	}))
	if err != nil {
		t.Fatalf("ConfigFromEnv() error = %v", err)
	}

	signingKID, _ := jwtkey.KeyID(signing.Public())
	gotKID, _ := jwtkey.KeyID(cfg.TokenSigningKey.Public())
	loginKID, _ := jwtkey.KeyID(loginKey.Public())
	gotLoginKID, _ := jwtkey.KeyID(cfg.JWTPublicKey)
	if cfg.AuthPolicy != "/etc/keel/policy.yaml" || cfg.AuthFailureLimit != 20 ||
		gotLoginKID != loginKID || cfg.JWTAlgorithm != jwtkey.EdDSA ||
		cfg.JWTIssuer != "ops" || cfg.JWTAudience != "keel" || !cfg.TokenAuth ||
		cfg.TokenRealm != "https://registry.example/token" ||
		cfg.TokenService != "registry.example" || cfg.TokenIssuer != "registry.example/auth" ||
		cfg.TokenTTL != 10*time.Minute || gotKID != signingKID ||
		cfg.TokenKeyRotation != 12*time.Hour {
		t.Errorf("ConfigFromEnv() auth part = %+v, want every variable applied", cfg)
	}
	wantProxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.0.2.1/32")}
	if !slices.Equal(cfg.TrustedProxies, wantProxies) {
		t.Errorf("TrustedProxies = %v, want %v", cfg.TrustedProxies, wantProxies)
	}
	if v, err := cfg.loginVerifier(); err != nil || v == nil {
		t.Errorf("loginVerifier() = %v, %v; want a verifier", v, err)
	}
}

func TestConfigFromEnvRefusesAuthMistakes(t *testing.T) {
	loginKey, _ := jwtkey.Generate(jwtkey.ES256)
	loginPub, _ := jwtkey.EncodePublicKey(loginKey.Public())
	jwt := func(extra map[string]string) map[string]string {
		m := map[string]string{"KEEL_JWT_PUBLIC_KEY": loginPub, "KEEL_JWT_ISSUER": "ops",
			"KEEL_JWT_AUDIENCE": "keel"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}

	tests := map[string]struct {
		env    map[string]string
		secret string
	}{
		"public key that is not one": {env: jwt(map[string]string{
			"KEEL_JWT_PUBLIC_KEY": "bm90IGEga2V5"})},
		"algorithm HS256":         {env: jwt(map[string]string{"KEEL_JWT_ALGORITHM": "HS256"})},
		"algorithm none":          {env: jwt(map[string]string{"KEEL_JWT_ALGORITHM": "none"})},
		"algorithm not the key's": {env: jwt(map[string]string{"KEEL_JWT_ALGORITHM": "RS256"})},
		"public key without issuer": {env: map[string]string{"KEEL_JWT_PUBLIC_KEY": loginPub,
			"KEEL_JWT_AUDIENCE": "keel"}},
		"issuer without public key": {env: map[string]string{"KEEL_JWT_ISSUER": "ops"}},
		"signing key that is not one": {
			env:    map[string]string{"KEEL_TOKEN_SIGNING_KEY": "c2VjcmV0LXZhbHVl"},
			secret: "c2VjcmV0LXZhbHVl",
		},
		"public key as the signing key": {env: map[string]string{
			"KEEL_TOKEN_SIGNING_KEY": loginPub}, secret: loginPub},
		"token ttl too short": {env: map[string]string{"KEEL_TOKEN_TTL": "10s"}},
		"token ttl too long":  {env: map[string]string{"KEEL_TOKEN_TTL": "24h"}},
		"rotation too short":  {env: map[string]string{"KEEL_TOKEN_KEY_ROTATION": "1m"}},
		"rotation under 2 ttl": {env: map[string]string{"KEEL_TOKEN_TTL": "1h",
			"KEEL_TOKEN_KEY_ROTATION": "90m"}},
		"failure limit negative": {env: map[string]string{
			"KEEL_AUTH_FAILURE_LIMIT": "-1"}},
		"realm not a URL":     {env: map[string]string{"KEEL_TOKEN_REALM": "registry/token"}},
		"proxy not a network": {env: map[string]string{"KEEL_TRUSTED_PROXIES": "10.0.0.0/8,x"}},
	}
	for name, tt := range tests {
		_, err := ConfigFromEnv(env(tt.env))
		if err == nil {
			t.Errorf("ConfigFromEnv(%s) error = nil, want an error", name)
			continue
		}
		if tt.secret != "" && strings.Contains(err.Error(), tt.secret) {
			t.Errorf("ConfigFromEnv(%s) error %q holds the secret value", name, err)
		}
	}
}
