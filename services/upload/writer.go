package upload

import (
	"context"
	"crypto/rand"
	"encoding/binary"
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
// An attempt writes nothing until it has to. Before its first part it
// claims the session: it marks the state with its own writer id, a
// conditional write, so of two attempts racing to upload parts one fails
// at once with a 416. An attempt that never fills a part (a small PATCH,
// or a close that brings no bytes) skips the claim: its tail object has a
// name no other attempt uses, and its one state write is conditional on
// the state it read, so a race still costs the loser a 416 and nothing
// else.
//
// Part numbers are never reused between attempts: when an attempt takes a
// session over from a writer that did not finish (it died, or its client
// went away), it skips Parallelism numbers, past any part the old writer
// may still have in flight. An overwritten part could otherwise be listed
// with a stale ETag and fail the final CompleteMultipartUpload.
type writer struct {
	srv  *Server
	id   string
	sess *session
	etag string
	hash *hashPipe
	// buf holds the bytes past the committed parts that are not in a part
	// yet: the stored tail once it is loaded, then the bytes received.
	buf []byte
	// tailLoaded reports that buf starts with the stored tail. The tail is
	// read only when new bytes arrive; a close that brings none has the
	// store copy the tail instead.
	tailLoaded bool
	// received reports that the attempt has received at least one byte.
	received bool
	// claimed reports that the attempt holds the session (see takeOver).
	claimed bool
	next    int32
	queue   []*pendingPart
	// oldTail is the tail object this attempt started from, deleted once its
	// bytes are safely in a part or a newer tail.
	oldTail int64
	// data names the object holding the blob's bytes, once a close has
	// settled it.
	data blobRecord
	// cached reports that the attempt started from a recent state (see
	// recentStates) that no state write has confirmed yet.
	cached bool
	// input is the recorder the attempt reads from, told to stop keeping
	// chunks once a state write has confirmed the attempt's start.
	input *recorder
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

// open starts a write attempt on a session. When start is not nil it must
// equal the committed offset. With useRecent the attempt starts from this
// replica's recent state of the session when it has one that fits start.
func (srv *Server) open(
	ctx context.Context, repo, id string, start *int64, useRecent bool,
) (*writer, error) {
	sess, etag, cached := srv.recentFor(repo, id, start, useRecent)
	if !cached {
		var err error
		if sess, etag, err = (sessions{srv.store}).load(ctx, repo, id); err != nil {
			return nil, err
		}
	}

	if start != nil && *start != sess.Offset {
		return nil, outOfRange(sess.Offset,
			"chunk starts at %d but the upload has %d bytes", *start, sess.Offset)
	}

	h, err := restoreHash(sess)
	if err != nil {
		return nil, err
	}
	w := &writer{srv: srv, id: id, sess: sess, etag: etag, hash: startHashPipe(h),
		next: sess.NextPart, tailLoaded: sess.TailSize == 0, oldTail: sess.TailID,
		cached: cached}
	w.buf = srv.buffers.get()
	return w, nil
}

// recentFor returns this replica's recent state of a session, if useRecent
// is set and it has one for repo whose offset fits start.
func (srv *Server) recentFor(
	repo, id string, start *int64, useRecent bool,
) (*session, string, bool) {
	if !useRecent {
		return nil, "", false
	}
	sess, etag, ok := srv.recent.get(id)
	if !ok || sess.Repo != repo || (start != nil && *start != sess.Offset) {
		return nil, "", false
	}
	return sess, etag, true
}

// takeOver makes the session this attempt's in memory; the next state write
// makes it so in the store. Taking over from a writer that did not finish
// skips the part numbers it may still have in flight.
func (w *writer) takeOver() {
	if w.claimed {
		return
	}
	if w.sess.Writer != "" {
		w.sess.NextPart += int32(w.srv.opts.Parallelism)
	}
	w.sess.Writer = newID()
	w.next = w.sess.NextPart
	w.claimed = true
}

// letGo marks the session as held by no writer. An attempt that never
// claimed it still skips the part numbers of a writer that did not
// finish, so that no later attempt reuses them.
func (w *writer) letGo() {
	if !w.claimed && w.sess.Writer != "" {
		w.sess.NextPart += int32(w.srv.opts.Parallelism)
	}
	w.sess.Writer = ""
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
		if len(chunk) == 0 {
			continue
		}
		if err := w.loadTail(ctx); err != nil {
			return err
		}

		w.received = true
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

// loadTail reads the stored tail into the empty buffer, once. A tail that
// is gone was replaced by another attempt, which makes this one stale.
func (w *writer) loadTail(ctx context.Context) error {
	if w.tailLoaded {
		return nil
	}
	key := layout.Key(layout.UploadTail{UploadID: w.id, ID: w.sess.TailID})
	tail, _, err := w.srv.store.Get(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		if w.cached {
			return errStale
		}
		return w.srv.conflict(ctx, w.sess.Repo, w.id)
	}
	if err != nil {
		return fmt.Errorf("read tail of upload %s: %w", w.id, err)
	}
	w.buf = append(w.buf, tail...)
	w.tailLoaded = true
	return nil
}

// pending returns the number of bytes past the committed parts.
func (w *writer) pending() int64 {
	if w.tailLoaded {
		return int64(len(w.buf))
	}
	return w.sess.TailSize
}

// flush starts uploading the full buffer as a part, first committing the
// oldest part in flight when Parallelism parts already are.
func (w *writer) flush(ctx context.Context) error {
	if err := w.prepareParts(ctx); err != nil {
		return err
	}
	if w.next > maxParts {
		return ocierr.New(ocierr.SizeInvalid,
			"blob exceeds %d parts of %d bytes", maxParts, w.sess.PartSize)
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

// prepareParts claims the session before the attempt's first part, and
// starts the session's multipart upload in the same state write if it has
// none yet. Once it has returned, the attempt may upload parts.
func (w *writer) prepareParts(ctx context.Context) error {
	if w.claimed && w.sess.MultipartID != "" {
		return nil
	}

	key := layout.Key(layout.BlobData{UploadID: w.id})
	created := ""
	if w.sess.MultipartID == "" {
		mid, err := w.srv.store.CreateMultipart(ctx, key)
		if err != nil {
			return fmt.Errorf("start multipart upload for %s: %w", w.id, err)
		}
		w.sess.MultipartID, created = mid, mid
	}

	w.takeOver()
	if err := w.save(ctx); err != nil {
		if created != "" {
			w.srv.store.AbortMultipart(context.WithoutCancel(ctx), key, created)
		}
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
	state, err := p.hashed.wait() // the part's bytes are hashed too
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
	w.sess.Hash = state
	w.sess.TailID, w.sess.TailSize = 0, 0
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
// took the session over, or with errStale if the attempt started from a
// recent state that was not the stored one. A write that succeeds confirms
// the attempt's start.
func (w *writer) save(ctx context.Context) error {
	etag, err := sessions{w.srv.store}.save(ctx, w.id, w.sess, w.etag)
	if errors.Is(err, errConflict) && w.cached {
		return errStale
	}
	if errors.Is(err, errConflict) {
		return w.srv.conflict(ctx, w.sess.Repo, w.id)
	}
	if err != nil {
		return err
	}

	w.etag = etag
	w.cached = false
	if w.input != nil {
		w.input.stop()
	}
	w.srv.recent.put(w.id, w.sess, etag)
	return nil
}

// finish ends a WriteUpload attempt cleanly: it commits the parts in flight,
// stores the remaining bytes as the new tail and lets the session go. An
// attempt that received nothing leaves the session as it found it, once it
// has read it from the store.
func (w *writer) finish(ctx context.Context) error {
	if err := w.drain(ctx); err != nil {
		return err
	}
	if !w.received && w.cached {
		return errStale // the offset to report must be the stored one
	}
	if !w.received {
		return nil
	}

	var tail int64
	if len(w.buf) > 0 {
		tail = newTailID()
		key := layout.Key(layout.UploadTail{UploadID: w.id, ID: tail})
		if _, err := w.srv.store.Put(ctx, key, w.buf, objstore.Condition{}); err != nil {
			return fmt.Errorf("store tail of upload %s: %w", w.id, err)
		}
	}

	state, err := w.hash.snapshot().wait()
	if err != nil {
		return err
	}
	w.sess.Hash = state
	w.sess.Offset = w.sess.partsSize() + int64(len(w.buf))
	w.sess.TailID, w.sess.TailSize = tail, int64(len(w.buf))
	w.letGo()
	if err := w.save(ctx); err != nil {
		if tail != 0 {
			key := layout.Key(layout.UploadTail{UploadID: w.id, ID: tail})
			w.srv.store.Delete(context.WithoutCancel(ctx), key)
		}
		return err
	}

	w.dropOldTail(ctx)
	return nil
}

// newTailID returns a random positive tail id.
func newTailID() int64 {
	var b [8]byte
	rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:])>>1) | 1
}

// dropOldTail deletes the tail object this attempt started from, once its
// bytes are no longer needed. A failure leaves garbage for the janitor,
// not a broken session.
func (w *writer) dropOldTail(ctx context.Context) {
	if w.oldTail == 0 {
		return
	}
	key := layout.Key(layout.UploadTail{UploadID: w.id, ID: w.oldTail})
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
