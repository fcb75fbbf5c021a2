package layout

import (
	"strings"
	"testing"

	"github.com/keel-registry/keel/internal/reference"
)

// TestKey pins the bucket layout: changing a key strands existing data.
func TestKey(t *testing.T) {
	d := reference.Digest("sha256:" + strings.Repeat("a", 64))
	s := reference.Digest("sha512:" + strings.Repeat("b", 128))
	cases := []struct {
		p    Path
		want string
	}{
		{Blob{d}, "blobs/sha256/" + d.Hex()},
		{BlobData{"u1"}, "blobdata/u1"},
		{UploadState{"u1"}, "uploads/u1/state"},
		{UploadTail{"u1", 7}, "blobdata/u1.7"},
		{UploadTails{"u1"}, "blobdata/u1."},
		{UploadDir{"u1"}, "uploads/u1/"},
		{Uploads{}, "uploads/"},
		{BlobLink{"a/b", d}, "links/a/b/_blobs/sha256/" + d.Hex()},
		{Revision{"a/b", s}, "manifests/a/b/_revisions/sha512/" + s.Hex()},
		{Revisions{"a/b"}, "manifests/a/b/_revisions/"},
		{Tag{"a/b", "v1"}, "manifests/a/b/_tags/v1"},
		{Tags{"a/b"}, "manifests/a/b/_tags/"},
		{Referrer{"a", d, s}, "manifests/a/_referrers/sha256/" + d.Hex() + "/sha512-" + s.Hex()},
		{Referrers{"a", d}, "manifests/a/_referrers/sha256/" + d.Hex() + "/"},
		{Repository{"a/b"}, "repositories/a/b!"},
		{Repositories{}, "repositories/"},
		{SigningKey{"000000020000"}, "signingkeys/000000020000"},
		{SigningKeys{}, "signingkeys/"},
		{Change{"01733000000000000000-0a1b2c3d"}, "changes/01733000000000000000-0a1b2c3d"},
		{Changes{}, "changes/"},
	}
	for _, c := range cases {
		if got := Key(c.p); got != c.want {
			t.Errorf("Key(%#v) = %q, want %q", c.p, got, c.want)
		}
	}
}
