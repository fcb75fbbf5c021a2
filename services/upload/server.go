// Package upload is the upload service: it owns blobs, from the upload
// session that receives their bytes to the reads that serve them.
//
// The service keeps nothing in memory between calls. An upload session's
// state, including its hash state and the bytes that do not yet fill a
// part, lives in the object store, so any replica continues any session and
// a replica that dies mid-write loses at most that write. See session and
// writer for the contract.
package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// Options tunes the upload service.
type Options struct {
	// PartSize is the size of every multipart part but the last, fixed for
	// the life of each session. 0 means 16 MiB; values under 5 MiB are
	// raised to 5 MiB, the smallest part S3 and R2 accept.
	PartSize int64
	// Parallelism is how many parts one upload sends at once. 0 means 4.
	Parallelism int
	// SessionMaxAge is how long an untouched session lives before
	// RemoveAbandoned deletes it. 0 means 24 hours.
	SessionMaxAge time.Duration
	// RedirectTTL is how long a presigned blob URL stays valid. 0 means
	// 5 minutes.
	RedirectTTL time.Duration
}

const (
	minPartSize = 5 << 20
	// chunkSize is the payload of each streamed message: just under 1 MiB,
	// so a message with its framing fits one of gRPC's pooled buffers.
	chunkSize = 1<<20 - 64
)

func (o Options) withDefaults() Options {
	if o.PartSize == 0 {
		o.PartSize = 16 << 20
	}
	o.PartSize = max(o.PartSize, minPartSize)
	if o.Parallelism <= 0 {
		o.Parallelism = 4
	}
	if o.SessionMaxAge <= 0 {
		o.SessionMaxAge = 24 * time.Hour
	}
	if o.RedirectTTL <= 0 {
		o.RedirectTTL = 5 * time.Minute
	}
	return o
}

// Server implements uploadv1.UploadServiceServer over an object store.
type Server struct {
	uploadv1.UnimplementedUploadServiceServer
	store   *objstore.Store
	opts    Options
	buffers *bufferPool
	// background tracks the removals of closed sessions (see forget).
	background sync.WaitGroup
	// recent is the state this replica last wrote of each session.
	recent recentStates
}

// NewServer returns an upload service keeping its data in store.
func NewServer(store *objstore.Store, opts Options) *Server {
	opts = opts.withDefaults()
	return &Server{store: store, opts: opts, buffers: &bufferPool{size: opts.PartSize}}
}

// StartUpload opens a session.
func (srv *Server) StartUpload(
	ctx context.Context, req *uploadv1.StartUploadRequest,
) (*uploadv1.StartUploadResponse, error) {
	if err := reference.ValidateName(req.GetRepository()); err != nil {
		return nil, err
	}

	alg := reference.SHA256
	if a := req.GetDigestAlgorithm(); a != "" {
		var err error
		if alg, err = reference.ParseAlgorithm(a); err != nil {
			return nil, err
		}
	}

	id := newID()
	now := time.Now().UTC()
	sess := &session{Repo: req.GetRepository(), Created: now, Updated: now,
		PartSize: srv.opts.PartSize, NextPart: 1, Algorithm: alg}
	etag, err := sessions{srv.store}.create(ctx, id, sess)
	if err != nil {
		return nil, err
	}
	srv.recent.put(id, sess, etag)
	return &uploadv1.StartUploadResponse{Status: status(id, sess)}, nil
}

// WriteUpload appends a chunk to a session.
func (srv *Server) WriteUpload(stream uploadv1.UploadService_WriteUploadServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return ocierr.New(ocierr.BlobUploadInvalid, "write stream without a header")
	}

	w, err := srv.run(ctx, hdr.GetRepository(), hdr.GetUploadId(), hdr.Start, hdr.Length,
		func() ([]byte, error) {
			msg, err := stream.Recv()
			return msg.GetData(), err
		},
		func(w *writer) error { return w.finish(ctx) })
	if err != nil {
		return err
	}
	w.release()
	return stream.SendAndClose(&uploadv1.WriteUploadResponse{Status: status(w.id, w.sess)})
}

// run opens a write attempt on a session, writes the chunks next yields
// into it, checking them against the declared length, and ends it with
// end. On success the caller owns the returned writer and must release it.
//
// The attempt starts from this replica's recent state of the session when
// it has one. When that turns out stale (errStale), which it does before
// the attempt has written anything the session depends on, the attempt
// runs again from the stored state on the same chunks.
func (srv *Server) run(
	ctx context.Context, repo, id string, start, length *int64,
	next func() ([]byte, error), end func(*writer) error,
) (*writer, error) {
	if err := reference.ValidateName(repo); err != nil {
		return nil, err
	}

	input := &recorder{src: next}
	w, err := srv.attempt(ctx, repo, id, start, length, input, true, end)
	if errors.Is(err, errStale) {
		srv.recent.drop(id)
		input.rewind()
		w, err = srv.attempt(ctx, repo, id, start, length, input, false, end)
	}
	return w, err
}

// attempt is one run of run.
func (srv *Server) attempt(
	ctx context.Context, repo, id string, start, length *int64,
	input *recorder, useRecent bool, end func(*writer) error,
) (*writer, error) {
	w, err := srv.open(ctx, repo, id, start, useRecent)
	if err != nil {
		return nil, err
	}
	w.input = input
	if !w.cached {
		input.stop() // no second run to keep chunks for
	}

	counted := countChunks(input.next)
	err = w.write(ctx, counted.next)
	if err == nil {
		err = checkLength(length, counted.n)
	}
	if err == nil {
		err = end(w)
	}
	if err != nil {
		w.abandon()
		return nil, err
	}
	return w, nil
}

// GetUpload reports a session's committed offset.
func (srv *Server) GetUpload(
	ctx context.Context, req *uploadv1.GetUploadRequest,
) (*uploadv1.GetUploadResponse, error) {
	if err := reference.ValidateName(req.GetRepository()); err != nil {
		return nil, err
	}
	sess, _, err := sessions{srv.store}.load(ctx, req.GetRepository(), req.GetUploadId())
	if err != nil {
		return nil, err
	}
	return &uploadv1.GetUploadResponse{Status: status(req.GetUploadId(), sess)}, nil
}

// CommitUpload closes a session, verifying the digest.
func (srv *Server) CommitUpload(stream uploadv1.UploadService_CommitUploadServer) error {
	ctx := stream.Context()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return ocierr.New(ocierr.BlobUploadInvalid, "commit stream without a header")
	}
	want, err := reference.ParseDigest(hdr.GetDigest())
	if err != nil {
		return err
	}

	var blob *uploadv1.BlobDescriptor
	w, err := srv.run(ctx, hdr.GetRepository(), hdr.GetUploadId(), hdr.Start, hdr.Length,
		func() ([]byte, error) {
			msg, err := stream.Recv()
			return msg.GetData(), err
		},
		func(w *writer) error {
			var err error
			blob, err = w.commit(ctx, want)
			return err
		})
	if err != nil {
		return err
	}
	w.release()
	return stream.SendAndClose(&uploadv1.CommitUploadResponse{Blob: blob})
}

// CancelUpload removes a session and what it wrote.
func (srv *Server) CancelUpload(
	ctx context.Context, req *uploadv1.CancelUploadRequest,
) (*uploadv1.CancelUploadResponse, error) {
	if err := reference.ValidateName(req.GetRepository()); err != nil {
		return nil, err
	}
	// A write that lands between the read and the removal's mark makes the
	// mark fail; the session is then read again. A close that lands there
	// finishes the session, and the next read answers BLOB_UPLOAD_UNKNOWN.
	for range 5 {
		sess, etag, err := sessions{srv.store}.load(ctx, req.GetRepository(), req.GetUploadId())
		if err != nil {
			return nil, err
		}
		err = srv.discard(ctx, req.GetUploadId(), sess, etag)
		if errors.Is(err, errConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return &uploadv1.CancelUploadResponse{}, nil
	}
	return nil, fmt.Errorf("cancel upload %s: the session kept changing", req.GetUploadId())
}

func status(id string, s *session) *uploadv1.UploadStatus {
	return &uploadv1.UploadStatus{UploadId: id, Repository: s.Repo, Offset: s.Offset}
}

// chunkCounter counts the bytes a chunk source yields.
type chunkCounter struct {
	src func() ([]byte, error)
	n   int64
}

func countChunks(src func() ([]byte, error)) *chunkCounter {
	return &chunkCounter{src: src}
}

func (c *chunkCounter) next() ([]byte, error) {
	b, err := c.src()
	c.n += int64(len(b))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("receive chunk: %w", err)
	}
	return b, err
}

// checkLength refuses a chunk whose length differs from the declared one.
func checkLength(declared *int64, got int64) error {
	if declared != nil && *declared >= 0 && *declared != got {
		return ocierr.New(ocierr.SizeInvalid,
			"chunk declared %d bytes but carried %d", *declared, got)
	}
	return nil
}
