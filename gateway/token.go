package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// DefaultTokenService is the service name of Bearer challenges and tokens.
const DefaultTokenService = "keel"

// routeToken is the token endpoint of Docker's bearer-token flow.
const routeToken route = "/token"

// Limits of a token request.
const (
	// maxTokenForm bounds the body of a POST to the token endpoint.
	maxTokenForm = 64 << 10
	// maxScopes bounds the scopes of one token request.
	maxScopes = 32
	// maxScopeLength bounds one scope: a type, a name of at most
	// reference.MaxNameLength and the actions.
	maxScopeLength = 512
)

// tokenFlow is the gateway's side of the bearer-token flow.
type tokenFlow struct {
	// challenge selects Bearer challenges over Basic ones.
	challenge bool
	// realm is the token endpoint's URL; "" means the request's own origin
	// plus /token.
	realm   string
	service string
	proxies proxies
}

// issueToken answers the token endpoint: GET with basic credentials or
// none, as Docker's token specification has it, or the OAuth2 POST form
// (grant_type=password) that containerd and Docker use. The auth service
// signs the token; it grants the part of the requested scopes the caller
// may have.
func (g *gateway) issueToken(w http.ResponseWriter, req *request) error {
	tr, err := parseTokenRequest(req.Request)
	if err != nil {
		return err
	}
	if tr.service != "" && tr.service != g.tokens.service {
		return &tokenError{code: "invalid_request",
			description: fmt.Sprintf("unknown service %.64q", tr.service)}
	}
	access, err := parseScopes(tr.scopes)
	if err != nil {
		return err
	}

	resp, err := g.access.client.IssueToken(req.Context(), &authv1.IssueTokenRequest{
		Credential:    tr.credential,
		Access:        access,
		Service:       g.tokens.service,
		ClientAddress: g.tokens.proxies.clientAddress(req.Request),
	})
	if err != nil {
		return err
	}

	body, err := json.Marshal(tokenResponse{
		Token:       resp.GetToken(),
		AccessToken: resp.GetToken(),
		TokenType:   "Bearer",
		ExpiresIn:   int64(resp.GetExpiresIn().AsDuration() / time.Second),
		IssuedAt:    resp.GetIssuedAt().AsTime().UTC().Format(time.RFC3339),
	})
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	w.Write(body)
	return nil
}

// tokenResponse is the token endpoint's answer: Docker's fields (token,
// expires_in, issued_at) and OAuth2's (access_token, token_type), with the
// same token in both.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// tokenRequest is a token request, GET or POST.
type tokenRequest struct {
	credential *authv1.Credential
	service    string
	// scopes are the raw scope strings, one scope each.
	scopes []string
}

// parseTokenRequest reads a GET (query and Authorization header) or a
// POST form.
func parseTokenRequest(r *http.Request) (tokenRequest, error) {
	if r.Method == http.MethodPost {
		return parseTokenForm(r)
	}

	q := r.URL.Query()
	tr := tokenRequest{service: q.Get("service")}
	for _, s := range q["scope"] {
		tr.scopes = append(tr.scopes, splitScopes(s)...)
	}
	header := r.Header.Get("Authorization")
	if len(header) > maxAuthorizationHeader {
		return tokenRequest{}, ocierr.New(ocierr.Unauthorized, "authorization header too large")
	}
	if _, isBearer := bearerToken(header); isBearer {
		return tokenRequest{}, ocierr.New(ocierr.Unauthorized,
			"log in with a username and password")
	}
	cred, err := parseCredential(header)
	if err != nil {
		return tokenRequest{}, err
	}
	tr.credential = cred

	account := q.Get("account")
	if account != "" && cred != nil && cred.GetBasic().GetUsername() != account {
		return tokenRequest{}, &tokenError{code: "invalid_request",
			description: "account does not match the credentials"}
	}
	return tr, nil
}

// parseTokenForm reads the OAuth2 POST form of a token request.
func parseTokenForm(r *http.Request) (tokenRequest, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/x-www-form-urlencoded" {
		return tokenRequest{}, &tokenError{code: "invalid_request",
			description: "the body must be application/x-www-form-urlencoded"}
	}
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxTokenForm+1))
	if err != nil {
		return tokenRequest{}, fmt.Errorf("read the token form: %w", err)
	}
	if len(raw) > maxTokenForm {
		return tokenRequest{}, &tokenError{code: "invalid_request", description: "form too large"}
	}
	form, err := url.ParseQuery(string(raw))
	if err != nil {
		return tokenRequest{}, &tokenError{code: "invalid_request", description: "malformed form"}
	}

	tr := tokenRequest{service: form.Get("service"), scopes: splitScopes(form.Get("scope"))}
	switch form.Get("grant_type") {
	case "password":
		user, password := form.Get("username"), form.Get("password")
		if user == "" || password == "" {
			return tokenRequest{}, &tokenError{code: "invalid_request",
				description: "username and password are required"}
		}
		tr.credential = &authv1.Credential{Kind: &authv1.Credential_Basic{
			Basic: &authv1.BasicCredential{Username: user, Password: password},
		}}
	case "refresh_token":
		// No refresh tokens are issued, so none can be presented; clients
		// then log in with their password again.
		return tokenRequest{}, &tokenError{code: "unsupported_grant_type",
			description: "refresh tokens are not issued; use grant_type=password"}
	default:
		return tokenRequest{}, &tokenError{code: "unsupported_grant_type",
			description: "grant_type must be password"}
	}
	return tr, nil
}

// splitScopes splits a scope parameter that holds several scopes separated
// by single spaces, as the OAuth2 form does. An empty parameter holds none.
func splitScopes(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, " ")
}

// parseScopes checks scope strings ("repository:team/app:pull,push",
// "registry:catalog:*") strictly: an unknown type or action, a name that is
// not a valid repository name, an empty part or a stray separator makes the
// whole request invalid rather than being skipped.
func parseScopes(scopes []string) ([]*authv1.Access, error) {
	if len(scopes) > maxScopes {
		return nil, &tokenError{code: "invalid_scope", description: "too many scopes"}
	}
	out := make([]*authv1.Access, 0, len(scopes))
	for _, s := range scopes {
		a, err := parseScope(s)
		if err != nil {
			return nil, &tokenError{code: "invalid_scope",
				description: fmt.Sprintf("scope %.80q: %v", s, err)}
		}
		out = append(out, a)
	}
	return out, nil
}

// parseScope reads one scope: type, name and actions separated by ':', the
// name being everything between the first and the last ':'.
func parseScope(s string) (*authv1.Access, error) {
	if len(s) > maxScopeLength {
		return nil, errors.New("too long")
	}
	typ, rest, ok := strings.Cut(s, ":")
	i := strings.LastIndexByte(rest, ':')
	if !ok || i < 0 {
		return nil, errors.New("want type:name:actions")
	}
	name, list := rest[:i], rest[i+1:]
	actions := strings.Split(list, ",")

	switch typ {
	case "repository":
		if reference.ValidateName(name) != nil {
			return nil, errors.New("invalid repository name")
		}
		for _, a := range actions {
			switch a {
			case actionPull, actionPush, actionDelete, actionAll:
			default:
				return nil, fmt.Errorf("unknown action %.32q", a)
			}
		}
	case "registry":
		if name != "catalog" || list != actionAll {
			return nil, errors.New(`the only registry scope is "registry:catalog:*"`)
		}
	default:
		return nil, fmt.Errorf("unknown resource type %.32q", typ)
	}
	return &authv1.Access{Type: typ, Name: name, Actions: actions}, nil
}

// tokenError is an OAuth2 error of the token endpoint (RFC 6749, 5.2),
// answered with 400.
type tokenError struct {
	code        string
	description string
}

func (e *tokenError) Error() string { return "token request: " + e.code + ": " + e.description }

// Unwrap gives the request log a 400 to file the error under; the client
// gets the OAuth2 body from writeTokenError instead.
func (e *tokenError) Unwrap() error {
	return ocierr.New(ocierr.Unsupported, "invalid token request").WithStatus(http.StatusBadRequest)
}

// writeTokenError answers err when it is a tokenError and reports whether
// it did.
func writeTokenError(w http.ResponseWriter, err error) bool {
	var te *tokenError
	if !errors.As(err, &te) {
		return false
	}
	body, _ := json.Marshal(map[string]string{
		"error": te.code, "error_description": te.description,
	})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusBadRequest)
	w.Write(body)
	return true
}

// challenge is the WWW-Authenticate value of a 401 answer to req. With the
// token flow on it is a Bearer challenge naming the token endpoint, the
// service and the scope the request needs (Docker's token specification),
// with an error parameter when a bearer token was refused. The token
// endpoint itself, and every route with the flow off, asks for basic auth.
func (g *gateway) challenge(req *request, err error) string {
	if !g.tokens.challenge || req.route == routeToken {
		return basicChallenge(g.realm)
	}

	realm := g.tokens.realm
	if realm == "" {
		scheme, host := g.tokens.proxies.origin(req.Request)
		realm = scheme + "://" + host + string(routeToken)
	}
	parts := []string{
		"Bearer realm=" + quoted(realm),
		"service=" + quoted(g.tokens.service),
	}
	if s := challengeScope(req); s != "" {
		parts = append(parts, "scope="+quoted(s))
	}
	var ce *challengeError
	if errors.As(err, &ce) {
		parts = append(parts, "error="+quoted(ce.reason))
	}
	return strings.Join(parts, ",")
}

// challengeScope is the scope a client should ask a token for to make req:
// pull to read, pull and push to write (a push reads too), delete to
// delete, the catalog, and pull on the source of a mount.
func challengeScope(req *request) string {
	var out []string
	for _, s := range requiredAccess(req) {
		switch {
		case s.typ == "registry":
			out = append(out, s.String())
		case s.name == "":
		case s.action == actionPush:
			out = append(out, "repository:"+s.name+":pull,push")
		default:
			out = append(out, s.String())
		}
	}
	if from := mountSource(req); from != "" {
		out = append(out, "repository:"+from+":pull")
	}
	return strings.Join(out, " ")
}

// proxies are the networks of reverse proxies whose forwarding headers
// (X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host) are believed. With
// none, they are ignored: a client could set them to anything.
type proxies []netip.Prefix

// trusts reports whether the request came from a trusted proxy.
func (p proxies) trusts(r *http.Request) bool {
	if len(p) == 0 {
		return false
	}
	addr, err := netip.ParseAddr(peerHost(r))
	return err == nil && p.contains(addr)
}

func (p proxies) contains(addr netip.Addr) bool {
	addr = addr.Unmap()
	for _, prefix := range p {
		if prefix.Contains(addr) {
			return true
		}
	}
	return false
}

// clientAddress is the caller's IP address, for rate limits and logs: the
// connection's peer, or, when the peer is a trusted proxy, the nearest
// address in X-Forwarded-For that is not one.
func (p proxies) clientAddress(r *http.Request) string {
	peer := peerHost(r)
	if !p.trusts(r) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		addr, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return peer
		}
		if !p.contains(addr) {
			return addr.Unmap().String()
		}
	}
	return peer
}

// origin returns the scheme and host the client addressed: the request's
// own, or a trusted proxy's X-Forwarded-Proto and X-Forwarded-Host.
func (p proxies) origin(r *http.Request) (scheme, host string) {
	scheme, host = "http", r.Host
	if r.TLS != nil {
		scheme = "https"
	}
	if !p.trusts(r) {
		return scheme, host
	}
	if v, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Proto"), ","); v != "" {
		if v = strings.TrimSpace(strings.ToLower(v)); v == "http" || v == "https" {
			scheme = v
		}
	}
	if v, _, _ := strings.Cut(r.Header.Get("X-Forwarded-Host"), ","); v != "" {
		host = strings.TrimSpace(v)
	}
	return scheme, host
}

// peerHost is the connection's peer address without the port.
func peerHost(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
