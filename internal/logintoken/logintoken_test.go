package logintoken

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/keel-registry/keel/internal/jwtkey"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func newKey(t *testing.T, alg jwtkey.Algorithm) crypto.Signer {
	t.Helper()
	key, err := jwtkey.Generate(alg)
	if err != nil {
		t.Fatalf("Generate(%s) error = %v", alg, err)
	}
	return key
}

func newVerifier(t *testing.T, pub crypto.PublicKey) *Verifier {
	t.Helper()
	v, err := NewVerifier(VerifierConfig{
		PublicKey: pub, Issuer: "ops", Audience: "keel",
		Now: func() time.Time { return now },
	})
	if err != nil {
		t.Fatalf("NewVerifier() error = %v", err)
	}
	return v
}

func issueOpts(key crypto.Signer) IssueOptions {
	return IssueOptions{
		Key: key, Subject: "ci", Issuer: "ops", Audience: "keel", TTL: time.Hour,
		Capabilities: []Capability{Pull, Push}, Repositories: []string{"team/*"}, Now: now,
	}
}

func TestIssueAndVerifyEveryAlgorithm(t *testing.T) {
	for _, alg := range []jwtkey.Algorithm{jwtkey.ES256, jwtkey.EdDSA, jwtkey.RS256} {
		t.Run(string(alg), func(t *testing.T) {
			key := newKey(t, alg)
			token, err := Issue(issueOpts(key))
			if err != nil {
				t.Fatalf("Issue() error = %v", err)
			}

			login, err := newVerifier(t, key.Public()).Verify(token)
			if err != nil {
				t.Fatalf("Verify(issued) error = %v", err)
			}
			if login.Subject != "ci" || !login.Expires.Equal(now.Add(time.Hour)) {
				t.Errorf("Verify() = %+v, want subject ci expiring %v", login, now.Add(time.Hour))
			}
			checks := []struct {
				c    Capability
				repo string
				want bool
			}{
				{Pull, "team/app", true},
				{Push, "team/app", true},
				{Delete, "team/app", false},
				{Pull, "other/app", false},
				{Catalog, "", false},
			}
			for _, c := range checks {
				if got := login.Allows(c.c, c.repo); got != c.want {
					t.Errorf("Allows(%s, %q) = %v, want %v", c.c, c.repo, got, c.want)
				}
			}
		})
	}
}

// sign signs claims as they come, with any method and key, for forging.
func sign(t *testing.T, method jwt.SigningMethod, claims jwt.Claims, key any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatalf("sign with %s: %v", method.Alg(), err)
	}
	return s
}

func claimsAt(nbf, exp time.Time, iss, aud string) Claims {
	return Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: "ci", Issuer: iss, Audience: jwt.ClaimStrings{aud},
			IssuedAt: jwt.NewNumericDate(nbf), NotBefore: jwt.NewNumericDate(nbf),
			ExpiresAt: jwt.NewNumericDate(exp),
		},
		Capabilities: []string{"pull"},
	}
}

// TestVerifyRefusesAttacks is the list of forged and stale login tokens
// that must not log in, each its own case.
func TestVerifyRefusesAttacks(t *testing.T) {
	key := newKey(t, jwtkey.ES256)
	other := newKey(t, jwtkey.ES256)
	pubDER, _ := x509.MarshalPKIXPublicKey(key.Public())
	pubB64 := base64.StdEncoding.EncodeToString(pubDER)
	valid := claimsAt(now.Add(-time.Minute), now.Add(time.Hour), "ops", "keel")
	good := sign(t, jwt.SigningMethodES256, valid, key)
	parts := strings.Split(good, ".")

	tests := map[string]string{
		"alg none": sign(t, jwt.SigningMethodNone, valid, jwt.UnsafeAllowNoneSignatureType),
		"alg none without signature part": parts[0][:0] +
			base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) +
			"." + parts[1] + ".",
		"HS256 signed with the public key (DER) as secret": sign(t, jwt.SigningMethodHS256,
			valid, pubDER),
		"HS256 signed with the public key (base64) as secret": sign(t, jwt.SigningMethodHS256,
			valid, []byte(pubB64)),
		"EdDSA from another key type": sign(t, jwt.SigningMethodEdDSA, valid,
			newKey(t, jwtkey.EdDSA)),
		"expired": sign(t, jwt.SigningMethodES256,
			claimsAt(now.Add(-2*time.Hour), now.Add(-time.Minute), "ops", "keel"), key),
		"not yet valid": sign(t, jwt.SigningMethodES256,
			claimsAt(now.Add(5*time.Minute), now.Add(time.Hour), "ops", "keel"), key),
		"wrong audience": sign(t, jwt.SigningMethodES256,
			claimsAt(now, now.Add(time.Hour), "ops", "other-registry"), key),
		"wrong issuer": sign(t, jwt.SigningMethodES256,
			claimsAt(now, now.Add(time.Hour), "mallory", "keel"), key),
		"signed by another key": sign(t, jwt.SigningMethodES256, valid, other),
		"tampered signature":    parts[0] + "." + parts[1] + "." + flip(parts[2]),
		"tampered payload": parts[0] + "." +
			base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin","iss":"ops",`+
				`"aud":"keel","exp":9999999999,"capabilities":["pull","push","delete"]}`)) +
			"." + parts[2],
		"no expiry": sign(t, jwt.SigningMethodES256, Claims{
			RegisteredClaims: jwt.RegisteredClaims{Subject: "ci", Issuer: "ops",
				Audience: jwt.ClaimStrings{"keel"}},
			Capabilities: []string{"pull"},
		}, key),
		"no subject": sign(t, jwt.SigningMethodES256, func() Claims {
			c := valid
			c.Subject = ""
			return c
		}(), key),
		"unknown capability": sign(t, jwt.SigningMethodES256, func() Claims {
			c := valid
			c.Capabilities = []string{"pull", "admin"}
			return c
		}(), key),
		"repository pattern with ..": sign(t, jwt.SigningMethodES256, func() Claims {
			c := valid
			c.Repositories = []string{"team/../secret"}
			return c
		}(), key),
		"garbage":    "not-a-token",
		"empty":      "",
		"two parts":  parts[0] + "." + parts[1],
		"four parts": good + ".x",
	}
	v := newVerifier(t, key.Public())
	if _, err := v.Verify(good); err != nil {
		t.Fatalf("Verify(the unforged token) error = %v; the cases below prove nothing", err)
	}
	for name, token := range tests {
		t.Run(name, func(t *testing.T) {
			login, err := v.Verify(token)
			if err == nil {
				t.Fatalf("Verify(%s) = %+v, nil; want an error", name, login)
			}
			t.Logf("refused: %v", err)
		})
	}
}

// flip changes the first character of a base64url string.
func flip(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestVerifierPinsTheKeysAlgorithm(t *testing.T) {
	key := newKey(t, jwtkey.ES256)
	_, err := NewVerifier(VerifierConfig{PublicKey: key.Public(), Algorithm: jwtkey.RS256,
		Issuer: "ops", Audience: "keel"})
	if err == nil {
		t.Errorf("NewVerifier(ES256 key, RS256) error = nil, want an error")
	}
	_, err = NewVerifier(VerifierConfig{PublicKey: key.Public(), Audience: "keel"})
	if err == nil {
		t.Errorf("NewVerifier(no issuer) error = nil, want an error")
	}
}

func TestIssueRefusesBadOptions(t *testing.T) {
	key := newKey(t, jwtkey.ES256)
	tests := map[string]func(*IssueOptions){
		"no key":             func(o *IssueOptions) { o.Key = nil },
		"no subject":         func(o *IssueOptions) { o.Subject = "" },
		"no audience":        func(o *IssueOptions) { o.Audience = "" },
		"no ttl":             func(o *IssueOptions) { o.TTL = 0 },
		"no capabilities":    func(o *IssueOptions) { o.Capabilities = nil },
		"bad capability":     func(o *IssueOptions) { o.Capabilities = []Capability{"admin"} },
		"bad pattern":        func(o *IssueOptions) { o.Repositories = []string{"Team/*"} },
		"algorithm mismatch": func(o *IssueOptions) { o.Algorithm = jwtkey.EdDSA },
	}
	for name, change := range tests {
		o := issueOpts(key)
		change(&o)
		if _, err := Issue(o); err == nil {
			t.Errorf("Issue(%s) error = nil, want an error", name)
		}
	}
}

func TestCommandKeygenThenIssue(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "login.key")
	var out, errOut bytes.Buffer

	err := Main([]string{"keygen", "-alg", "EdDSA", "-out", keyFile}, &out, &errOut)
	if err != nil {
		t.Fatalf("keel token keygen = %v\n%s", err, errOut.String())
	}
	if strings.Contains(out.String(), "private-key:") {
		t.Errorf("keygen -out printed the private key: %q", out.String())
	}
	info, err := os.Stat(keyFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file %v, %v; want it with mode 0600", info, err)
	}
	pubText := lineValue(t, out.String(), "public-key: ")
	pub, err := jwtkey.ParsePublicKey(pubText)
	if err != nil {
		t.Fatalf("parse the printed public key: %v", err)
	}

	out.Reset()
	err = Main([]string{"issue", "-key", "@" + keyFile, "-sub", "ci", "-iss", "ops", "-aud",
		"keel", "-ttl", "10m", "-cap", "pull,push", "-repo", "team/*", "-repo", "infra/**"},
		&out, &errOut)
	if err != nil {
		t.Fatalf("keel token issue = %v\n%s", err, errOut.String())
	}
	v, err := NewVerifier(VerifierConfig{PublicKey: pub, Algorithm: jwtkey.EdDSA,
		Issuer: "ops", Audience: "keel"})
	if err != nil {
		t.Fatal(err)
	}
	login, err := v.Verify(strings.TrimSpace(out.String()))
	if err != nil {
		t.Fatalf("Verify(issued by the command) error = %v", err)
	}
	var repos []string
	for _, p := range login.Repositories {
		repos = append(repos, p.String())
	}
	if login.Subject != "ci" || !slices.Equal(repos, []string{"team/*", "infra/**"}) ||
		!slices.Equal(login.Capabilities, []Capability{Pull, Push}) {
		t.Errorf("issued token = %+v (repositories %q), want ci, pull+push, team/* and infra/**",
			login, repos)
	}
	if d := time.Until(login.Expires); d < 9*time.Minute || d > 11*time.Minute {
		t.Errorf("issued token expires in %v, want about 10m", d)
	}
}

func TestCommandRefuses(t *testing.T) {
	var out, errOut bytes.Buffer
	for _, args := range [][]string{
		nil,
		{"frobnicate"},
		{"keygen", "-alg", "HS256"},
		{"issue", "-sub", "ci", "-iss", "ops", "-aud", "keel", "-cap", "pull"},
		{"issue", "-key", "@/nonexistent/key", "-sub", "ci", "-iss", "ops", "-aud", "keel",
			"-cap", "pull"},
	} {
		if err := Main(args, &out, &errOut); err == nil {
			t.Errorf("keel token %q error = nil, want an error", args)
		}
	}
}

// lineValue returns what follows prefix on its line in s.
func lineValue(t *testing.T, s, prefix string) string {
	t.Helper()
	for _, line := range strings.Split(s, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	t.Fatalf("no line %q in %q", prefix, s)
	return ""
}
