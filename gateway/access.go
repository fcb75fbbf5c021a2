package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
	"github.com/keel-registry/keel/internal/registrytoken"
)

const (
	// maxAuthorizationHeader bounds the Authorization header; a longer one
	// is refused without asking the auth service.
	maxAuthorizationHeader = 8 << 10
	// maxAuthCacheEntries bounds the authorization cache.
	maxAuthCacheEntries = 10000
)

// The actions and resources of a Docker token scope.
const (
	actionPull   = "pull"
	actionPush   = "push"
	actionDelete = "delete"
	actionAll    = "*"
)

// scope is one action on one resource, as in "repository:library/alpine:pull".
type scope struct {
	typ, name, action string
}

func (s scope) String() string { return s.typ + ":" + s.name + ":" + s.action }

// repositoryScope is action on repository name.
func repositoryScope(name, action string) scope {
	return scope{typ: "repository", name: name, action: action}
}

// catalogScope is listing the catalog.
var catalogScope = scope{typ: "registry", name: "catalog", action: actionAll}

// requiredAccess is what a request needs: pull to read, push to write,
// delete to delete, and the catalog scope to list repositories. The base
// route needs only a valid caller.
func requiredAccess(req *request) []scope {
	switch req.route {
	case routeBase:
		return nil
	case routeCatalog:
		return []scope{catalogScope}
	}
	switch req.Method {
	case http.MethodGet, http.MethodHead:
		return []scope{repositoryScope(req.name, actionPull)}
	case http.MethodDelete:
		return []scope{repositoryScope(req.name, actionDelete)}
	}
	return []scope{repositoryScope(req.name, actionPush)}
}

// authorize fails unless the caller may take every action in want: with
// UNAUTHORIZED for an anonymous caller, who could log in, and for a bearer
// token lacking the scope, whose holder may get a wider one from the token
// endpoint; with DENIED for a caller who logged in.
func (g *gateway) authorize(req *request, want ...scope) error {
	d, err := g.access.decide(req.Context(), req.Request, want)
	if err != nil {
		return err
	}
	if d.anonymous && req.route == routeBase && g.tokens.challenge {
		// With the token flow on, /v2/ asks anonymous callers for a token
		// (an anonymous one will do), as Docker's token servers do: clients
		// learn the realm there, and "docker login" checks the credentials.
		return ocierr.New(ocierr.Unauthorized, "authentication required")
	}
	if d.allows(want) {
		if from := mountSource(req); from != "" && d.bearer && !d.mentioned[from] {
			// A token that never asked about the mount's source: challenge
			// the client to ask, as Docker's registry does. A token that
			// asked and was refused mentions the source with no actions,
			// and the mount falls back to an upload.
			return &challengeError{
				err: ocierr.New(ocierr.Unauthorized,
					"the token does not cover the mount source"),
				reason: "insufficient_scope",
			}
		}
		return nil
	}
	if d.anonymous {
		return ocierr.New(ocierr.Unauthorized, "authentication required")
	}
	if d.bearer {
		return &challengeError{
			err: ocierr.New(ocierr.Unauthorized,
				"the token does not grant the access requested"),
			reason: "insufficient_scope",
		}
	}
	return ocierr.New(ocierr.Denied, "requested access to the resource is denied")
}

// challengeError is an UNAUTHORIZED answer whose Bearer challenge carries an
// error parameter (RFC 6750): "invalid_token" or "insufficient_scope".
type challengeError struct {
	err    *ocierr.Error
	reason string
	// cause is logged, never sent.
	cause error
}

func (e *challengeError) Error() string {
	if e.cause != nil {
		return e.err.Error() + " (" + e.reason + ": " + e.cause.Error() + ")"
	}
	return e.err.Error() + " (" + e.reason + ")"
}

// Unwrap makes the error its OCI error for the client.
func (e *challengeError) Unwrap() error { return e.err }

// quotedPairs escapes the characters a quoted-string cannot hold as such.
var quotedPairs = strings.NewReplacer(`\`, `\\`, `"`, `\"`)

// quoted returns s as an HTTP quoted-string.
func quoted(s string) string {
	return `"` + quotedPairs.Replace(s) + `"`
}

// basicChallenge is the WWW-Authenticate value that asks for basic auth.
func basicChallenge(realm string) string {
	return `Basic realm=` + quoted(realm)
}

// decision is the auth service's answer about one credential and one set of
// scopes, or what a verified bearer token grants.
type decision struct {
	anonymous bool
	// bearer marks a decision from a registry token; mentioned holds the
	// repositories its access claim names, granted actions or not.
	bearer    bool
	mentioned map[string]bool
	granted   map[scope]bool
	// err is an UNAUTHORIZED answer, cached like a grant so that a bad
	// password is not re-checked on every request.
	err     error
	expires time.Time
}

// allows reports whether every scope in want is granted, directly or by a
// "*" action on its resource.
func (d decision) allows(want []scope) bool {
	for _, s := range want {
		all := scope{typ: s.typ, name: s.name, action: actionAll}
		if !d.granted[s] && !d.granted[all] {
			return false
		}
	}
	return true
}

// authorizer asks the auth service about credentials and caches the answers
// for a short time, keyed by a hash of the Authorization header and the
// scopes, so that no credential is kept in memory in the clear. Bearer
// tokens it verifies itself, with the auth service's public keys, and
// caches what they grant, keyed by a hash of the token, until they expire
// or the TTL passes.
type authorizer struct {
	client  authv1.AuthServiceClient
	keys    *keySet
	ttl     time.Duration
	max     int
	proxies proxies

	mu      sync.Mutex
	entries map[[sha256.Size]byte]decision
}

func newAuthorizer(
	client authv1.AuthServiceClient, keys *keySet, ttl time.Duration, limit int, p proxies,
) *authorizer {
	return &authorizer{
		client:  client,
		keys:    keys,
		ttl:     ttl,
		max:     limit,
		proxies: p,
		entries: make(map[[sha256.Size]byte]decision),
	}
}

// decide returns the decision for r's credential and want, from the cache
// when it is fresh. A credential the auth service refused comes back as the
// decision's error.
func (a *authorizer) decide(ctx context.Context, r *http.Request, want []scope) (decision, error) {
	header := r.Header.Get("Authorization")
	if len(header) > maxAuthorizationHeader {
		return decision{}, ocierr.New(ocierr.Unauthorized, "authorization header too large")
	}
	if token, ok := bearerToken(header); ok {
		return a.decideBearer(ctx, header, token)
	}
	key := cacheKey(header, want)
	if d, ok := a.lookup(key); ok {
		return d, d.err
	}

	cred, err := parseCredential(header)
	if err != nil {
		return decision{}, err
	}
	resp, err := a.client.Authorize(ctx, &authv1.AuthorizeRequest{
		Credential:    cred,
		Access:        accessProto(want),
		ClientAddress: a.proxies.clientAddress(r),
	})

	d := decision{anonymous: cred == nil, expires: time.Now().Add(a.ttl)}
	switch {
	case err == nil:
		d.granted = grantedSet(resp)
	case ocierr.Is(err, ocierr.Unauthorized):
		d.err = err
	default:
		return decision{}, err
	}
	a.store(key, d)
	return d, d.err
}

// decideBearer verifies a registry token, or takes what it grants from the
// cache. A token that does not verify is cached as refused, like a wrong
// password.
func (a *authorizer) decideBearer(ctx context.Context, header, token string) (decision, error) {
	key := cacheKey(header, nil)
	if d, ok := a.lookup(key); ok {
		return d, d.err
	}

	claims, err := a.keys.verify(ctx, token)
	if ocierr.Is(err, ocierr.Unavailable) {
		return decision{}, err
	}
	d := decision{bearer: true, expires: time.Now().Add(a.ttl)}
	if err != nil {
		d.err = &challengeError{
			err:    ocierr.New(ocierr.Unauthorized, "invalid bearer token"),
			reason: "invalid_token",
			cause:  err,
		}
		if errors.Is(err, registrytoken.ErrUnknownKey) {
			// Not cached: the key may be new, and the next try, past the
			// key set's fetch gap, may know it.
			return d, d.err
		}
	} else {
		d.granted, d.mentioned = claimedSet(claims.Access)
		if exp := claims.ExpiresAt.Time; exp.Before(d.expires) {
			d.expires = exp
		}
	}
	a.store(key, d)
	return d, d.err
}

func (a *authorizer) lookup(key [sha256.Size]byte) (decision, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()

	d, ok := a.entries[key]
	if !ok {
		return decision{}, false
	}
	if !time.Now().Before(d.expires) {
		delete(a.entries, key)
		return decision{}, false
	}
	return d, true
}

// store caches d. When the cache is full it drops the expired entries, and
// then arbitrary ones until there is room. That eviction is not LRU: a flood
// of distinct credentials can push out entries still in use, which then cost
// one more Authorize call each.
func (a *authorizer) store(key [sha256.Size]byte, d decision) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if len(a.entries) >= a.max {
		now := time.Now()
		for k, e := range a.entries {
			if !now.Before(e.expires) {
				delete(a.entries, k)
			}
		}
		for k := range a.entries {
			if len(a.entries) < a.max {
				break
			}
			delete(a.entries, k)
		}
	}
	a.entries[key] = d
}

// cacheKey hashes the Authorization header and the scopes.
func cacheKey(header string, want []scope) [sha256.Size]byte {
	h := sha256.New()
	h.Write([]byte(header))
	for _, s := range want {
		h.Write([]byte{0})
		h.Write([]byte(s.String()))
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	return key
}

// bearerToken returns the token of a "Bearer" Authorization header.
func bearerToken(header string) (string, bool) {
	scheme, value, _ := strings.Cut(header, " ")
	if !strings.EqualFold(scheme, "bearer") {
		return "", false
	}
	return strings.TrimSpace(value), true
}

// parseCredential reads an Authorization header other than a bearer token
// (see bearerToken): basic auth, or nothing for an anonymous caller.
func parseCredential(header string) (*authv1.Credential, error) {
	if header == "" {
		return nil, nil
	}
	scheme, value, _ := strings.Cut(header, " ")
	value = strings.TrimSpace(value)
	switch strings.ToLower(scheme) {
	case "basic":
		raw, err := base64.StdEncoding.DecodeString(value)
		if err != nil {
			return nil, ocierr.New(ocierr.Unauthorized, "malformed basic credentials")
		}
		user, password, ok := strings.Cut(string(raw), ":")
		if !ok {
			return nil, ocierr.New(ocierr.Unauthorized, "malformed basic credentials")
		}
		return &authv1.Credential{Kind: &authv1.Credential_Basic{
			Basic: &authv1.BasicCredential{Username: user, Password: password},
		}}, nil
	}
	return nil, ocierr.New(ocierr.Unauthorized, "unsupported authorization scheme")
}

func accessProto(want []scope) []*authv1.Access {
	out := make([]*authv1.Access, len(want))
	for i, s := range want {
		out[i] = &authv1.Access{Type: s.typ, Name: s.name, Actions: []string{s.action}}
	}
	return out
}

func grantedSet(resp *authv1.AuthorizeResponse) map[scope]bool {
	set := map[scope]bool{}
	for _, g := range resp.GetGranted() {
		for _, action := range g.GetActions() {
			set[scope{typ: g.GetType(), name: g.GetName(), action: action}] = true
		}
	}
	return set
}

// claimedSet flattens a token's access claim, and lists the repositories
// it names.
func claimedSet(access []registrytoken.Access) (map[scope]bool, map[string]bool) {
	set, names := map[scope]bool{}, map[string]bool{}
	for _, a := range access {
		if a.Type == "repository" {
			names[a.Name] = true
		}
		for _, action := range a.Actions {
			set[scope{typ: a.Type, name: a.Name, action: action}] = true
		}
	}
	return set, names
}

// mountSource returns the valid source repository of a cross-repository
// mount request, or "".
func mountSource(req *request) string {
	if req.route != routeUploads || req.Method != http.MethodPost {
		return ""
	}
	q := req.URL.Query()
	from := q.Get("from")
	if !q.Has("mount") || from == "" || reference.ValidateName(from) != nil {
		return ""
	}
	return from
}
