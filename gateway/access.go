package gateway

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/ocierr"
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
// UNAUTHORIZED for an anonymous caller, who could log in, and DENIED for one
// who did.
func (g *gateway) authorize(req *request, want ...scope) error {
	d, err := g.access.decide(req.Context(), req.Request, want)
	if err != nil {
		return err
	}
	if d.allows(want) {
		return nil
	}
	if d.anonymous {
		return ocierr.New(ocierr.Unauthorized, "authentication required")
	}
	return ocierr.New(ocierr.Denied, "requested access to the resource is denied")
}

// basicChallenge is the WWW-Authenticate value that asks for basic auth.
func basicChallenge(realm string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `Basic realm="` + r.Replace(realm) + `"`
}

// decision is the auth service's answer about one credential and one set of
// scopes.
type decision struct {
	anonymous bool
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
// scopes, so that no credential is kept in memory in the clear.
type authorizer struct {
	client authv1.AuthServiceClient
	ttl    time.Duration
	max    int

	mu      sync.Mutex
	entries map[[sha256.Size]byte]decision
}

func newAuthorizer(client authv1.AuthServiceClient, ttl time.Duration, limit int) *authorizer {
	return &authorizer{
		client:  client,
		ttl:     ttl,
		max:     limit,
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
		ClientAddress: clientAddress(r),
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

// parseCredential reads an Authorization header: basic auth, a bearer
// token, or nothing for an anonymous caller.
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
	case "bearer":
		if value == "" {
			return nil, ocierr.New(ocierr.Unauthorized, "empty bearer token")
		}
		return &authv1.Credential{Kind: &authv1.Credential_BearerToken{BearerToken: value}}, nil
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

// clientAddress is the caller's IP address as the connection shows it.
// Forwarding headers are not trusted.
func clientAddress(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
