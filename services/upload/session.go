package upload

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"regexp"
	"time"

	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// session is an upload session's state. It lives in the object store
// (layout.UploadState) and nowhere else, so any replica can continue any
// session. Every change is a conditional write (If-Match on the ETag read),
// which makes two writers racing on one session detectable: the loser's
// write fails and it stops.
//
// The bytes of a session are, in order: the committed parts of the
// multipart upload (each exactly PartSize long), then the tail, which holds
// fewer than PartSize bytes in its own small object until more bytes arrive
// to fill a part. Offset is always the sum of both.
type session struct {
	// Repo is the repository the session uploads into.
	Repo string `json:"repo"`
	// Created and Updated date the session, for the janitor.
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	// PartSize is fixed when the session opens and never changes, so every
	// non-final part has the same size (R2 requires it).
	PartSize int64 `json:"partSize"`
	// MultipartID is the store's multipart upload id; empty until the first
	// full part.
	MultipartID string `json:"multipartId,omitempty"`
	// Parts are the committed parts, in order.
	Parts []objstore.Part `json:"parts,omitempty"`
	// NextPart is the lowest part number no writer can have used yet.
	NextPart int32 `json:"nextPart"`
	// Offset is the number of bytes committed: parts plus tail.
	Offset int64 `json:"offset"`
	// TailID names the tail object (layout.UploadTail); zero when the tail
	// is empty. It is a random number picked by the writer that stored the
	// tail, so that two writers racing on one session never write the same
	// tail object: only the one whose state write wins is ever read.
	TailID int64 `json:"tailId,omitempty"`
	// TailSize is the tail's length in bytes.
	TailSize int64 `json:"tailSize,omitempty"`
	// Algorithm is the digest algorithm the session hashes its bytes in:
	// the one the client named when it opened the session, else sha256.
	Algorithm reference.Algorithm `json:"algorithm"`
	// Hash is the serialized state of that hash over the first Offset
	// bytes; empty before the first byte.
	Hash []byte `json:"hash,omitempty"`
	// Version counts writes to the state.
	Version int64 `json:"version"`
	// Writer is the id of the write attempt that holds the session, empty
	// when none does. A new attempt may take the session over from a
	// writer that died; see claim.
	Writer string `json:"writer,omitempty"`
	// Removed marks a session being removed (cancelled, refused at close,
	// or abandoned). It is set by a conditional write before anything the
	// session wrote is deleted, so that a close racing the removal, which
	// read the state before, fails its own conditional write and publishes
	// nothing; a removed session takes no more writes.
	Removed bool `json:"removed,omitempty"`
	// Committed is the digest of a session whose bytes are complete and
	// verified, set before its data object is written (or, for a digest
	// verified by reading the data back, just after) and before the blob
	// is published. A committed session takes no more writes.
	Committed string `json:"committed,omitempty"`
}

// partsSize returns the number of bytes in committed parts. Every
// committed part is a full one (the last, short part is only ever added
// when the upload completes), so this is a product, not a sum.
func (s *session) partsSize() int64 {
	return int64(len(s.Parts)) * s.PartSize
}

// newHash returns an empty hash of algorithm alg.
func newHash(alg reference.Algorithm) hash.Hash {
	if alg == reference.SHA512 {
		return sha512.New()
	}
	return sha256.New()
}

// restoreHash rebuilds a session's running hash from its state.
func restoreHash(s *session) (hash.Hash, error) {
	h := newHash(s.Algorithm)
	if len(s.Hash) == 0 {
		return h, nil
	}
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(s.Hash); err != nil {
		return nil, fmt.Errorf("restore %s state: %w", s.Algorithm, err)
	}
	return h, nil
}

var uploadIDPattern = regexp.MustCompile(`^[0-9a-f]{32}$`)

// newID returns a random 128-bit id in hex.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// sessions reads and writes session state in the object store.
type sessions struct {
	store *objstore.Store
}

// load reads a session and the ETag that a conditional write must match.
// A session that does not exist, belongs to another repository or has
// closed is BLOB_UPLOAD_UNKNOWN.
func (ss sessions) load(ctx context.Context, repo, id string) (*session, string, error) {
	if !uploadIDPattern.MatchString(id) {
		return nil, "", ocierr.New(ocierr.BlobUploadUnknown, "upload %.40q unknown", id)
	}
	b, info, err := ss.store.Get(ctx, layout.Key(layout.UploadState{UploadID: id}))
	if errors.Is(err, objstore.ErrNotFound) {
		return nil, "", ocierr.New(ocierr.BlobUploadUnknown, "upload %s unknown", id)
	}
	if err != nil {
		return nil, "", fmt.Errorf("load upload %s: %w", id, err)
	}
	var s session
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, "", fmt.Errorf("decode upload %s: %w", id, err)
	}
	if s.Repo != repo {
		return nil, "", ocierr.New(ocierr.BlobUploadUnknown, "upload %s unknown", id)
	}
	if s.Committed != "" || s.Removed {
		return nil, "", ocierr.New(ocierr.BlobUploadUnknown, "upload %s is finished", id)
	}
	return &s, info.ETag, nil
}

// create writes a new session, whose id must not exist yet, and returns
// its ETag.
func (ss sessions) create(ctx context.Context, id string, s *session) (string, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	cond := objstore.Condition{IfNoneMatch: true}
	info, err := ss.store.Put(ctx, layout.Key(layout.UploadState{UploadID: id}), b, cond)
	if err != nil {
		return "", fmt.Errorf("create upload %s: %w", id, err)
	}
	return info.ETag, nil
}

// save writes s if the stored state still has ETag etag, bumping its
// version, and returns the new ETag. A lost race is errConflict.
func (ss sessions) save(ctx context.Context, id string, s *session, etag string) (string, error) {
	s.Version++
	s.Updated = time.Now().UTC()
	b, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	key := layout.Key(layout.UploadState{UploadID: id})
	info, err := ss.store.Put(ctx, key, b, objstore.Condition{IfMatch: etag})
	if errors.Is(err, objstore.ErrPreconditionFailed) || errors.Is(err, objstore.ErrNotFound) {
		return "", errConflict
	}
	if err != nil {
		return "", fmt.Errorf("save upload %s: %w", id, err)
	}
	return info.ETag, nil
}

// errConflict means another writer changed the session first.
var errConflict = errors.New("upload session changed by another writer")

// outOfRange is the 416 answer for a write that does not start at the
// committed offset, carrying that offset for the client.
func outOfRange(offset int64, format string, args ...any) *ocierr.Error {
	return ocierr.New(ocierr.BlobUploadInvalid, format, args...).
		With("offset", fmt.Sprint(offset)).
		WithStatus(416)
}
