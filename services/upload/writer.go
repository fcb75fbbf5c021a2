package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
)

// maxParts is the most parts a multipart upload may have in S3 and R2.
const maxParts = 10000

// writer is one attempt at appending bytes to a session. It cuts the
// incoming bytes into parts of exactly the session's PartSize, uploads up
// to Parallelism of them at once, and commits them to the session state in
// order. Memory is bounded by (Parallelism + 1) part buffers, whatever the
// size of the blob.
//
// Part numbers are never reused between attempts: when an attempt takes a
// session over from a writer that did not finish (it died, or its client
// went away), it skips Parallelism numbers, past any part the old writer
// may still have in flight. An overwritten part could otherwise be listed
// with a stale ETag and fail the final CompleteMultipartUpload.
type writer struct {
	srv   *Server
	id    string
	sess  *session
	etag  string
	hash  *hashPipe
	buf   []byte
	next  int32
	queue []*pendingPart
	// oldTail is the tail object this attempt read, deleted once its bytes
	// are safely in a part or a newer tail.
	oldTail int64
}

// pendingPart is a part being uploaded.
type pendingPart struct {
	number int32
	size   int64
	end    int64
	hashed hashSnapshot
	buf    []byte
	done   chan struct{}
	etag   string
	err    error
}

// claim starts a write attempt on a session. When start is not nil it must
// equal the committed offset. The claim itself is a conditional write, so
// of two attempts that race, one fails here with a 416.
func (srv *Server) claim(ctx context.Context, repo, id string, start *int64) (*writer, error) {
	ss := sessions{srv.store}
	sess, etag, err := ss.load(ctx, repo, id)
	if err != nil {
		return nil, err
	}

	if start != nil && *start != sess.Offset {
		return nil, outOfRange(sess.Offset,
			"chunk starts at %d but the upload has %d bytes", *start, sess.Offset)
	}

	h, err := restoreHashes(sess)
	if err != nil {
		return nil, err
	}

	if sess.Writer != "" {
		sess.NextPart += int32(srv.opts.Parallelism)
	}
	sess.Writer = newID()
	etag, err = ss.save(ctx, id, sess, etag)
	if errors.Is(err, errConflict) {
		return nil, srv.conflict(ctx, repo, id)
	}
	if err != nil {
		return nil, err
	}

	w := &writer{srv: srv, id: id, sess: sess, etag: etag, hash: startHashPipe(h),
		next: sess.NextPart}
	w.buf = srv.buffers.get()
	if sess.TailSize > 0 {
		tail, _, err := srv.store.Get(ctx, layout.Key(layout.UploadTail{
			UploadID: id, Version: sess.TailVersion}))
		if err != nil {
			w.release()
			return nil, fmt.Errorf("read tail of upload %s: %w", id, err)
		}
		w.buf = append(w.buf, tail...)
		w.oldTail = sess.TailVersion
	}
	return w, nil
}

// conflict answers a write that lost a race for the session with a 416
// carrying the offset that is now committed.
func (srv *Server) conflict(ctx context.Context, repo, id string) error {
	sess, _, err := sessions{srv.store}.load(ctx, repo, id)
	if err != nil {
		return err
	}
	return outOfRange(sess.Offset, "upload %s was changed by another request", id)
}

// write appends the bytes that next yields until it returns io.EOF.
func (w *writer) write(ctx context.Context, next func() ([]byte, error)) error {
	for {
		chunk, err := next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}

		for len(chunk) > 0 {
			n := min(len(chunk), int(w.sess.PartSize)-len(w.buf))
			w.buf = append(w.buf, chunk[:n]...)
			w.hash.write(w.buf[len(w.buf)-n:])
			chunk = chunk[n:]
			if int64(len(w.buf)) == w.sess.PartSize {
				if err := w.flush(ctx); err != nil {
					return err
				}
			}
		}
	}
}

// flush starts uploading the full buffer as a part, first committing the
// oldest part in flight when Parallelism parts already are.
func (w *writer) flush(ctx context.Context) error {
	if w.next > maxParts {
		return ocierr.New(ocierr.SizeInvalid,
			"blob exceeds %d parts of %d bytes", maxParts, w.sess.PartSize)
	}
	if err := w.ensureMultipart(ctx); err != nil {
		return err
	}

	end := w.sess.partsSize() + int64(len(w.queue)+1)*w.sess.PartSize
	p := &pendingPart{number: w.next, size: int64(len(w.buf)), end: end,
		hashed: w.hash.snapshot(), buf: w.buf, done: make(chan struct{})}
	w.next++
	w.buf = w.srv.buffers.get()
	w.queue = append(w.queue, p)

	go func() {
		defer close(p.done)
		p.etag, p.err = w.srv.store.UploadPart(ctx,
			layout.Key(layout.BlobData{UploadID: w.id}), w.sess.MultipartID, p.number, p.buf)
	}()

	if len(w.queue) >= w.srv.opts.Parallelism {
		return w.commitOldest(ctx)
	}
	return nil
}

// ensureMultipart creates the session's multipart upload on its first part
// and records it before any part is sent.
func (w *writer) ensureMultipart(ctx context.Context) error {
	if w.sess.MultipartID != "" {
		return nil
	}

	key := layout.Key(layout.BlobData{UploadID: w.id})
	mid, err := w.srv.store.CreateMultipart(ctx, key)
	if err != nil {
		return fmt.Errorf("start multipart upload for %s: %w", w.id, err)
	}

	w.sess.MultipartID = mid
	if err := w.save(ctx); err != nil {
		w.srv.store.AbortMultipart(context.WithoutCancel(ctx), key, mid)
		return err
	}
	return nil
}

// commitOldest waits for the oldest part in flight and records it in the
// session state.
func (w *writer) commitOldest(ctx context.Context) error {
	p := w.queue[0]
	w.queue = w.queue[1:]
	<-p.done
	s256, s512, err := p.hashed.wait() // the part's bytes are hashed too
	w.srv.buffers.put(p.buf)
	if p.err != nil {
		return fmt.Errorf("upload part %d of %s: %w", p.number, w.id, p.err)
	}
	if err != nil {
		return err
	}

	w.sess.Parts = append(w.sess.Parts, objstore.Part{Number: p.number, ETag: p.etag, Size: p.size})
	w.sess.NextPart = p.number + 1
	w.sess.Offset = p.end
	w.sess.SHA256, w.sess.SHA512 = s256, s512
	w.sess.TailVersion, w.sess.TailSize = 0, 0
	if err := w.save(ctx); err != nil {
		return err
	}

	w.dropOldTail(ctx)
	return nil
}

// drain commits every part still in flight.
func (w *writer) drain(ctx context.Context) error {
	for len(w.queue) > 0 {
		if err := w.commitOldest(ctx); err != nil {
			return err
		}
	}
	return nil
}

// save writes the session state, failing with a 416 if another attempt
// took the session over.
func (w *writer) save(ctx context.Context) error {
	etag, err := sessions{w.srv.store}.save(ctx, w.id, w.sess, w.etag)
	if errors.Is(err, errConflict) {
		return w.srv.conflict(ctx, w.sess.Repo, w.id)
	}
	if err != nil {
		return err
	}
	w.etag = etag
	return nil
}

// finish ends a WriteUpload attempt cleanly: it commits the parts in flight,
// stores the remaining bytes as the new tail and releases the session.
func (w *writer) finish(ctx context.Context) error {
	if err := w.drain(ctx); err != nil {
		return err
	}

	version := w.sess.Version + 1
	if len(w.buf) > 0 && w.oldTail != 0 && int64(len(w.buf)) == w.sess.TailSize {
		// Nothing new arrived: the stored tail still holds these bytes.
		version = w.sess.TailVersion
	} else if len(w.buf) > 0 {
		key := layout.Key(layout.UploadTail{UploadID: w.id, Version: version})
		if _, err := w.srv.store.Put(ctx, key, w.buf, objstore.Condition{}); err != nil {
			return fmt.Errorf("store tail of upload %s: %w", w.id, err)
		}
	}

	s256, s512, err := w.hash.snapshot().wait()
	if err != nil {
		return err
	}
	w.sess.SHA256, w.sess.SHA512 = s256, s512
	w.sess.Offset = w.sess.partsSize() + int64(len(w.buf))
	w.sess.TailSize = int64(len(w.buf))
	w.sess.TailVersion = 0
	if len(w.buf) > 0 {
		w.sess.TailVersion = version
	}
	w.sess.Writer = ""
	if err := w.save(ctx); err != nil {
		return err
	}

	if w.sess.TailVersion != w.oldTail {
		w.dropOldTail(ctx)
	}
	return nil
}

// dropOldTail deletes the tail object this attempt started from, once its
// bytes are no longer needed. A failure leaves garbage for the janitor,
// not a broken session.
func (w *writer) dropOldTail(ctx context.Context) {
	if w.oldTail == 0 {
		return
	}
	key := layout.Key(layout.UploadTail{UploadID: w.id, Version: w.oldTail})
	w.srv.store.Delete(context.WithoutCancel(ctx), key)
	w.oldTail = 0
}

// abandon ends an attempt whose input failed. Parts already committed stay
// committed; parts in flight are waited for but not recorded, and the
// session keeps its writer mark so that the next attempt skips their part
// numbers.
func (w *writer) abandon() {
	w.hash.stop()
	for _, p := range w.queue {
		<-p.done
		w.srv.buffers.put(p.buf)
	}
	w.queue = nil
	w.release()
}

// release stops the attempt's hashing and returns its buffer.
func (w *writer) release() {
	w.hash.stop()
	if w.buf != nil {
		w.srv.buffers.put(w.buf)
		w.buf = nil
	}
}

// bufferPool recycles part buffers, all of one capacity, on a free list.
//
// The buffers live outside the Go heap where the platform allows (see
// allocBuffer). Part buffers are most of the service's live memory, and
// the garbage collector lets the heap grow to twice its live size before it
// collects: with the buffers on the heap, the 1 MiB messages an upload
// receives pile up as garbage until the heap is twice the buffers' size.
// Off the heap they do not count, so the garbage is collected early and the
// resident size stays near the buffers plus a few messages.
//
// Buffers are never unmapped, since the S3 client's transport may still
// read a part's body after UploadPart returns; an idle buffer beyond
// maxIdleBuffers gives its pages back to the system (releaseBuffer) but
// stays mapped, so such a late read sees zeros rather than faulting.
type bufferPool struct {
	size int64
	mu   sync.Mutex
	free [][]byte
}

// maxIdleBuffers is how many idle buffers keep their pages.
const maxIdleBuffers = 8

func (b *bufferPool) get() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := len(b.free); n > 0 {
		buf := b.free[n-1]
		b.free = b.free[:n-1]
		return buf[:0]
	}
	return allocBuffer(int(b.size))[:0]
}

func (b *bufferPool) put(buf []byte) {
	if int64(cap(buf)) != b.size {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.free) >= maxIdleBuffers {
		releaseBuffer(buf[:cap(buf)])
	}
	b.free = append(b.free, buf[:0])
}
