package gateway_test

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/keel-registry/keel/gateway"
	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
	"github.com/keel-registry/keel/services/auth"
)

// The test's users, as the auth service knows them.
const (
	writerName = "writer"
	writerPass = "w-pass"
	readerName = "reader"
	readerPass = "r-pass"
)

// harness is a gateway served over HTTP on loopback, in front of in-memory
// upload and manifest services and the real auth service, all reached over
// real gRPC on loopback.
type harness struct {
	t         *testing.T
	url       string
	host      string
	handler   http.Handler
	uploads   *fakeUploads
	manifests *fakeManifests
	auth      *countingAuth
	logs      *telemetrytest.LogBuffer
}

// harnessConfig tweaks a harness.
type harnessConfig struct {
	anonymousPull bool
	options       func(*gateway.Options)
	// wrap wraps the gateway's handler in the HTTP server.
	wrap func(http.Handler) http.Handler
}

func newHarness(t *testing.T, cfg harnessConfig) *harness {
	t.Helper()
	authServer, err := auth.NewServer(auth.Config{
		Users: []auth.User{
			{Name: writerName, Password: writerPass, Access: auth.ReadWrite},
			{Name: readerName, Password: readerPass, Access: auth.ReadOnly},
		},
		AnonymousPull: cfg.anonymousPull,
	})
	if err != nil {
		t.Fatalf("auth.NewServer() error = %v", err)
	}
	h := &harness{
		t:         t,
		uploads:   newFakeUploads(),
		manifests: newFakeManifests(),
		auth:      &countingAuth{inner: authServer},
		logs:      &telemetrytest.LogBuffer{},
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	authv1.RegisterAuthServiceServer(gs, h.auth)
	uploadv1.RegisterUploadServiceServer(gs, h.uploads)
	manifestv1.RegisterManifestServiceServer(gs, h.manifests)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)

	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() error = %v", err)
	}
	t.Cleanup(func() { conn.Close() })

	opts := gateway.Options{
		Auth:      authv1.NewAuthServiceClient(conn),
		Uploads:   uploadv1.NewUploadServiceClient(conn),
		Manifests: manifestv1.NewManifestServiceClient(conn),
		Logger:    slog.New(slog.NewJSONHandler(h.logs, nil)),
	}
	if cfg.options != nil {
		cfg.options(&opts)
	}
	h.handler = gateway.New(opts)

	handler := h.handler
	if cfg.wrap != nil {
		handler = cfg.wrap(handler)
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	h.url = srv.URL
	h.host = strings.TrimPrefix(srv.URL, "http://")
	return h
}

// countingAuth is the real auth service, counting its calls. It can also
// withhold pull access to one repository, which the real service's two
// access levels cannot express.
type countingAuth struct {
	authv1.UnimplementedAuthServiceServer
	inner    *auth.Server
	calls    atomic.Int64
	denyPull atomic.Pointer[string]
}

func (c *countingAuth) Authorize(
	ctx context.Context, req *authv1.AuthorizeRequest,
) (*authv1.AuthorizeResponse, error) {
	c.calls.Add(1)
	resp, err := c.inner.Authorize(ctx, req)
	deny := c.denyPull.Load()
	if err != nil || deny == nil {
		return resp, err
	}
	kept := resp.Granted[:0]
	for _, g := range resp.GetGranted() {
		if g.GetName() != *deny {
			kept = append(kept, g)
		}
	}
	resp.Granted = kept
	return resp, nil
}

func digestOf(alg string, b []byte) string {
	if alg == "sha512" {
		sum := sha512.Sum512(b)
		return "sha512:" + hex.EncodeToString(sum[:])
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// writeRecord is what the fake upload service saw of one WriteUpload or
// CommitUpload stream.
type writeRecord struct {
	start, length *int64
	sizes         []int
	closed        bool
}

// fakeUploads is an in-memory upload service, good enough for the
// protocol: sessions keep their bytes in memory, and a stream's bytes are
// kept only when it closes cleanly.
type fakeUploads struct {
	uploadv1.UnimplementedUploadServiceServer

	mu       sync.Mutex
	next     int
	sessions map[string]*fakeSession
	blobs    map[string][]byte
	links    map[string]map[string]bool
	writes   []writeRecord
	commits  []writeRecord
	// hints are the digest algorithms sessions were opened with, in order.
	hints []string
	// redirect, when set, answers ReadBlob requests that ask for a redirect.
	redirect string
}

type fakeSession struct {
	repo string
	data []byte
}

func newFakeUploads() *fakeUploads {
	return &fakeUploads{
		sessions: map[string]*fakeSession{},
		blobs:    map[string][]byte{},
		links:    map[string]map[string]bool{},
	}
}

func (f *fakeUploads) StartUpload(
	_ context.Context, req *uploadv1.StartUploadRequest,
) (*uploadv1.StartUploadResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next++
	f.hints = append(f.hints, req.GetDigestAlgorithm())
	id := fmt.Sprintf("upload-%d", f.next)
	f.sessions[id] = &fakeSession{repo: req.GetRepository()}
	return &uploadv1.StartUploadResponse{Status: &uploadv1.UploadStatus{
		UploadId: id, Repository: req.GetRepository(),
	}}, nil
}

func (f *fakeUploads) session(repo, id string) (*fakeSession, error) {
	s, ok := f.sessions[id]
	if !ok || s.repo != repo {
		return nil, ocierr.New(ocierr.BlobUploadUnknown, "no upload %q", id)
	}
	return s, nil
}

// outOfOrder is the error the real service returns for a chunk that does
// not start at the committed offset.
func outOfOrder(offset int) error {
	return ocierr.New(ocierr.BlobUploadInvalid, "chunk out of order").
		With("offset", fmt.Sprint(offset)).
		WithStatus(http.StatusRequestedRangeNotSatisfiable)
}

// receive reads a stream's data messages into memory, recording their
// sizes. It reports whether the stream closed cleanly.
func receive(recv func() ([]byte, error), rec *writeRecord) ([]byte, error) {
	var data []byte
	for {
		p, err := recv()
		if errors.Is(err, io.EOF) {
			rec.closed = true
			return data, nil
		}
		if err != nil {
			return nil, err
		}
		rec.sizes = append(rec.sizes, len(p))
		data = append(data, p...)
	}
}

func (f *fakeUploads) WriteUpload(
	stream grpc.ClientStreamingServer[uploadv1.WriteUploadRequest, uploadv1.WriteUploadResponse],
) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	rec := writeRecord{start: hdr.Start, length: hdr.Length}
	defer func() {
		f.mu.Lock()
		f.writes = append(f.writes, rec)
		f.mu.Unlock()
	}()

	f.mu.Lock()
	s, err := f.session(hdr.GetRepository(), hdr.GetUploadId())
	offset := 0
	if s != nil {
		offset = len(s.data)
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if hdr.Start != nil && *hdr.Start != int64(offset) {
		return outOfOrder(offset)
	}

	data, err := receive(func() ([]byte, error) {
		m, err := stream.Recv()
		return m.GetData(), err
	}, &rec)
	if err != nil {
		return err
	}
	if hdr.Length != nil && *hdr.Length != int64(len(data)) {
		return ocierr.New(ocierr.SizeInvalid, "got %d bytes, declared %d", len(data), *hdr.Length)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	s.data = append(s.data, data...)
	return stream.SendAndClose(&uploadv1.WriteUploadResponse{Status: &uploadv1.UploadStatus{
		UploadId: hdr.GetUploadId(), Repository: s.repo, Offset: int64(len(s.data)),
	}})
}

func (f *fakeUploads) CommitUpload(
	stream grpc.ClientStreamingServer[uploadv1.CommitUploadRequest, uploadv1.CommitUploadResponse],
) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	rec := writeRecord{start: hdr.Start, length: hdr.Length}
	defer func() {
		f.mu.Lock()
		f.commits = append(f.commits, rec)
		f.mu.Unlock()
	}()

	f.mu.Lock()
	s, err := f.session(hdr.GetRepository(), hdr.GetUploadId())
	offset := 0
	if s != nil {
		offset = len(s.data)
	}
	f.mu.Unlock()
	if err != nil {
		return err
	}
	if hdr.Start != nil && *hdr.Start != int64(offset) {
		return outOfOrder(offset)
	}

	data, err := receive(func() ([]byte, error) {
		m, err := stream.Recv()
		return m.GetData(), err
	}, &rec)
	if err != nil {
		return err
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	blob := append(s.data, data...)
	alg, _, _ := strings.Cut(hdr.GetDigest(), ":")
	delete(f.sessions, hdr.GetUploadId())
	if got := digestOf(alg, blob); got != hdr.GetDigest() {
		return ocierr.New(ocierr.DigestInvalid, "content is %s", got)
	}
	f.store(s.repo, hdr.GetDigest(), blob)
	return stream.SendAndClose(&uploadv1.CommitUploadResponse{Blob: &uploadv1.BlobDescriptor{
		Digest: hdr.GetDigest(), Size: int64(len(blob)),
	}})
}

func (f *fakeUploads) store(repo, digest string, blob []byte) {
	f.blobs[digest] = blob
	if f.links[repo] == nil {
		f.links[repo] = map[string]bool{}
	}
	f.links[repo][digest] = true
}

func (f *fakeUploads) GetUpload(
	_ context.Context, req *uploadv1.GetUploadRequest,
) (*uploadv1.GetUploadResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, err := f.session(req.GetRepository(), req.GetUploadId())
	if err != nil {
		return nil, err
	}
	return &uploadv1.GetUploadResponse{Status: &uploadv1.UploadStatus{
		UploadId: req.GetUploadId(), Repository: s.repo, Offset: int64(len(s.data)),
	}}, nil
}

func (f *fakeUploads) CancelUpload(
	_ context.Context, req *uploadv1.CancelUploadRequest,
) (*uploadv1.CancelUploadResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.session(req.GetRepository(), req.GetUploadId()); err != nil {
		return nil, err
	}
	delete(f.sessions, req.GetUploadId())
	return &uploadv1.CancelUploadResponse{}, nil
}

func (f *fakeUploads) MountBlob(
	_ context.Context, req *uploadv1.MountBlobRequest,
) (*uploadv1.MountBlobResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.links[req.GetFromRepository()][req.GetDigest()] {
		return nil, ocierr.New(ocierr.BlobUnknown, "no blob %s", req.GetDigest())
	}
	f.store(req.GetRepository(), req.GetDigest(), f.blobs[req.GetDigest()])
	return &uploadv1.MountBlobResponse{Blob: &uploadv1.BlobDescriptor{
		Digest: req.GetDigest(), Size: int64(len(f.blobs[req.GetDigest()])),
	}}, nil
}

// blob returns a blob visible in repo.
func (f *fakeUploads) blob(repo, digest string) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.links[repo][digest] {
		return nil, ocierr.New(ocierr.BlobUnknown, "no blob %s", digest)
	}
	return f.blobs[digest], nil
}

func (f *fakeUploads) StatBlob(
	_ context.Context, req *uploadv1.StatBlobRequest,
) (*uploadv1.StatBlobResponse, error) {
	b, err := f.blob(req.GetRepository(), req.GetDigest())
	if err != nil {
		return nil, err
	}
	return &uploadv1.StatBlobResponse{Blob: &uploadv1.BlobDescriptor{
		Digest: req.GetDigest(), Size: int64(len(b)),
	}}, nil
}

func (f *fakeUploads) ReadBlob(
	req *uploadv1.ReadBlobRequest, stream grpc.ServerStreamingServer[uploadv1.ReadBlobResponse],
) error {
	b, err := f.blob(req.GetRepository(), req.GetDigest())
	if err != nil {
		return err
	}
	desc := &uploadv1.BlobDescriptor{Digest: req.GetDigest(), Size: int64(len(b))}
	f.mu.Lock()
	redirect := f.redirect
	f.mu.Unlock()
	if req.GetRedirect() && redirect != "" {
		return stream.Send(&uploadv1.ReadBlobResponse{Blob: desc, RedirectUrl: redirect})
	}

	start, end := req.GetOffset(), int64(len(b))
	if start > end {
		return ocierr.New(ocierr.RangeInvalid, "offset past the end")
	}
	if req.GetLength() > 0 {
		end = min(end, start+req.GetLength())
	}
	err = stream.Send(&uploadv1.ReadBlobResponse{Blob: desc, Offset: start, Length: end - start})
	if err != nil {
		return err
	}
	for p := b[start:end]; len(p) > 0; {
		n := min(len(p), 100_000)
		if err := stream.Send(&uploadv1.ReadBlobResponse{Data: p[:n]}); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}

func (f *fakeUploads) DeleteBlob(
	_ context.Context, req *uploadv1.DeleteBlobRequest,
) (*uploadv1.DeleteBlobResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.links[req.GetRepository()][req.GetDigest()] {
		return nil, ocierr.New(ocierr.BlobUnknown, "no blob %s", req.GetDigest())
	}
	delete(f.links[req.GetRepository()], req.GetDigest())
	return &uploadv1.DeleteBlobResponse{}, nil
}

// records returns copies of what the write and commit streams saw.
func (f *fakeUploads) records() (writes, commits []writeRecord) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.writes), slices.Clone(f.commits)
}

// fakeManifests is an in-memory manifest service.
type fakeManifests struct {
	manifestv1.UnimplementedManifestServiceServer

	mu      sync.Mutex
	repos   map[string]*fakeRepo
	accepts [][]string
	puts    int
}

type fakeRepo struct {
	manifests map[string]storedManifest
	tags      map[string]string
}

type storedManifest struct {
	mediaType, subject, artifactType string
	content                          []byte
}

func newFakeManifests() *fakeManifests {
	return &fakeManifests{repos: map[string]*fakeRepo{}}
}

func (f *fakeManifests) PutManifest(
	_ context.Context, req *manifestv1.PutManifestRequest,
) (*manifestv1.PutManifestResponse, error) {
	var parsed struct {
		MediaType    string `json:"mediaType"`
		ArtifactType string `json:"artifactType"`
		Config       struct {
			MediaType string `json:"mediaType"`
		} `json:"config"`
		Subject *struct {
			Digest string `json:"digest"`
		} `json:"subject"`
	}
	if err := json.Unmarshal(req.GetContent(), &parsed); err != nil {
		return nil, ocierr.New(ocierr.ManifestInvalid, "not JSON")
	}
	m := storedManifest{
		mediaType:    req.GetMediaType(),
		artifactType: parsed.ArtifactType,
		content:      req.GetContent(),
	}
	if m.mediaType == "" {
		m.mediaType = parsed.MediaType
	}
	if m.artifactType == "" {
		m.artifactType = parsed.Config.MediaType
	}
	if parsed.Subject != nil {
		m.subject = parsed.Subject.Digest
	}
	digest := digestOf("sha256", req.GetContent())
	if strings.Contains(req.GetReference(), ":") && req.GetReference() != digest {
		return nil, ocierr.New(ocierr.DigestInvalid, "content is %s", digest)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	f.puts++
	r := f.repos[req.GetRepository()]
	if r == nil {
		r = &fakeRepo{manifests: map[string]storedManifest{}, tags: map[string]string{}}
		f.repos[req.GetRepository()] = r
	}
	r.manifests[digest] = m
	if !strings.Contains(req.GetReference(), ":") {
		r.tags[req.GetReference()] = digest
	}
	return &manifestv1.PutManifestResponse{Digest: digest, Subject: m.subject}, nil
}

func (f *fakeManifests) GetManifest(
	_ context.Context, req *manifestv1.GetManifestRequest,
) (*manifestv1.GetManifestResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.accepts = append(f.accepts, req.GetAccept())
	r := f.repos[req.GetRepository()]
	if r == nil {
		return nil, ocierr.New(ocierr.ManifestUnknown, "no repository")
	}
	digest := req.GetReference()
	if d, ok := r.tags[digest]; ok {
		digest = d
	}
	m, ok := r.manifests[digest]
	if !ok {
		return nil, ocierr.New(ocierr.ManifestUnknown, "no manifest %q", req.GetReference())
	}
	resp := &manifestv1.GetManifestResponse{Descriptor_: &manifestv1.Descriptor{
		MediaType: m.mediaType, Digest: digest, Size: int64(len(m.content)),
	}}
	if !req.GetHead() {
		resp.Content = m.content
	}
	return resp, nil
}

func (f *fakeManifests) DeleteManifest(
	_ context.Context, req *manifestv1.DeleteManifestRequest,
) (*manifestv1.DeleteManifestResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.repos[req.GetRepository()]
	if r == nil {
		return nil, ocierr.New(ocierr.ManifestUnknown, "no repository")
	}
	if _, ok := r.tags[req.GetReference()]; ok {
		delete(r.tags, req.GetReference())
		return &manifestv1.DeleteManifestResponse{}, nil
	}
	if _, ok := r.manifests[req.GetReference()]; !ok {
		return nil, ocierr.New(ocierr.ManifestUnknown, "no manifest")
	}
	delete(r.manifests, req.GetReference())
	return &manifestv1.DeleteManifestResponse{}, nil
}

// pageOf returns the sorted names after last, at most limit of them (zero
// means all), and whether more follow.
func pageOf(names []string, limit int32, last string) ([]string, bool) {
	slices.Sort(names)
	var out []string
	for _, n := range names {
		if n > last {
			out = append(out, n)
		}
	}
	if limit > 0 && len(out) > int(limit) {
		return out[:limit], true
	}
	return out, false
}

func (f *fakeManifests) ListTags(
	_ context.Context, req *manifestv1.ListTagsRequest,
) (*manifestv1.ListTagsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.repos[req.GetRepository()]
	if r == nil {
		return nil, ocierr.New(ocierr.NameUnknown, "no repository")
	}
	var tags []string
	for t := range r.tags {
		tags = append(tags, t)
	}
	page, more := pageOf(tags, req.GetLimit(), req.GetLast())
	return &manifestv1.ListTagsResponse{Tags: page, More: more}, nil
}

func (f *fakeManifests) ListRepositories(
	_ context.Context, req *manifestv1.ListRepositoriesRequest,
) (*manifestv1.ListRepositoriesResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var names []string
	for n := range f.repos {
		names = append(names, n)
	}
	page, more := pageOf(names, req.GetLimit(), req.GetLast())
	return &manifestv1.ListRepositoriesResponse{Repositories: page, More: more}, nil
}

func (f *fakeManifests) ListReferrers(
	_ context.Context, req *manifestv1.ListReferrersRequest,
) (*manifestv1.ListReferrersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &manifestv1.ListReferrersResponse{Filtered: req.GetArtifactType() != ""}
	r := f.repos[req.GetRepository()]
	if r == nil {
		return resp, nil
	}
	for digest, m := range r.manifests {
		if m.subject != req.GetDigest() {
			continue
		}
		if resp.Filtered && m.artifactType != req.GetArtifactType() {
			continue
		}
		resp.Referrers = append(resp.Referrers, &manifestv1.Descriptor{
			MediaType: m.mediaType, Digest: digest, Size: int64(len(m.content)),
			ArtifactType: m.artifactType,
		})
	}
	return resp, nil
}

// seenAccepts returns the Accept lists GetManifest has received.
func (f *fakeManifests) seenAccepts() [][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.accepts)
}

func (f *fakeManifests) putCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.puts
}
