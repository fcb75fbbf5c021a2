package jwtkey

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"strings"
	"testing"
)

func TestRoundTripEveryAlgorithm(t *testing.T) {
	for _, alg := range []Algorithm{ES256, EdDSA, RS256} {
		t.Run(string(alg), func(t *testing.T) {
			key, err := Generate(alg)
			if err != nil {
				t.Fatalf("Generate(%s) error = %v", alg, err)
			}
			if got, err := AlgorithmOf(key.Public()); got != alg || err != nil {
				t.Fatalf("AlgorithmOf(generated %s key) = %s, %v; want %s", alg, got, err, alg)
			}

			privText, err := EncodePrivateKey(key)
			if err != nil {
				t.Fatalf("EncodePrivateKey() error = %v", err)
			}
			priv, err := ParsePrivateKey(privText)
			if err != nil {
				t.Fatalf("ParsePrivateKey(encoded) error = %v", err)
			}
			pubText, err := EncodePublicKey(key.Public())
			if err != nil {
				t.Fatalf("EncodePublicKey() error = %v", err)
			}
			pub, err := ParsePublicKey(pubText)
			if err != nil {
				t.Fatalf("ParsePublicKey(encoded) error = %v", err)
			}

			want, _ := KeyID(key.Public())
			for what, k := range map[string]any{"private": priv.Public(), "public": pub} {
				if got, _ := KeyID(k); got != want {
					t.Errorf("KeyID(parsed %s) = %s, want %s", what, got, want)
				}
			}
		})
	}
}

func TestParseAcceptsPEMAndBase64Forms(t *testing.T) {
	key, err := Generate(ES256)
	if err != nil {
		t.Fatal(err)
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(key)
	pubDER, _ := x509.MarshalPKIXPublicKey(key.Public())
	privPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: privDER})
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	b64 := base64.StdEncoding.EncodeToString

	privForms := map[string]string{
		"base64 DER":         b64(privDER),
		"base64 PEM":         b64(privPEM),
		"PEM":                string(privPEM),
		"raw URL base64 DER": base64.RawURLEncoding.EncodeToString(privDER),
		"wrapped base64":     wrap(b64(privDER), 64),
	}
	for what, s := range privForms {
		if _, err := ParsePrivateKey(s); err != nil {
			t.Errorf("ParsePrivateKey(%s) error = %v", what, err)
		}
	}
	pubForms := map[string]string{
		"base64 DER": b64(pubDER),
		"base64 PEM": b64(pubPEM),
		"PEM":        string(pubPEM),
	}
	for what, s := range pubForms {
		if _, err := ParsePublicKey(s); err != nil {
			t.Errorf("ParsePublicKey(%s) error = %v", what, err)
		}
	}
}

func wrap(s string, n int) string {
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + "\n")
		s = s[n:]
	}
	b.WriteString(s)
	return b.String()
}

func TestParseRefusesUnfitKeys(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	es, _ := Generate(ES256)
	b64 := base64.StdEncoding.EncodeToString
	der := func(k any) []byte {
		b, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	privDER, _ := x509.MarshalPKCS8PrivateKey(es)

	pubCases := map[string]string{
		"P-384 key":             b64(der(&p384.PublicKey)),
		"1024-bit RSA key":      b64(der(&small.PublicKey)),
		"empty":                 "",
		"not base64":            "%%%",
		"private key as public": b64(privDER),
		"PEM of another type": string(pem.EncodeToMemory(
			&pem.Block{Type: "CERTIFICATE", Bytes: der(es.Public())})),
	}
	for what, s := range pubCases {
		if _, err := ParsePublicKey(s); err == nil {
			t.Errorf("ParsePublicKey(%s) error = nil, want an error", what)
		}
	}

	p384DER, _ := x509.MarshalPKCS8PrivateKey(p384)
	if _, err := ParsePrivateKey(b64(p384DER)); err == nil {
		t.Errorf("ParsePrivateKey(P-384 key) error = nil, want an error")
	}
	if _, err := ParsePrivateKey(b64(der(es.Public()))); err == nil {
		t.Errorf("ParsePrivateKey(public key) error = nil, want an error")
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, ok := range []string{"ES256", "EdDSA", "RS256"} {
		if a, err := ParseAlgorithm(ok); err != nil || string(a) != ok || a.Method() == nil {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want it accepted with a method", ok, a, err)
		}
	}
	for _, bad := range []string{"", "none", "HS256", "es256", "ES384", "PS256"} {
		if _, err := ParseAlgorithm(bad); err == nil {
			t.Errorf("ParseAlgorithm(%q) error = nil, want an error", bad)
		}
	}
}
