package gateway

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"google.golang.org/grpc"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/jwtkey"
	"github.com/keel-registry/keel/internal/registrytoken"
)

// benchAuth answers Authorize with a grant of everything asked and
// ListSigningKeys with one key, without a network.
type benchAuth struct {
	authv1.AuthServiceClient
	key registrytoken.SigningKey
}

func (b benchAuth) Authorize(
	_ context.Context, req *authv1.AuthorizeRequest, _ ...grpc.CallOption,
) (*authv1.AuthorizeResponse, error) {
	return &authv1.AuthorizeResponse{Subject: "admin", Granted: req.GetAccess()}, nil
}

func (b benchAuth) ListSigningKeys(
	context.Context, *authv1.ListSigningKeysRequest, ...grpc.CallOption,
) (*authv1.ListSigningKeysResponse, error) {
	der, err := jwtkey.MarshalPublicKey(b.key.Public)
	if err != nil {
		return nil, err
	}
	return &authv1.ListSigningKeysResponse{Issuer: "keel", Keys: []*authv1.SigningKey{{
		Kid: b.key.ID, Algorithm: string(b.key.Algorithm), PublicKey: der,
	}}}, nil
}

// BenchmarkDecide measures the authorization step of one request on its
// own: a cached basic-login decision, a cached bearer token, and a bearer
// token verified from scratch (ES256), which each token costs once per
// cache TTL on each gateway.
func BenchmarkDecide(b *testing.B) {
	priv, err := jwtkey.Generate(jwtkey.ES256)
	if err != nil {
		b.Fatal(err)
	}
	key := registrytoken.SigningKey{
		Key:     registrytoken.Key{ID: "k1", Algorithm: jwtkey.ES256, Public: priv.Public()},
		Private: priv,
	}
	now := time.Now()
	token, err := registrytoken.Sign(key, registrytoken.Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: "keel", Subject: "admin", Audience: jwt.ClaimStrings{"keel"},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Hour)),
		},
		Access: []registrytoken.Access{
			{Type: "repository", Name: "team/app", Actions: []string{"pull"}},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	client := benchAuth{key: key}
	want := []scope{repositoryScope("team/app", actionPull)}

	cases := []struct {
		name   string
		header string
		ttl    time.Duration
	}{
		{"basic-cached", "Basic YWRtaW46c2VjcmV0", time.Hour},
		{"bearer-cached", "Bearer " + token, time.Hour},
		// A TTL of a nanosecond makes every call verify the token again.
		{"bearer-verify", "Bearer " + token, time.Nanosecond},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			keys := newKeySet(client, "keel", time.Hour)
			a := newAuthorizer(client, keys, c.ttl, maxAuthCacheEntries, nil)
			r := httptest.NewRequest("HEAD", "/v2/team/app/manifests/v1", nil)
			r.Header.Set("Authorization", c.header)
			ctx := context.Background()
			if d, err := a.decide(ctx, r, want); err != nil || !d.allows(want) {
				b.Fatalf("decide(%s) = %+v, %v; want pull allowed", c.name, d, err)
			}

			b.ResetTimer()
			for b.Loop() {
				if _, err := a.decide(ctx, r, want); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
