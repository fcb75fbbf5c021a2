// Package auth is the registry's auth service: it checks the credential a
// caller presents and decides which of the requested actions it may take.
//
// This version knows configured users with passwords (HTTP basic auth) and
// optional anonymous pulls. Bearer tokens are recognised but refused until
// token issuing is added.
package auth

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"strings"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
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
	actionPull   = "pull"
	actionPush   = "push"
	actionDelete = "delete"
	actionAll    = "*"

	typeRepository = "repository"
	typeRegistry   = "registry"
	nameCatalog    = "catalog"
)

// allows reports whether a grants action on a repository.
func (a Access) allows(action string) bool {
	switch action {
	case actionPull:
		return a == ReadOnly || a == ReadWrite
	case actionPush, actionDelete, actionAll:
		return a == ReadWrite
	}
	return false
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
	if u.Access != ReadOnly && u.Access != ReadWrite {
		return fmt.Errorf("auth: user %q has unknown access %s", u.Name, u.Access)
	}
	return nil
}

// Config is the service's configuration.
type Config struct {
	// Users are the accounts that may log in.
	Users []User
	// AnonymousPull lets callers without a credential pull from every
	// repository. False denies them everything.
	AnonymousPull bool
}

// account is a user as the server keeps it: the password only as a hash.
type account struct {
	access       Access
	passwordHash [sha256.Size]byte
}

// Server implements authv1.AuthServiceServer.
type Server struct {
	authv1.UnimplementedAuthServiceServer

	accounts      map[string]account
	anonymousPull bool
}

// NewServer returns a server for cfg. It refuses invalid or duplicate
// users. With no users and AnonymousPull false, it refuses every request.
func NewServer(cfg Config) (*Server, error) {
	s := &Server{
		accounts:      make(map[string]account, len(cfg.Users)),
		anonymousPull: cfg.AnonymousPull,
	}
	for _, u := range cfg.Users {
		if err := u.validate(); err != nil {
			return nil, err
		}
		if _, dup := s.accounts[u.Name]; dup {
			return nil, fmt.Errorf("auth: user %q is configured twice", u.Name)
		}
		s.accounts[u.Name] = account{
			access:       u.Access,
			passwordHash: sha256.Sum256([]byte(u.Password)),
		}
	}
	return s, nil
}

// principal is a caller whose credential checked out.
type principal struct {
	subject   string
	anonymous bool
	access    Access
}

// Authorize resolves the caller and returns the requested access it is
// granted. A bad credential fails with UNAUTHORIZED; so does an anonymous
// caller when anonymous pulls are off, since it may do nothing at all.
func (s *Server) Authorize(
	ctx context.Context, req *authv1.AuthorizeRequest,
) (*authv1.AuthorizeResponse, error) {
	p, err := s.identify(req.GetCredential())
	if err != nil {
		return nil, err
	}

	resp := &authv1.AuthorizeResponse{Subject: p.subject}
	for _, want := range req.GetAccess() {
		if g := p.grant(want); g != nil {
			resp.Granted = append(resp.Granted, g)
		}
	}
	return resp, nil
}

// identify checks a credential and returns who presented it.
func (s *Server) identify(cred *authv1.Credential) (principal, error) {
	switch c := cred.GetKind().(type) {
	case nil:
		if !s.anonymousPull {
			return principal{}, ocierr.New(ocierr.Unauthorized, "authentication required")
		}
		return principal{anonymous: true, access: ReadOnly}, nil
	case *authv1.Credential_Basic:
		return s.checkPassword(c.Basic.GetUsername(), c.Basic.GetPassword())
	case *authv1.Credential_BearerToken:
		// Bearer tokens arrive with the token service; until then no token
		// is valid.
		return principal{}, ocierr.New(ocierr.Unauthorized, "bearer tokens are not enabled")
	}
	return principal{}, ocierr.New(ocierr.Unauthorized, "unsupported credential")
}

// unknownUserHash is compared against when the user does not exist, so an
// unknown name costs the same hashing and comparing as a wrong password.
var unknownUserHash = sha256.Sum256([]byte("keel: no such user"))

// checkPassword verifies a basic credential. It compares SHA-256 hashes in
// constant time, so neither the password's length nor its common prefix with
// the right one shows in the timing.
func (s *Server) checkPassword(name, password string) (principal, error) {
	acct, known := s.accounts[name]
	want := acct.passwordHash
	if !known {
		want = unknownUserHash
	}

	got := sha256.Sum256([]byte(password))
	match := subtle.ConstantTimeCompare(got[:], want[:]) == 1
	if !known || !match {
		return principal{}, ocierr.New(ocierr.Unauthorized, "invalid username or password")
	}
	return principal{subject: name, access: acct.access}, nil
}

// grant returns the part of want that p may have, or nil for none of it.
// Malformed or unknown resources and actions are simply not granted.
func (p principal) grant(want *authv1.Access) *authv1.Access {
	var actions []string
	switch {
	case want.GetType() == typeRepository:
		if reference.ValidateName(want.GetName()) != nil {
			return nil
		}
		for _, a := range dedupe(want.GetActions()) {
			if p.access.allows(a) {
				actions = append(actions, a)
			}
		}
	case want.GetType() == typeRegistry && want.GetName() == nameCatalog:
		for _, a := range dedupe(want.GetActions()) {
			if a == actionAll && !p.anonymous {
				actions = append(actions, a)
			}
		}
	}
	if len(actions) == 0 {
		return nil
	}
	return &authv1.Access{Type: want.GetType(), Name: want.GetName(), Actions: actions}
}

// dedupe returns actions without repeats, in their first order.
func dedupe(actions []string) []string {
	out := make([]string, 0, len(actions))
	for _, a := range actions {
		seen := false
		for _, b := range out {
			seen = seen || a == b
		}
		if !seen {
			out = append(out, a)
		}
	}
	return out
}
