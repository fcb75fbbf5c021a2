package manifest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestRevisionRoundTrip(t *testing.T) {
	cases := []struct {
		mediaType string
		content   []byte
	}{
		{mediaTypeOCIManifest, []byte("{\n  \"schemaVersion\": 2\n}\n")},
		{"application/vnd.example+json", []byte("{}")},
		{mediaTypeOCIIndex, nil},
	}
	for _, c := range cases {
		b := encodeRevision(c.mediaType, c.content)
		mt, content, err := decodeRevision(b)
		if err != nil {
			t.Fatalf("decodeRevision(encodeRevision(%q, %q)) error: %v", c.mediaType, c.content, err)
		}
		if mt != c.mediaType || !bytes.Equal(content, c.content) {
			t.Errorf("decodeRevision(encodeRevision(%q, %q)) = %q, %q; want them back",
				c.mediaType, c.content, mt, content)
		}
	}
}

func TestDecodeRevisionCorrupt(t *testing.T) {
	for _, b := range []string{
		"",
		"no newline at all",
		"\n{}",
		strings.Repeat("a", maxMediaTypeLen+1) + "\n{}",
	} {
		if _, _, err := decodeRevision([]byte(b)); !errors.Is(err, errCorruptRevision) {
			t.Errorf("decodeRevision(%.40q) error = %v, want errCorruptRevision", b, err)
		}
	}
}
