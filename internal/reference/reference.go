// Package reference validates the names the OCI distribution specification
// defines: repository names, tags and digests. Every check returns an
// *ocierr.Error with the code a client should see.
package reference

import (
	"encoding/hex"
	"regexp"
	"strings"

	"github.com/keel-registry/keel/internal/ocierr"
)

// MaxNameLength bounds a repository name, as many clients and registries do.
const MaxNameLength = 255

var (
	nameComponent = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$`)
	tagPattern    = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// ValidateName checks a repository name such as "library/alpine".
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLength {
		return ocierr.New(ocierr.NameInvalid, "invalid repository name %.64q", name)
	}
	for _, c := range strings.Split(name, "/") {
		if !nameComponent.MatchString(c) {
			return ocierr.New(ocierr.NameInvalid, "invalid repository name %.64q", name)
		}
	}
	return nil
}

// ValidateTag checks a tag such as "v1.2.3".
func ValidateTag(tag string) error {
	if !tagPattern.MatchString(tag) {
		return ocierr.New(ocierr.ManifestInvalid, "invalid tag %.64q", tag)
	}
	return nil
}

// Algorithm is a digest algorithm the registry supports.
type Algorithm string

// The supported digest algorithms.
const (
	SHA256 Algorithm = "sha256"
	SHA512 Algorithm = "sha512"
)

// hexLen is the length of each algorithm's hex encoding.
var hexLen = map[Algorithm]int{SHA256: 64, SHA512: 128}

// ParseAlgorithm validates s as the name of a supported algorithm.
func ParseAlgorithm(s string) (Algorithm, error) {
	if _, known := hexLen[Algorithm(s)]; !known {
		return "", ocierr.New(ocierr.DigestInvalid, "unsupported digest algorithm %.80q", s)
	}
	return Algorithm(s), nil
}

// Digest is a validated "algorithm:hex" content digest.
type Digest string

// ParseDigest validates s as a digest of a supported algorithm.
func ParseDigest(s string) (Digest, error) {
	alg, enc, ok := strings.Cut(s, ":")
	n, known := hexLen[Algorithm(alg)]
	if !ok || !known {
		return "", ocierr.New(ocierr.DigestInvalid, "unsupported or malformed digest %.80q", s)
	}
	if len(enc) != n || strings.ToLower(enc) != enc {
		return "", ocierr.New(ocierr.DigestInvalid, "malformed digest %.80q", s)
	}
	if _, err := hex.DecodeString(enc); err != nil {
		return "", ocierr.New(ocierr.DigestInvalid, "malformed digest %.80q", s)
	}
	return Digest(s), nil
}

// Algorithm returns the digest's algorithm.
func (d Digest) Algorithm() Algorithm {
	alg, _, _ := strings.Cut(string(d), ":")
	return Algorithm(alg)
}

// Hex returns the digest's hex encoding.
func (d Digest) Hex() string {
	_, enc, _ := strings.Cut(string(d), ":")
	return enc
}

// String returns "algorithm:hex".
func (d Digest) String() string { return string(d) }

// IsDigest reports whether a manifest reference looks like a digest rather
// than a tag (tags cannot contain ':').
func IsDigest(ref string) bool {
	return strings.Contains(ref, ":")
}
