package upload

import (
	"bytes"
	"io"
	"strings"
	"sync"
	"testing"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
)

// TestCloseWithoutBytes closes sessions whose bytes all arrived before the
// close, as crane and docker do: a blob shorter than a part keeps its tail
// as its data, a longer one has the store copy the tail as its last part,
// and the session leaves nothing else behind.
func TestCloseWithoutBytes(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart})
	for _, n := range []int{0, 100, testPart + 100, 2 * testPart} {
		blob := randomBytes(t, n)
		id := start(t, ctx, r.client, "repo")
		if _, err := write(ctx, r.client, "repo", id, -1, blob); err != nil {
			t.Fatalf("write %d bytes = %v", n, err)
		}
		desc, err := commit(ctx, r.client, "repo", id, sha256Of(blob), nil)
		if err != nil || desc.GetSize() != int64(n) {
			t.Fatalf("commit of %d bytes = %v, %v", n, desc, err)
		}
		got, err := readAll(t, ctx, r.client, "repo", sha256Of(blob), 0, 0)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("ReadBlob of %d bytes = %d bytes, %v", n, len(got), err)
		}
	}
	r.srv.Wait()
	left, _, _, err := r.srv.store.List(ctx, layout.Key(layout.Uploads{}), "", "", 0)
	if err != nil || len(left) != 0 {
		t.Errorf("closed sessions left %q (%v), want nothing", left, err)
	}
	data, _, _, err := r.srv.store.List(ctx, layout.Key(layout.BlobData{}), "", "", 0)
	if err != nil || len(data) != 4 {
		t.Errorf("data objects = %q (%v), want one for each of the 4 blobs", data, err)
	}
}

// TestDigestAlgorithmHint opens sessions that name their algorithm, and
// closes sessions with an algorithm they did not hash in, which is checked
// by reading the blob back.
func TestDigestAlgorithmHint(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart})
	open := func(alg string) string {
		t.Helper()
		resp, err := r.client.StartUpload(ctx,
			&uploadv1.StartUploadRequest{Repository: "repo", DigestAlgorithm: alg})
		if err != nil {
			t.Fatalf("StartUpload(%q) = %v", alg, err)
		}
		return resp.GetStatus().GetUploadId()
	}

	_, err := r.client.StartUpload(ctx,
		&uploadv1.StartUploadRequest{Repository: "repo", DigestAlgorithm: "md5"})
	if !ocierr.Is(err, ocierr.DigestInvalid) {
		t.Errorf("StartUpload(md5) = %v, want DIGEST_INVALID", err)
	}

	for _, tc := range []struct {
		hint   string
		digest func([]byte) string
	}{
		{"sha512", sha512Of}, // hashed as the bytes arrive
		{"sha512", sha256Of}, // read back
		{"", sha512Of},       // read back
	} {
		blob := randomBytes(t, testPart+777)
		id := open(tc.hint)
		if _, err := write(ctx, r.client, "repo", id, 0, blob[:1000]); err != nil {
			t.Fatal(err)
		}
		sess, _, err := sessions{r.srv.store}.load(ctx, "repo", id)
		want := reference.SHA256
		if tc.hint != "" {
			want = reference.Algorithm(tc.hint)
		}
		if err != nil {
			t.Fatal(err)
		}
		if sess.Algorithm != want {
			t.Fatalf("session opened with %q hashes in %q, want %q", tc.hint, sess.Algorithm, want)
		}
		desc, err := commit(ctx, r.client, "repo", id, tc.digest(blob), blob[1000:])
		if err != nil || desc.GetDigest() != tc.digest(blob) {
			t.Fatalf("hint %q: commit(%s) = %v, %v", tc.hint, tc.digest(blob), desc, err)
		}
		got, err := readAll(t, ctx, r.client, "repo", tc.digest(blob), 0, 0)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("hint %q: ReadBlob = %d bytes, %v", tc.hint, len(got), err)
		}
	}

	// A wrong digest found by reading back leaves nothing behind either.
	blob := randomBytes(t, 3000)
	id := open("")
	before, _, _, err := r.srv.store.List(ctx, "", "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = commit(ctx, r.client, "repo", id, sha512Of([]byte("other")), blob)
	if !ocierr.Is(err, ocierr.DigestInvalid) {
		t.Fatalf("commit with a wrong sha512 = %v, want DIGEST_INVALID", err)
	}
	after, _, _, err := r.srv.store.List(ctx, "", "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	var added []string
	for _, k := range after {
		if !strings.Contains(strings.Join(before, "\n"), k) {
			added = append(added, k)
		}
	}
	stale := layout.Key(layout.UploadState{UploadID: id})
	if len(added) != 0 || strings.Contains(strings.Join(after, "\n"), stale) {
		t.Errorf("a refused read-back close left %q (session state %q), want nothing", added, stale)
	}
}

// TestRacingAttempts runs two attempts from the same state, as two
// replicas would with a client that sent one chunk twice at once: the
// first to write its state wins, the other gets a 416 and its tail is
// gone, and the session goes on from the winner's bytes.
func TestRacingAttempts(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart})
	blob := randomBytes(t, 5000)
	id := start(t, ctx, r.client, "repo")
	if _, err := write(ctx, r.client, "repo", id, 0, blob[:1000]); err != nil {
		t.Fatal(err)
	}

	chunk := func(b []byte) func() ([]byte, error) {
		sent := false
		return func() ([]byte, error) {
			if sent {
				return nil, io.EOF
			}
			sent = true
			return b, nil
		}
	}
	at := int64(1000)
	a, err := r.srv.open(ctx, "repo", id, &at, false)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.srv.open(ctx, "repo", id, &at, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.write(ctx, chunk(blob[1000:3000])); err != nil {
		t.Fatal(err)
	}
	if err := b.write(ctx, chunk(bytes.Repeat([]byte("x"), 500))); err != nil {
		t.Fatal(err)
	}
	if err := a.finish(ctx); err != nil {
		t.Fatalf("first attempt to finish = %v", err)
	}
	a.release()
	err = b.finish(ctx)
	b.abandon()
	e := ocierr.FromError(err)
	if e.HTTPStatus() != 416 || e.Detail["offset"] != "3000" {
		t.Fatalf("second attempt to finish = %v (status %d, detail %v), want 416 at 3000",
			err, e.HTTPStatus(), e.Detail)
	}

	tails, _, _, err := r.srv.store.List(ctx, layout.Key(layout.UploadTails{UploadID: id}), "", "", 0)
	if err != nil || len(tails) != 1 {
		t.Errorf("tails = %q (%v), want the winner's alone", tails, err)
	}
	if _, err := commit(ctx, r.client, "repo", id, sha256Of(blob), blob[3000:]); err != nil {
		t.Fatalf("commit after the race = %v", err)
	}
	got, err := readAll(t, ctx, r.client, "repo", sha256Of(blob), 0, 0)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadBlob after the race = %d bytes, %v", len(got), err)
	}
}

// TestStaleRecentState streams writes without offsets to two replicas in
// turn, so that each replica's recent state of the session is stale when
// its next request arrives: the write and the closes must notice, start
// again from the stored state and lose no byte.
func TestStaleRecentState(t *testing.T) {
	ctx := testContext(t)
	cfg := s3test.Start(t)
	a := startReplica(t, cfg, Options{PartSize: testPart})
	b := startReplica(t, cfg, Options{PartSize: testPart})

	for _, n := range []int{3000, 2*testPart + 5} {
		blob := randomBytes(t, n)
		cut := []int{0, n / 3, 2 * n / 3, n}
		id := start(t, ctx, a.client, "repo")
		for i, c := range []replica{b, a, b} {
			if _, err := write(ctx, c.client, "repo", id, -1, blob[cut[i]:cut[i+1]]); err != nil {
				t.Fatalf("%d bytes: write #%d = %v", n, i, err)
			}
		}
		// a last wrote the state two writes ago.
		if off, err := write(ctx, a.client, "repo", id, -1, nil); err != nil || off != int64(n) {
			t.Fatalf("%d bytes: empty write on the stale replica = offset %d, %v; want %d",
				n, off, err, n)
		}
		desc, err := commit(ctx, a.client, "repo", id, sha256Of(blob), nil)
		if err != nil || desc.GetSize() != int64(n) {
			t.Fatalf("%d bytes: commit on the stale replica = %v, %v", n, desc, err)
		}
		got, err := readAll(t, ctx, b.client, "repo", sha256Of(blob), 0, 0)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("%d bytes: ReadBlob = %d bytes, %v", n, len(got), err)
		}
	}
}

// TestCloseRacesRemoval closes sessions while a cancel, or a close with a
// wrong digest, removes them at the same moment: whichever wins, a blob
// that a close published must read back whole. (Before removals marked
// the session first, about half of these published a blob whose bytes
// the removal had deleted.)
func TestCloseRacesRemoval(t *testing.T) {
	ctx := testContext(t)
	cfg := s3test.Start(t)
	a := startReplica(t, cfg, Options{PartSize: testPart})
	b := startReplica(t, cfg, Options{PartSize: testPart})
	published := 0
	for i := range 36 {
		n := 3000
		if i >= 30 {
			n = testPart + 3000 // the last part copied from the tail
		}
		blob := randomBytes(t, n)
		id := start(t, ctx, a.client, "repo")
		if _, err := write(ctx, a.client, "repo", id, -1, blob); err != nil {
			t.Fatal(err)
		}

		var closeErr error
		var wg sync.WaitGroup
		wg.Go(func() { _, closeErr = commit(ctx, a.client, "repo", id, sha256Of(blob), nil) })
		wg.Go(func() {
			if i%2 == 0 {
				b.client.CancelUpload(ctx, &uploadv1.CancelUploadRequest{Repository: "repo", UploadId: id})
			} else {
				commit(ctx, b.client, "repo", id, sha256Of([]byte("wrong")), nil)
			}
		})
		wg.Wait()

		if closeErr != nil {
			if e := ocierr.FromError(closeErr); e.HTTPStatus() >= 500 {
				t.Fatalf("run %d: the close lost its race with %v, want a 4xx", i, closeErr)
			}
			continue
		}
		published++
		got, err := readAll(t, ctx, b.client, "repo", sha256Of(blob), 0, 0)
		if err != nil || !bytes.Equal(got, blob) {
			t.Fatalf("run %d: a published blob reads back as %d bytes, %v", i, len(got), err)
		}
	}
	t.Logf("%d of 36 closes won their race", published)
}

// TestLostBytes removes the bytes of a published blob behind the
// registry's back: reading it fails before anything is sent, and pushing
// the blob again repairs it.
func TestLostBytes(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart})
	blob := randomBytes(t, 5000)
	id := start(t, ctx, r.client, "repo")
	if _, err := commit(ctx, r.client, "repo", id, sha256Of(blob), blob); err != nil {
		t.Fatal(err)
	}
	d, err := reference.ParseDigest(sha256Of(blob))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := r.srv.record(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.srv.store.Delete(ctx, rec.key()); err != nil {
		t.Fatal(err)
	}

	stream, err := r.client.ReadBlob(ctx,
		&uploadv1.ReadBlobRequest{Repository: "repo", Digest: d.String()})
	if err != nil {
		t.Fatal(err)
	}
	if first, err := stream.Recv(); err == nil {
		t.Fatalf("ReadBlob of lost bytes sent %v first, want an error before anything", first)
	}

	id = start(t, ctx, r.client, "other")
	if _, err := commit(ctx, r.client, "other", id, d.String(), blob); err != nil {
		t.Fatalf("pushing the blob again = %v", err)
	}
	for _, repo := range []string{"repo", "other"} {
		got, err := readAll(t, ctx, r.client, repo, d.String(), 0, 0)
		if err != nil || !bytes.Equal(got, blob) {
			t.Errorf("%s after the push again: %d bytes, %v", repo, len(got), err)
		}
	}
}
