package upload

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// blobRecord is what layout.Blob holds: the blob's size and which object
// has its bytes, an upload's data object or one of its tails. Naming the
// object here, instead of storing bytes under the digest, is what lets an
// upload finish without copying its bytes: a multipart upload completes
// where it was written, a blob shorter than a part stays in the tail that
// received it, and publishing the blob is one small conditional write.
type blobRecord struct {
	Size int64 `json:"size"`
	// Data is the id of the upload that wrote the bytes.
	Data string `json:"data"`
	// Tail is the id of the tail holding the bytes (layout.UploadTail);
	// zero when they are in the upload's data object (layout.BlobData).
	Tail int64 `json:"tail,omitempty"`
}

// key returns the key of the object holding the blob's bytes.
func (r blobRecord) key() string {
	if r.Tail != 0 {
		return layout.Key(layout.UploadTail{UploadID: r.Data, ID: r.Tail})
	}
	return layout.Key(layout.BlobData{UploadID: r.Data})
}

// commit closes the session: it verifies the digest, settles which object
// holds the blob's bytes and publishes the blob. On a mismatch the session
// and everything it wrote are removed.
//
// When the client names the algorithm the session hashed in (sha256, or
// the one it named when it opened the session), the digest is checked
// before anything is written, from the hash state alone. Another algorithm
// is checked by reading the bytes back once (verifyStored). This is the
// only close that takes time in proportion to the blob's size.
func (w *writer) commit(
	ctx context.Context, want reference.Digest,
) (*uploadv1.BlobDescriptor, error) {
	if err := w.drain(ctx); err != nil {
		return nil, err
	}

	size := w.sess.partsSize() + w.pending()
	hashed := want.Algorithm() == w.sess.Algorithm
	if hashed && w.digest() != want {
		if w.cached {
			// The recent state may be behind the stored one: check again
			// from that before removing anything.
			return nil, errStale
		}
		return nil, w.mismatch(ctx, want)
	}

	// The claim and, for a checked digest, the mark that the bytes are
	// complete go in one conditional write, before the blob can be
	// published: an attempt that lost a race must not publish. A new tail
	// has a key of its own, so it is written alongside.
	w.takeOver()
	if hashed {
		w.sess.Committed = want.String()
	}
	if err := w.saveWithTail(ctx); err != nil {
		return nil, err
	}
	if err := w.complete(ctx, size); err != nil {
		return nil, err
	}
	if !hashed {
		if err := w.verifyStored(ctx, want); err != nil {
			return nil, err
		}
		w.sess.Committed = want.String()
		if err := w.save(ctx); err != nil {
			return nil, err
		}
	}

	if err := w.srv.publish(ctx, w.sess.Repo, want, w.data); err != nil {
		return nil, err
	}
	w.srv.forget(ctx, w.id, w.sess, w.data)
	return &uploadv1.BlobDescriptor{Digest: want.String(), Size: size}, nil
}

// saveWithTail saves the session state and, for a blob shorter than a part
// that this attempt brought bytes to, stores those bytes as a new tail at
// the same time: that tail becomes the blob's data.
func (w *writer) saveWithTail(ctx context.Context) error {
	if w.sess.MultipartID != "" || !w.tailLoaded {
		return w.save(ctx)
	}

	w.data = blobRecord{Size: int64(len(w.buf)), Data: w.id, Tail: newTailID()}
	stored := make(chan error, 1)
	go func() {
		_, err := w.srv.store.Put(ctx, w.data.key(), w.buf, objstore.Condition{})
		stored <- err
	}()
	saveErr := w.save(ctx)
	storeErr := <-stored
	if saveErr != nil {
		w.srv.store.Delete(context.WithoutCancel(ctx), w.data.key())
		return saveErr
	}
	if storeErr != nil {
		return fmt.Errorf("store blob of upload %s: %w", w.id, storeErr)
	}
	return nil
}

// digest returns the digest of every byte written, in the session's
// algorithm.
func (w *writer) digest() reference.Digest {
	return reference.Digest(string(w.sess.Algorithm) + ":" + hex.EncodeToString(w.hash.sum()))
}

// mismatch removes the session and everything it wrote, and returns the
// DIGEST_INVALID error for want. When another request changed the session
// since this attempt last wrote or read it, nothing is removed and the
// answer is the 416 of a lost race.
func (w *writer) mismatch(ctx context.Context, want reference.Digest) error {
	err := w.srv.discard(ctx, w.id, w.sess, w.etag)
	if errors.Is(err, errConflict) {
		return w.srv.conflict(ctx, w.sess.Repo, w.id)
	}
	if err != nil {
		return err
	}
	return ocierr.New(ocierr.DigestInvalid,
		"digest %s does not match the uploaded content", want)
}

// verifyStored reads the blob's bytes back and checks that they hash to
// want.
func (w *writer) verifyStored(ctx context.Context, want reference.Digest) error {
	body, _, err := w.srv.store.Open(ctx, w.data.key(), 0, -1)
	if err != nil {
		return fmt.Errorf("read back blob of upload %s: %w", w.id, err)
	}
	defer body.Close()

	h := newHash(want.Algorithm())
	if _, err := io.Copy(h, body); err != nil {
		return fmt.Errorf("read back blob of upload %s: %w", w.id, err)
	}
	if hex.EncodeToString(h.Sum(nil)) != want.Hex() {
		return w.mismatch(ctx, want)
	}
	return nil
}

// complete settles the object that holds the blob's bytes, unless
// saveWithTail already wrote it. A blob shorter than a part is the stored
// tail as it is. A longer one gets its last part, from the bytes in hand
// or copied by the store from the tail, and CompleteMultipartUpload.
// Nothing reads or rewrites committed parts.
func (w *writer) complete(ctx context.Context, size int64) error {
	if w.data.Data != "" {
		return nil
	}
	if w.sess.MultipartID == "" {
		w.data = blobRecord{Size: size, Data: w.id, Tail: w.sess.TailID}
		return nil
	}

	key := layout.Key(layout.BlobData{UploadID: w.id})
	parts := w.sess.Parts
	if n := w.pending(); n > 0 {
		if w.next > maxParts {
			return ocierr.New(ocierr.SizeInvalid,
				"blob exceeds %d parts of %d bytes", maxParts, w.sess.PartSize)
		}
		var etag string
		var err error
		if w.tailLoaded {
			etag, err = w.srv.store.UploadPart(ctx, key, w.sess.MultipartID, w.next, w.buf)
		} else {
			tail := layout.Key(layout.UploadTail{UploadID: w.id, ID: w.sess.TailID})
			etag, err = w.srv.store.UploadPartCopy(ctx, key, w.sess.MultipartID, w.next, tail)
		}
		if err != nil {
			return fmt.Errorf("upload last part of %s: %w", w.id, err)
		}
		parts = append(parts, objstore.Part{Number: w.next, ETag: etag, Size: n})
	}
	if _, err := w.srv.store.CompleteMultipart(ctx, key, w.sess.MultipartID, parts); err != nil {
		return fmt.Errorf("complete upload %s: %w", w.id, err)
	}
	w.data = blobRecord{Size: size, Data: w.id}
	return nil
}

// publish records a verified blob and links it into repo, both at once.
// When another upload published the same digest first, its record wins and
// the object rec names is deleted: both hold the same bytes. A link whose
// record failed to be written shows nothing: a blob is visible only with
// both.
func (srv *Server) publish(
	ctx context.Context, repo string, d reference.Digest, rec blobRecord,
) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}

	linked := make(chan error, 1)
	go func() { linked <- srv.link(ctx, repo, d) }()

	key := layout.Key(layout.Blob{Digest: d})
	_, err = srv.store.Put(ctx, key, b, objstore.Condition{IfNoneMatch: true})
	if errors.Is(err, objstore.ErrPreconditionFailed) {
		err = srv.publishAgain(ctx, d, rec, b)
	}
	if err != nil {
		err = fmt.Errorf("publish blob %s: %w", d, err)
	}
	return errors.Join(err, <-linked)
}

// publishAgain settles a blob that another upload published first. Its
// record wins and this upload's bytes are deleted, unless the bytes that
// record names are gone: then this upload's record replaces it, so that
// pushing a blob again repairs it.
func (srv *Server) publishAgain(
	ctx context.Context, d reference.Digest, rec blobRecord, b []byte,
) error {
	key := layout.Key(layout.Blob{Digest: d})
	raw, info, err := srv.store.Get(ctx, key)
	if err != nil {
		return err
	}
	var existing blobRecord
	if err := json.Unmarshal(raw, &existing); err != nil {
		return fmt.Errorf("decode blob record: %w", err)
	}
	if existing == rec {
		return nil
	}

	_, err = srv.store.Head(ctx, existing.key())
	if errors.Is(err, objstore.ErrNotFound) {
		_, err = srv.store.Put(ctx, key, b, objstore.Condition{IfMatch: info.ETag})
		if errors.Is(err, objstore.ErrPreconditionFailed) {
			return srv.publishAgain(ctx, d, rec, b)
		}
		return err
	}
	if err != nil {
		return err
	}
	srv.store.Delete(ctx, rec.key())
	return nil
}

// link makes a blob visible in a repository.
func (srv *Server) link(ctx context.Context, repo string, d reference.Digest) error {
	key := layout.Key(layout.BlobLink{Repo: repo, Digest: d})
	if _, err := srv.store.Put(ctx, key, nil, objstore.Condition{}); err != nil {
		return fmt.Errorf("link blob %s into %s: %w", d, repo, err)
	}
	return nil
}

// record reads a blob's record.
func (srv *Server) record(ctx context.Context, d reference.Digest) (blobRecord, error) {
	var rec blobRecord
	b, _, err := srv.store.Get(ctx, layout.Key(layout.Blob{Digest: d}))
	if errors.Is(err, objstore.ErrNotFound) {
		return rec, ocierr.New(ocierr.BlobUnknown, "blob %s unknown", d)
	}
	if err != nil {
		return rec, fmt.Errorf("read blob record %s: %w", d, err)
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		return rec, fmt.Errorf("decode blob record %s: %w", d, err)
	}
	return rec, nil
}

// stat returns the record of a blob visible in repo.
func (srv *Server) stat(ctx context.Context, repo string, d reference.Digest) (blobRecord, error) {
	_, err := srv.store.Head(ctx, layout.Key(layout.BlobLink{Repo: repo, Digest: d}))
	if errors.Is(err, objstore.ErrNotFound) {
		return blobRecord{}, ocierr.New(ocierr.BlobUnknown, "blob %s unknown to %s", d, repo)
	}
	if err != nil {
		return blobRecord{}, fmt.Errorf("stat blob %s in %s: %w", d, repo, err)
	}
	return srv.record(ctx, d)
}

// parseBlobRequest validates the repository and digest of a blob call.
func parseBlobRequest(repo, digest string) (reference.Digest, error) {
	if err := reference.ValidateName(repo); err != nil {
		return "", err
	}
	return reference.ParseDigest(digest)
}

// StatBlob describes a blob visible in a repository.
func (srv *Server) StatBlob(
	ctx context.Context, req *uploadv1.StatBlobRequest,
) (*uploadv1.StatBlobResponse, error) {
	d, err := parseBlobRequest(req.GetRepository(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	rec, err := srv.stat(ctx, req.GetRepository(), d)
	if err != nil {
		return nil, err
	}
	return &uploadv1.StatBlobResponse{Blob: &uploadv1.BlobDescriptor{
		Digest: d.String(), Size: rec.Size}}, nil
}

// MountBlob links a blob from one repository into another.
func (srv *Server) MountBlob(
	ctx context.Context, req *uploadv1.MountBlobRequest,
) (*uploadv1.MountBlobResponse, error) {
	d, err := parseBlobRequest(req.GetRepository(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	if err := reference.ValidateName(req.GetFromRepository()); err != nil {
		return nil, err
	}

	rec, err := srv.stat(ctx, req.GetFromRepository(), d)
	if err != nil {
		return nil, err
	}
	if err := srv.link(ctx, req.GetRepository(), d); err != nil {
		return nil, err
	}
	return &uploadv1.MountBlobResponse{Blob: &uploadv1.BlobDescriptor{
		Digest: d.String(), Size: rec.Size}}, nil
}

// DeleteBlob unlinks a blob from a repository.
//
// Only the link goes: the blob's record and bytes stay, since other
// repositories may link them. Reclaiming unlinked bytes needs a garbage
// collector, which the registry does not have yet; until then deleted
// blobs keep costing storage.
func (srv *Server) DeleteBlob(
	ctx context.Context, req *uploadv1.DeleteBlobRequest,
) (*uploadv1.DeleteBlobResponse, error) {
	d, err := parseBlobRequest(req.GetRepository(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	if _, err := srv.stat(ctx, req.GetRepository(), d); err != nil {
		return nil, err
	}
	key := layout.Key(layout.BlobLink{Repo: req.GetRepository(), Digest: d})
	if err := srv.store.Delete(ctx, key); err != nil {
		return nil, fmt.Errorf("unlink blob %s: %w", d, err)
	}
	return &uploadv1.DeleteBlobResponse{}, nil
}

// ReadBlob streams a blob's bytes, or a range of them.
func (srv *Server) ReadBlob(
	req *uploadv1.ReadBlobRequest, stream uploadv1.UploadService_ReadBlobServer,
) error {
	ctx := stream.Context()
	d, err := parseBlobRequest(req.GetRepository(), req.GetDigest())
	if err != nil {
		return err
	}
	rec, err := srv.stat(ctx, req.GetRepository(), d)
	if err != nil {
		return err
	}

	off, n := req.GetOffset(), req.GetLength()
	if off < 0 || (off >= rec.Size && off > 0) {
		return ocierr.New(ocierr.RangeInvalid, "range starts past the end of the blob").
			With("size", fmt.Sprint(rec.Size))
	}
	if n <= 0 || off+n > rec.Size {
		n = rec.Size - off
	}
	first := &uploadv1.ReadBlobResponse{
		Blob:   &uploadv1.BlobDescriptor{Digest: d.String(), Size: rec.Size},
		Offset: off, Length: n,
	}
	key := rec.key()

	if req.GetRedirect() {
		url, err := srv.store.PresignGet(ctx, key, srv.opts.RedirectTTL)
		if err != nil {
			return fmt.Errorf("presign blob %s: %w", d, err)
		}
		first.RedirectUrl = url
		return stream.Send(first)
	}
	if n == 0 {
		return stream.Send(first)
	}

	// The bytes are opened before the first message goes out: once the
	// gateway has it, it has promised the client a 200 and a length, and
	// a failure could only cut the body short.
	body, _, err := srv.store.Open(ctx, key, off, n)
	if err != nil {
		return fmt.Errorf("open blob %s: %w", d, err)
	}
	defer body.Close()
	if err := stream.Send(first); err != nil {
		return err
	}
	return sendChunks(stream, body, n)
}

// sendChunks streams n bytes of r in chunkSize messages. A goroutine reads
// the next chunks from r while the current one is sent, so that the store's
// latency and gRPC's encoding overlap instead of taking turns; at most
// readAhead chunks are buffered.
func sendChunks(stream uploadv1.UploadService_ReadBlobServer, r io.Reader, n int64) error {
	type chunk struct {
		b   []byte
		err error
	}
	free := make(chan []byte, readAhead)
	for range readAhead {
		free <- make([]byte, chunkSize)
	}
	full := make(chan chunk, readAhead)
	done := make(chan struct{})
	defer close(done)

	go func() {
		defer close(full)
		for left := n; left > 0; {
			var buf []byte
			select {
			case buf = <-free:
			case <-done:
				return
			}
			k, err := io.ReadFull(r, buf[:min(int64(len(buf)), left)])
			left -= int64(k)
			if err != nil && left == 0 {
				err = nil
			}
			select {
			case full <- chunk{b: buf[:k], err: err}:
			case <-done:
				return
			}
			if err != nil {
				return
			}
		}
	}()

	for c := range full {
		if len(c.b) > 0 {
			// Send encodes the message before it returns, so the buffer
			// may be refilled afterwards.
			if err := stream.Send(&uploadv1.ReadBlobResponse{Data: c.b}); err != nil {
				return err
			}
		}
		if c.err != nil {
			return fmt.Errorf("read blob data: %w", c.err)
		}
		free <- c.b[:cap(c.b)]
	}
	return nil
}

// readAhead is how many chunks sendChunks reads ahead of the one it sends.
const readAhead = 3
