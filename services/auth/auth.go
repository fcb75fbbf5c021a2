// Package auth is the registry's auth service: it checks the credential a
// caller presents, decides which of the requested actions it may take, and
// issues the registry tokens of the Docker bearer-token flow.
//
// Callers are configured users with passwords (HTTP basic auth), JWT logins
// (a token the operator signed, sent as a basic-auth password), registry
// tokens this service issued, and anonymous callers. What each may do comes
// from the built-in rules of the configured users and anonymous pulls, plus
// a policy of per-repository rules; everything else is denied.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/logintoken"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
	"github.com/keel-registry/keel/internal/registrytoken"
	"github.com/keel-registry/keel/internal/repopattern"
)

// Access is what a user may do in every repository.
type Access int

const (
	// ReadOnly allows pulls and the catalog. It is the zero value, so a user
	// whose access was never set gets the least.
	ReadOnly Access = iota
	// ReadWrite allows pulls, pushes, deletes and the catalog.
	ReadWrite
)

// String names the access level.
func (a Access) String() string {
	switch a {
	case ReadOnly:
		return "read-only"
	case ReadWrite:
		return "read-write"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

// The actions and resources of a Docker token scope.
const (
	actionAll = "*"

	typeRepository = "repository"
	typeRegistry   = "registry"
	nameCatalog    = "catalog"
)

// rule returns the built-in policy rule of user name with access a: every
// action, or pull and the catalog, on every repository.
func (a Access) rule(name string) rule {
	grant := canPull | canCatalog
	if a == ReadWrite {
		grant = canAll
	}
	return rule{
		subjects: map[string]bool{name: true},
		patterns: []repopattern.Pattern{repopattern.MustCompile("**")},
		actions:  grant,
	}
}

// User is a configured account.
type User struct {
	// Name is the username of basic auth.
	Name string
	// Password is the password of basic auth.
	Password string
	// Access is what the user may do.
	Access Access
}

// String describes the user without its password, so that printing or
// logging a User never leaks it.
func (u User) String() string {
	return fmt.Sprintf("%s (%s)", u.Name, u.Access)
}

// GoString describes the user without its password for %#v.
func (u User) GoString() string {
	return fmt.Sprintf("auth.User{Name: %q, Access: %s}", u.Name, u.Access)
}

// ParseUser reads a user from "name:password", as set in one environment
// variable, and gives it access a. The password may contain ':'.
func ParseUser(s string, a Access) (User, error) {
	name, password, ok := strings.Cut(s, ":")
	if !ok || name == "" || password == "" {
		return User{}, errors.New(`auth: user must be "name:password" with both parts non-empty`)
	}
	u := User{Name: name, Password: password, Access: a}
	if err := u.validate(); err != nil {
		return User{}, err
	}
	return u, nil
}

func (u User) validate() error {
	if u.Name == "" || u.Password == "" {
		return errors.New("auth: a user needs a name and a password")
	}
	if strings.Contains(u.Name, ":") {
		return fmt.Errorf("auth: user name %q contains ':'", u.Name)
	}
	if u.Name == Anonymous {
		return fmt.Errorf("auth: user name %q is reserved for callers without credentials",
			Anonymous)
	}
	if u.Access != ReadOnly && u.Access != ReadWrite {
		return fmt.Errorf("auth: user %q has unknown access %s", u.Name, u.Access)
	}
	return nil
}

// Defaults for the zero values of Config.
const (
	// DefaultIssuer is the iss of registry tokens.
	DefaultIssuer = "keel"
	// DefaultService is the service registry tokens are issued for (their
	// aud), as the gateway names it in its challenges.
	DefaultService = "keel"
)

// Config is the service's configuration.
type Config struct {
	// Users are the accounts that may log in with a password. A read-write
	// user may do everything everywhere, a read-only one pull everywhere;
	// both may list the catalog.
	Users []User
	// AnonymousPull lets callers without a credential pull from every
	// repository. False leaves anonymous pulls to the policy's rules for
	// Anonymous; with none, anonymous callers may do nothing.
	AnonymousPull bool
	// Policy grants per-repository permissions on top of the built-in ones
	// of Users and AnonymousPull.
	Policy Policy
	// Logins verifies JWT logins; nil turns them off.
	Logins *logintoken.Verifier
	// Keys sign registry tokens. nil means a key generated in this process,
	// which suits one replica only (see generatedKeyring).
	Keys *Keyring
	// Issuer is the iss of registry tokens. "" means DefaultIssuer.
	Issuer string
	// Service is the service registry tokens are issued for. "" means
	// DefaultService.
	Service string
	// TokenTTL is how long a registry token is valid. 0 means
	// DefaultTokenTTL.
	TokenTTL time.Duration
	// FailureLimit is how many failed logins one client address may make
	// per minute. 0 means DefaultFailureLimit.
	FailureLimit int
	// Logger gets a line for every failed or refused login, never with the
	// secret presented. nil means slog.Default().
	Logger *slog.Logger
}

// account is a user as the server keeps it: the password only as a hash.
type account struct {
	passwordHash [sha256.Size]byte
}

// Server implements authv1.AuthServiceServer.
type Server struct {
	authv1.UnimplementedAuthServiceServer

	accounts map[string]account
	policy   policy
	logins   *logintoken.Verifier
	keys     *Keyring
	issuer   string
	service  string
	tokenTTL time.Duration
	limiter  *failureLimiter
	log      *slog.Logger
	// now is the clock; tests replace it.
	now func() time.Time
}

// NewServer returns a server for cfg. It refuses invalid or duplicate
// users and an invalid policy. With no users, no policy rules and
// AnonymousPull false, it refuses every request.
func NewServer(cfg Config) (*Server, error) {
	s := &Server{
		accounts: make(map[string]account, len(cfg.Users)),
		logins:   cfg.Logins,
		keys:     cfg.Keys,
		issuer:   orDefault(cfg.Issuer, DefaultIssuer),
		service:  orDefault(cfg.Service, DefaultService),
		tokenTTL: cfg.TokenTTL,
		log:      cfg.Logger,
		now:      time.Now,
	}
	if s.tokenTTL <= 0 {
		s.tokenTTL = DefaultTokenTTL
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	limit := cfg.FailureLimit
	if limit <= 0 {
		limit = DefaultFailureLimit
	}
	s.limiter = newFailureLimiter(limit)

	pol, err := compilePolicy(cfg.Policy)
	if err != nil {
		return nil, err
	}
	s.policy = pol
	for _, u := range cfg.Users {
		if err := u.validate(); err != nil {
			return nil, err
		}
		if _, dup := s.accounts[u.Name]; dup {
			return nil, fmt.Errorf("auth: user %q is configured twice", u.Name)
		}
		s.accounts[u.Name] = account{passwordHash: sha256.Sum256([]byte(u.Password))}
		s.policy.add(u.Access.rule(u.Name))
	}
	if cfg.AnonymousPull {
		s.policy.add(rule{
			subjects: map[string]bool{Anonymous: true},
			patterns: []repopattern.Pattern{repopattern.MustCompile("**")},
			actions:  canPull,
		})
	}

	if s.keys == nil {
		if s.keys, err = generatedKeyring(); err != nil {
			return nil, err
		}
	}
	if s.keys.store != nil && s.tokenTTL+2*registrytoken.Leeway > s.keys.retain {
		return nil, fmt.Errorf("auth: token lifetime %v outlives the keyring's retention %v",
			s.tokenTTL, s.keys.retain)
	}
	return s, nil
}

// orDefault returns v, or def when v is empty.
func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// principal is a caller whose credential checked out.
type principal struct {
	subject   string
	anonymous bool
	// login is set for a JWT login: its claims limit what the policy
	// grants.
	login *logintoken.Login
	// token is set for a registry token: its access claim is exactly what
	// the caller may do.
	token *registrytoken.Claims
}

// policySubject is the name the policy knows the caller by.
func (p principal) policySubject() string {
	if p.anonymous {
		return Anonymous
	}
	return p.subject
}

// Authorize resolves the caller and returns the requested access it is
// granted. A bad credential fails with UNAUTHORIZED; so does an anonymous
// caller when no rule lets anonymous callers pull anything. A client
// address with too many failed logins fails with TOOMANYREQUESTS.
func (s *Server) Authorize(
	ctx context.Context, req *authv1.AuthorizeRequest,
) (*authv1.AuthorizeResponse, error) {
	p, err := s.identify(ctx, req.GetCredential(), req.GetClientAddress())
	if err != nil {
		return nil, err
	}

	resp := &authv1.AuthorizeResponse{Subject: p.subject}
	for _, want := range req.GetAccess() {
		if g := s.grant(p, want); g != nil {
			resp.Granted = append(resp.Granted, g)
		}
	}
	return resp, nil
}

// errBadLogin is what a caller learns of any failed login; the reason is
// only logged.
var errBadLogin = ocierr.New(ocierr.Unauthorized, "invalid username or password")

// identify checks a credential and returns who presented it. Failed logins
// are logged and counted against the client address.
func (s *Server) identify(
	ctx context.Context, cred *authv1.Credential, addr string,
) (principal, error) {
	if cred.GetKind() == nil {
		if !s.policy.names(Anonymous) {
			return principal{}, ocierr.New(ocierr.Unauthorized, "authentication required")
		}
		return principal{anonymous: true}, nil
	}

	now := s.now()
	if !s.limiter.allow(addr, now) {
		s.log.LogAttrs(ctx, slog.LevelWarn, "login refused: too many failed logins",
			slog.String("client_address", addr))
		// Every attempt from the address is refused while it waits, the
		// right password included: answering that one differently would
		// let a guesser go on at full speed.
		wait := int(math.Ceil(s.limiter.wait(addr, now).Seconds()))
		return principal{}, ocierr.New(ocierr.TooManyRequests,
			"too many failed logins; try again later").
			With(ocierr.RetryAfterKey, strconv.Itoa(max(wait, 1)))
	}

	var p principal
	var method, user string
	var err error
	switch c := cred.GetKind().(type) {
	case *authv1.Credential_Basic:
		user = c.Basic.GetUsername()
		method, p, err = s.checkBasic(user, c.Basic.GetPassword())
	case *authv1.Credential_BearerToken:
		method = "registry token"
		p, err = s.checkRegistryToken(c.BearerToken)
	default:
		method = "unknown"
		err = errors.New("unsupported credential")
	}
	if err != nil {
		s.limiter.fail(addr, now)
		s.log.LogAttrs(ctx, slog.LevelWarn, "login failed",
			slog.String("client_address", addr),
			slog.String("user", truncate(user, maxLoggedUser)),
			slog.String("method", method),
			slog.String("reason", err.Error()))
		return principal{}, errBadLogin
	}
	return p, nil
}

// maxLoggedUser bounds the user name in a log line.
const maxLoggedUser = 64

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// unknownUserHash is compared against when the user does not exist, so an
// unknown name costs the same hashing and comparing as a wrong password.
var unknownUserHash = sha256.Sum256([]byte("keel: no such user"))

// looksLikeLogin reports whether a basic credential is a JWT login: JWT
// logins are on, the name is no configured user, and the password has a
// JWS's three parts.
func (s *Server) looksLikeLogin(name, password string) bool {
	_, known := s.accounts[name]
	return s.logins != nil && !known && strings.Count(password, ".") == 2
}

// checkBasic verifies a basic credential: a configured user's password, or
// else a JWT login whose subject is the user name. method names which, for
// the log.
func (s *Server) checkBasic(name, password string) (method string, p principal, err error) {
	if s.looksLikeLogin(name, password) {
		p, err = s.checkLogin(name, password)
		return "jwt", p, err
	}
	if err := s.checkPassword(name, password); err != nil {
		return "password", principal{}, err
	}
	return "password", principal{subject: name}, nil
}

// checkPassword compares SHA-256 hashes in constant time, so neither the
// password's length nor its common prefix with the right one shows in the
// timing.
func (s *Server) checkPassword(name, password string) error {
	acct, known := s.accounts[name]
	want := acct.passwordHash
	if !known {
		want = unknownUserHash
	}

	got := sha256.Sum256([]byte(password))
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	if !known {
		return errors.New("unknown user")
	}
	if !match {
		return errors.New("wrong password")
	}
	return nil
}

// checkLogin verifies a JWT login. The user name must be the token's
// subject, so that logs and the policy name the same caller.
//
// There is no list of revoked login tokens: one stays valid until its exp
// unless the operator key changes or its subject loses its policy rules.
func (s *Server) checkLogin(name, token string) (principal, error) {
	login, err := s.logins.Verify(token)
	if err != nil {
		return principal{}, err
	}
	if login.Subject != name {
		return principal{}, fmt.Errorf("user name is not the token's subject %q",
			truncate(login.Subject, maxLoggedUser))
	}
	if login.Subject == Anonymous {
		return principal{}, errors.New("a login token may not be for anonymous")
	}
	return principal{subject: login.Subject, login: &login}, nil
}

// checkRegistryToken verifies a registry token this service issued.
func (s *Server) checkRegistryToken(token string) (principal, error) {
	v := registrytoken.NewVerifier(s.keys.publicKeys(s.now()), s.issuer, s.service, s.now)
	claims, err := v.Verify(token)
	if err != nil {
		return principal{}, err
	}
	return principal{subject: claims.Subject, anonymous: claims.Subject == "", token: &claims}, nil
}

// grant returns the part of want that p may have, or nil for none of it.
// Malformed or unknown resources and actions are simply not granted.
func (s *Server) grant(p principal, want *authv1.Access) *authv1.Access {
	var granted []string
	switch {
	case p.token != nil:
		granted = tokenGrant(p.token.Access, want)
	case want.GetType() == typeRepository:
		if reference.ValidateName(want.GetName()) != nil {
			return nil
		}
		allowed := s.repositoryActions(p, want.GetName())
		for _, a := range dedupe(want.GetActions()) {
			if bit, ok := requestBits[a]; ok && allowed.has(bit) {
				granted = append(granted, a)
			}
		}
	case want.GetType() == typeRegistry && want.GetName() == nameCatalog:
		if slices.Contains(want.GetActions(), actionAll) && s.catalogAllowed(p) {
			granted = []string{actionAll}
		}
	}
	if len(granted) == 0 {
		return nil
	}
	return &authv1.Access{Type: want.GetType(), Name: want.GetName(), Actions: granted}
}

// requestBits maps the actions of a repository scope to policy actions;
// "*" needs all of them.
var requestBits = map[string]actions{
	ActionPull: canPull, ActionPush: canPush, ActionDelete: canDelete, actionAll: canRepository,
}

// repositoryActions returns what p may do on repository name: the policy's
// grant, limited by a JWT login's own claims.
func (s *Server) repositoryActions(p principal, name string) actions {
	allowed := s.policy.allowed(p.policySubject(), name)
	if p.login == nil {
		return allowed
	}
	var limit actions
	for _, c := range []logintoken.Capability{logintoken.Pull, logintoken.Push,
		logintoken.Delete} {
		if p.login.Allows(c, name) {
			limit |= actionBits[string(c)]
		}
	}
	return allowed & limit
}

// catalogAllowed reports whether p may list the catalog.
func (s *Server) catalogAllowed(p principal) bool {
	if p.anonymous || !s.policy.catalog(p.subject) {
		return false
	}
	return p.login == nil || p.login.Allows(logintoken.Catalog, "")
}

// tokenGrant returns the actions of want that a registry token's access
// claim holds, exactly: a token grants nothing beyond what it names.
func tokenGrant(claim []registrytoken.Access, want *authv1.Access) []string {
	var out []string
	for _, a := range dedupe(want.GetActions()) {
		for _, c := range claim {
			if c.Type == want.GetType() && c.Name == want.GetName() &&
				(slices.Contains(c.Actions, a) || slices.Contains(c.Actions, actionAll)) {
				out = append(out, a)
				break
			}
		}
	}
	return out
}

// dedupe returns actions without repeats, in their first order.
func dedupe(actions []string) []string {
	out := make([]string, 0, len(actions))
	for _, a := range actions {
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}
