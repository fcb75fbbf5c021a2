// Package jwtkey handles the keys that sign and verify keel's JWTs: the
// operator's login-token keys and the auth service's registry-token keys.
// It knows the three JWS algorithms keel accepts, generates keys for them,
// and reads and writes keys as base64 text that fits one environment
// variable or secret.
package jwtkey

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/golang-jwt/jwt/v5"
)

// Algorithm is a JWS algorithm ("alg") keel signs or verifies with.
type Algorithm string

// The algorithms keel accepts. Symmetric algorithms (HS256, ...) and "none"
// are not among them on purpose.
const (
	// ES256 is ECDSA on P-256 with SHA-256.
	ES256 Algorithm = "ES256"
	// EdDSA is Ed25519.
	EdDSA Algorithm = "EdDSA"
	// RS256 is RSASSA-PKCS1-v1_5 with SHA-256, on keys of at least
	// MinRSABits.
	RS256 Algorithm = "RS256"
)

// MinRSABits is the smallest RSA modulus accepted.
const MinRSABits = 2048

// rsaGenerateBits is the modulus size of generated RSA keys.
const rsaGenerateBits = 3072

// ParseAlgorithm reads one of the accepted algorithm names, exactly as JWS
// spells them.
func ParseAlgorithm(s string) (Algorithm, error) {
	switch a := Algorithm(s); a {
	case ES256, EdDSA, RS256:
		return a, nil
	}
	return "", fmt.Errorf("jwtkey: algorithm %q is not ES256, EdDSA or RS256", s)
}

// Method returns the signing method of a for golang-jwt.
func (a Algorithm) Method() jwt.SigningMethod {
	switch a {
	case ES256:
		return jwt.SigningMethodES256
	case EdDSA:
		return jwt.SigningMethodEdDSA
	case RS256:
		return jwt.SigningMethodRS256
	}
	return nil
}

// Generate returns a new private key for a.
func Generate(a Algorithm) (crypto.Signer, error) {
	switch a {
	case ES256:
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		return priv, err
	case RS256:
		return rsa.GenerateKey(rand.Reader, rsaGenerateBits)
	}
	return nil, fmt.Errorf("jwtkey: cannot generate a key for algorithm %q", a)
}

// AlgorithmOf returns the one algorithm a public key verifies: ES256 for a
// P-256 key, EdDSA for an Ed25519 key, RS256 for an RSA key of at least
// MinRSABits. Any other key is an error.
func AlgorithmOf(pub crypto.PublicKey) (Algorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return "", fmt.Errorf("jwtkey: ECDSA curve %s is not P-256", k.Curve.Params().Name)
		}
		return ES256, nil
	case ed25519.PublicKey:
		return EdDSA, nil
	case *rsa.PublicKey:
		if k.N.BitLen() < MinRSABits {
			return "", fmt.Errorf("jwtkey: RSA key of %d bits is shorter than %d",
				k.N.BitLen(), MinRSABits)
		}
		return RS256, nil
	}
	return "", fmt.Errorf("jwtkey: unsupported public key type %T", pub)
}

// ParsePrivateKey reads a PKCS#8 private key given as base64 of its DER or
// PEM encoding, or as PEM text itself. The key must suit one of the
// accepted algorithms.
func ParsePrivateKey(s string) (crypto.Signer, error) {
	der, err := decode(s, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		// The parser's message does not hold key material.
		return nil, fmt.Errorf("jwtkey: not a PKCS#8 private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("jwtkey: unsupported private key type %T", key)
	}
	if _, err := AlgorithmOf(signer.Public()); err != nil {
		return nil, err
	}
	return signer, nil
}

// ParsePublicKey reads a PKIX public key given as base64 of its DER or PEM
// encoding, or as PEM text itself. The key must suit one of the accepted
// algorithms.
func ParsePublicKey(s string) (crypto.PublicKey, error) {
	der, err := decode(s, "PUBLIC KEY")
	if err != nil {
		return nil, err
	}
	return ParsePublicKeyDER(der)
}

// ParsePublicKeyDER reads a DER-encoded PKIX public key. The key must suit
// one of the accepted algorithms.
func ParsePublicKeyDER(der []byte) (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, fmt.Errorf("jwtkey: not a PKIX public key: %w", err)
	}
	if _, err := AlgorithmOf(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// EncodePrivateKey returns key as base64 of its PKCS#8 DER encoding, the
// form ParsePrivateKey reads.
func EncodePrivateKey(key crypto.Signer) (string, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("jwtkey: encode private key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// MarshalPublicKey returns pub's PKIX DER encoding.
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("jwtkey: encode public key: %w", err)
	}
	return der, nil
}

// EncodePublicKey returns pub as base64 of its PKIX DER encoding, the form
// ParsePublicKey reads.
func EncodePublicKey(pub crypto.PublicKey) (string, error) {
	der, err := MarshalPublicKey(pub)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(der), nil
}

// KeyID returns a key id for pub: the first 16 bytes of the SHA-256 of its
// PKIX encoding, base64url without padding. Equal keys get equal ids.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := MarshalPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:16]), nil
}

// decode turns the text forms of a key into DER: PEM text, or base64 (with
// or without padding, standard or URL alphabet) of PEM or DER. pemType is
// the PEM block type expected.
func decode(s, pemType string) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("jwtkey: empty key")
	}
	raw := []byte(s)
	if !strings.HasPrefix(s, "-----BEGIN") {
		var err error
		raw, err = decodeBase64(strings.Join(strings.Fields(s), ""))
		if err != nil {
			return nil, errors.New("jwtkey: key is neither PEM nor base64")
		}
	}
	if !strings.HasPrefix(strings.TrimSpace(string(raw)), "-----BEGIN") {
		return raw, nil
	}

	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, errors.New("jwtkey: malformed PEM")
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("jwtkey: PEM block is %q, want %q", block.Type, pemType)
	}
	return block.Bytes, nil
}

func decodeBase64(s string) ([]byte, error) {
	for _, enc := range []*base64.Encoding{
		base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding,
	} {
		if b, err := enc.DecodeString(s); err == nil {
			return b, nil
		}
	}
	return nil, errors.New("not base64")
}
