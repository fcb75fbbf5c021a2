package registrytoken

import (
	"errors"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/keel-registry/keel/internal/jwtkey"
)

var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

func clock() time.Time { return now }

func newSigningKey(t *testing.T, id string, alg jwtkey.Algorithm) SigningKey {
	t.Helper()
	priv, err := jwtkey.Generate(alg)
	if err != nil {
		t.Fatal(err)
	}
	return SigningKey{Key: Key{ID: id, Algorithm: alg, Public: priv.Public()}, Private: priv}
}

func claims() Claims {
	return Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: "keel", Subject: "alice", Audience: jwt.ClaimStrings{"registry"},
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now),
			ExpiresAt: jwt.NewNumericDate(now.Add(5 * time.Minute)),
		},
		Access: []Access{{Type: "repository", Name: "team/app", Actions: []string{"pull"}}},
	}
}

func TestSignAndVerify(t *testing.T) {
	es := newSigningKey(t, "k1", jwtkey.ES256)
	ed := newSigningKey(t, "k2", jwtkey.EdDSA)
	v := NewVerifier([]Key{es.Key, ed.Key}, "keel", "registry", clock)

	for _, k := range []SigningKey{es, ed} {
		token, err := Sign(k, claims())
		if err != nil {
			t.Fatalf("Sign(%s) error = %v", k.ID, err)
		}
		if err := CheckFormat(token); err != nil {
			t.Errorf("CheckFormat(signed by %s) = %v, want nil", k.ID, err)
		}
		got, err := v.Verify(token)
		if err != nil {
			t.Fatalf("Verify(signed by %s) error = %v", k.ID, err)
		}
		if got.Subject != "alice" || len(got.Access) != 1 || got.Access[0].Name != "team/app" {
			t.Errorf("Verify(signed by %s) = %+v, want alice's pull on team/app", k.ID, got)
		}
	}
}

func TestVerifyRefuses(t *testing.T) {
	es := newSigningKey(t, "k1", jwtkey.ES256)
	ed := newSigningKey(t, "k2", jwtkey.EdDSA)
	retired := newSigningKey(t, "old", jwtkey.ES256)
	retired.NotAfter = now.Add(-time.Second)
	unknown := newSigningKey(t, "k9", jwtkey.ES256)
	v := NewVerifier([]Key{es.Key, ed.Key, retired.Key}, "keel", "registry", clock)

	mustSign := func(k SigningKey, c Claims) string {
		s, err := Sign(k, c)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// An EdDSA signature by the EdDSA key, but naming the ES256 key: the
	// algorithm is one the set uses, yet not that key's.
	swapped := jwt.NewWithClaims(jwt.SigningMethodEdDSA, claims())
	swapped.Header["kid"] = "k1"
	swappedToken, err := swapped.SignedString(ed.Private)
	if err != nil {
		t.Fatal(err)
	}
	noAccessName := claims()
	noAccessName.Access = []Access{{Type: "repository", Actions: []string{"pull"}}}

	tests := map[string]struct {
		token   string
		unknown bool
	}{
		"unknown key":                   {token: mustSign(unknown, claims()), unknown: true},
		"algorithm not the named key's": {token: swappedToken},
		"retired key":                   {token: mustSign(retired, claims())},
		"access entry without a name":   {token: mustSign(es, noAccessName)},
	}
	for name, tt := range tests {
		_, err := v.Verify(tt.token)
		if err == nil {
			t.Errorf("Verify(%s) error = nil, want an error", name)
			continue
		}
		if got := errors.Is(err, ErrUnknownKey); got != tt.unknown {
			t.Errorf("Verify(%s) = %v; errors.Is(ErrUnknownKey) = %v, want %v",
				name, err, got, tt.unknown)
		}
	}
}

func TestNoKeysAcceptsNothing(t *testing.T) {
	k := newSigningKey(t, "k1", jwtkey.ES256)
	token, err := Sign(k, claims())
	if err != nil {
		t.Fatal(err)
	}
	none := jwt.NewWithClaims(jwt.SigningMethodNone, claims())
	none.Header["kid"] = "k1"
	noneToken, err := none.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}

	v := NewVerifier(nil, "keel", "registry", clock)
	for name, tok := range map[string]string{"signed": token, "alg none": noneToken} {
		if _, err := v.Verify(tok); err == nil {
			t.Errorf("Verify(%s) with no keys error = nil, want an error", name)
		}
	}
}

func TestCheckFormat(t *testing.T) {
	noKid, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims()).SignedString([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "abc.def.ghi", "a.b", noKid} {
		if err := CheckFormat(bad); err == nil {
			t.Errorf("CheckFormat(%q) = nil, want an error", bad)
		}
	}
}
