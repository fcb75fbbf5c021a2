package auth

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
	"github.com/keel-registry/keel/internal/registrytoken"
)

// IssueToken resolves the caller and signs a registry token granting the
// part of the requested access it may have. A registry token cannot be
// exchanged for another: the caller logs in again when its token expires.
func (s *Server) IssueToken(
	ctx context.Context, req *authv1.IssueTokenRequest,
) (*authv1.IssueTokenResponse, error) {
	service := orDefault(req.GetService(), s.service)
	if service != s.service {
		return nil, ocierr.New(ocierr.Denied, "no tokens are issued for service %.64q", service)
	}
	if _, isToken := req.GetCredential().GetKind().(*authv1.Credential_BearerToken); isToken {
		return nil, ocierr.New(ocierr.Unauthorized, "log in with a password or a login token")
	}
	p, err := s.identify(ctx, req.GetCredential(), req.GetClientAddress())
	if err != nil {
		return nil, err
	}

	resp := &authv1.IssueTokenResponse{Subject: p.subject}
	var access []registrytoken.Access
	for _, want := range req.GetAccess() {
		g := s.grant(p, want)
		if g == nil && validResource(want) {
			// Named with no actions, as Docker's token servers do: the
			// gateway then knows the caller asked and was refused.
			g = &authv1.Access{Type: want.GetType(), Name: want.GetName(), Actions: []string{}}
		}
		if g != nil {
			resp.Granted = append(resp.Granted, g)
			access = append(access, registrytoken.Access{
				Type: g.GetType(), Name: g.GetName(), Actions: g.GetActions(),
			})
		}
	}

	// Whole seconds: the token's times have no finer precision.
	now := s.now().Truncate(time.Second)
	key, err := s.keys.signingKey(now)
	if err != nil {
		return nil, ocierr.New(ocierr.Unavailable, "no token signing key is available")
	}
	expires := now.Add(s.tokenTTL)
	if p.login != nil && p.login.Expires.Before(expires) {
		// A registry token does not outlive the login it came from.
		expires = p.login.Expires
	}
	claims := registrytoken.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer:    s.issuer,
			Subject:   p.subject,
			Audience:  jwt.ClaimStrings{service},
			ExpiresAt: jwt.NewNumericDate(expires),
			NotBefore: jwt.NewNumericDate(now),
			IssuedAt:  jwt.NewNumericDate(now),
			ID:        newTokenID(),
		},
		Access: access,
	}
	if claims.Access == nil {
		claims.Access = []registrytoken.Access{}
	}
	signed, err := registrytoken.Sign(key, claims)
	if err != nil {
		return nil, err
	}

	resp.Token = signed
	resp.IssuedAt = timestamppb.New(now)
	resp.ExpiresIn = durationpb.New(expires.Sub(now).Truncate(time.Second))
	return resp, nil
}

// ListSigningKeys returns the public keys that verify the tokens this
// service issues, and their issuer.
func (s *Server) ListSigningKeys(
	ctx context.Context, req *authv1.ListSigningKeysRequest,
) (*authv1.ListSigningKeysResponse, error) {
	resp := &authv1.ListSigningKeysResponse{Issuer: s.issuer}
	for _, k := range s.keys.publicKeys(s.now()) {
		der, err := jwtkey.MarshalPublicKey(k.Public)
		if err != nil {
			return nil, err
		}
		sk := &authv1.SigningKey{Kid: k.ID, Algorithm: string(k.Algorithm), PublicKey: der}
		if !k.NotAfter.IsZero() {
			sk.NotAfter = timestamppb.New(k.NotAfter)
		}
		resp.Keys = append(resp.Keys, sk)
	}
	return resp, nil
}

// validResource reports whether want names a resource a token may
// mention: a valid repository name, or the catalog.
func validResource(want *authv1.Access) bool {
	switch want.GetType() {
	case typeRepository:
		return reference.ValidateName(want.GetName()) == nil
	case typeRegistry:
		return want.GetName() == nameCatalog
	}
	return false
}

// newTokenID returns a random token id (jti).
func newTokenID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}
