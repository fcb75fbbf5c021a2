package upload

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
)

const testPart = 5 << 20

// replica is one upload service served over real gRPC on loopback.
type replica struct {
	srv    *Server
	client uploadv1.UploadServiceClient
}

func newStore(t *testing.T, cfg objstore.Config) *objstore.Store {
	t.Helper()
	st, err := objstore.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("objstore.New: %v", err)
	}
	return st
}

func startReplica(t *testing.T, cfg objstore.Config, opts Options) replica {
	t.Helper()
	srv := NewServer(newStore(t, cfg), opts)
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(16<<20), grpc.ForceServerCodecV2(NewCodec()))
	uploadv1.RegisterUploadServiceServer(gs, srv)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return replica{srv: srv, client: uploadv1.NewUploadServiceClient(conn)}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func sha256Of(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

func sha512Of(b []byte) string {
	s := sha512.Sum512(b)
	return "sha512:" + hex.EncodeToString(s[:])
}

func start(t *testing.T, ctx context.Context, c uploadv1.UploadServiceClient, repo string) string {
	t.Helper()
	resp, err := c.StartUpload(ctx, &uploadv1.StartUploadRequest{Repository: repo})
	if err != nil {
		t.Fatalf("StartUpload(%s) = %v", repo, err)
	}
	return resp.GetStatus().GetUploadId()
}

// write sends one chunk in messages of at most 1 MiB; start < 0 means a
// streamed write with no declared start.
func write(
	ctx context.Context, c uploadv1.UploadServiceClient, repo, id string, start int64, data []byte,
) (int64, error) {
	stream, err := c.WriteUpload(ctx)
	if err != nil {
		return 0, err
	}
	hdr := &uploadv1.WriteHeader{Repository: repo, UploadId: id}
	if start >= 0 {
		length := int64(len(data))
		hdr.Start, hdr.Length = &start, &length
	}
	if err := stream.Send(&uploadv1.WriteUploadRequest{
		Kind: &uploadv1.WriteUploadRequest_Header{Header: hdr}}); err != nil {
		return 0, err
	}
	for len(data) > 0 {
		n := min(len(data), chunkSize)
		msg := &uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Data{Data: data[:n]}}
		if err := stream.Send(msg); err != nil {
			break // the server answered early; CloseAndRecv has its status
		}
		data = data[n:]
	}
	resp, err := stream.CloseAndRecv()
	return resp.GetStatus().GetOffset(), err
}

func commit(
	ctx context.Context, c uploadv1.UploadServiceClient, repo, id, digest string, data []byte,
) (*uploadv1.BlobDescriptor, error) {
	stream, err := c.CommitUpload(ctx)
	if err != nil {
		return nil, err
	}
	hdr := &uploadv1.CommitHeader{Repository: repo, UploadId: id, Digest: digest}
	if err := stream.Send(&uploadv1.CommitUploadRequest{
		Kind: &uploadv1.CommitUploadRequest_Header{Header: hdr}}); err != nil {
		return nil, err
	}
	for len(data) > 0 {
		n := min(len(data), chunkSize)
		msg := &uploadv1.CommitUploadRequest{Kind: &uploadv1.CommitUploadRequest_Data{Data: data[:n]}}
		if err := stream.Send(msg); err != nil {
			break
		}
		data = data[n:]
	}
	resp, err := stream.CloseAndRecv()
	return resp.GetBlob(), err
}

func readAll(
	t *testing.T, ctx context.Context, c uploadv1.UploadServiceClient, repo, digest string,
	off, n int64,
) ([]byte, error) {
	t.Helper()
	stream, err := c.ReadBlob(ctx, &uploadv1.ReadBlobRequest{
		Repository: repo, Digest: digest, Offset: off, Length: n})
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
		buf.Write(msg.GetData())
	}
}

// TestChunkedAcrossReplicas pushes a blob in irregular chunks that
// alternate between two replicas, checks that every non-final part has the
// session's part size, and reads the blob back.
func TestChunkedAcrossReplicas(t *testing.T) {
	ctx := testContext(t)
	cfg := s3test.Start(t)
	a := startReplica(t, cfg, Options{PartSize: testPart})
	b := startReplica(t, cfg, Options{PartSize: testPart})
	blob := randomBytes(t, 23<<20+12345)
	id := start(t, ctx, a.client, "team/app")

	sizes := []int{1 << 20, 7<<20 + 3, 100, 3 << 20, 9<<20 + 77}
	var off int64
	for i, n := range sizes {
		c := []replica{a, b}[i%2].client
		got, err := write(ctx, c, "team/app", id, off, blob[off:off+int64(n)])
		if err != nil {
			t.Fatalf("write #%d at %d = %v", i, off, err)
		}
		off += int64(n)
		if got != off {
			t.Fatalf("write #%d offset = %d, want %d", i, got, off)
		}
	}

	sess, _, err := sessions{a.srv.store}.load(ctx, "team/app", id)
	if err != nil {
		t.Fatal(err)
	}
	parts, err := a.srv.store.ListParts(ctx, layout.Key(layout.BlobData{UploadID: id}), sess.MultipartID)
	if err != nil {
		t.Fatalf("ListParts = %v", err)
	}
	if len(parts) != int(off/testPart) {
		t.Fatalf("ListParts has %d parts, want %d", len(parts), off/testPart)
	}
	for _, p := range parts {
		if p.Size != testPart {
			t.Errorf("part %d has %d bytes, want %d", p.Number, p.Size, testPart)
		}
	}

	desc, err := commit(ctx, b.client, "team/app", id, sha256Of(blob), blob[off:])
	if err != nil {
		t.Fatalf("commit = %v", err)
	}
	if desc.GetSize() != int64(len(blob)) {
		t.Errorf("committed size = %d, want %d", desc.GetSize(), len(blob))
	}
	got, err := readAll(t, ctx, a.client, "team/app", sha256Of(blob), 0, 0)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadBlob = %d bytes, %v; want the %d bytes pushed", len(got), err, len(blob))
	}
	part, err := readAll(t, ctx, b.client, "team/app", sha256Of(blob), testPart-10, 20)
	if err != nil || !bytes.Equal(part, blob[testPart-10:testPart+10]) {
		t.Errorf("ReadBlob(range) = %x, %v", part, err)
	}
}

// TestStaleAndOutOfOrderWrites checks that a replayed chunk and a chunk
// past the offset get a 416 with the committed offset, and change nothing.
func TestStaleAndOutOfOrderWrites(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart})
	blob := randomBytes(t, 6<<20)
	id := start(t, ctx, r.client, "repo")

	if _, err := write(ctx, r.client, "repo", id, 0, blob[:4<<20]); err != nil {
		t.Fatal(err)
	}
	for _, start := range []int64{0, 1 << 20, 5 << 20} {
		_, err := write(ctx, r.client, "repo", id, start, blob[start:start+1<<20])
		e := ocierr.FromError(err)
		if e.Code != ocierr.BlobUploadInvalid || e.HTTPStatus() != 416 ||
			e.Detail["offset"] != strconv.Itoa(4<<20) {
			t.Errorf("write at %d = %v (status %d, detail %v), want 416 with offset %d",
				start, err, e.HTTPStatus(), e.Detail, 4<<20)
		}
	}
	st, err := r.client.GetUpload(ctx, &uploadv1.GetUploadRequest{Repository: "repo", UploadId: id})
	if err != nil || st.GetStatus().GetOffset() != 4<<20 {
		t.Fatalf("GetUpload = %v, %v; want offset %d", st, err, 4<<20)
	}
	if _, err := commit(ctx, r.client, "repo", id, sha256Of(blob), blob[4<<20:]); err != nil {
		t.Fatalf("commit = %v", err)
	}
	got, err := readAll(t, ctx, r.client, "repo", sha256Of(blob), 0, 0)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadBlob = %d bytes, %v; want the pushed bytes once", len(got), err)
	}
}

// TestDigestMismatch checks that a wrong digest stores nothing and ends
// the session.
func TestDigestMismatch(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart})
	blob := randomBytes(t, 7<<20)
	wrong := sha256Of([]byte("something else"))
	id := start(t, ctx, r.client, "repo")

	_, err := commit(ctx, r.client, "repo", id, wrong, blob)
	if !ocierr.Is(err, ocierr.DigestInvalid) {
		t.Fatalf("commit with wrong digest = %v, want DIGEST_INVALID", err)
	}
	_, err = r.client.StatBlob(ctx, &uploadv1.StatBlobRequest{Repository: "repo", Digest: wrong})
	if !ocierr.Is(err, ocierr.BlobUnknown) {
		t.Errorf("StatBlob(wrong) = %v, want BLOB_UNKNOWN", err)
	}
	_, err = r.client.StatBlob(ctx, &uploadv1.StatBlobRequest{Repository: "repo", Digest: sha256Of(blob)})
	if !ocierr.Is(err, ocierr.BlobUnknown) {
		t.Errorf("StatBlob(real digest) = %v, want BLOB_UNKNOWN", err)
	}
	_, err = r.client.GetUpload(ctx, &uploadv1.GetUploadRequest{Repository: "repo", UploadId: id})
	if !ocierr.Is(err, ocierr.BlobUploadUnknown) {
		t.Errorf("GetUpload after mismatch = %v, want BLOB_UPLOAD_UNKNOWN", err)
	}
	keys, _, _, err := r.srv.store.List(ctx, "", "", "", 0)
	if err != nil || len(keys) != 0 {
		t.Errorf("bucket after mismatch holds %q (%v), want nothing", keys, err)
	}
	ups, err := r.srv.store.ListMultipartUploads(ctx, "")
	if err != nil || len(ups) != 0 {
		t.Errorf("multipart uploads after mismatch = %v (%v), want none", ups, err)
	}
}

// TestSHA512AndStreamed pushes with streamed writes and closes with a
// sha512 digest.
func TestSHA512AndStreamed(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart})
	blob := randomBytes(t, 11<<20+5)
	id := start(t, ctx, r.client, "repo")
	if _, err := write(ctx, r.client, "repo", id, -1, blob[:6<<20]); err != nil {
		t.Fatal(err)
	}
	if _, err := write(ctx, r.client, "repo", id, -1, blob[6<<20:]); err != nil {
		t.Fatal(err)
	}
	desc, err := commit(ctx, r.client, "repo", id, sha512Of(blob), nil)
	if err != nil || desc.GetDigest() != sha512Of(blob) {
		t.Fatalf("commit(sha512) = %v, %v", desc, err)
	}
	got, err := readAll(t, ctx, r.client, "repo", sha512Of(blob), 0, 0)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadBlob(sha512) = %d bytes, %v", len(got), err)
	}
}

// TestConcurrentSameBlob uploads one blob to two repositories at once and
// checks one record remains and both repositories read it intact.
func TestConcurrentSameBlob(t *testing.T) {
	ctx := testContext(t)
	cfg := s3test.Start(t)
	replicas := []replica{
		startReplica(t, cfg, Options{PartSize: testPart}),
		startReplica(t, cfg, Options{PartSize: testPart}),
	}
	blob := randomBytes(t, 9<<20)
	repos := []string{"one", "two", "one"}
	var wg sync.WaitGroup
	errs := make([]error, len(repos))
	for i, repo := range repos {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := replicas[i%2].client
			id := start(t, ctx, c, repo)
			_, errs[i] = commit(ctx, c, repo, id, sha256Of(blob), blob)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("upload %d = %v", i, err)
		}
	}
	for _, repo := range []string{"one", "two"} {
		got, err := readAll(t, ctx, replicas[0].client, repo, sha256Of(blob), 0, 0)
		if err != nil || !bytes.Equal(got, blob) {
			t.Errorf("ReadBlob(%s) = %d bytes, %v", repo, len(got), err)
		}
	}
	data, _, _, err := replicas[0].srv.store.List(ctx, layout.Key(layout.BlobData{}), "", "", 0)
	if err != nil || len(data) != 1 {
		t.Errorf("data objects = %q, %v; want exactly one", data, err)
	}
}

// TestTakeOverAfterAbort cancels a write mid-stream, as a dying client or
// replica would, then resumes from the offset GetUpload reports.
func TestTakeOverAfterAbort(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart, Parallelism: 2})
	blob := randomBytes(t, 26<<20)
	id := start(t, ctx, r.client, "repo")

	wctx, cancel := context.WithCancel(ctx)
	stream, err := r.client.WriteUpload(wctx)
	if err != nil {
		t.Fatal(err)
	}
	start := int64(0)
	stream.Send(&uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Header{
		Header: &uploadv1.WriteHeader{Repository: "repo", UploadId: id, Start: &start}}})
	for off := 0; off < 13<<20; off += chunkSize {
		stream.Send(&uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Data{
			Data: blob[off:min(off+chunkSize, 13<<20)]}})
	}
	time.Sleep(500 * time.Millisecond)
	cancel()

	var committed int64
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		st, err := r.client.GetUpload(ctx, &uploadv1.GetUploadRequest{Repository: "repo", UploadId: id})
		if err != nil {
			t.Fatal(err)
		}
		committed = st.GetStatus().GetOffset()
		if committed%testPart == 0 {
			break
		}
	}
	if committed > 13<<20 || committed%testPart != 0 {
		t.Fatalf("committed offset after abort = %d, want whole parts of the 13 MiB sent", committed)
	}

	if _, err := write(ctx, r.client, "repo", id, committed, blob[committed:]); err != nil {
		t.Fatalf("resume at %d = %v", committed, err)
	}
	if _, err := commit(ctx, r.client, "repo", id, sha256Of(blob), nil); err != nil {
		t.Fatalf("commit after resume = %v", err)
	}
	got, err := readAll(t, ctx, r.client, "repo", sha256Of(blob), 0, 0)
	if err != nil || !bytes.Equal(got, blob) {
		t.Fatalf("ReadBlob after resume = %d bytes, %v", len(got), err)
	}
}

// TestBlobReads covers stat, ranges, mount, delete and unknown names.
func TestBlobReads(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart})
	blob := []byte("hello, registry")
	d := sha256Of(blob)
	id := start(t, ctx, r.client, "src")
	if _, err := commit(ctx, r.client, "src", id, d, blob); err != nil {
		t.Fatal(err)
	}

	if _, err := readAll(t, ctx, r.client, "src", d, int64(len(blob)), 0); !ocierr.Is(err, ocierr.RangeInvalid) {
		t.Errorf("ReadBlob past the end = %v, want RANGE_INVALID", err)
	}
	if got, err := readAll(t, ctx, r.client, "src", d, 7, 100); err != nil || string(got) != "registry" {
		t.Errorf("ReadBlob(7, 100) = %q, %v; want %q", got, err, "registry")
	}
	if _, err := r.client.StatBlob(ctx, &uploadv1.StatBlobRequest{Repository: "dst", Digest: d}); !ocierr.Is(err, ocierr.BlobUnknown) {
		t.Errorf("StatBlob in another repository = %v, want BLOB_UNKNOWN", err)
	}
	if _, err := r.client.MountBlob(ctx, &uploadv1.MountBlobRequest{
		Repository: "dst", FromRepository: "src", Digest: d}); err != nil {
		t.Fatalf("MountBlob = %v", err)
	}
	if st, err := r.client.StatBlob(ctx, &uploadv1.StatBlobRequest{Repository: "dst", Digest: d}); err != nil || st.GetBlob().GetSize() != int64(len(blob)) {
		t.Errorf("StatBlob after mount = %v, %v", st, err)
	}
	if _, err := r.client.DeleteBlob(ctx, &uploadv1.DeleteBlobRequest{Repository: "src", Digest: d}); err != nil {
		t.Fatalf("DeleteBlob = %v", err)
	}
	if _, err := r.client.StatBlob(ctx, &uploadv1.StatBlobRequest{Repository: "src", Digest: d}); !ocierr.Is(err, ocierr.BlobUnknown) {
		t.Errorf("StatBlob after delete = %v, want BLOB_UNKNOWN", err)
	}
	if got, err := readAll(t, ctx, r.client, "dst", d, 0, 0); err != nil || !bytes.Equal(got, blob) {
		t.Errorf("ReadBlob in mounted repository after delete in source = %q, %v", got, err)
	}
	if _, err := r.client.StatBlob(ctx, &uploadv1.StatBlobRequest{Repository: "Bad", Digest: d}); !ocierr.Is(err, ocierr.NameInvalid) {
		t.Errorf("StatBlob(Bad) = %v, want NAME_INVALID", err)
	}
	if _, err := r.client.GetUpload(ctx, &uploadv1.GetUploadRequest{Repository: "src", UploadId: "nope"}); !ocierr.Is(err, ocierr.BlobUploadUnknown) {
		t.Errorf("GetUpload(nope) = %v, want BLOB_UPLOAD_UNKNOWN", err)
	}
}

// TestRemoveAbandoned checks that old sessions and their multipart uploads
// are removed and fresh ones kept.
func TestRemoveAbandoned(t *testing.T) {
	ctx := testContext(t)
	r := startReplica(t, s3test.Start(t), Options{PartSize: testPart, SessionMaxAge: time.Hour})
	old := start(t, ctx, r.client, "repo")
	if _, err := write(ctx, r.client, "repo", old, 0, randomBytes(t, 6<<20)); err != nil {
		t.Fatal(err)
	}

	n, err := r.srv.RemoveAbandoned(ctx, time.Now())
	if err != nil || n != 0 {
		t.Fatalf("RemoveAbandoned(now) = %d, %v; want 0", n, err)
	}
	n, err = r.srv.RemoveAbandoned(ctx, time.Now().Add(2*time.Hour))
	if err != nil || n != 1 {
		t.Fatalf("RemoveAbandoned(later) = %d, %v; want 1", n, err)
	}
	keys, _, _, _ := r.srv.store.List(ctx, "", "", "", 0)
	ups, _ := r.srv.store.ListMultipartUploads(ctx, "")
	if len(keys) != 0 || len(ups) != 0 {
		t.Errorf("after removal: objects %q, multipart uploads %v; want none", keys, ups)
	}
}
