// Package layout names every object the registry keeps in its bucket. Key
// is the one function that builds object keys; no other code concatenates
// them.
package layout

import (
	"fmt"

	"github.com/keel-registry/keel/internal/reference"
)

// Path is a place in the bucket. Each concrete type below is one kind of
// object or one listing prefix.
type Path interface{ path() }

// Key returns the object key (or listing prefix) for p. The bucket holds,
// under the configured prefix:
//
//	blobs/<alg>/<hex>                    blob record: size and data object
//	                                     (upload service)
//	blobdata/<upload-id>                 a blob's bytes, written once by the
//	                                     upload that produced them
//	blobdata/<upload-id>.<tail-id>       a session's bytes not yet filling a
//	                                     part; written once, and the data of
//	                                     a blob shorter than a part
//	uploads/<upload-id>/state            upload session state (JSON)
//	links/<repo>/_blobs/<alg>/<hex>      the blob is visible in <repo>
//	manifests/<repo>/_revisions/<alg>/<hex>
//	                                     a manifest: media type and bytes
//	                                     (manifest service)
//	manifests/<repo>/_tags/<tag>         the digest a tag points at
//	manifests/<repo>/_referrers/<alg>/<hex>/<alg>-<hex>
//	                                     a referrer's descriptor, filed under
//	                                     its subject
//	repositories/<repo>!                 catalog entry: the repository exists
//	signingkeys/<id>                     a registry-token signing key, private
//	                                     half included (auth service)
//	changes/<unix-nanos>-<random>        one change to the registry's content
//	                                     (manifest service); the time is 20
//	                                     zero-padded digits, so changes list
//	                                     in time order
//
// Repository names never contain a component starting with '_', so the
// "_blobs", "_revisions", "_tags" and "_referrers" levels cannot collide with a nested
// repository such as "a/b" under "a". The '!' that ends a catalog entry does
// the same for the catalog: without it "repositories/a" would be an object
// and "repositories/a/b" one below it, which stores that keep objects as
// files (versitygw's posix backend) refuse. '!' sorts below every character
// a name may hold, so entries still list in the names' lexical order.
func Key(p Path) string {
	switch p := p.(type) {
	case Blob:
		return fmt.Sprintf("blobs/%s/%s", p.Digest.Algorithm(), p.Digest.Hex())
	case BlobData:
		return "blobdata/" + p.UploadID
	case UploadState:
		return "uploads/" + p.UploadID + "/state"
	case UploadTail:
		return fmt.Sprintf("blobdata/%s.%d", p.UploadID, p.ID)
	case UploadTails:
		return "blobdata/" + p.UploadID + "."
	case UploadDir:
		return "uploads/" + p.UploadID + "/"
	case Uploads:
		return "uploads/"
	case BlobLink:
		return fmt.Sprintf("links/%s/_blobs/%s/%s", p.Repo, p.Digest.Algorithm(), p.Digest.Hex())
	case Revision:
		return fmt.Sprintf("manifests/%s/_revisions/%s/%s",
			p.Repo, p.Digest.Algorithm(), p.Digest.Hex())
	case Revisions:
		return fmt.Sprintf("manifests/%s/_revisions/", p.Repo)
	case Tag:
		return fmt.Sprintf("manifests/%s/_tags/%s", p.Repo, p.Tag)
	case Tags:
		return fmt.Sprintf("manifests/%s/_tags/", p.Repo)
	case Referrer:
		return fmt.Sprintf("manifests/%s/_referrers/%s/%s/%s-%s", p.Repo,
			p.Subject.Algorithm(), p.Subject.Hex(), p.Digest.Algorithm(), p.Digest.Hex())
	case Referrers:
		return fmt.Sprintf("manifests/%s/_referrers/%s/%s/", p.Repo,
			p.Subject.Algorithm(), p.Subject.Hex())
	case Repository:
		return "repositories/" + p.Repo + "!"
	case Repositories:
		return "repositories/"
	case SigningKey:
		return "signingkeys/" + p.ID
	case SigningKeys:
		return "signingkeys/"
	case Change:
		return "changes/" + p.ID
	case Changes:
		return "changes/"
	}
	panic(fmt.Sprintf("layout: unknown path type %T", p))
}

// Blob is a blob's record, shared by every repository that links it.
type Blob struct{ Digest reference.Digest }

// BlobData is the object holding the bytes that one upload produced.
type BlobData struct{ UploadID string }

// UploadState is an upload session's state.
type UploadState struct{ UploadID string }

// UploadTail holds a session's bytes that do not yet fill a part. ID is a
// number the writer that stored them picked at random. A tail is never
// rewritten, so when it holds all of a blob's bytes it becomes the blob's
// data as it is.
type UploadTail struct {
	UploadID string
	ID       int64
}

// UploadTails is the prefix of a session's tails.
type UploadTails struct{ UploadID string }

// UploadDir is the prefix of everything a session keeps.
type UploadDir struct{ UploadID string }

// Uploads is the prefix of every session.
type Uploads struct{}

// BlobLink makes a blob visible in a repository.
type BlobLink struct {
	Repo   string
	Digest reference.Digest
}

// Revision is a manifest stored in a repository.
type Revision struct {
	Repo   string
	Digest reference.Digest
}

// Revisions is the prefix of a repository's manifests.
type Revisions struct{ Repo string }

// Tag points a tag at a manifest digest.
type Tag struct{ Repo, Tag string }

// Tags is the prefix of a repository's tags.
type Tags struct{ Repo string }

// Referrer files a referrer's descriptor under its subject.
type Referrer struct {
	Repo    string
	Subject reference.Digest
	Digest  reference.Digest
}

// Referrers is the prefix of a subject's referrers.
type Referrers struct {
	Repo    string
	Subject reference.Digest
}

// Repository is a repository's catalog entry.
type Repository struct{ Repo string }

// Repositories is the prefix of the catalog.
type Repositories struct{}

// SigningKey is one of the auth service's token signing keys. ID is the
// auth service's name for it, made of characters safe in a key.
type SigningKey struct{ ID string }

// SigningKeys is the prefix of every signing key.
type SigningKeys struct{}

// Change is one recorded change. ID is the manifest service's name for it,
// which sorts in time order and is made of characters safe in a key.
type Change struct{ ID string }

// Changes is the prefix of every change.
type Changes struct{}

func (Blob) path()         {}
func (BlobData) path()     {}
func (UploadState) path()  {}
func (UploadTail) path()   {}
func (UploadTails) path()  {}
func (UploadDir) path()    {}
func (Uploads) path()      {}
func (BlobLink) path()     {}
func (Revision) path()     {}
func (Revisions) path()    {}
func (Tag) path()          {}
func (Tags) path()         {}
func (Referrer) path()     {}
func (Referrers) path()    {}
func (Repository) path()   {}
func (Repositories) path() {}
func (SigningKey) path()   {}
func (SigningKeys) path()  {}
func (Change) path()       {}
func (Changes) path()      {}
