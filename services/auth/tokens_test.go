package auth

import (
	"context"
	"crypto/x509"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/logintoken"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/registrytoken"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// verifierFor is what a gateway builds from ListSigningKeys.
func verifierFor(t *testing.T, s *Server, audience string) *registrytoken.Verifier {
	t.Helper()
	resp, err := s.ListSigningKeys(testContext(t), &authv1.ListSigningKeysRequest{})
	if err != nil {
		t.Fatalf("ListSigningKeys() error = %v", err)
	}
	var keys []registrytoken.Key
	for _, k := range resp.GetKeys() {
		pub, err := x509.ParsePKIXPublicKey(k.GetPublicKey())
		if err != nil {
			t.Fatalf("ListSigningKeys() key %s is not PKIX: %v", k.GetKid(), err)
		}
		keys = append(keys, registrytoken.Key{
			ID: k.GetKid(), Algorithm: jwtkey.Algorithm(k.GetAlgorithm()), Public: pub,
		})
	}
	return registrytoken.NewVerifier(keys, resp.GetIssuer(), audience, s.now)
}

func TestIssueTokenGrantsTheIntersection(t *testing.T) {
	s := newTestServer(t, true)
	tests := []struct {
		name    string
		cred    *authv1.Credential
		access  []*authv1.Access
		subject string
		want    []registrytoken.Access
	}{
		{
			name:    "writer gets what it asks",
			cred:    basic("writer", "w-secret"),
			access:  []*authv1.Access{repo("team/app", "pull", "push"), catalog},
			subject: "writer",
			want: []registrytoken.Access{
				{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}},
				{Type: "registry", Name: "catalog", Actions: []string{"*"}},
			},
		},
		{
			name:    "reader asking to push gets pull only",
			cred:    basic("reader", "r-secret:with-colon"),
			access:  []*authv1.Access{repo("team/app", "pull", "push", "delete")},
			subject: "reader",
			want: []registrytoken.Access{
				{Type: "repository", Name: "team/app", Actions: []string{"pull"}},
			},
		},
		{
			name: "anonymous gets pull only; what it may not have is named with no actions",
			access: []*authv1.Access{repo("team/app", "pull", "push"), catalog,
				repo("Bad/Name", "pull")},
			want: []registrytoken.Access{
				{Type: "repository", Name: "team/app", Actions: []string{"pull"}},
				{Type: "registry", Name: "catalog", Actions: []string{}},
			},
		},
		{
			name:    "no scope: a token granting nothing, as for docker login",
			cred:    basic("reader", "r-secret:with-colon"),
			subject: "reader",
			want:    []registrytoken.Access{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := s.IssueToken(testContext(t), &authv1.IssueTokenRequest{
				Credential: tt.cred, Access: tt.access, Service: "keel",
			})
			if err != nil {
				t.Fatalf("IssueToken() error = %v", err)
			}
			if resp.GetSubject() != tt.subject {
				t.Errorf("IssueToken().Subject = %q, want %q", resp.GetSubject(), tt.subject)
			}
			if got := resp.GetExpiresIn().AsDuration(); got != DefaultTokenTTL {
				t.Errorf("IssueToken().ExpiresIn = %v, want %v", got, DefaultTokenTTL)
			}

			claims, err := verifierFor(t, s, "keel").Verify(resp.GetToken())
			if err != nil {
				t.Fatalf("verify the issued token: %v", err)
			}
			if !slices.EqualFunc(claims.Access, tt.want, sameAccess) {
				t.Errorf("token access = %+v, want %+v", claims.Access, tt.want)
			}
			if claims.Subject != tt.subject || claims.Issuer != DefaultIssuer ||
				!slices.Equal(claims.Audience, jwt.ClaimStrings{"keel"}) || claims.ID == "" {
				t.Errorf("token claims = %+v, want sub %q, iss keel, aud keel and a jti",
					claims.RegisteredClaims, tt.subject)
			}
			if !claims.ExpiresAt.Time.Equal(resp.GetIssuedAt().AsTime().Add(DefaultTokenTTL)) {
				t.Errorf("token exp = %v, want issued_at + %v", claims.ExpiresAt, DefaultTokenTTL)
			}
		})
	}
}

func sameAccess(a, b registrytoken.Access) bool {
	return a.Type == b.Type && a.Name == b.Name && slices.Equal(a.Actions, b.Actions)
}

func TestIssueTokenRefuses(t *testing.T) {
	s := newTestServer(t, false)
	good, err := s.IssueToken(testContext(t), &authv1.IssueTokenRequest{
		Credential: basic("writer", "w-secret"), Access: []*authv1.Access{repo("a", "pull")},
	})
	if err != nil {
		t.Fatalf("IssueToken(writer) error = %v", err)
	}

	tests := []struct {
		name string
		req  *authv1.IssueTokenRequest
		code ocierr.Code
	}{
		{"wrong password", &authv1.IssueTokenRequest{Credential: basic("writer", "x")},
			ocierr.Unauthorized},
		{"anonymous without anonymous rules", &authv1.IssueTokenRequest{}, ocierr.Unauthorized},
		{"a registry token exchanged for another", &authv1.IssueTokenRequest{
			Credential: &authv1.Credential{Kind: &authv1.Credential_BearerToken{
				BearerToken: good.GetToken()}},
		}, ocierr.Unauthorized},
		{"another service", &authv1.IssueTokenRequest{
			Credential: basic("writer", "w-secret"), Service: "other",
		}, ocierr.Denied},
	}
	for _, tt := range tests {
		resp, err := s.IssueToken(testContext(t), tt.req)
		if !ocierr.Is(err, tt.code) {
			t.Errorf("IssueToken(%s) = %v, %v; want %s", tt.name, resp, err, tt.code)
		}
	}
}

func TestIssueTokenDoesNotOutliveTheLogin(t *testing.T) {
	f := newLoginFixture(t)
	login := f.issue(t, func(o *logintoken.IssueOptions) {
		o.NotBefore = testNow.Add(-time.Hour)
		o.TTL = time.Hour + time.Minute
	})

	resp, err := f.s.IssueToken(testContext(t), &authv1.IssueTokenRequest{
		Credential: basic("ci", login), Access: []*authv1.Access{repo("team/app", "pull")},
	})

	if err != nil {
		t.Fatalf("IssueToken(JWT login) error = %v", err)
	}
	if got := resp.GetExpiresIn().AsDuration(); got != time.Minute {
		t.Errorf("IssueToken().ExpiresIn = %v, want the login's remaining 1m", got)
	}
}

// TestRegistryTokenGrantsExactlyItsClaim checks Authorize with the bearer
// tokens IssueToken signs: a token for one repository grants nothing on
// another, and a pull-only token no push or delete.
func TestRegistryTokenGrantsExactlyItsClaim(t *testing.T) {
	s := newTestServer(t, false)
	issue := func(access ...*authv1.Access) *authv1.Credential {
		resp, err := s.IssueToken(testContext(t), &authv1.IssueTokenRequest{
			Credential: basic("writer", "w-secret"), Access: access,
		})
		if err != nil {
			t.Fatalf("IssueToken() error = %v", err)
		}
		return &authv1.Credential{Kind: &authv1.Credential_BearerToken{BearerToken: resp.Token}}
	}
	pullA := issue(repo("team/a", "pull"))
	pushA := issue(repo("team/a", "pull", "push"))

	tests := []struct {
		name string
		cred *authv1.Credential
		want *authv1.Access
		got  []string
	}{
		{"token for a used on b", pullA, repo("team/b", "pull"), nil},
		{"pull-only token used to push", pullA, repo("team/a", "push"), nil},
		{"pull-only token used to delete", pullA, repo("team/a", "delete"), nil},
		{"pull-only token asking for everything", pullA, repo("team/a", "*"), nil},
		{"pull-only token used for the catalog", pullA, catalog, nil},
		{"pull-only token used to pull", pullA, repo("team/a", "pull"),
			[]string{"repository:team/a:pull"}},
		{"push token used to push", pushA, repo("team/a", "push"),
			[]string{"repository:team/a:push"}},
	}
	for _, tt := range tests {
		resp, err := s.Authorize(testContext(t), &authv1.AuthorizeRequest{
			Credential: tt.cred, Access: []*authv1.Access{tt.want},
		})
		if err != nil {
			t.Fatalf("Authorize(%s) error = %v", tt.name, err)
		}
		if got := grants(resp); !slices.Equal(got, tt.got) {
			t.Errorf("Authorize(%s) granted %q, want %q", tt.name, got, tt.got)
		}
	}
}

func TestListSigningKeys(t *testing.T) {
	key, _ := jwtkey.Generate(jwtkey.EdDSA)
	keys, err := StaticKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(Config{Keys: keys, Issuer: "registry.example"})
	if err != nil {
		t.Fatal(err)
	}

	resp, err := s.ListSigningKeys(testContext(t), &authv1.ListSigningKeysRequest{})

	if err != nil {
		t.Fatalf("ListSigningKeys() error = %v", err)
	}
	kid, _ := jwtkey.KeyID(key.Public())
	der, _ := jwtkey.MarshalPublicKey(key.Public())
	if resp.GetIssuer() != "registry.example" || len(resp.GetKeys()) != 1 {
		t.Fatalf("ListSigningKeys() = %v, want one key and issuer registry.example", resp)
	}
	k := resp.GetKeys()[0]
	if k.GetKid() != kid || k.GetAlgorithm() != "EdDSA" ||
		string(k.GetPublicKey()) != string(der) || k.GetNotAfter() != nil {
		t.Errorf("ListSigningKeys() key = %v, want kid %s, EdDSA, its PKIX DER, no end", k, kid)
	}
}

// openTestStore returns a store on a fresh bucket of the shared embedded
// S3 server.
func openTestStore(t *testing.T) *objstore.Store {
	t.Helper()
	cfg := s3test.Start(t)
	st, err := objstore.New(testContext(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func openKeyring(t *testing.T, ctx context.Context, st *objstore.Store, at time.Time) *Keyring {
	t.Helper()
	k, err := OpenKeyring(ctx, st, KeyringOptions{Rotation: time.Hour, TokenTTL: 5 * time.Minute},
		at)
	if err != nil {
		t.Fatalf("OpenKeyring() error = %v", err)
	}
	return k
}

func kids(keys []registrytoken.Key) []string {
	var out []string
	for _, k := range keys {
		out = append(out, k.ID)
	}
	slices.Sort(out)
	return out
}

// TestKeyringReplicasAgreeAndRotate runs two keyrings on one bucket, as
// two auth replicas would: they sign with the same key, publish the next
// one a period ahead, switch together, and drop a key once its tokens have
// expired.
func TestKeyringReplicasAgreeAndRotate(t *testing.T) {
	ctx := testContext(t)
	st := openTestStore(t)
	t0 := time.Date(2026, 6, 1, 12, 0, 30, 0, time.UTC)

	var a, b *Keyring
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a = openKeyring(t, ctx, st, t0) }()
	go func() { defer wg.Done(); b = openKeyring(t, ctx, st, t0) }()
	wg.Wait()
	if t.Failed() {
		return
	}

	objects, _, _, err := st.List(ctx, layout.Key(layout.SigningKeys{}), "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"signingkeys/20260601T120000Z", "signingkeys/20260601T130000Z"}
	if !slices.Equal(objects, want) {
		t.Fatalf("stored keys = %q, want %q (current and next period)", objects, want)
	}
	signA, errA := a.signingKey(t0)
	signB, errB := b.signingKey(t0)
	if errA != nil || errB != nil || signA.ID != signB.ID {
		t.Fatalf("replicas sign with %s (%v) and %s (%v), want one key", signA.ID, errA,
			signB.ID, errB)
	}
	if got := kids(a.publicKeys(t0)); !slices.Equal(got, kids(b.publicKeys(t0))) || len(got) != 2 {
		t.Errorf("replicas publish %q and %q, want the same two keys", got, kids(b.publicKeys(t0)))
	}

	// The next period: both switch to the key published an hour ahead, and
	// a third one is created.
	t1 := t0.Add(time.Hour)
	if err := a.Refresh(ctx, t1); err != nil {
		t.Fatalf("Refresh(t1) error = %v", err)
	}
	if err := b.Refresh(ctx, t1); err != nil {
		t.Fatalf("Refresh(t1) error = %v", err)
	}
	nextA, _ := a.signingKey(t1)
	nextB, _ := b.signingKey(t1)
	if nextA.ID == signA.ID || nextA.ID != nextB.ID {
		t.Errorf("after rotation replicas sign with %s and %s, want one new key (was %s)",
			nextA.ID, nextB.ID, signA.ID)
	}
	if got := kids(a.publicKeys(t1)); len(got) != 3 || !slices.Contains(got, signA.ID) {
		t.Errorf("after rotation the published keys are %q, want 3 with the old %s, "+
			"whose tokens are still valid", got, signA.ID)
	}

	// Once every token the old key signed has expired, it is removed.
	t2 := t0.Add(time.Hour + 5*time.Minute + time.Minute + time.Second)
	if err := a.Refresh(ctx, t2); err != nil {
		t.Fatalf("Refresh(t2) error = %v", err)
	}
	if got := kids(a.publicKeys(t2)); slices.Contains(got, signA.ID) || len(got) != 2 {
		t.Errorf("after retention the published keys are %q, want 2 without %s", got, signA.ID)
	}
	objects, _, _, _ = st.List(ctx, layout.Key(layout.SigningKeys{}), "", "", 0)
	if slices.Contains(objects, "signingkeys/20260601T120000Z") {
		t.Errorf("stored keys after retention = %q, want the expired one deleted", objects)
	}
}

// TestKeyringTokensVerifyAcrossReplicas signs on one replica and verifies
// with the keys another publishes.
func TestKeyringTokensVerifyAcrossReplicas(t *testing.T) {
	ctx := testContext(t)
	st := openTestStore(t)
	now := time.Now()
	newServer := func() *Server {
		s, err := NewServer(Config{
			Users: []User{{Name: "writer", Password: "w", Access: ReadWrite}},
			Keys:  openKeyring(t, ctx, st, now),
		})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b := newServer(), newServer()

	resp, err := a.IssueToken(ctx, &authv1.IssueTokenRequest{
		Credential: basic("writer", "w"), Access: []*authv1.Access{repo("x", "push")},
	})
	if err != nil {
		t.Fatalf("IssueToken() error = %v", err)
	}

	if _, err := verifierFor(t, b, "keel").Verify(resp.GetToken()); err != nil {
		t.Errorf("a token from replica a does not verify with replica b's keys: %v", err)
	}
	granted, err := b.Authorize(ctx, &authv1.AuthorizeRequest{
		Credential: &authv1.Credential{Kind: &authv1.Credential_BearerToken{
			BearerToken: resp.GetToken()}},
		Access: []*authv1.Access{repo("x", "push")},
	})
	if err != nil || !slices.Equal(grants(granted), []string{"repository:x:push"}) {
		t.Errorf("replica b Authorize(a's token) = %v, %v; want push on x", granted, err)
	}
}

func TestKeyringIgnoresACorruptObject(t *testing.T) {
	ctx := testContext(t)
	st := openTestStore(t)
	now := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	_, err := st.Put(ctx, layout.Key(layout.SigningKey{ID: "junk"}), []byte("{not json"),
		objstore.Condition{})
	if err != nil {
		t.Fatal(err)
	}

	k, err := OpenKeyring(ctx, st, KeyringOptions{Rotation: time.Hour}, now)
	if err == nil || !strings.Contains(err.Error(), "junk") {
		t.Errorf("OpenKeyring() error = %v, want one naming the corrupt object", err)
	}
	if k != nil {
		t.Errorf("OpenKeyring() = %v with an error, want nil", k)
	}
}

func TestOpenKeyringRefusesShortRotation(t *testing.T) {
	st := openTestStore(t)
	for _, o := range []KeyringOptions{
		{Rotation: time.Minute},
		{Rotation: 15 * time.Minute, TokenTTL: 10 * time.Minute},
	} {
		if _, err := OpenKeyring(testContext(t), st, o, time.Now()); err == nil {
			t.Errorf("OpenKeyring(%+v) error = nil, want an error", o)
		}
	}
}

// TestKeyringLosingTheCreateRaceLoadsTheWinner creates a period's key that
// another replica created first: the conditional write fails and the
// winner's key is the one used.
func TestKeyringLosingTheCreateRaceLoadsTheWinner(t *testing.T) {
	ctx := testContext(t)
	st := openTestStore(t)
	t0 := time.Date(2026, 6, 1, 12, 0, 30, 0, time.UTC)
	winner := openKeyring(t, ctx, st, t0)
	want, err := winner.signingKey(t0)
	if err != nil {
		t.Fatal(err)
	}
	loser := &Keyring{store: st, alg: jwtkey.ES256, rotation: time.Hour, retain: time.Hour}

	got, err := loser.create(ctx, "20260601T120000Z", t0.Truncate(time.Hour))

	if err != nil {
		t.Fatalf("create(an existing period) error = %v", err)
	}
	if got.ID != want.ID {
		t.Errorf("create(an existing period) = key %s, want the winner's %s", got.ID, want.ID)
	}
}
