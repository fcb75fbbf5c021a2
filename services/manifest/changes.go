package manifest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/reference"
)

// The change log
//
// Every push and delete appends one object under layout.Changes, named by
// a change ID: the writer's clock in zero-padded Unix nanoseconds, a dash
// and random hex, so that a listing returns changes in time order and two
// replicas writing in the same nanosecond do not collide. There is no
// database and no sequence number; WatchChanges follows the log by listing
// it (see QueryServer.WatchChanges for the ordering bound this gives) and
// ExpireChanges trims it.

// changeWriteTimeout bounds the write of one change. It runs even when the
// client has already hung up, since the push or delete it records is done.
const changeWriteTimeout = 10 * time.Second

// The kinds of change, as stored. They are part of the stored format.
const (
	changePushed     = "manifest_pushed"
	changeDeleted    = "manifest_deleted"
	changeTagDeleted = "tag_deleted"
)

// The shape of a change ID, and how many changes one listing reads.
const (
	changeTimeDigits    = 20
	changeRandomBytes   = 4
	changeIDLength      = changeTimeDigits + 1 + 2*changeRandomBytes
	changeListBatchSize = 256
)

// change is one change to the registry's content, as stored. Its time is
// in its ID.
type change struct {
	Kind       string   `json:"kind"`
	Repository string   `json:"repository"`
	Digest     string   `json:"digest,omitempty"`
	MediaType  string   `json:"mediaType,omitempty"`
	Tags       []string `json:"tags,omitempty"`
}

// pushed is the change a push makes: dgst, of mediaType, stored in repo
// with tags now pointing at it.
func pushed(repo string, dgst reference.Digest, mediaType string, tags []string) change {
	return change{Kind: changePushed, Repository: repo, Digest: dgst.String(),
		MediaType: mediaType, Tags: tags}
}

// deleted is the change a delete makes: tag deleted from repo or, when tag
// is "", the manifest dgst.
func deleted(repo, tag string, dgst reference.Digest) change {
	if tag != "" {
		return change{Kind: changeTagDeleted, Repository: repo, Tags: []string{tag}}
	}
	return change{Kind: changeDeleted, Repository: repo, Digest: dgst.String()}
}

// recordChange appends c to the change log, best effort: a failure is
// dropped, because the push or delete it records has already happened and
// failing the request would only make the client retry something done.
//
// Shortcoming: a change whose write fails (the store refuses it, or the
// process dies between the push and the write) is lost. Watchers never see
// it, so a tool that mirrors the registry from the stream misses that push
// or delete until it next lists the repository; nothing retries the write
// and nothing counts the losses.
func (s *Server) recordChange(ctx context.Context, c change) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), changeWriteTimeout)
	defer cancel()

	b, err := json.Marshal(c)
	if err != nil {
		return
	}
	id := newChangeID(time.Now())
	_, _ = s.store.Put(ctx, layout.Key(layout.Change{ID: id}), b, objstore.Condition{})
}

// newChangeID returns a change ID for time t.
func newChangeID(t time.Time) string {
	var r [changeRandomBytes]byte
	_, _ = rand.Read(r[:]) // crypto/rand.Read never fails
	return positionAt(t) + "-" + hex.EncodeToString(r[:])
}

// positionAt returns the log position just before every change made at t
// or later. It is a valid cursor: it sorts below the IDs of changes made at
// t and above those made earlier.
func positionAt(t time.Time) string {
	return fmt.Sprintf("%0*d", changeTimeDigits, t.UnixNano())
}

// errBadCursor marks a cursor that is not a change ID or a position.
var errBadCursor = errors.New("malformed cursor")

// parsePosition returns the time of a change ID or a position, which are
// the two forms a cursor takes.
func parsePosition(s string) (time.Time, error) {
	if len(s) != changeTimeDigits && len(s) != changeIDLength {
		return time.Time{}, errBadCursor
	}
	digits, suffix := s[:changeTimeDigits], s[changeTimeDigits:]
	if suffix != "" {
		if suffix[0] != '-' || !isLowerHex(suffix[1:]) {
			return time.Time{}, errBadCursor
		}
	}
	ns, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || ns < 0 {
		return time.Time{}, errBadCursor
	}
	return time.Unix(0, ns), nil
}

// isLowerHex reports whether s is lower-case hex digits.
func isLowerHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// loggedChange is one change read back from the log.
type loggedChange struct {
	id   string
	time time.Time
	// c is nil when the object vanished between listing and reading (the
	// janitor expired it) or does not hold a change.
	c *change
}

// readChanges lists the log after position after and reads every change
// made before horizon, at most changeListBatchSize of them, in log order.
// full reports that the batch was cut at that size, so more settled
// changes may follow at once.
//
// Keys under the prefix that are not change IDs are skipped. Only
// recordChange writes there, so there are none in practice; if there were,
// a listing could come back full of them, and the caller would poll past
// them no faster than its poll interval.
func (s *Server) readChanges(
	ctx context.Context, after string, horizon time.Time,
) (out []loggedChange, full bool, err error) {
	prefix := layout.Key(layout.Changes{})
	keys, _, _, err := s.store.List(ctx, prefix,
		layout.Key(layout.Change{ID: after}), "", changeListBatchSize)
	if err != nil {
		return nil, false, fmt.Errorf("manifest: list changes: %w", err)
	}

	for i, k := range keys {
		id := strings.TrimPrefix(k, prefix)
		t, err := parsePosition(id)
		if err != nil || len(id) != changeIDLength {
			continue
		}
		if !t.Before(horizon) {
			break
		}
		out = append(out, loggedChange{id: id, time: t})
		full = i == changeListBatchSize-1
	}

	err = parallel(ctx, len(out), func(ctx context.Context, i int) error {
		b, _, err := s.store.Get(ctx, layout.Key(layout.Change{ID: out[i].id}))
		if errors.Is(err, objstore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("manifest: read change %s: %w", out[i].id, err)
		}
		var c change
		if json.Unmarshal(b, &c) == nil {
			out[i].c = &c
		}
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	return out, full, nil
}

// expireChanges deletes the changes made before cutoff and returns how
// many it deleted. Any replica may run it at any time; two running at once
// only delete the same objects twice.
func (s *Server) expireChanges(ctx context.Context, cutoff time.Time) (int, error) {
	prefix := layout.Key(layout.Changes{})
	after, deleted := "", 0
	for {
		keys, _, truncated, err := s.store.List(ctx, prefix, after, "", changeListBatchSize)
		if err != nil {
			return deleted, fmt.Errorf("manifest: list changes: %w", err)
		}

		var old []string
		done := !truncated
		for _, k := range keys {
			t, err := parsePosition(strings.TrimPrefix(k, prefix))
			if err != nil {
				continue
			}
			if !t.Before(cutoff) {
				done = true
				break
			}
			old = append(old, k)
		}
		err = parallel(ctx, len(old), func(ctx context.Context, i int) error {
			if err := s.store.Delete(ctx, old[i]); err != nil {
				return fmt.Errorf("manifest: expire change %s: %w", old[i], err)
			}
			return nil
		})
		if err != nil {
			return deleted, err
		}
		deleted += len(old)

		if done || len(keys) == 0 {
			return deleted, nil
		}
		after = keys[len(keys)-1]
	}
}

// proto returns the change as the API sends it.
func (l loggedChange) proto() *manifestv1.Change {
	c := &manifestv1.Change{
		Time:       timestamppb.New(l.time),
		Repository: l.c.Repository,
		Digest:     l.c.Digest,
		MediaType:  l.c.MediaType,
		Tags:       l.c.Tags,
	}
	switch l.c.Kind {
	case changePushed:
		c.Kind = manifestv1.ChangeKind_CHANGE_KIND_MANIFEST_PUSHED
	case changeDeleted:
		c.Kind = manifestv1.ChangeKind_CHANGE_KIND_MANIFEST_DELETED
	case changeTagDeleted:
		c.Kind = manifestv1.ChangeKind_CHANGE_KIND_TAG_DELETED
	}
	return c
}
