package reference

import (
	"strings"
	"testing"

	"github.com/keel-registry/keel/internal/ocierr"
)

func TestValidateName(t *testing.T) {
	good := []string{"a", "library/alpine", "a-b/c__d/e.f", "x0/y1-2", strings.Repeat("a", 255)}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want nil", n, err)
		}
	}
	bad := []string{"", "A", "Library/alpine", "a/../b", "..", "a//b", "/a", "a/", "-a",
		"a_", "a___b", strings.Repeat("a", 256), "a/b:c", "a b"}
	for _, n := range bad {
		if err := ValidateName(n); !ocierr.Is(err, ocierr.NameInvalid) {
			t.Errorf("ValidateName(%q) = %v, want NAME_INVALID", n, err)
		}
	}
}

func TestValidateTag(t *testing.T) {
	for _, tag := range []string{"latest", "v1.2.3", "_x", "A-b.c_d", strings.Repeat("t", 128)} {
		if err := ValidateTag(tag); err != nil {
			t.Errorf("ValidateTag(%q) = %v, want nil", tag, err)
		}
	}
	for _, tag := range []string{"", ".x", "-x", "a/b", strings.Repeat("t", 129), "a:b"} {
		if err := ValidateTag(tag); err == nil {
			t.Errorf("ValidateTag(%q) = nil, want an error", tag)
		}
	}
}

func TestParseDigest(t *testing.T) {
	s256 := "sha256:" + strings.Repeat("ab", 32)
	s512 := "sha512:" + strings.Repeat("cd", 64)
	for _, s := range []string{s256, s512} {
		d, err := ParseDigest(s)
		if err != nil || d.String() != s {
			t.Errorf("ParseDigest(%q) = %q, %v; want it back", s, d, err)
		}
	}
	if d, _ := ParseDigest(s512); d.Algorithm() != SHA512 || len(d.Hex()) != 128 {
		t.Errorf("sha512 digest parts = %q, %q", d.Algorithm(), d.Hex())
	}
	bad := []string{"", "sha256", "sha256:", "md5:" + strings.Repeat("a", 32),
		"sha256:" + strings.Repeat("AB", 32), "sha256:" + strings.Repeat("a", 63),
		"sha256:" + strings.Repeat("g", 64), "sha512:" + strings.Repeat("a", 64)}
	for _, s := range bad {
		if _, err := ParseDigest(s); !ocierr.Is(err, ocierr.DigestInvalid) {
			t.Errorf("ParseDigest(%q) = %v, want DIGEST_INVALID", s, err)
		}
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, s := range []string{"sha256", "sha512"} {
		if a, err := ParseAlgorithm(s); err != nil || string(a) != s {
			t.Errorf("ParseAlgorithm(%q) = %q, %v; want it back", s, a, err)
		}
	}
	for _, s := range []string{"", "md5", "SHA256", "sha256:"} {
		if _, err := ParseAlgorithm(s); !ocierr.Is(err, ocierr.DigestInvalid) {
			t.Errorf("ParseAlgorithm(%q) = %v, want DIGEST_INVALID", s, err)
		}
	}
}
