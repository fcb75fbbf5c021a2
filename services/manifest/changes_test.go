package manifest

import (
	"context"
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
)

// fastWatch makes watches quick enough for tests.
var fastWatch = QueryOptions{
	SettleWindow:     300 * time.Millisecond,
	PollInterval:     20 * time.Millisecond,
	BookmarkInterval: 100 * time.Millisecond,
}

// serveQuery serves q over gRPC on loopback and returns a client.
func serveQuery(t *testing.T, q *QueryServer) manifestv1.QueryServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	manifestv1.RegisterQueryServiceServer(gs, q)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() error = %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	return manifestv1.NewQueryServiceClient(conn)
}

// watch is one open WatchChanges stream.
type watch struct {
	t      *testing.T
	stream grpc.ServerStreamingClient[manifestv1.QueryServiceWatchChangesResponse]
	cancel context.CancelFunc
	// first is the cursor of the opening bookmark.
	first string
}

func startWatch(t *testing.T, c manifestv1.QueryServiceClient, cursor, repo string) *watch {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	stream, err := c.WatchChanges(ctx, &manifestv1.QueryServiceWatchChangesRequest{
		Cursor: cursor, Repository: repo,
	})
	if err != nil {
		t.Fatalf("WatchChanges(%q) error: %v", cursor, err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("WatchChanges(%q) first Recv error: %v", cursor, err)
	}
	if first.GetChange() != nil || first.GetCursor() == "" {
		t.Fatalf("WatchChanges(%q) first response = %v, want a bookmark", cursor, first)
	}
	return &watch{t: t, stream: stream, cancel: cancel, first: first.GetCursor()}
}

// next returns the next change, skipping bookmarks.
func (w *watch) next() *manifestv1.QueryServiceWatchChangesResponse {
	w.t.Helper()
	for {
		resp, err := w.stream.Recv()
		if err != nil {
			w.t.Fatalf("WatchChanges Recv error: %v", err)
		}
		if resp.GetChange() != nil {
			return resp
		}
	}
}

// quiet fails the test if a change arrives within d.
func (w *watch) quiet(d time.Duration) {
	w.t.Helper()
	got := make(chan *manifestv1.QueryServiceWatchChangesResponse, 1)
	go func() {
		for {
			resp, err := w.stream.Recv()
			if err != nil {
				return
			}
			if resp.GetChange() != nil {
				got <- resp
				return
			}
		}
	}()
	select {
	case resp := <-got:
		w.t.Errorf("WatchChanges sent %v, want nothing", resp.GetChange())
	case <-time.After(d):
	}
	w.cancel()
}

// summary is a change as the tests compare it.
func summary(resp *manifestv1.QueryServiceWatchChangesResponse) string {
	c := resp.GetChange()
	return strings.Join([]string{c.GetKind().String(), c.GetRepository(), c.GetDigest(),
		c.GetMediaType(), strings.Join(c.GetTags(), ",")}, " ")
}

func TestWatchChangesOrderAndResume(t *testing.T) {
	e := newEnv(t, Options{})
	c := serveQuery(t, NewQueryServer(e.srv, fastWatch))
	w := startWatch(t, c, "", "")
	other := startWatch(t, c, "", "elsewhere")

	content := e.image("app", "a")
	dgst := sha256Of(content)
	e.put("app", "v1", mediaTypeOCIManifest, content)
	if err := e.del("app", dgst); err != nil {
		t.Fatalf("DeleteManifest(app, %s) error: %v", dgst, err)
	}
	pushedA := "CHANGE_KIND_MANIFEST_PUSHED app " + dgst + " " + mediaTypeOCIManifest + " v1"
	deletedA := "CHANGE_KIND_MANIFEST_DELETED app " + dgst + "  "

	push, del := w.next(), w.next()
	if got := []string{summary(push), summary(del)}; !slices.Equal(got,
		[]string{pushedA, deletedA}) {
		t.Errorf("WatchChanges = %q, want %q", got, []string{pushedA, deletedA})
	}
	if !(w.first < push.GetCursor() && push.GetCursor() < del.GetCursor()) {
		t.Errorf("cursors %q, %q, %q do not increase", w.first, push.GetCursor(),
			del.GetCursor())
	}
	if pt, dt := push.GetChange().GetTime().AsTime(), del.GetChange().GetTime().AsTime(); dt.
		Before(pt) || time.Since(pt) > time.Minute {
		t.Errorf("change times %v, %v: want recent and in order", pt, dt)
	}
	w.cancel()

	// More changes while nobody watches: a tag pushed by digest with tag
	// parameters, then the tag deleted.
	b := e.image("app", "b")
	_, err := e.srv.PutManifest(e.ctx, &manifestv1.PutManifestRequest{
		Repository: "app", Reference: sha256Of(b), MediaType: mediaTypeOCIManifest,
		Content: b, Tags: []string{"v2", "stable"},
	})
	if err != nil {
		t.Fatalf("PutManifest(app, b) error: %v", err)
	}
	if err := e.del("app", "v2"); err != nil {
		t.Fatalf("DeleteManifest(app, v2) error: %v", err)
	}
	pushedB := "CHANGE_KIND_MANIFEST_PUSHED app " + sha256Of(b) + " " + mediaTypeOCIManifest +
		" v2,stable"
	deletedTag := "CHANGE_KIND_TAG_DELETED app   v2"

	// Resuming after the delete misses nothing and repeats nothing.
	resumed := startWatch(t, c, del.GetCursor(), "")
	if got := []string{summary(resumed.next()), summary(resumed.next())}; !slices.Equal(got,
		[]string{pushedB, deletedTag}) {
		t.Errorf("WatchChanges(after delete) = %q, want %q", got, []string{pushedB, deletedTag})
	}
	resumed.quiet(4 * fastWatch.SettleWindow)

	// Resuming at the first bookmark replays everything.
	replay := startWatch(t, c, w.first, "")
	var got []string
	for range 4 {
		got = append(got, summary(replay.next()))
	}
	if want := []string{pushedA, deletedA, pushedB, deletedTag}; !slices.Equal(got, want) {
		t.Errorf("WatchChanges(first bookmark) = %q, want %q", got, want)
	}
	replay.cancel()

	// A watch of another repository sees none of it.
	other.quiet(2 * fastWatch.SettleWindow)
}

// putChange writes a change made at t straight into the log.
func putChange(t *testing.T, e *env, at time.Time, c change) string {
	t.Helper()
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	id := newChangeID(at)
	if _, err := e.store.Put(e.ctx, layout.Key(layout.Change{ID: id}), b,
		objstore.Condition{}); err != nil {
		t.Fatalf("put change: %v", err)
	}
	return id
}

func TestWatchChangesSettleWindow(t *testing.T) {
	e := newEnv(t, Options{})
	opts := fastWatch
	opts.SettleWindow = time.Hour
	c := serveQuery(t, NewQueryServer(e.srv, opts))
	now := time.Now()

	start := positionAt(now.Add(-3 * time.Hour))
	putChange(t, e, now.Add(-2*time.Hour), change{Kind: changeDeleted, Repository: "old",
		Digest: sha256Of([]byte("old"))})
	putChange(t, e, now.Add(-30*time.Minute), change{Kind: changeDeleted, Repository: "recent",
		Digest: sha256Of([]byte("recent"))})

	w := startWatch(t, c, start, "")
	if got := w.next().GetChange().GetRepository(); got != "old" {
		t.Errorf("WatchChanges first change repository = %q, want old", got)
	}
	// The recent change is inside the settle window: not sent yet.
	w.quiet(300 * time.Millisecond)
}

func TestWatchChangesCursorChecks(t *testing.T) {
	e := newEnv(t, Options{})
	c := serveQuery(t, NewQueryServer(e.srv, fastWatch))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	cases := []struct {
		cursor, repo string
		want         codes.Code
	}{
		{positionAt(time.Now().Add(-25 * time.Hour)), "", codes.OutOfRange},
		{"yesterday", "", codes.InvalidArgument},
		{positionAt(time.Now()) + "-XYZ", "", codes.InvalidArgument},
		{"", "Not/Valid", codes.InvalidArgument},
	}
	for _, tc := range cases {
		stream, err := c.WatchChanges(ctx, &manifestv1.QueryServiceWatchChangesRequest{
			Cursor: tc.cursor, Repository: tc.repo,
		})
		if err == nil {
			_, err = stream.Recv()
		}
		wantStatus(t, "WatchChanges("+tc.cursor+", "+tc.repo+")", err, tc.want)
	}
}

func TestExpireChanges(t *testing.T) {
	e := newEnv(t, Options{})
	q := NewQueryServer(e.srv, QueryOptions{ChangeRetention: 24 * time.Hour})
	now := time.Now()
	for _, age := range []time.Duration{48 * time.Hour, 25 * time.Hour, 23 * time.Hour, 0} {
		putChange(t, e, now.Add(-age), change{Kind: changeTagDeleted, Repository: "app",
			Tags: []string{age.String()}})
	}

	n, err := q.ExpireChanges(e.ctx, now)
	if err != nil || n != 2 {
		t.Errorf("ExpireChanges() = %d, %v; want 2", n, err)
	}
	keys, _, _, err := e.store.List(e.ctx, layout.Key(layout.Changes{}), "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, k := range keys {
		b, _, err := e.store.Get(e.ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		var c change
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatalf("change %s: %v", k, err)
		}
		left = append(left, c.Tags...)
	}
	if want := []string{"23h0m0s", "0s"}; !slices.Equal(left, want) {
		t.Errorf("changes left after ExpireChanges = %v, want %v", left, want)
	}

	if n, err := q.ExpireChanges(e.ctx, now); err != nil || n != 0 {
		t.Errorf("second ExpireChanges() = %d, %v; want 0", n, err)
	}
}

func TestRecordChangeOutlivesTheRequest(t *testing.T) {
	e := newEnv(t, Options{})
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()

	e.srv.recordChange(ctx, deleted("app", "v1", ""))
	keys, _, _, err := e.store.List(e.ctx, layout.Key(layout.Changes{}), "", "", 0)
	if err != nil || len(keys) != 1 {
		t.Errorf("changes after recordChange with a cancelled context = %v, %v; want one",
			keys, err)
	}
}

func TestParsePosition(t *testing.T) {
	at := time.Unix(1733000000, 123456789)
	id := newChangeID(at)
	for _, s := range []string{id, positionAt(at)} {
		got, err := parsePosition(s)
		if err != nil || !got.Equal(at) {
			t.Errorf("parsePosition(%q) = %v, %v; want %v", s, got, err, at)
		}
	}
	if !(positionAt(at) < id && id < positionAt(at.Add(1))) {
		t.Errorf("position %s, ID %s, next position %s: want increasing", positionAt(at), id,
			positionAt(at.Add(1)))
	}
	for _, bad := range []string{"", "123", id + "0", id[:21] + "ZZZZZZZZ", "-" + id[1:]} {
		if _, err := parsePosition(bad); err == nil {
			t.Errorf("parsePosition(%q) error = nil, want one", bad)
		}
	}
}

func TestEndWatches(t *testing.T) {
	e := newEnv(t, Options{})
	q := NewQueryServer(e.srv, fastWatch)
	c := serveQuery(t, q)
	w := startWatch(t, c, "", "")

	q.EndWatches()
	for {
		resp, err := w.stream.Recv()
		if err != nil {
			wantStatus(t, "WatchChanges Recv after EndWatches", err, codes.Unavailable)
			break
		}
		if resp.GetChange() != nil {
			t.Fatalf("WatchChanges sent %v, want the stream to end", resp)
		}
	}

	stream, err := c.WatchChanges(e.ctx, &manifestv1.QueryServiceWatchChangesRequest{})
	if err == nil {
		_, err = stream.Recv()
	}
	wantStatus(t, "WatchChanges after EndWatches", err, codes.Unavailable)
}
