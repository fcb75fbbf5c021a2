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
	b, _, err := srv.store.Get(ctx, layout.Key(layout.UploadState{UploadID: id}))
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

	dropData := true
	if sess.Committed != "" {
		// The blob was published, or nearly: keep its bytes if its record
		// names them.
		if d, err := reference.ParseDigest(sess.Committed); err == nil {
			rec, err := srv.record(ctx, d)
			dropData = err != nil || rec.Data != id
		}
	}
	return true, srv.removeSession(ctx, id, &sess, dropData)
}

// removeSession deletes a session's state and tails and, when dropData is
// set, its multipart upload and data object.
func (srv *Server) removeSession(ctx context.Context, id string, sess *session, dropData bool) error {
	dataKey := layout.Key(layout.BlobData{UploadID: id})
	if dropData {
		if sess.MultipartID != "" {
			if err := srv.store.AbortMultipart(ctx, dataKey, sess.MultipartID); err != nil {
				return fmt.Errorf("abort upload %s: %w", id, err)
			}
		}
		if err := srv.store.Delete(ctx, dataKey); err != nil {
			return fmt.Errorf("delete data of upload %s: %w", id, err)
		}
	}
	return srv.deletePrefix(ctx, layout.Key(layout.UploadDir{UploadID: id}))
}

// forget deletes a closed session's state and tail, at once. It is best
// effort: the blob is already published, and what a failure leaves behind
// is the janitor's to remove (a committed session's data is kept when its
// blob's record names it). A tail that an attempt which died had stored is
// left for the janitor too, which deletes whatever remains under a session
// without state.
func (srv *Server) forget(ctx context.Context, id string, sess *session) {
	ctx = context.WithoutCancel(ctx)
	keys := []string{layout.Key(layout.UploadState{UploadID: id})}
	if sess.TailID != 0 {
		keys = append(keys, layout.Key(layout.UploadTail{UploadID: id, ID: sess.TailID}))
	}
	var wg sync.WaitGroup
	for _, k := range keys {
		wg.Go(func() { srv.store.Delete(ctx, k) })
	}
	wg.Wait()
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
