package objstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

const mib = 1 << 20

// newStore opens a Store on a fresh bucket of the shared embedded server.
func newStore(t *testing.T) (*objstore.Store, objstore.Config) {
	t.Helper()
	cfg := s3test.Start(t)
	st, err := objstore.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st, cfg
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustPut(t *testing.T, st *objstore.Store, key string, body []byte) objstore.ObjectInfo {
	t.Helper()
	info, err := st.Put(testCtx(t), key, body, objstore.Condition{})
	if err != nil {
		t.Fatalf("Put %q: %v", key, err)
	}
	return info
}

func TestPutGetHeadDelete(t *testing.T) {
	st, _ := newStore(t)
	ctx := testCtx(t)
	body := []byte("hello, keel")

	put, err := st.Put(ctx, "a/b/c", body, objstore.Condition{})
	if err != nil {
		t.Fatal(err)
	}
	if put.Key != "a/b/c" || put.Size != int64(len(body)) || put.ETag == "" {
		t.Fatalf("Put info = %+v", put)
	}

	got, info, err := st.Get(ctx, "a/b/c")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, body) {
		t.Fatalf("Get = %q, want %q", got, body)
	}
	if info.ETag != put.ETag {
		t.Errorf("Get ETag %q != Put ETag %q", info.ETag, put.ETag)
	}
	if info.Size != int64(len(body)) || info.Key != "a/b/c" {
		t.Errorf("Get info = %+v", info)
	}
	if info.LastModified.IsZero() || time.Since(info.LastModified) > time.Hour {
		t.Errorf("Get LastModified = %v", info.LastModified)
	}

	head, err := st.Head(ctx, "a/b/c")
	if err != nil {
		t.Fatal(err)
	}
	if head.ETag != put.ETag || head.Size != int64(len(body)) || head.LastModified.IsZero() {
		t.Errorf("Head = %+v, want ETag %q size %d", head, put.ETag, len(body))
	}

	// Overwrite changes content and ETag.
	put2 := mustPut(t, st, "a/b/c", []byte("second"))
	if put2.ETag == put.ETag {
		t.Errorf("overwrite kept ETag %q", put.ETag)
	}

	// Empty objects work.
	mustPut(t, st, "empty", nil)
	got, info, err = st.Get(ctx, "empty")
	if err != nil || len(got) != 0 || info.Size != 0 {
		t.Errorf("Get empty = %q, %+v, %v", got, info, err)
	}

	if err := st.Delete(ctx, "a/b/c"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := st.Get(ctx, "a/b/c"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if _, err := st.Head(ctx, "a/b/c"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Head after Delete: %v, want ErrNotFound", err)
	}
	if err := st.Delete(ctx, "a/b/c"); err != nil {
		t.Errorf("Delete of missing key: %v", err)
	}
	if err := st.Delete(ctx, "never/existed"); err != nil {
		t.Errorf("Delete of never-existing key: %v", err)
	}
}

func TestBucketLifecycle(t *testing.T) {
	st, cfg := newStore(t)
	ctx := testCtx(t)
	if err := st.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := st.EnsureBucket(ctx); err != nil {
		t.Fatalf("EnsureBucket on existing bucket: %v", err)
	}

	cfg.Bucket += "-fresh"
	fresh, err := objstore.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Ping(ctx); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Ping on missing bucket: %v, want ErrNotFound", err)
	}
	if err := fresh.Delete(ctx, "x"); err == nil {
		t.Error("Delete in a missing bucket reported success")
	}
	if err := fresh.EnsureBucket(ctx); err != nil {
		t.Fatalf("EnsureBucket creating: %v", err)
	}
	if err := fresh.Ping(ctx); err != nil {
		t.Fatalf("Ping after EnsureBucket: %v", err)
	}

	bad := cfg
	bad.SecretAccessKey = "wrong"
	wrong, err := objstore.New(ctx, bad)
	if err != nil {
		t.Fatal(err)
	}
	err = wrong.Ping(ctx)
	if err == nil || errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Ping with a wrong secret: %v, want a non-NotFound error", err)
	}
}

func TestList(t *testing.T) {
	st, _ := newStore(t)
	ctx := testCtx(t)
	for _, k := range []string{"r/a/1", "r/a/2", "r/b/1", "r/c", "r/d", "other"} {
		mustPut(t, st, k, []byte(k))
	}

	keys, prefixes, trunc, err := st.List(ctx, "r/", "", "/", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"r/c", "r/d"}) ||
		!slices.Equal(prefixes, []string{"r/a/", "r/b/"}) || trunc {
		t.Errorf("List delimiter = %q %q %v", keys, prefixes, trunc)
	}

	all := []string{"r/a/1", "r/a/2", "r/b/1", "r/c", "r/d"}
	keys, prefixes, trunc, err = st.List(ctx, "r/", "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, all) || len(prefixes) != 0 || trunc {
		t.Errorf("List all = %q %q %v", keys, prefixes, trunc)
	}

	keys, _, trunc, err = st.List(ctx, "r/", "r/b/1", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"r/c", "r/d"}) || trunc {
		t.Errorf("List startAfter r/b/1 = %q %v", keys, trunc)
	}

	// Page two at a time with startAfter.
	var paged []string
	after := ""
	for i := 0; ; i++ {
		if i > 10 {
			t.Fatal("paging does not end")
		}
		keys, _, trunc, err := st.List(ctx, "r/", after, "", 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(keys) > 2 {
			t.Fatalf("limit 2 returned %d keys", len(keys))
		}
		paged = append(paged, keys...)
		if !trunc {
			break
		}
		if len(keys) == 0 {
			t.Fatal("truncated page with no keys")
		}
		after = keys[len(keys)-1]
	}
	if !slices.Equal(paged, all) {
		t.Errorf("paged = %q, want %q", paged, all)
	}

	// Exactly as many as exist: not truncated.
	keys, _, trunc, err = st.List(ctx, "r/", "", "", 5)
	if err != nil || len(keys) != 5 || trunc {
		t.Errorf("List limit 5 = %q %v %v", keys, trunc, err)
	}

	// Delimiter with a limit counts prefixes too.
	keys, prefixes, trunc, err = st.List(ctx, "r/", "", "/", 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys)+len(prefixes) != 3 || !trunc {
		t.Errorf("List delimiter limit 3 = %q %q %v", keys, prefixes, trunc)
	}

	keys, prefixes, trunc, err = st.List(ctx, "nothing/", "", "/", 0)
	if err != nil || len(keys) != 0 || len(prefixes) != 0 || trunc {
		t.Errorf("List empty = %q %q %v %v", keys, prefixes, trunc, err)
	}
}

// TestListPagesInternally lists more keys than one S3 page holds.
func TestListPagesInternally(t *testing.T) {
	if testing.Short() {
		t.Skip("puts 1,205 objects")
	}
	st, _ := newStore(t)
	ctx := testCtx(t)
	const n = 1205
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("many/%05d", i)
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	work := make(chan string)
	for range 16 {
		wg.Go(func() {
			for k := range work {
				if _, err := st.Put(ctx, k, []byte(k), objstore.Condition{}); err != nil {
					errs <- err
				}
			}
		})
	}
	for _, k := range want {
		work <- k
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	keys, _, trunc, err := st.List(ctx, "many/", "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, want) || trunc {
		t.Errorf("List all: %d keys (truncated %v), want %d in order", len(keys), trunc, n)
	}

	keys, _, trunc, err = st.List(ctx, "many/", "", "", 1100)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, want[:1100]) || !trunc {
		t.Errorf("List limit 1100: %d keys, truncated %v", len(keys), trunc)
	}
	keys, _, trunc, err = st.List(ctx, "many/", keys[len(keys)-1], "", 1100)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, want[1100:]) || trunc {
		t.Errorf("List rest: %d keys, truncated %v", len(keys), trunc)
	}
}

func TestPrefix(t *testing.T) {
	raw, cfg := newStore(t)
	ctx := testCtx(t)
	cfg.Prefix = "tenant1/"
	st, err := objstore.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, st, "blobs/x", []byte("x"))
	mustPut(t, st, "blobs/y", []byte("y"))
	mustPut(t, raw, "outside", []byte("o"))

	got, _, err := raw.Get(ctx, "tenant1/blobs/x")
	if err != nil || string(got) != "x" {
		t.Fatalf("raw Get of prefixed key = %q, %v", got, err)
	}
	keys, prefixes, _, err := st.List(ctx, "", "", "/", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 0 || !slices.Equal(prefixes, []string{"blobs/"}) {
		t.Errorf("prefixed List = %q %q", keys, prefixes)
	}
	keys, _, _, err = st.List(ctx, "blobs/", "blobs/x", "", 0)
	if err != nil || !slices.Equal(keys, []string{"blobs/y"}) {
		t.Errorf("prefixed List startAfter = %q %v", keys, err)
	}
	info, err := st.Head(ctx, "blobs/y")
	if err != nil || info.Key != "blobs/y" {
		t.Errorf("prefixed Head = %+v %v", info, err)
	}
	if _, err := st.Head(ctx, "outside"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("prefixed store sees unprefixed key: %v", err)
	}

	id, err := st.CreateMultipart(ctx, "uploads/u")
	if err != nil {
		t.Fatal(err)
	}
	ups, err := st.ListMultipartUploads(ctx, "uploads/")
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 1 || ups[0].Key != "uploads/u" || ups[0].UploadID != id {
		t.Errorf("prefixed ListMultipartUploads = %+v", ups)
	}
	if err := st.AbortMultipart(ctx, "uploads/u", id); err != nil {
		t.Fatal(err)
	}
}

func TestConditionalPut(t *testing.T) {
	st, _ := newStore(t)
	ctx := testCtx(t)
	once := objstore.Condition{IfNoneMatch: true}

	first, err := st.Put(ctx, "cond", []byte("v1"), once)
	if err != nil {
		t.Fatalf("first If-None-Match put: %v", err)
	}
	_, err = st.Put(ctx, "cond", []byte("v2"), once)
	if !errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Fatalf("second If-None-Match put: %v, want ErrPreconditionFailed", err)
	}
	if got, _, _ := st.Get(ctx, "cond"); string(got) != "v1" {
		t.Fatalf("content after failed put = %q, want v1", got)
	}

	second, err := st.Put(ctx, "cond", []byte("v2"), objstore.Condition{IfMatch: first.ETag})
	if err != nil {
		t.Fatalf("If-Match with current ETag: %v", err)
	}
	if second.ETag == first.ETag {
		t.Errorf("ETag unchanged after conditional overwrite")
	}
	_, err = st.Put(ctx, "cond", []byte("v3"), objstore.Condition{IfMatch: first.ETag})
	if !errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Fatalf("If-Match with stale ETag: %v, want ErrPreconditionFailed", err)
	}
	got, info, err := st.Get(ctx, "cond")
	if err != nil || string(got) != "v2" || info.ETag != second.ETag {
		t.Fatalf("after stale If-Match: %q %q %v, want v2 %q", got, info.ETag, err, second.ETag)
	}

	// If-Match on a missing key: S3 says 404, some servers 412.
	_, err = st.Put(ctx, "missing", []byte("x"), objstore.Condition{IfMatch: first.ETag})
	if !errors.Is(err, objstore.ErrNotFound) && !errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Errorf("If-Match on missing key: %v", err)
	}
	t.Logf("If-Match on a missing key: %v", err)
	if _, err := st.Head(ctx, "missing"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("If-Match put on a missing key created it: %v", err)
	}
}

func TestOpenRanges(t *testing.T) {
	st, _ := newStore(t)
	ctx := testCtx(t)
	body := randBytes(t, 1000)
	put := mustPut(t, st, "ranged", body)

	read := func(offset, length int64) ([]byte, objstore.ObjectInfo) {
		t.Helper()
		rc, info, err := st.Open(ctx, "ranged", offset, length)
		if err != nil {
			t.Fatalf("Open(%d, %d): %v", offset, length, err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatalf("read Open(%d, %d): %v", offset, length, err)
		}
		if info.Size != 1000 || info.ETag != put.ETag || info.Key != "ranged" {
			t.Errorf("Open(%d, %d) info = %+v", offset, length, info)
		}
		return b, info
	}
	cases := []struct {
		off, n int64
		want   []byte
	}{
		{0, -1, body},
		{0, 1000, body},
		{0, 5, body[:5]},
		{10, 20, body[10:30]},
		{990, -1, body[990:]},
		{999, 1, body[999:]},
		{995, 100, body[995:]}, // a range past the end is clamped
		{500, 0, nil},
	}
	for _, c := range cases {
		got, _ := read(c.off, c.n)
		if !bytes.Equal(got, c.want) {
			t.Errorf("Open(%d, %d) = %d bytes, want %d bytes", c.off, c.n, len(got), len(c.want))
		}
	}

	if _, _, err := st.Open(ctx, "nope", 0, -1); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Open missing: %v, want ErrNotFound", err)
	}
	if _, _, err := st.Open(ctx, "nope", 5, 10); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Open missing ranged: %v, want ErrNotFound", err)
	}
	_, _, err := st.Open(ctx, "ranged", 1000, 10)
	if err == nil || errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("Open past the end: %v, want a range error", err)
	}
	if _, _, err := st.Open(ctx, "ranged", -1, 10); err == nil {
		t.Error("Open with a negative offset succeeded")
	}
}

// multipartRoundTrip uploads three parts (5 MiB, 5 MiB, a smaller last one),
// checks ListParts, completes, and checks the content.
func multipartRoundTrip(t *testing.T, st *objstore.Store, key string) {
	t.Helper()
	ctx := testCtx(t)
	id, err := st.CreateMultipart(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if id == "" {
		t.Fatal("empty upload ID")
	}
	bodies := [][]byte{randBytes(t, 5*mib), randBytes(t, 5*mib), randBytes(t, mib+7)}
	var parts []objstore.Part
	for i, b := range bodies {
		n := int32(i + 1)
		etag, err := st.UploadPart(ctx, key, id, n, b)
		if err != nil {
			t.Fatalf("UploadPart %d: %v", n, err)
		}
		if etag == "" {
			t.Fatalf("UploadPart %d: empty ETag", n)
		}
		parts = append(parts, objstore.Part{Number: n, ETag: etag, Size: int64(len(b))})
	}

	listed, err := st.ListParts(ctx, key, id)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(listed, parts) {
		t.Fatalf("ListParts = %+v, want %+v", listed, parts)
	}
	ups, err := st.ListMultipartUploads(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ups, func(u objstore.MultipartUpload) bool {
		return u.UploadID == id && u.Key == key && !u.Initiated.IsZero()
	}) {
		t.Errorf("ListMultipartUploads = %+v, want upload %s", ups, id)
	}

	info, err := st.CompleteMultipart(ctx, key, id, listed)
	if err != nil {
		t.Fatalf("CompleteMultipart: %v", err)
	}
	want := bytes.Join(bodies, nil)
	if info.Size != int64(len(want)) || info.ETag == "" || info.Key != key {
		t.Errorf("CompleteMultipart info = %+v", info)
	}
	got, ginfo, err := st.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("completed object differs: %d bytes, want %d", len(got), len(want))
	}
	if ginfo.ETag != info.ETag {
		t.Errorf("Get ETag %q != Complete ETag %q", ginfo.ETag, info.ETag)
	}
	// A range across the part boundary.
	rc, _, err := st.Open(ctx, key, 5*mib-3, 6)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(b, want[5*mib-3:5*mib+3]) {
		t.Errorf("range across parts = %x, %v", b, err)
	}
	ups, err = st.ListMultipartUploads(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(ups) != 0 {
		t.Errorf("uploads left after Complete: %+v", ups)
	}
	if _, err := st.ListParts(ctx, key, id); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("ListParts after Complete: %v, want ErrNotFound", err)
	}
}

func TestMultipart(t *testing.T) {
	st, _ := newStore(t)
	multipartRoundTrip(t, st, "blobs/sha256/big")
}

func TestMultipartAbortAndList(t *testing.T) {
	st, _ := newStore(t)
	ctx := testCtx(t)
	a, err := st.CreateMultipart(ctx, "up/a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := st.CreateMultipart(ctx, "up/b")
	if err != nil {
		t.Fatal(err)
	}
	c, err := st.CreateMultipart(ctx, "elsewhere/c")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.UploadPart(ctx, "up/a", a, 1, []byte("part")); err != nil {
		t.Fatal(err)
	}

	ids := func(prefix string) []string {
		t.Helper()
		ups, err := st.ListMultipartUploads(ctx, prefix)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, u := range ups {
			out = append(out, u.Key+"="+u.UploadID)
		}
		sort.Strings(out)
		return out
	}
	if got, want := ids("up/"), []string{"up/a=" + a, "up/b=" + b}; !slices.Equal(got, want) {
		t.Errorf("ListMultipartUploads(up/) = %q, want %q", got, want)
	}
	if got := ids(""); len(got) != 3 {
		t.Errorf("ListMultipartUploads() = %q, want 3 uploads", got)
	}

	if err := st.AbortMultipart(ctx, "up/a", a); err != nil {
		t.Fatal(err)
	}
	if got, want := ids("up/"), []string{"up/b=" + b}; !slices.Equal(got, want) {
		t.Errorf("after abort = %q, want %q", got, want)
	}
	if _, err := st.ListParts(ctx, "up/a", a); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("ListParts on aborted upload: %v, want ErrNotFound", err)
	}
	if _, err := st.UploadPart(ctx, "up/a", a, 2, []byte("x")); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("UploadPart on aborted upload: %v, want ErrNotFound", err)
	}
	// S3 answers NoSuchUpload (ErrNotFound); versitygw answers InvalidPart.
	_, err = st.CompleteMultipart(ctx, "up/a", a, []objstore.Part{{Number: 1, ETag: `"x"`}})
	if err == nil {
		t.Error("CompleteMultipart on aborted upload succeeded")
	}
	if err := st.AbortMultipart(ctx, "up/a", a); err != nil {
		t.Errorf("second abort: %v", err)
	}
	if err := st.AbortMultipart(ctx, "up/zzz", "no-such-upload"); err != nil {
		t.Errorf("abort of unknown upload: %v", err)
	}
	if _, err := st.Head(ctx, "up/a"); !errors.Is(err, objstore.ErrNotFound) {
		t.Errorf("aborted upload left an object: %v", err)
	}
	for _, u := range [][2]string{{"up/b", b}, {"elsewhere/c", c}} {
		if err := st.AbortMultipart(ctx, u[0], u[1]); err != nil {
			t.Fatal(err)
		}
	}
	if got := ids(""); len(got) != 0 {
		t.Errorf("uploads left: %q", got)
	}
}

func TestPresignGet(t *testing.T) {
	st, _ := newStore(t)
	ctx := testCtx(t)
	body := randBytes(t, 4096)
	mustPut(t, st, "signed/obj", body)

	url, err := st.PresignGet(ctx, "signed/obj", 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("presigned GET: %s, %d bytes; want 200 and %d bytes",
			resp.Status, len(got), len(body))
	}

	// The URL grants nothing beyond its key.
	url, err = st.PresignGet(ctx, "signed/missing", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err = http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("presigned GET of missing key: %s, want 404", resp.Status)
	}
}

// TestCopy copies a whole object and a part, the way an upload closes a
// session whose last bytes sit in a tail object, under a key prefix so
// that the copy source must carry it.
func TestCopy(t *testing.T) {
	st, cfg := newStore(t)
	ctx := testCtx(t)
	cfg.Prefix = "tenant a/"
	pst, err := objstore.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []*objstore.Store{st, pst} {
		small := randBytes(t, 3000)
		mustPut(t, s, "uploads/x/tail/7", small)
		if err := s.Copy(ctx, "uploads/x/tail/7", "blobdata/x"); err != nil {
			t.Fatalf("Copy: %v", err)
		}
		if got, _, err := s.Get(ctx, "blobdata/x"); err != nil || !bytes.Equal(got, small) {
			t.Fatalf("copied object = %d bytes, %v; want the source's %d", len(got), err, len(small))
		}
		if err := s.Copy(ctx, "uploads/none", "blobdata/y"); !errors.Is(err, objstore.ErrNotFound) {
			t.Errorf("Copy of a missing source = %v, want ErrNotFound", err)
		}

		first := randBytes(t, 5*mib)
		id, err := s.CreateMultipart(ctx, "blobdata/z")
		if err != nil {
			t.Fatal(err)
		}
		e1, err := s.UploadPart(ctx, "blobdata/z", id, 1, first)
		if err != nil {
			t.Fatal(err)
		}
		e2, err := s.UploadPartCopy(ctx, "blobdata/z", id, 2, "uploads/x/tail/7")
		if err != nil {
			t.Fatalf("UploadPartCopy: %v", err)
		}
		parts := []objstore.Part{{Number: 1, ETag: e1, Size: 5 * mib}, {Number: 2, ETag: e2, Size: 3000}}
		if _, err := s.CompleteMultipart(ctx, "blobdata/z", id, parts); err != nil {
			t.Fatalf("CompleteMultipart: %v", err)
		}
		got, _, err := s.Get(ctx, "blobdata/z")
		if err != nil || !bytes.Equal(got, append(first, small...)) {
			t.Fatalf("object with a copied part = %d bytes, %v", len(got), err)
		}
	}
}
