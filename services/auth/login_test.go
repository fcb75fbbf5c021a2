package auth

import (
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/logintoken"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
)

// testNow is the clock of the JWT login tests.
var testNow = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

// loginFixture is a server with JWT logins on, its operator key, and the
// log it writes.
type loginFixture struct {
	s   *Server
	key crypto.Signer
	log *telemetrytest.LogBuffer
}

// The policy of the JWT login tests: ci may pull and push team/*, and
// delete team/app.
const loginPolicy = `
rules:
  - subjects: [ci]
    repositories: ["team/*"]
    actions: [pull, push]
  - subjects: [ci]
    repositories: ["team/app"]
    actions: [delete]
  - subjects: [ci]
    actions: [catalog]
`

func newLoginFixture(t *testing.T) loginFixture {
	t.Helper()
	key, err := jwtkey.Generate(jwtkey.ES256)
	if err != nil {
		t.Fatal(err)
	}
	v, err := logintoken.NewVerifier(logintoken.VerifierConfig{
		PublicKey: key.Public(), Algorithm: jwtkey.ES256, Issuer: "ops", Audience: "keel",
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	pol, err := ParsePolicy([]byte(loginPolicy))
	if err != nil {
		t.Fatal(err)
	}
	logs := &telemetrytest.LogBuffer{}
	s, err := NewServer(Config{
		Users:  []User{{Name: "admin", Password: "admin-secret", Access: ReadWrite}},
		Policy: pol,
		Logins: v,
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})
	if err != nil {
		t.Fatalf("NewServer() error = %v", err)
	}
	s.now = func() time.Time { return testNow }
	return loginFixture{s: s, key: key, log: logs}
}

// issue signs a login token for ci with o applied.
func (f loginFixture) issue(t *testing.T, change func(*logintoken.IssueOptions)) string {
	t.Helper()
	o := logintoken.IssueOptions{
		Key: f.key, Subject: "ci", Issuer: "ops", Audience: "keel", TTL: time.Hour,
		Capabilities: []logintoken.Capability{logintoken.Pull, logintoken.Push},
		Now:          testNow,
	}
	if change != nil {
		change(&o)
	}
	token, err := logintoken.Issue(o)
	if err != nil {
		t.Fatalf("logintoken.Issue() error = %v", err)
	}
	return token
}

func (f loginFixture) authorize(
	t *testing.T, cred *authv1.Credential, addr string, access ...*authv1.Access,
) (*authv1.AuthorizeResponse, error) {
	t.Helper()
	return f.s.Authorize(testContext(t), &authv1.AuthorizeRequest{
		Credential: cred, Access: access, ClientAddress: addr,
	})
}

func TestJWTLoginGrantsThePolicyLimitedByTheToken(t *testing.T) {
	f := newLoginFixture(t)
	all := func(name string) *authv1.Access { return repo(name, "pull", "push", "delete") }

	tests := []struct {
		name   string
		change func(*logintoken.IssueOptions)
		want   []string
	}{
		{
			name: "pull and push token: no delete even where the policy allows it",
			want: []string{"repository:team/app:pull", "repository:team/app:push",
				"repository:team/web:pull", "repository:team/web:push"},
		},
		{
			name: "every capability: the policy's limits still hold",
			change: func(o *logintoken.IssueOptions) {
				o.Capabilities = []logintoken.Capability{logintoken.Pull, logintoken.Push,
					logintoken.Delete, logintoken.Catalog}
			},
			want: []string{"registry:catalog:*", "repository:team/app:delete",
				"repository:team/app:pull", "repository:team/app:push",
				"repository:team/web:pull", "repository:team/web:push"},
		},
		{
			name: "token limited to team/web",
			change: func(o *logintoken.IssueOptions) {
				o.Repositories = []string{"team/web"}
			},
			want: []string{"repository:team/web:pull", "repository:team/web:push"},
		},
		{
			name: "pull-only token",
			change: func(o *logintoken.IssueOptions) {
				o.Capabilities = []logintoken.Capability{logintoken.Pull}
			},
			want: []string{"repository:team/app:pull", "repository:team/web:pull"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := f.issue(t, tt.change)
			resp, err := f.authorize(t, basic("ci", token), "10.0.0.1",
				all("team/app"), all("team/web"), all("other/app"), catalog)
			if err != nil {
				t.Fatalf("Authorize(JWT login) error = %v", err)
			}
			if resp.GetSubject() != "ci" {
				t.Errorf("Authorize().Subject = %q, want ci", resp.GetSubject())
			}
			if got := grants(resp); !slices.Equal(got, tt.want) {
				t.Errorf("Authorize() granted %q, want %q", got, tt.want)
			}
		})
	}
}

// TestJWTLoginRefusesAttacks sends each forged or stale login token as a
// basic-auth password; every one must fail with UNAUTHORIZED.
func TestJWTLoginRefusesAttacks(t *testing.T) {
	f := newLoginFixture(t)
	pubDER, _ := x509.MarshalPKIXPublicKey(f.key.Public())
	other, _ := jwtkey.Generate(jwtkey.ES256)
	valid := logintoken.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: "ci", Issuer: "ops", Audience: jwt.ClaimStrings{"keel"},
			IssuedAt:  jwt.NewNumericDate(testNow),
			ExpiresAt: jwt.NewNumericDate(testNow.Add(time.Hour)),
		},
		Capabilities: []string{"pull", "push"},
	}
	forge := func(method jwt.SigningMethod, c logintoken.Claims, key any) string {
		s, err := jwt.NewWithClaims(method, c).SignedString(key)
		if err != nil {
			t.Fatalf("forge %s: %v", method.Alg(), err)
		}
		return s
	}
	with := func(change func(*logintoken.Claims)) logintoken.Claims {
		c := valid
		change(&c)
		return c
	}
	good := forge(jwt.SigningMethodES256, valid, f.key)
	parts := strings.Split(good, ".")

	tests := []struct {
		name, user, token string
	}{
		{"alg none", "ci", forge(jwt.SigningMethodNone, valid, jwt.UnsafeAllowNoneSignatureType)},
		{"HS256 signed with the public key as the secret", "ci",
			forge(jwt.SigningMethodHS256, valid, pubDER)},
		{"HS256 signed with the base64 public key as the secret", "ci",
			forge(jwt.SigningMethodHS256, valid,
				[]byte(base64.StdEncoding.EncodeToString(pubDER)))},
		{"expired", "ci", forge(jwt.SigningMethodES256, with(func(c *logintoken.Claims) {
			c.IssuedAt = jwt.NewNumericDate(testNow.Add(-2 * time.Hour))
			c.ExpiresAt = jwt.NewNumericDate(testNow.Add(-time.Minute))
		}), f.key)},
		{"not yet valid", "ci", forge(jwt.SigningMethodES256, with(func(c *logintoken.Claims) {
			c.NotBefore = jwt.NewNumericDate(testNow.Add(10 * time.Minute))
		}), f.key)},
		{"wrong audience", "ci", forge(jwt.SigningMethodES256, with(func(c *logintoken.Claims) {
			c.Audience = jwt.ClaimStrings{"another-registry"}
		}), f.key)},
		{"wrong issuer", "ci", forge(jwt.SigningMethodES256, with(func(c *logintoken.Claims) {
			c.Issuer = "mallory"
		}), f.key)},
		{"tampered signature", "ci", parts[0] + "." + parts[1] + "." + flip(parts[2])},
		{"tampered claims", "ci", parts[0] + "." + base64.RawURLEncoding.EncodeToString(
			[]byte(`{"sub":"ci","iss":"ops","aud":"keel","exp":9999999999,`+
				`"capabilities":["pull","push","delete"]}`)) + "." + parts[2]},
		{"signed by another key", "ci", forge(jwt.SigningMethodES256, valid, other)},
		{"user name is not the subject", "admin2", good},
		{"subject anonymous", "anonymous", forge(jwt.SigningMethodES256,
			with(func(c *logintoken.Claims) { c.Subject = "anonymous" }), f.key)},
	}
	if _, err := f.authorize(t, basic("ci", good), "10.0.0.2"); err != nil {
		t.Fatalf("Authorize(the unforged token) error = %v; the cases below prove nothing", err)
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A fresh address per case keeps the failure limit out of it.
			addr := fmt.Sprintf("10.1.0.%d", i)
			resp, err := f.authorize(t, basic(tt.user, tt.token), addr, repo("team/app", "pull"))
			if !ocierr.Is(err, ocierr.Unauthorized) {
				t.Fatalf("Authorize(%s) = %v, %v; want UNAUTHORIZED", tt.name, resp, err)
			}
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

func TestJWTLoginsOffMeansPasswordsOnly(t *testing.T) {
	s := newTestServer(t, false)
	key, _ := jwtkey.Generate(jwtkey.ES256)
	token, err := logintoken.Issue(logintoken.IssueOptions{
		Key: key, Subject: "ci", Issuer: "ops", Audience: "keel", TTL: time.Hour,
		Capabilities: []logintoken.Capability{logintoken.Pull},
	})
	if err != nil {
		t.Fatal(err)
	}

	_, err = s.Authorize(testContext(t), &authv1.AuthorizeRequest{Credential: basic("ci", token)})

	if !ocierr.Is(err, ocierr.Unauthorized) {
		t.Errorf("Authorize(JWT login with logins off) = %v, want UNAUTHORIZED", err)
	}
}

func TestFailedLoginsAreRateLimitedPerAddress(t *testing.T) {
	f := newLoginFixture(t)
	clock := testNow
	f.s.now = func() time.Time { return clock }
	const attacker, bystander = "192.0.2.1", "192.0.2.2"

	for i := range DefaultFailureLimit {
		_, err := f.authorize(t, basic("admin", fmt.Sprintf("guess-%d", i)), attacker)
		if !ocierr.Is(err, ocierr.Unauthorized) {
			t.Fatalf("failed login %d = %v, want UNAUTHORIZED", i+1, err)
		}
	}
	_, err := f.authorize(t, basic("admin", "admin-secret"), attacker)
	if !ocierr.Is(err, ocierr.TooManyRequests) {
		t.Fatalf("login after %d failures = %v, want TOOMANYREQUESTS even with the right "+
			"password", DefaultFailureLimit, err)
	}
	if got := ocierr.FromError(err).HTTPStatus(); got != 429 {
		t.Errorf("TOOMANYREQUESTS HTTP status = %d, want 429", got)
	}
	wantWait := fmt.Sprint(60 / DefaultFailureLimit)
	if got := ocierr.FromError(err).Detail[ocierr.RetryAfterKey]; got != wantWait {
		t.Errorf("TOOMANYREQUESTS retry after = %q seconds, want %s (one token's refill)",
			got, wantWait)
	}
	if _, err := f.authorize(t, basic("admin", "admin-secret"), bystander); err != nil {
		t.Errorf("login from another address = %v, want it unaffected", err)
	}
	if _, err := f.authorize(t, nil, attacker); !ocierr.Is(err, ocierr.Unauthorized) {
		t.Errorf("anonymous call from the limited address = %v, want UNAUTHORIZED "+
			"(no anonymous rule), not counted as a login", err)
	}

	clock = clock.Add(time.Minute/DefaultFailureLimit + time.Millisecond)
	if _, err := f.authorize(t, basic("admin", "admin-secret"), attacker); err != nil {
		t.Errorf("login after one token refilled = %v, want success", err)
	}
	_, err = f.authorize(t, basic("admin", "wrong"), attacker)
	if !ocierr.Is(err, ocierr.Unauthorized) {
		t.Errorf("failed login with the refilled token = %v, want UNAUTHORIZED", err)
	}
	_, err = f.authorize(t, basic("admin", "admin-secret"), attacker)
	if !ocierr.Is(err, ocierr.TooManyRequests) {
		t.Errorf("login after the refilled token was spent = %v, want TOOMANYREQUESTS", err)
	}
}

func TestFailedLoginsAreLoggedWithoutSecrets(t *testing.T) {
	f := newLoginFixture(t)
	token := f.issue(t, func(o *logintoken.IssueOptions) { o.Audience = "elsewhere" })
	const password = "hunter2-the-password"

	f.authorize(t, basic("admin", password), "198.51.100.7")
	f.authorize(t, basic("ci", token), "198.51.100.8")
	f.authorize(t, &authv1.Credential{Kind: &authv1.Credential_BearerToken{
		BearerToken: token}}, "198.51.100.9")

	logs := f.log.String()
	for _, secret := range []string{password, token, strings.Split(token, ".")[2]} {
		if strings.Contains(logs, secret) {
			t.Errorf("the log holds a secret %.16q...: %s", secret, logs)
		}
	}
	for _, want := range []string{`"client_address":"198.51.100.7"`, `"user":"admin"`,
		`"reason":"wrong password"`, `"client_address":"198.51.100.8"`, `"method":"jwt"`,
		`invalid audience`, `"method":"registry token"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log lacks %s: %s", want, logs)
		}
	}
}
