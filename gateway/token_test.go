package gateway_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keel-registry/keel/gateway"
	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/registrytoken"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
	"github.com/keel-registry/keel/services/auth"
)

// swappableAuth is the real auth service behind a pointer that a test can
// swap (to rotate keys), counting the calls of each method.
type swappableAuth struct {
	authv1.UnimplementedAuthServiceServer
	server     atomic.Pointer[auth.Server]
	authorizes atomic.Int64
	issues     atomic.Int64
	lists      atomic.Int64
}

func (a *swappableAuth) Authorize(
	ctx context.Context, req *authv1.AuthorizeRequest,
) (*authv1.AuthorizeResponse, error) {
	a.authorizes.Add(1)
	return a.server.Load().Authorize(ctx, req)
}

func (a *swappableAuth) IssueToken(
	ctx context.Context, req *authv1.IssueTokenRequest,
) (*authv1.IssueTokenResponse, error) {
	a.issues.Add(1)
	return a.server.Load().IssueToken(ctx, req)
}

func (a *swappableAuth) ListSigningKeys(
	ctx context.Context, req *authv1.ListSigningKeysRequest,
) (*authv1.ListSigningKeysResponse, error) {
	a.lists.Add(1)
	return a.server.Load().ListSigningKeys(ctx, req)
}

// tokenHarness is a gateway with the token flow on, in front of the real
// auth service (with a signing key the test holds, to forge tokens with)
// and the in-memory upload and manifest services.
type tokenHarness struct {
	*harness
	auth *swappableAuth
	// key is the auth service's signing key, kid its id.
	key crypto.Signer
	kid string
}

// tokenPolicy: the writer and reader users, plus anonymous pulls of
// public/*.
const tokenPolicy = `
rules:
  - subjects: [anonymous]
    repositories: ["public/**"]
    actions: [pull]
`

func newAuthServer(t testing.TB, key crypto.Signer) *auth.Server {
	t.Helper()
	keys, err := auth.StaticKeyring(key)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := auth.ParsePolicy([]byte(tokenPolicy))
	if err != nil {
		t.Fatal(err)
	}
	s, err := auth.NewServer(auth.Config{
		Users: []auth.User{
			{Name: writerName, Password: writerPass, Access: auth.ReadWrite},
			{Name: readerName, Password: readerPass, Access: auth.ReadOnly},
		},
		Policy: pol,
		Keys:   keys,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatalf("auth.NewServer() error = %v", err)
	}
	return s
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := jwtkey.Generate(jwtkey.ES256)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func newTokenHarness(t testing.TB, options func(*gateway.Options)) *tokenHarness {
	t.Helper()
	key := newKey(t)
	kid, _ := jwtkey.KeyID(key.Public())
	th := &tokenHarness{
		harness: &harness{uploads: newFakeUploads(), manifests: newFakeManifests(),
			logs: &telemetrytest.LogBuffer{}},
		auth: &swappableAuth{},
		key:  key,
		kid:  kid,
	}
	th.auth.server.Store(newAuthServer(t, key))

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	authv1.RegisterAuthServiceServer(gs, th.auth)
	uploadv1.RegisterUploadServiceServer(gs, th.uploads)
	manifestv1.RegisterManifestServiceServer(gs, th.manifests)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() error = %v", err)
	}
	t.Cleanup(func() { conn.Close() })

	opts := gateway.Options{
		Auth:      authv1.NewAuthServiceClient(conn),
		Uploads:   uploadv1.NewUploadServiceClient(conn),
		Manifests: manifestv1.NewManifestServiceClient(conn),
		Logger:    slog.New(slog.NewJSONHandler(th.logs, nil)),
		TokenAuth: true,
	}
	if options != nil {
		options(&opts)
	}
	th.handler = gateway.New(opts)
	srv := httptest.NewServer(th.handler)
	t.Cleanup(srv.Close)
	th.url = srv.URL
	th.host = strings.TrimPrefix(srv.URL, "http://")
	return th
}

// tokenAnswer is the token endpoint's JSON.
type tokenAnswer struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int    `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// getToken asks GET /token for scopes as user (none for anonymous) and
// returns the response.
func (th *tokenHarness) getToken(
	t *testing.T, user, pass string, scopes ...string,
) (*http.Response, []byte) {
	t.Helper()
	q := url.Values{"service": {"keel"}, "scope": scopes}
	req, err := http.NewRequestWithContext(testContext(t), http.MethodGet,
		th.url+"/token?"+q.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return send(t, req)
}

// token returns a token for scopes as user, failing the test otherwise.
func (th *tokenHarness) token(t *testing.T, user, pass string, scopes ...string) string {
	t.Helper()
	resp, body := th.getToken(t, user, pass, scopes...)
	wantStatus(t, resp, body, http.StatusOK)
	var a tokenAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.Token == "" {
		t.Fatalf("GET /token body = %s, want a token (%v)", body, err)
	}
	return a.Token
}

// bearer sends method path with Authorization: Bearer token.
func (th *tokenHarness) bearer(
	t *testing.T, token, method, path string, body io.Reader,
) (*http.Response, []byte) {
	t.Helper()
	req := th.newRequest(t, method, path, body)
	req.Header.Set("Authorization", "Bearer "+token)
	return send(t, req)
}

func TestTokenEndpointGET(t *testing.T) {
	th := newTokenHarness(t, nil)
	before := time.Now().Add(-time.Second)

	resp, body := th.getToken(t, writerName, writerPass,
		"repository:team/app:pull,push", "registry:catalog:*")

	wantStatus(t, resp, body, http.StatusOK)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /token Content-Type = %q, want application/json", ct)
	}
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("GET /token Cache-Control = %q, want no-store", cc)
	}
	var a tokenAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		t.Fatalf("GET /token body %s: %v", body, err)
	}
	issued, err := time.Parse(time.RFC3339, a.IssuedAt)
	if a.Token == "" || a.AccessToken != a.Token || a.ExpiresIn != 300 || err != nil ||
		issued.Before(before) || issued.After(time.Now()) {
		t.Errorf("GET /token = %+v, want token = access_token, expires_in 300 and an "+
			"RFC 3339 issued_at of now", a)
	}

	claims := th.claims(t, a.Token)
	want := map[string][]string{"team/app": {"pull", "push"}, "catalog": {"*"}}
	if len(claims.Access) != 2 {
		t.Fatalf("token access = %+v, want %v", claims.Access, want)
	}
	for _, acc := range claims.Access {
		if strings.Join(acc.Actions, ",") != strings.Join(want[acc.Name], ",") {
			t.Errorf("token access %+v, want actions %v", acc, want[acc.Name])
		}
	}
	if claims.Subject != writerName || !strings.EqualFold(claims.Audience[0], "keel") {
		t.Errorf("token sub %q aud %q, want writer and keel", claims.Subject, claims.Audience)
	}
}

// claims verifies a token with the harness's key.
func (th *tokenHarness) claims(t *testing.T, token string) registrytoken.Claims {
	t.Helper()
	v := registrytoken.NewVerifier([]registrytoken.Key{{ID: th.kid, Algorithm: jwtkey.ES256,
		Public: th.key.Public()}}, "keel", "keel", nil)
	c, err := v.Verify(token)
	if err != nil {
		t.Fatalf("verify the issued token: %v", err)
	}
	return c
}

func TestTokenEndpointPOSTForm(t *testing.T) {
	th := newTokenHarness(t, nil)
	post := func(form url.Values, contentType string) (*http.Response, []byte) {
		req, err := http.NewRequestWithContext(testContext(t), http.MethodPost, th.url+"/token",
			strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		return send(t, req)
	}
	form := url.Values{
		"grant_type": {"password"}, "username": {readerName}, "password": {readerPass},
		"service": {"keel"}, "client_id": {"containerd-client"},
		"scope": {"repository:team/app:pull,push repository:team/web:pull"},
	}

	resp, body := post(form, "application/x-www-form-urlencoded")

	wantStatus(t, resp, body, http.StatusOK)
	var a tokenAnswer
	if err := json.Unmarshal(body, &a); err != nil || a.AccessToken == "" ||
		a.TokenType != "Bearer" || a.ExpiresIn != 300 {
		t.Fatalf("POST /token body = %s (%v), want access_token, token_type Bearer and "+
			"expires_in 300", body, err)
	}
	claims := th.claims(t, a.AccessToken)
	if len(claims.Access) != 2 || strings.Join(claims.Access[0].Actions, ",") != "pull" {
		t.Errorf("reader's token access = %+v, want pull only on both", claims.Access)
	}

	refused := []struct {
		name, contentType string
		form              url.Values
		status            int
		code              string
	}{
		{"refresh token grant", "application/x-www-form-urlencoded",
			url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"x"}},
			400, "unsupported_grant_type"},
		{"no grant type", "application/x-www-form-urlencoded",
			url.Values{"username": {readerName}, "password": {readerPass}},
			400, "unsupported_grant_type"},
		{"JSON body", "application/json", form, 400, "invalid_request"},
		{"no password", "application/x-www-form-urlencoded",
			url.Values{"grant_type": {"password"}, "username": {readerName}},
			400, "invalid_request"},
		{"odd scope", "application/x-www-form-urlencoded", url.Values{
			"grant_type": {"password"}, "username": {readerName}, "password": {readerPass},
			"scope": {"repository:team/app:pull;push"}}, 400, "invalid_scope"},
		{"wrong password", "application/x-www-form-urlencoded", url.Values{
			"grant_type": {"password"}, "username": {readerName}, "password": {"nope"}},
			401, "UNAUTHORIZED"},
	}
	for _, r := range refused {
		resp, body := post(r.form, r.contentType)
		if resp.StatusCode != r.status || !strings.Contains(string(body), `"`+r.code+`"`) {
			t.Errorf("POST /token (%s) = %d %s, want %d with %s", r.name, resp.StatusCode, body,
				r.status, r.code)
		}
	}
}

func TestTokenEndpointAnonymousAndRefusals(t *testing.T) {
	th := newTokenHarness(t, nil)

	anon := th.token(t, "", "", "repository:public/app:pull,push", "repository:team/app:pull")
	claims := th.claims(t, anon)
	if claims.Subject != "" || len(claims.Access) != 2 ||
		claims.Access[0].Name != "public/app" ||
		strings.Join(claims.Access[0].Actions, ",") != "pull" ||
		claims.Access[1].Name != "team/app" || len(claims.Access[1].Actions) != 0 {
		t.Errorf("anonymous token = %+v, want pull on public/app and nothing on team/app",
			claims)
	}

	resp, body := th.bearer(t, anon, http.MethodGet, "/v2/", nil)
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = th.bearer(t, anon, http.MethodGet, "/v2/public/app/tags/list", nil)
	wantError(t, resp, body, http.StatusNotFound, "NAME_UNKNOWN")
	resp, body = th.bearer(t, anon, http.MethodGet, "/v2/team/app/tags/list", nil)
	wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")

	resp, body = th.getToken(t, writerName, "nope", "repository:team/app:pull")
	wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
	if got := resp.Header.Get("WWW-Authenticate"); got != `Basic realm="keel"` {
		t.Errorf("GET /token with a wrong password: WWW-Authenticate = %q, want Basic", got)
	}

	req := th.newRequest(t, http.MethodGet, "/token?scope=repository:team/app:pull", nil)
	req.Header.Set("Authorization", "Bearer "+anon)
	resp, body = send(t, req)
	wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")

	req = th.newRequest(t, http.MethodGet, "/token?account=someone-else", nil)
	resp, body = send(t, req)
	wantStatus(t, resp, body, http.StatusBadRequest)
	req = th.newRequest(t, http.MethodGet, "/token?service=other", nil)
	resp, body = send(t, req)
	wantStatus(t, resp, body, http.StatusBadRequest)
	req = th.newRequest(t, http.MethodPut, "/token", nil)
	resp, body = send(t, req)
	wantStatus(t, resp, body, http.StatusMethodNotAllowed)
}

// TestTokenEndpointRefusesOddScopes sends scope strings with odd separators,
// names and actions; each must be refused as a whole with invalid_scope.
func TestTokenEndpointRefusesOddScopes(t *testing.T) {
	th := newTokenHarness(t, nil)
	odd := []string{
		"repository:team/app:pull;push",
		"repository:team/app:pull|push",
		"repository:team/app:pull,,push",
		"repository:team/app:pull,",
		"repository:team/app:",
		"repository:team/app::pull",
		"repository::pull",
		"repository:team/app",
		"repository",
		"repository:team/../app:pull",
		"repository:../app:pull",
		"repository:team/./app:pull",
		"repository:team//app:pull",
		"repository:/team/app:pull",
		"repository:Team/App:pull",
		"repository:team/app:PULL",
		"repository:team/app:admin",
		"repository:team/app:pull\tpush",
		"repository:team/app:pull\n",
		"repository:team%2fapp:pull",
		"repository:localhost:5000/team/app:pull",
		"repository:team/äpp:pull",
		"repository(plugin):team/app:pull",
		"registry:catalog:pull",
		"registry:other:*",
		"blob:team/app:pull",
		":team/app:pull",
		"repository:" + strings.Repeat("a", 600) + ":pull",
	}
	for _, scope := range odd {
		resp, body := th.getToken(t, writerName, writerPass, scope)
		if resp.StatusCode != http.StatusBadRequest ||
			!strings.Contains(string(body), `"invalid_scope"`) {
			t.Errorf("GET /token scope=%q = %d %s, want 400 invalid_scope",
				scope, resp.StatusCode, body)
		}
	}

	// Several scopes in one parameter are split on single spaces only.
	resp, body := th.getToken(t, writerName, writerPass,
		"repository:a:pull  repository:b:pull")
	wantStatus(t, resp, body, http.StatusBadRequest)
	many := make([]string, 33)
	for i := range many {
		many[i] = "repository:a:pull"
	}
	resp, body = th.getToken(t, writerName, writerPass, many...)
	wantStatus(t, resp, body, http.StatusBadRequest)

	if n := th.auth.issues.Load(); n != 0 {
		t.Errorf("IssueToken calls for refused scopes = %d, want 0", n)
	}
	ok := th.token(t, writerName, writerPass, "repository:a/b-c_d.e:pull,push,delete,*",
		"repository:a:pull repository:b:pull")
	if got := len(th.claims(t, ok).Access); got != 3 {
		t.Errorf("token for three valid scopes holds %d entries, want 3", got)
	}
}

func TestBearerChallenge(t *testing.T) {
	th := newTokenHarness(t, nil)
	realm := `Bearer realm="` + th.url + `/token",service="keel"`
	tests := []struct {
		method, path, want string
	}{
		{http.MethodGet, "/v2/", realm},
		{http.MethodGet, "/v2/team/app/manifests/v1", realm + `,scope="repository:team/app:pull"`},
		{http.MethodHead, "/v2/team/app/blobs/" + sha256Digest([]byte("x")),
			realm + `,scope="repository:team/app:pull"`},
		{http.MethodPost, "/v2/team/app/blobs/uploads/",
			realm + `,scope="repository:team/app:pull,push"`},
		{http.MethodDelete, "/v2/team/app/manifests/v1",
			realm + `,scope="repository:team/app:delete"`},
		{http.MethodGet, "/v2/_catalog", realm + `,scope="registry:catalog:*"`},
	}
	for _, tt := range tests {
		req := th.newRequest(t, tt.method, tt.path, nil)
		req.Header.Del("Authorization")
		resp, body := send(t, req)
		wantStatus(t, resp, body, http.StatusUnauthorized)
		if got := resp.Header.Get("WWW-Authenticate"); got != tt.want {
			t.Errorf("anonymous %s %s WWW-Authenticate = %q, want %q",
				tt.method, tt.path, got, tt.want)
		}
	}

	// Basic credentials still work on the API with the token flow on.
	resp, body := th.do(t, http.MethodGet, "/v2/", nil)
	wantStatus(t, resp, body, http.StatusOK)
}

func TestBearerChallengeRealmFromConfigAndProxies(t *testing.T) {
	configured := newTokenHarness(t, func(o *gateway.Options) {
		o.TokenRealm = "https://auth.example/token"
		o.TokenService = "registry.example"
	})
	req := configured.newRequest(t, http.MethodGet, "/v2/", nil)
	req.Header.Del("Authorization")
	resp, _ := send(t, req)
	want := `Bearer realm="https://auth.example/token",service="registry.example"`
	if got := resp.Header.Get("WWW-Authenticate"); got != want {
		t.Errorf("WWW-Authenticate with a configured realm = %q, want %q", got, want)
	}

	proxied := newTokenHarness(t, func(o *gateway.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	untrusted := newTokenHarness(t, func(o *gateway.Options) {
		o.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	for _, c := range []struct {
		h    *tokenHarness
		want string
	}{
		{proxied, `Bearer realm="https://registry.example/token",service="keel"`},
		{untrusted, `Bearer realm="` + untrusted.url + `/token",service="keel"`},
	} {
		req := c.h.newRequest(t, http.MethodGet, "/v2/", nil)
		req.Header.Del("Authorization")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-Host", "registry.example")
		resp, _ := send(t, req)
		if got := resp.Header.Get("WWW-Authenticate"); got != c.want {
			t.Errorf("WWW-Authenticate behind a proxy = %q, want %q", got, c.want)
		}
	}
}

// TestBearerFlowNeedsNoAuthorizeCalls pushes and pulls a blob with a token
// from the token endpoint: the gateway verifies the token itself.
func TestBearerFlowNeedsNoAuthorizeCalls(t *testing.T) {
	th := newTokenHarness(t, nil)
	token := th.token(t, writerName, writerPass, "repository:team/app:pull,push")
	blob := []byte("layer bytes")
	d := sha256Digest(blob)

	resp, body := th.bearer(t, token, http.MethodPost, "/v2/team/app/blobs/uploads/?digest="+d,
		strings.NewReader(string(blob)))
	wantStatus(t, resp, body, http.StatusCreated)
	for range 3 {
		resp, body = th.bearer(t, token, http.MethodGet, "/v2/team/app/blobs/"+d, nil)
		wantStatus(t, resp, body, http.StatusOK)
	}

	if string(body) != string(blob) {
		t.Errorf("GET blob with a token = %q, want %q", body, blob)
	}
	if n := th.auth.authorizes.Load(); n != 0 {
		t.Errorf("Authorize calls for bearer requests = %d, want 0", n)
	}
	if n := th.auth.lists.Load(); n != 1 {
		t.Errorf("ListSigningKeys calls = %d, want 1 (fetched once, then cached)", n)
	}
}

// forge signs claims with method and key under the harness's kid.
func (th *tokenHarness) forge(
	t *testing.T, method jwt.SigningMethod, claims registrytoken.Claims, key any,
) string {
	t.Helper()
	tok := jwt.NewWithClaims(method, claims)
	tok.Header["kid"] = th.kid
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatalf("forge %s: %v", method.Alg(), err)
	}
	return s
}

// validClaims grant pull and push on team/app for five minutes from now.
func validClaims() registrytoken.Claims {
	now := time.Now()
	return registrytoken.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: "keel", Subject: writerName, Audience: jwt.ClaimStrings{"keel"},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute)),
		},
		Access: []registrytoken.Access{
			{Type: "repository", Name: "team/app", Actions: []string{"pull", "push"}},
		},
	}
}

// TestBearerRefusesAttacks sends each forged, stale or misused bearer token
// to a route it would otherwise open; every one is refused.
func TestBearerRefusesAttacks(t *testing.T) {
	th := newTokenHarness(t, nil)
	pubDER, _ := x509.MarshalPKIXPublicKey(th.key.Public())
	with := func(change func(*registrytoken.Claims)) registrytoken.Claims {
		c := validClaims()
		change(&c)
		return c
	}
	es256 := jwt.SigningMethodES256
	good := th.forge(t, es256, validClaims(), th.key)
	parts := strings.Split(good, ".")
	pullOnly := th.token(t, writerName, writerPass, "repository:team/app:pull")
	readerToken := th.token(t, readerName, readerPass, "repository:team/app:pull,push")
	head := func(repo string) (string, string) {
		return http.MethodGet, "/v2/" + repo + "/blobs/" + sha256Digest([]byte("nothing"))
	}

	resp, body := th.bearer(t, good, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)

	type attack struct {
		name, token, method, path, reason string
	}
	invalid := func(name, token string) attack {
		m, p := head("team/app")
		return attack{name, token, m, p, "invalid_token"}
	}
	attacks := []attack{
		invalid("alg none", th.forge(t, jwt.SigningMethodNone, validClaims(),
			jwt.UnsafeAllowNoneSignatureType)),
		invalid("HS256 signed with the public key as the secret",
			th.forge(t, jwt.SigningMethodHS256, validClaims(), pubDER)),
		invalid("HS256 signed with the base64 public key as the secret",
			th.forge(t, jwt.SigningMethodHS256, validClaims(),
				[]byte(base64.StdEncoding.EncodeToString(pubDER)))),
		invalid("expired", th.forge(t, es256, with(func(c *registrytoken.Claims) {
			c.IssuedAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
			c.NotBefore = c.IssuedAt
			c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Minute))
		}), th.key)),
		invalid("not yet valid", th.forge(t, es256, with(func(c *registrytoken.Claims) {
			c.NotBefore = jwt.NewNumericDate(time.Now().Add(5 * time.Minute))
		}), th.key)),
		invalid("wrong audience", th.forge(t, es256, with(func(c *registrytoken.Claims) {
			c.Audience = jwt.ClaimStrings{"another-registry"}
		}), th.key)),
		invalid("wrong issuer", th.forge(t, es256, with(func(c *registrytoken.Claims) {
			c.Issuer = "mallory"
		}), th.key)),
		invalid("no expiry", th.forge(t, es256, with(func(c *registrytoken.Claims) {
			c.ExpiresAt = nil
		}), th.key)),
		invalid("tampered signature", parts[0]+"."+parts[1]+"."+flipFirst(parts[2])),
		invalid("tampered claims", parts[0]+"."+base64.RawURLEncoding.EncodeToString(
			[]byte(`{"iss":"keel","aud":"keel","exp":9999999999,"access":[{"type":`+
				`"repository","name":"team/secret","actions":["*"]}]}`))+"."+parts[2]),
		invalid("signed by an unknown key", func() string {
			tok := jwt.NewWithClaims(es256, validClaims())
			tok.Header["kid"] = "not-a-known-key"
			s, _ := tok.SignedString(newKey(t))
			return s
		}()),
		invalid("another key claiming the known kid", th.forge(t, es256, validClaims(),
			newKey(t))),
		invalid("garbage", "abc.def.ghi"),
		invalid("empty", ""),
		{"token for team/app used on team/other", good, http.MethodGet,
			"/v2/team/other/blobs/" + sha256Digest([]byte("x")), "insufficient_scope"},
		{"pull-only token used to push", pullOnly, http.MethodPost,
			"/v2/team/app/blobs/uploads/", "insufficient_scope"},
		{"pull-only token used to delete", pullOnly, http.MethodDelete,
			"/v2/team/app/manifests/v1", "insufficient_scope"},
		{"read-only user's token used to push", readerToken, http.MethodPost,
			"/v2/team/app/blobs/uploads/", "insufficient_scope"},
		{"pull-only token used for the catalog", pullOnly, http.MethodGet, "/v2/_catalog",
			"insufficient_scope"},
	}
	for _, a := range attacks {
		t.Run(a.name, func(t *testing.T) {
			resp, body := th.bearer(t, a.token, a.method, a.path, nil)
			wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
			challenge := resp.Header.Get("WWW-Authenticate")
			if !strings.HasPrefix(challenge, "Bearer realm=") ||
				!strings.Contains(challenge, `error="`+a.reason+`"`) {
				t.Errorf("WWW-Authenticate = %q, want a Bearer challenge with error=%q",
					challenge, a.reason)
			}
		})
	}
	if n := th.auth.authorizes.Load(); n != 0 {
		t.Errorf("Authorize calls for bearer tokens = %d, want 0", n)
	}
}

func flipFirst(s string) string {
	if s[0] == 'A' {
		return "B" + s[1:]
	}
	return "A" + s[1:]
}

func TestReadOnlyLoginPushIsDenied(t *testing.T) {
	th := newTokenHarness(t, nil)
	req := th.newRequest(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	req.SetBasicAuth(readerName, readerPass)

	resp, body := send(t, req)

	wantError(t, resp, body, http.StatusForbidden, "DENIED")
}

func TestOversizedAuthorizationHeaderIsRefused(t *testing.T) {
	th := newTokenHarness(t, nil)
	huge := "Bearer " + strings.Repeat("a", 9000)
	for _, path := range []string{"/v2/team/app/manifests/v1", "/token"} {
		req := th.newRequest(t, http.MethodGet, path, nil)
		req.Header.Set("Authorization", huge)
		resp, body := send(t, req)
		wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
	}
	if n := th.auth.authorizes.Load() + th.auth.lists.Load() + th.auth.issues.Load(); n != 0 {
		t.Errorf("auth service calls for oversized headers = %d, want 0", n)
	}
}

// TestKeysRotateWithoutRestart swaps the auth service for one with a new
// signing key: the gateway fetches the new key as soon as a token names it,
// and forged unknown key ids cannot make it fetch in a loop.
func TestKeysRotateWithoutRestart(t *testing.T) {
	th := newTokenHarness(t, nil)
	old := th.token(t, writerName, writerPass, "repository:team/app:pull")
	resp, body := th.bearer(t, old, http.MethodGet, "/v2/", nil)
	wantStatus(t, resp, body, http.StatusOK)
	if n := th.auth.lists.Load(); n != 1 {
		t.Fatalf("ListSigningKeys calls = %d, want 1", n)
	}

	th.auth.server.Store(newAuthServer(t, newKey(t)))
	fresh := th.token(t, writerName, writerPass, "repository:team/app:pull")
	resp, body = th.bearer(t, fresh, http.MethodGet, "/v2/", nil)
	// Right after a fetch the gateway does not fetch again: the token is
	// refused, but not remembered as bad.
	wantStatus(t, resp, body, http.StatusUnauthorized)
	time.Sleep(1100 * time.Millisecond)
	resp, body = th.bearer(t, fresh, http.MethodGet, "/v2/", nil)

	wantStatus(t, resp, body, http.StatusOK)
	if n := th.auth.lists.Load(); n != 2 {
		t.Errorf("ListSigningKeys calls after a token with a new key = %d, want 2", n)
	}
	for i := range 5 {
		tok := jwt.NewWithClaims(jwt.SigningMethodES256, validClaims())
		tok.Header["kid"] = "forged-" + string(rune('a'+i))
		s, _ := tok.SignedString(newKey(t))
		resp, body := th.bearer(t, s, http.MethodGet, "/v2/", nil)
		wantStatus(t, resp, body, http.StatusUnauthorized)
	}
	if n := th.auth.lists.Load(); n != 2 {
		t.Errorf("ListSigningKeys calls after forged key ids = %d, want still 2 "+
			"(rate-limited)", n)
	}
}

func TestTokenLogLinesHoldNoSecrets(t *testing.T) {
	th := newTokenHarness(t, nil)
	token := th.token(t, writerName, writerPass, "repository:team/app:pull")
	th.bearer(t, token, http.MethodGet, "/v2/", nil)
	th.bearer(t, token+"x", http.MethodGet, "/v2/", nil)

	secret := regexp.MustCompile(regexp.QuoteMeta(strings.Split(token, ".")[2]) + "|" +
		regexp.QuoteMeta(writerPass))
	for _, l := range th.logs.Records(t) {
		if s, _ := json.Marshal(l); secret.Match(s) {
			t.Errorf("log line %s holds a secret", s)
		}
	}
}

// TestBearerMountAsksForTheSourceScope: a token that never asked about a
// mount's source gets a challenge naming it; one that asked and was
// refused falls back to an upload session.
func TestBearerMountAsksForTheSourceScope(t *testing.T) {
	th := newTokenHarness(t, nil)
	d := th.pushBlob(t, "team/src", []byte("shared layer"))
	mount := "/v2/team/app/blobs/uploads/?mount=" + d + "&from=team/src"

	narrow := th.token(t, writerName, writerPass, "repository:team/app:pull,push")
	resp, body := th.bearer(t, narrow, http.MethodPost, mount, nil)
	wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
	want := `Bearer realm="` + th.url + `/token",service="keel",scope="repository:team/app:` +
		`pull,push repository:team/src:pull",error="insufficient_scope"`
	if got := resp.Header.Get("WWW-Authenticate"); got != want {
		t.Errorf("mount with a token lacking the source: WWW-Authenticate = %q, want %q",
			got, want)
	}

	wide := th.token(t, writerName, writerPass, "repository:team/app:pull,push",
		"repository:team/src:pull")
	resp, body = th.bearer(t, wide, http.MethodPost, mount, nil)
	wantStatus(t, resp, body, http.StatusCreated)

	refused := validClaims()
	refused.Access = append(refused.Access,
		registrytoken.Access{Type: "repository", Name: "team/src", Actions: []string{}})
	resp, body = th.bearer(t, th.forge(t, jwt.SigningMethodES256, refused, th.key),
		http.MethodPost, "/v2/team/app/blobs/uploads/?mount="+d+"&from=team/src", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
}
