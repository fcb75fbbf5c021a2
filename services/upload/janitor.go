package upload

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/reference"
)

// RemoveAbandoned deletes every session untouched for longer than
// Options.SessionMaxAge, with its multipart upload, tail and any data it
// wrote that no blob record names. It returns how many sessions it removed.
// Any replica may run it at any time; two running at once do no harm.
func (srv *Server) RemoveAbandoned(ctx context.Context, now time.Time) (int, error) {
	_, dirs, _, err := srv.store.List(ctx, layout.Key(layout.Uploads{}), "", "/", 0)
	if err != nil {
		return 0, fmt.Errorf("list upload sessions: %w", err)
	}

	removed := 0
	for _, dir := range dirs {
		id := strings.TrimSuffix(strings.TrimPrefix(dir, layout.Key(layout.Uploads{})), "/")
		gone, err := srv.removeIfAbandoned(ctx, id, now)
		if err != nil {
			return removed, err
		}
		if gone {
			removed++
		}
	}
	return removed, srv.abortOrphans(ctx, now)
}

// removeIfAbandoned removes one session if it is too old.
func (srv *Server) removeIfAbandoned(ctx context.Context, id string, now time.Time) (bool, error) {
	b, info, err := srv.store.Get(ctx, layout.Key(layout.UploadState{UploadID: id}))
	if errors.Is(err, objstore.ErrNotFound) {
		// A session without state is what a closed session leaves when a
		// tail outlived it (one an attempt that died had stored), or
		// debris of a removal that stopped half-way; its own listing is
		// all that is left to delete.
		return false, srv.deletePrefix(ctx, layout.Key(layout.UploadDir{UploadID: id}))
	}
	if err != nil {
		return false, fmt.Errorf("read upload %s: %w", id, err)
	}
	var sess session
	if err := json.Unmarshal(b, &sess); err != nil {
		return false, err
	}
	if now.Sub(sess.Updated) < srv.opts.SessionMaxAge {
		return false, nil
	}

	if sess.Committed == "" {
		err := srv.discard(ctx, id, &sess, info.ETag)
		if errors.Is(err, errConflict) {
			return false, nil // written to since it was read: not abandoned
		}
		return err == nil, err
	}

	// The blob was published, or nearly: keep its bytes if its record names
	// this session's. A committed session takes no more writes, so nothing
	// can race this removal.
	var keep *blobRecord
	if d, err := reference.ParseDigest(sess.Committed); err == nil {
		if rec, err := srv.record(ctx, d); err == nil && rec.Data == id {
			keep = &rec
		}
	}
	return true, srv.removeSession(ctx, id, &sess, keep)
}

// discard removes a session that will publish nothing, with everything it
// wrote. It first marks the session removed with a write conditional on
// etag, the ETag of the state sess was read from: a close that read the
// state earlier then fails its own conditional write instead of publishing
// a blob whose bytes this removal deletes. When another request changed
// the session first, discard removes nothing and returns errConflict.
func (srv *Server) discard(ctx context.Context, id string, sess *session, etag string) error {
	srv.recent.drop(id)
	sess.Removed = true
	if _, err := (sessions{srv.store}).save(ctx, id, sess, etag); err != nil {
		return err
	}
	return srv.removeSession(ctx, id, sess, nil)
}

// removeSession deletes a session: its multipart upload and data object,
// its tails, and last its state, so that a removal cut short is finished
// by the janitor. keep, when not nil, names a published blob's bytes among
// them, which stay.
func (srv *Server) removeSession(
	ctx context.Context, id string, sess *session, keep *blobRecord,
) error {
	keepKey := ""
	if keep != nil {
		keepKey = keep.key()
	}

	dataKey := layout.Key(layout.BlobData{UploadID: id})
	if sess.MultipartID != "" && keepKey != dataKey {
		if err := srv.store.AbortMultipart(ctx, dataKey, sess.MultipartID); err != nil {
			return fmt.Errorf("abort upload %s: %w", id, err)
		}
		if err := srv.store.Delete(ctx, dataKey); err != nil {
			return fmt.Errorf("delete data of upload %s: %w", id, err)
		}
	}

	tails, _, _, err := srv.store.List(ctx, layout.Key(layout.UploadTails{UploadID: id}), "", "", 0)
	if err != nil {
		return fmt.Errorf("list tails of upload %s: %w", id, err)
	}
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for _, k := range tails {
		if k == keepKey {
			continue
		}
		wg.Go(func() {
			if err := srv.store.Delete(ctx, k); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("delete tails of upload %s: %w", id, err)
	}
	return srv.deletePrefix(ctx, layout.Key(layout.UploadDir{UploadID: id}))
}

// forget removes a closed session in the background, keeping the object
// that holds its blob's bytes (see removeSession). The blob is published
// by then, so the client need not wait. A removal that fails or is cut
// short leaves a committed session, which the janitor removes the same way.
func (srv *Server) forget(ctx context.Context, id string, sess *session, keep blobRecord) {
	srv.recent.drop(id)
	srv.background.Go(func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		srv.removeSession(ctx, id, sess, &keep)
	})
}

// Wait waits for the removals of closed sessions that are still running.
// Call it after the server has stopped taking calls.
func (srv *Server) Wait() {
	srv.background.Wait()
}

// deletePrefix deletes every object under prefix, the session state last so
// that a removal cut short is retried by the next janitor pass.
func (srv *Server) deletePrefix(ctx context.Context, prefix string) error {
	keys, _, _, err := srv.store.List(ctx, prefix, "", "", 0)
	if err != nil {
		return fmt.Errorf("list %s: %w", prefix, err)
	}
	var state string
	var errs []error
	for _, k := range keys {
		if strings.HasSuffix(k, "/state") {
			state = k
			continue
		}
		errs = append(errs, srv.store.Delete(ctx, k))
	}
	if state != "" {
		errs = append(errs, srv.store.Delete(ctx, state))
	}
	return errors.Join(errs...)
}

// abortOrphans aborts multipart uploads older than the session age whose
// session is gone, such as one started by a writer that lost its session
// before it could record the upload.
func (srv *Server) abortOrphans(ctx context.Context, now time.Time) error {
	ups, err := srv.store.ListMultipartUploads(ctx, layout.Key(layout.BlobData{}))
	if err != nil {
		return fmt.Errorf("list multipart uploads: %w", err)
	}
	for _, up := range ups {
		if now.Sub(up.Initiated) < srv.opts.SessionMaxAge {
			continue
		}
		id := strings.TrimPrefix(up.Key, layout.Key(layout.BlobData{}))
		b, _, err := srv.store.Get(ctx, layout.Key(layout.UploadState{UploadID: id}))
		if err == nil {
			var sess session
			if json.Unmarshal(b, &sess) == nil && sess.MultipartID == up.UploadID {
				continue
			}
		}
		if err := srv.store.AbortMultipart(ctx, up.Key, up.UploadID); err != nil {
			return fmt.Errorf("abort orphan upload %s: %w", up.Key, err)
		}
	}
	return nil
}
