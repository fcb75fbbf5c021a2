package manifest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// emptyDigest is the digest of "{}", the OCI empty descriptor's content.
const emptyDigest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

// fakeBlobs stands in for the upload service: the blobs each repository
// holds, by size.
type fakeBlobs struct {
	mu    sync.Mutex
	sizes map[string]int64 // key: repo + "@" + digest
}

func (f *fakeBlobs) StatBlob(
	_ context.Context, in *uploadv1.StatBlobRequest, _ ...grpc.CallOption,
) (*uploadv1.StatBlobResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	size, ok := f.sizes[in.GetRepository()+"@"+in.GetDigest()]
	if !ok {
		return nil, ocierr.New(ocierr.BlobUnknown, "blob %s unknown", in.GetDigest())
	}
	blob := &uploadv1.BlobDescriptor{Digest: in.GetDigest(), Size: size}
	return &uploadv1.StatBlobResponse{Blob: blob}, nil
}

// add makes data a blob of repo and returns its descriptor.
func (f *fakeBlobs) add(repo, mediaType, data string) descriptor {
	f.mu.Lock()
	defer f.mu.Unlock()
	d := descriptor{MediaType: mediaType, Digest: sha256Of([]byte(data)), Size: int64(len(data))}
	f.sizes[repo+"@"+d.Digest] = d.Size
	return d
}

// env is one test's server, fake upload service and bucket.
type env struct {
	t     *testing.T
	ctx   context.Context
	srv   *Server
	blobs *fakeBlobs
	store *objstore.Store
}

func newEnv(t *testing.T, opts Options) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	store, err := objstore.New(ctx, s3test.Start(t))
	if err != nil {
		t.Fatalf("objstore.New: %v", err)
	}
	blobs := &fakeBlobs{sizes: map[string]int64{}}
	return &env{t: t, ctx: ctx, srv: NewServer(store, blobs, opts), blobs: blobs, store: store}
}

func sha256Of(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func sha512Of(b []byte) string {
	sum := sha512.Sum512(b)
	return "sha512:" + hex.EncodeToString(sum[:])
}

// manifestJSON marshals a manifest made of fields.
func manifestJSON(t *testing.T, fields map[string]any) []byte {
	t.Helper()
	b, err := json.Marshal(fields)
	if err != nil {
		t.Fatalf("json.Marshal: %v", err)
	}
	return b
}

// image returns an OCI image manifest whose config and single layer are
// blobs of repo; name makes its digest unique.
func (e *env) image(repo, name string) []byte {
	cfg := e.blobs.add(repo, "application/vnd.oci.image.config.v1+json",
		fmt.Sprintf(`{"name":%q}`, name))
	layer := e.blobs.add(repo, "application/vnd.oci.image.layer.v1.tar+gzip", "layer of "+name)
	return manifestJSON(e.t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIManifest,
		"config":        cfg,
		"layers":        []descriptor{layer},
	})
}

func (e *env) put(repo, ref, mediaType string, content []byte) *manifestv1.PutManifestResponse {
	e.t.Helper()
	resp, err := e.srv.PutManifest(e.ctx, &manifestv1.PutManifestRequest{
		Repository: repo, Reference: ref, MediaType: mediaType, Content: content,
	})
	if err != nil {
		e.t.Fatalf("PutManifest(%s, %s) error: %v", repo, ref, err)
	}
	return resp
}

func (e *env) putErr(repo, ref, mediaType string, content []byte) error {
	_, err := e.srv.PutManifest(e.ctx, &manifestv1.PutManifestRequest{
		Repository: repo, Reference: ref, MediaType: mediaType, Content: content,
	})
	return err
}

func (e *env) get(repo, ref string, head bool) (*manifestv1.GetManifestResponse, error) {
	return e.srv.GetManifest(e.ctx, &manifestv1.GetManifestRequest{
		Repository: repo, Reference: ref, Head: head,
	})
}

func (e *env) del(repo, ref string) error {
	_, err := e.srv.DeleteManifest(e.ctx, &manifestv1.DeleteManifestRequest{
		Repository: repo, Reference: ref,
	})
	return err
}

func (e *env) tags(repo string, limit int32, last string) (*manifestv1.ListTagsResponse, error) {
	return e.srv.ListTags(e.ctx, &manifestv1.ListTagsRequest{
		Repository: repo, Limit: limit, Last: last,
	})
}

func (e *env) referrers(repo, dgst, artifactType string) *manifestv1.ListReferrersResponse {
	e.t.Helper()
	resp, err := e.srv.ListReferrers(e.ctx, &manifestv1.ListReferrersRequest{
		Repository: repo, Digest: dgst, ArtifactType: artifactType,
	})
	if err != nil {
		e.t.Fatalf("ListReferrers(%s, %s, %q) error: %v", repo, dgst, artifactType, err)
	}
	return resp
}

// wantCode fails the test unless err carries the OCI code want.
func wantCode(t *testing.T, call string, err error, want ocierr.Code) {
	t.Helper()
	if err == nil {
		t.Errorf("%s error = nil, want %s", call, want)
		return
	}
	if got := ocierr.FromError(err).Code; got != want {
		t.Errorf("%s error = %v, want %s", call, err, want)
	}
}

// wantManifest fails the test unless ref resolves to content.
func (e *env) wantManifest(repo, ref, mediaType string, content []byte) {
	e.t.Helper()
	resp, err := e.get(repo, ref, false)
	if err != nil {
		e.t.Fatalf("GetManifest(%s, %s) error: %v", repo, ref, err)
	}
	if !bytes.Equal(resp.GetContent(), content) {
		e.t.Errorf("GetManifest(%s, %s) content = %q, want %q", repo, ref, resp.GetContent(), content)
	}
	d := resp.GetDescriptor_()
	want := sha256Of(content)
	if strings.HasPrefix(ref, "sha512:") {
		want = ref
	}
	if d.GetMediaType() != mediaType || d.GetDigest() != want || d.GetSize() != int64(len(content)) {
		e.t.Errorf("GetManifest(%s, %s) descriptor = %v, want %s %s %d",
			repo, ref, d, mediaType, want, len(content))
	}
}

func TestPutGetByTagAndDigest(t *testing.T) {
	e := newEnv(t, Options{})
	cfg := e.blobs.add("library/app", "application/vnd.oci.image.config.v1+json", `{"os":"linux"}`)
	layer := e.blobs.add("library/app", "application/vnd.oci.image.layer.v1.tar+gzip", "bytes")
	// Odd spacing and key order: any re-encoding would change the bytes.
	content := []byte(fmt.Sprintf("{\n   \"schemaVersion\" : 2,\n\t\"mediaType\": %q,"+
		"\"layers\": [ {\"size\":%d,\"digest\":%q, \"mediaType\": %q} ],\n"+
		"  \"config\": {\"mediaType\": %q, \"digest\": %q, \"size\": %d}\n}\n  ",
		mediaTypeOCIManifest, layer.Size, layer.Digest, layer.MediaType,
		cfg.MediaType, cfg.Digest, cfg.Size))
	dgst := sha256Of(content)

	resp := e.put("library/app", "v1", mediaTypeOCIManifest, content)
	if resp.GetDigest() != dgst || resp.GetSubject() != "" {
		t.Errorf("PutManifest(v1) = %v, want digest %s and no subject", resp, dgst)
	}

	e.wantManifest("library/app", "v1", mediaTypeOCIManifest, content)
	e.wantManifest("library/app", dgst, mediaTypeOCIManifest, content)

	// The stored manifest is returned whatever the client accepts.
	got, err := e.srv.GetManifest(e.ctx, &manifestv1.GetManifestRequest{
		Repository: "library/app", Reference: "v1", Accept: []string{mediaTypeDockerList},
	})
	if err != nil || !bytes.Equal(got.GetContent(), content) {
		t.Errorf("GetManifest(v1, Accept docker list) = %v, %v; want the OCI manifest", got, err)
	}

	for _, ref := range []string{"v1", dgst} {
		head, err := e.get("library/app", ref, true)
		if err != nil {
			t.Fatalf("GetManifest(%s, head) error: %v", ref, err)
		}
		d := head.GetDescriptor_()
		if len(head.GetContent()) != 0 || d.GetMediaType() != mediaTypeOCIManifest ||
			d.GetDigest() != dgst || d.GetSize() != int64(len(content)) {
			t.Errorf("GetManifest(%s, head) = %v, want descriptor %s %d and no content",
				ref, head, dgst, len(content))
		}
	}

	_, err = e.get("library/app", "v2", false)
	wantCode(t, "GetManifest(unknown tag)", err, ocierr.ManifestUnknown)
	_, err = e.get("library/app", sha256Of([]byte("other")), true)
	wantCode(t, "GetManifest(unknown digest, head)", err, ocierr.ManifestUnknown)
	_, err = e.get("library/other", "v1", false)
	wantCode(t, "GetManifest(other repository)", err, ocierr.ManifestUnknown)
}

func TestPutBySHA512Digest(t *testing.T) {
	e := newEnv(t, Options{})
	content := e.image("app", "a")
	d512 := sha512Of(content)

	resp := e.put("app", d512, mediaTypeOCIManifest, content)
	if resp.GetDigest() != d512 {
		t.Errorf("PutManifest(%s) digest = %s, want %s", d512, resp.GetDigest(), d512)
	}
	e.wantManifest("app", d512, mediaTypeOCIManifest, content)

	_, err := e.get("app", sha256Of(content), false)
	wantCode(t, "GetManifest(sha256 of a manifest pushed by sha512)", err, ocierr.ManifestUnknown)
}

func TestPutDigestMismatch(t *testing.T) {
	e := newEnv(t, Options{})
	content := e.image("app", "a")
	for _, ref := range []string{sha256Of([]byte("else")), sha512Of([]byte("else"))} {
		err := e.putErr("app", ref, mediaTypeOCIManifest, content)
		wantCode(t, "PutManifest(wrong digest)", err, ocierr.DigestInvalid)
		_, err = e.get("app", ref, false)
		wantCode(t, "GetManifest(after refused put)", err, ocierr.ManifestUnknown)
	}
	_, err := e.get("app", sha256Of(content), false)
	wantCode(t, "GetManifest(real digest after refused put)", err, ocierr.ManifestUnknown)
}

func TestPutInvalid(t *testing.T) {
	e := newEnv(t, Options{})
	good := e.image("app", "a")
	var fields map[string]any
	if err := json.Unmarshal(good, &fields); err != nil {
		t.Fatal(err)
	}
	with := func(key string, value any) []byte {
		m := maps.Clone(fields)
		if value == nil {
			delete(m, key)
		} else {
			m[key] = value
		}
		return manifestJSON(t, m)
	}
	cases := []struct {
		name      string
		ref       string
		mediaType string
		content   []byte
		want      ocierr.Code
	}{
		{"garbage", "v1", mediaTypeOCIManifest, []byte("not json {"), ocierr.ManifestInvalid},
		{"array", "v1", mediaTypeOCIManifest, []byte(`[1, 2]`), ocierr.ManifestInvalid},
		{"truncated", "v1", mediaTypeOCIManifest, good[:len(good)-1], ocierr.ManifestInvalid},
		{"content type mismatch", "v1", mediaTypeDockerManifest, good, ocierr.ManifestInvalid},
		{"no media type", "v1", "", with("mediaType", nil), ocierr.ManifestInvalid},
		{"bad content type", "v1", "not a type;;", good, ocierr.ManifestInvalid},
		{"schema version 1", "v1", mediaTypeOCIManifest, with("schemaVersion", 1),
			ocierr.ManifestInvalid},
		{"no config", "v1", mediaTypeOCIManifest, with("config", nil), ocierr.ManifestInvalid},
		{"image with manifests", "v1", mediaTypeOCIManifest,
			with("manifests", []descriptor{}), ocierr.ManifestInvalid},
		{"layers not a list", "v1", mediaTypeOCIManifest, with("layers", "x"),
			ocierr.ManifestInvalid},
		{"malformed layer digest", "v1", mediaTypeOCIManifest,
			with("layers", []descriptor{{Digest: "sha256:abc", Size: 1}}), ocierr.ManifestInvalid},
		{"invalid tag", "-v1", mediaTypeOCIManifest, good, ocierr.ManifestInvalid},
		{"invalid digest", "sha256:abc", mediaTypeOCIManifest, good, ocierr.DigestInvalid},
		{"unsupported digest", "md5:" + strings.Repeat("a", 32), mediaTypeOCIManifest, good,
			ocierr.DigestInvalid},
	}
	for _, c := range cases {
		err := e.putErr("app", c.ref, c.mediaType, c.content)
		wantCode(t, "PutManifest("+c.name+")", err, c.want)
	}

	_, err := e.tags("app", 0, "")
	wantCode(t, "ListTags(after only refused puts)", err, ocierr.NameUnknown)
}

func TestMediaTypeResolution(t *testing.T) {
	e := newEnv(t, Options{})
	var fields map[string]any
	if err := json.Unmarshal(e.image("app", "a"), &fields); err != nil {
		t.Fatal(err)
	}

	// No mediaType field: the Content-Type decides.
	noField := maps.Clone(fields)
	delete(noField, "mediaType")
	content := manifestJSON(t, noField)
	e.put("app", "a", mediaTypeOCIManifest, content)
	e.wantManifest("app", "a", mediaTypeOCIManifest, content)

	// No Content-Type: the mediaType field decides.
	docker := maps.Clone(fields)
	docker["mediaType"] = mediaTypeDockerManifest
	content = manifestJSON(t, docker)
	e.put("app", "b", "", content)
	e.wantManifest("app", "b", mediaTypeDockerManifest, content)

	// Parameters on the Content-Type are dropped.
	content = manifestJSON(t, fields)
	e.put("app", "c", mediaTypeOCIManifest+"; charset=utf-8", content)
	e.wantManifest("app", "c", mediaTypeOCIManifest, content)
}

func TestPutUnknownMediaTypeIsOpaque(t *testing.T) {
	e := newEnv(t, Options{})
	const mt = "application/vnd.example.thing.v1+json"
	subject := sha256Of([]byte("subject"))
	content := manifestJSON(t, map[string]any{
		"mediaType": mt,
		"layers":    []descriptor{{Digest: sha256Of([]byte("missing")), Size: 7}},
		"subject":   descriptor{MediaType: mediaTypeOCIManifest, Digest: subject, Size: 7},
	})

	resp := e.put("app", "thing", mt, content)
	if resp.GetSubject() != "" {
		t.Errorf("PutManifest(opaque) subject = %q, want none", resp.GetSubject())
	}
	e.wantManifest("app", "thing", mt, content)
	if got := e.referrers("app", subject, ""); len(got.GetReferrers()) != 0 {
		t.Errorf("ListReferrers(subject of opaque) = %v, want none", got.GetReferrers())
	}
}

func TestPutUnknownBlob(t *testing.T) {
	e := newEnv(t, Options{})
	cfg := e.blobs.add("app", "application/vnd.oci.image.config.v1+json", `{}`)
	layer := e.blobs.add("app", "application/vnd.oci.image.layer.v1.tar", "layer")
	elsewhere := e.blobs.add("other", "application/vnd.oci.image.layer.v1.tar", "other's")
	missing := descriptor{
		MediaType: "application/vnd.oci.image.layer.v1.tar",
		Digest:    sha256Of([]byte("never pushed")),
		Size:      12,
	}
	build := func(mediaType string, config descriptor, layers ...descriptor) []byte {
		return manifestJSON(t, map[string]any{
			"schemaVersion": 2, "mediaType": mediaType, "config": config, "layers": layers,
		})
	}

	cases := []struct {
		name    string
		content []byte
		want    ocierr.Code
		digest  string
	}{
		{"missing layer", build(mediaTypeOCIManifest, cfg, layer, missing),
			ocierr.ManifestBlobUnknown, missing.Digest},
		{"missing config", build(mediaTypeOCIManifest, missing, layer),
			ocierr.ManifestBlobUnknown, missing.Digest},
		{"blob of another repository", build(mediaTypeOCIManifest, cfg, elsewhere),
			ocierr.ManifestBlobUnknown, elsewhere.Digest},
		{"docker missing layer", build(mediaTypeDockerManifest, cfg, missing),
			ocierr.ManifestBlobUnknown, missing.Digest},
		{"wrong layer size", build(mediaTypeOCIManifest, cfg,
			descriptor{MediaType: layer.MediaType, Digest: layer.Digest, Size: layer.Size + 1}),
			ocierr.ManifestInvalid, layer.Digest},
	}
	for _, c := range cases {
		err := e.putErr("app", "v1", "", c.content)
		wantCode(t, "PutManifest("+c.name+")", err, c.want)
		if got := ocierr.FromError(err); got.Detail["digest"] != c.digest {
			t.Errorf("PutManifest(%s) error detail = %v, want digest %s", c.name, got.Detail, c.digest)
		}
	}
	err := e.putErr("app", "v1", "", build(mediaTypeOCIManifest, cfg, missing))
	if got := ocierr.FromError(err).HTTPStatus(); got != http.StatusNotFound {
		t.Errorf("PutManifest(missing layer) HTTP status = %d, want 404", got)
	}

	content := build(mediaTypeDockerManifest, cfg, layer)
	e.put("app", "docker", "", content)
	e.wantManifest("app", "docker", mediaTypeDockerManifest, content)

	// Foreign layers are not expected in the registry.
	nondistributable := descriptor{
		MediaType: "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		Digest:    sha256Of([]byte("foreign")), Size: 7,
	}
	withURLs := missing
	withURLs.URLs = []string{"https://example.com/layer"}
	content = build(mediaTypeOCIManifest, cfg, nondistributable, withURLs, layer)
	e.put("app", "foreign", "", content)
	e.wantManifest("app", "foreign", mediaTypeOCIManifest, content)
}

func TestPutIndex(t *testing.T) {
	e := newEnv(t, Options{})
	amd64 := e.image("app", "amd64")
	arm64 := e.image("app", "arm64")
	e.put("app", sha256Of(arm64), mediaTypeOCIManifest, arm64)
	child := func(content []byte) descriptor {
		return descriptor{
			MediaType: mediaTypeOCIManifest, Digest: sha256Of(content), Size: int64(len(content)),
		}
	}
	index := manifestJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIIndex,
		"manifests":     []descriptor{child(arm64), child(amd64)},
	})

	err := e.putErr("app", "multi", mediaTypeOCIIndex, index)
	wantCode(t, "PutManifest(index with missing child)", err, ocierr.ManifestBlobUnknown)
	if got := ocierr.FromError(err).Detail["digest"]; got != sha256Of(amd64) {
		t.Errorf("PutManifest(index with missing child) detail digest = %s, want %s",
			got, sha256Of(amd64))
	}
	_, err = e.get("app", "multi", false)
	wantCode(t, "GetManifest(refused index)", err, ocierr.ManifestUnknown)

	e.put("app", sha256Of(amd64), mediaTypeOCIManifest, amd64)
	e.put("app", "multi", mediaTypeOCIIndex, index)
	e.wantManifest("app", "multi", mediaTypeOCIIndex, index)

	wrongSize := child(amd64)
	wrongSize.Size++
	err = e.putErr("app", "bad", mediaTypeOCIIndex, manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeOCIIndex, "manifests": []descriptor{wrongSize},
	}))
	wantCode(t, "PutManifest(index with wrong child size)", err, ocierr.ManifestInvalid)

	err = e.putErr("app", "bad", mediaTypeOCIIndex, manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeOCIIndex, "manifests": []descriptor{},
		"layers": []descriptor{},
	}))
	wantCode(t, "PutManifest(index with layers)", err, ocierr.ManifestInvalid)

	list := manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeDockerList, "manifests": []descriptor{child(arm64)},
	})
	e.put("app", "list", mediaTypeDockerList, list)
	e.wantManifest("app", "list", mediaTypeDockerList, list)

	// A child of a non-manifest type may be a blob (BuildKit's cache).
	cacheBlob := e.blobs.add("app", "application/vnd.buildkit.cacheconfig.v0", "cache")
	missingBlob := descriptor{MediaType: cacheBlob.MediaType, Digest: sha256Of([]byte("x")), Size: 1}
	cache := func(d descriptor) []byte {
		return manifestJSON(t, map[string]any{
			"schemaVersion": 2, "mediaType": mediaTypeOCIIndex, "manifests": []descriptor{d},
		})
	}
	e.put("app", "cache", mediaTypeOCIIndex, cache(cacheBlob))
	err = e.putErr("app", "cache", mediaTypeOCIIndex, cache(missingBlob))
	wantCode(t, "PutManifest(index with missing blob child)", err, ocierr.ManifestBlobUnknown)
}

func TestPutTooBig(t *testing.T) {
	pad := func(t *testing.T, e *env, size int) []byte {
		content := e.image("app", "a")
		if len(content) > size {
			t.Fatalf("manifest is %d bytes, cannot pad it to %d", len(content), size)
		}
		// Trailing whitespace keeps it valid JSON.
		return append(content, bytes.Repeat([]byte(" "), size-len(content))...)
	}

	t.Run("option", func(t *testing.T) {
		e := newEnv(t, Options{MaxManifestSize: 1024})
		e.put("app", "fits", mediaTypeOCIManifest, pad(t, e, 1024))
		err := e.putErr("app", "big", mediaTypeOCIManifest, pad(t, e, 1025))
		wantCode(t, "PutManifest(1025 bytes, limit 1024)", err, ocierr.ManifestTooBig)
		if got := ocierr.FromError(err).HTTPStatus(); got != http.StatusRequestEntityTooLarge {
			t.Errorf("PutManifest(too big) HTTP status = %d, want 413", got)
		}
	})
	t.Run("default", func(t *testing.T) {
		e := newEnv(t, Options{})
		e.put("app", "fits", mediaTypeOCIManifest, pad(t, e, 4<<20))
		err := e.putErr("app", "big", mediaTypeOCIManifest, pad(t, e, 4<<20+1))
		wantCode(t, "PutManifest(4 MiB + 1)", err, ocierr.ManifestTooBig)
	})
}

func TestReferrers(t *testing.T) {
	e := newEnv(t, Options{})
	subjectContent := e.image("app", "base")
	subject := descriptor{
		MediaType: mediaTypeOCIManifest,
		Digest:    sha256Of(subjectContent),
		Size:      int64(len(subjectContent)),
	}
	empty := e.blobs.add("app", "application/vnd.oci.empty.v1+json", "{}")
	if empty.Digest != emptyDigest {
		t.Fatalf("digest of {} = %s, want %s", empty.Digest, emptyDigest)
	}
	sbomLayer := e.blobs.add("app", "application/spdx+json", `{"spdx":true}`)
	sigConfig := e.blobs.add("app", "application/vnd.example.sig.config.v1+json", `{"sig":1}`)

	// An artifact: artifactType set, empty config. Its subject is not
	// pushed yet, which the registry must accept.
	sbom := manifestJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIManifest,
		"artifactType":  "application/vnd.example.sbom.v1",
		"config":        empty,
		"layers":        []descriptor{sbomLayer},
		"subject":       subject,
		"annotations":   map[string]string{"org.example.kind": "sbom"},
	})
	resp := e.put("app", sha256Of(sbom), mediaTypeOCIManifest, sbom)
	if resp.GetSubject() != subject.Digest {
		t.Errorf("PutManifest(sbom) subject = %q, want %s", resp.GetSubject(), subject.Digest)
	}

	// An image manifest with a custom config type and no artifactType.
	sig := manifestJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIManifest,
		"config":        sigConfig,
		"layers":        []descriptor{},
		"subject":       subject,
	})
	e.put("app", "sig", mediaTypeOCIManifest, sig)

	want := map[string]*manifestv1.Descriptor{
		sha256Of(sbom): {
			MediaType: mediaTypeOCIManifest, Digest: sha256Of(sbom), Size: int64(len(sbom)),
			ArtifactType: "application/vnd.example.sbom.v1",
			Annotations:  map[string]string{"org.example.kind": "sbom"},
		},
		sha256Of(sig): {
			MediaType: mediaTypeOCIManifest, Digest: sha256Of(sig), Size: int64(len(sig)),
			ArtifactType: sigConfig.MediaType,
		},
	}
	check := func(
		call string, got *manifestv1.ListReferrersResponse, filtered bool, digests ...string,
	) {
		t.Helper()
		if got.GetFiltered() != filtered {
			t.Errorf("%s filtered = %v, want %v", call, got.GetFiltered(), filtered)
		}
		var gotDigests []string
		for _, d := range got.GetReferrers() {
			gotDigests = append(gotDigests, d.GetDigest())
			w, ok := want[d.GetDigest()]
			if !ok {
				continue
			}
			if d.GetMediaType() != w.GetMediaType() || d.GetSize() != w.GetSize() ||
				d.GetArtifactType() != w.GetArtifactType() ||
				fmt.Sprint(d.GetAnnotations()) != fmt.Sprint(w.GetAnnotations()) {
				t.Errorf("%s referrer = %v, want %v", call, d, w)
			}
		}
		slices.Sort(gotDigests)
		slices.Sort(digests)
		if !slices.Equal(gotDigests, digests) {
			t.Errorf("%s digests = %v, want %v", call, gotDigests, digests)
		}
	}

	check("ListReferrers(subject)", e.referrers("app", subject.Digest, ""), false,
		sha256Of(sbom), sha256Of(sig))
	check("ListReferrers(subject, sbom)",
		e.referrers("app", subject.Digest, "application/vnd.example.sbom.v1"), true, sha256Of(sbom))
	check("ListReferrers(subject, unknown type)",
		e.referrers("app", subject.Digest, "application/vnd.example.none"), true)
	check("ListReferrers(unknown subject)", e.referrers("app", sha256Of([]byte("x")), ""), false)
	check("ListReferrers(other repository)", e.referrers("other", subject.Digest, ""), false)

	// Pushing the subject afterwards changes nothing.
	e.put("app", "base", mediaTypeOCIManifest, subjectContent)
	check("ListReferrers(subject, after pushing it)", e.referrers("app", subject.Digest, ""), false,
		sha256Of(sbom), sha256Of(sig))

	if err := e.del("app", sha256Of(sbom)); err != nil {
		t.Fatalf("DeleteManifest(sbom) error: %v", err)
	}
	check("ListReferrers(subject, after deleting sbom)",
		e.referrers("app", subject.Digest, ""), false, sha256Of(sig))

	_, err := e.srv.ListReferrers(e.ctx, &manifestv1.ListReferrersRequest{
		Repository: "app", Digest: "sha256:nothex",
	})
	wantCode(t, "ListReferrers(malformed digest)", err, ocierr.DigestInvalid)
}

func TestTagMove(t *testing.T) {
	e := newEnv(t, Options{})
	a, b := e.image("app", "a"), e.image("app", "b")
	e.put("app", "latest", mediaTypeOCIManifest, a)
	e.put("app", "latest", mediaTypeOCIManifest, b)

	e.wantManifest("app", "latest", mediaTypeOCIManifest, b)
	e.wantManifest("app", sha256Of(a), mediaTypeOCIManifest, a)
	got, err := e.tags("app", 0, "")
	if err != nil || !slices.Equal(got.GetTags(), []string{"latest"}) {
		t.Errorf("ListTags(app) = %v, %v; want [latest]", got.GetTags(), err)
	}
}

// TestPutWithTagParams pushes by digest with `tag` parameters: every tag
// points at the manifest, the response names them, and a bad one refuses
// the whole push.
func TestPutWithTagParams(t *testing.T) {
	e := newEnv(t, Options{})
	a := e.image("app", "a")
	resp, err := e.srv.PutManifest(e.ctx, &manifestv1.PutManifestRequest{
		Repository: "app", Reference: sha256Of(a), MediaType: mediaTypeOCIManifest,
		Content: a, Tags: []string{"v1", "v2", "v1"},
	})
	if err != nil {
		t.Fatalf("PutManifest(tags v1, v2) error: %v", err)
	}
	if !slices.Equal(resp.GetTags(), []string{"v1", "v2"}) {
		t.Errorf("PutManifest tags = %v, want [v1 v2]", resp.GetTags())
	}
	e.wantManifest("app", "v1", mediaTypeOCIManifest, a)
	e.wantManifest("app", "v2", mediaTypeOCIManifest, a)

	b := e.image("app", "b")
	_, err = e.srv.PutManifest(e.ctx, &manifestv1.PutManifestRequest{
		Repository: "app", Reference: sha256Of(b), MediaType: mediaTypeOCIManifest,
		Content: b, Tags: []string{"v3", "bad/tag"},
	})
	wantCode(t, "PutManifest(bad tag param)", err, ocierr.ManifestInvalid)
	if _, err := e.get("app", "v3", false); err == nil {
		t.Errorf("GetManifest(v3) after a refused push succeeded, want MANIFEST_UNKNOWN")
	}
}

func TestDelete(t *testing.T) {
	e := newEnv(t, Options{})
	a, b := e.image("app", "a"), e.image("app", "b")
	for _, tag := range []string{"v1", "v2"} {
		e.put("app", tag, mediaTypeOCIManifest, a)
	}
	for _, tag := range []string{"v3", "v4"} {
		e.put("app", tag, mediaTypeOCIManifest, b)
	}

	if err := e.del("app", "v3"); err != nil {
		t.Fatalf("DeleteManifest(v3) error: %v", err)
	}
	_, err := e.get("app", "v3", false)
	wantCode(t, "GetManifest(deleted tag)", err, ocierr.ManifestUnknown)
	e.wantManifest("app", sha256Of(b), mediaTypeOCIManifest, b)
	e.wantManifest("app", "v4", mediaTypeOCIManifest, b)
	wantCode(t, "DeleteManifest(deleted tag)", e.del("app", "v3"), ocierr.ManifestUnknown)

	if err := e.del("app", sha256Of(a)); err != nil {
		t.Fatalf("DeleteManifest(digest of a) error: %v", err)
	}
	for _, ref := range []string{"v1", "v2", sha256Of(a)} {
		_, err := e.get("app", ref, false)
		wantCode(t, "GetManifest("+ref+" after deleting a)", err, ocierr.ManifestUnknown)
		_, err = e.get("app", ref, true)
		wantCode(t, "GetManifest("+ref+" head after deleting a)", err, ocierr.ManifestUnknown)
	}
	e.wantManifest("app", "v4", mediaTypeOCIManifest, b)
	got, err := e.tags("app", 0, "")
	if err != nil || !slices.Equal(got.GetTags(), []string{"v4"}) {
		t.Errorf("ListTags(app) = %v, %v; want [v4]", got.GetTags(), err)
	}

	wantCode(t, "DeleteManifest(deleted digest)", e.del("app", sha256Of(a)), ocierr.ManifestUnknown)
	wantCode(t, "DeleteManifest(unknown tag)", e.del("app", "nope"), ocierr.ManifestUnknown)
	wantCode(t, "DeleteManifest(malformed digest)", e.del("app", "sha256:x"), ocierr.DigestInvalid)
}

func TestListTagsPaging(t *testing.T) {
	e := newEnv(t, Options{})
	content := e.image("app", "a")
	for _, tag := range []string{"v1.0", "latest", "beta", "alpha", "v2.0", "Zeta", "main"} {
		e.put("app", tag, mediaTypeOCIManifest, content)
	}
	e.put("app/sub", "nested", mediaTypeOCIManifest, e.image("app/sub", "n"))

	cases := []struct {
		limit int32
		last  string
		want  []string
		more  bool
	}{
		{0, "", []string{"Zeta", "alpha", "beta", "latest", "main", "v1.0", "v2.0"}, false},
		{3, "", []string{"Zeta", "alpha", "beta"}, true},
		{3, "beta", []string{"latest", "main", "v1.0"}, true},
		{3, "v1.0", []string{"v2.0"}, false},
		{2, "main", []string{"v1.0", "v2.0"}, false},
		{0, "latest", []string{"main", "v1.0", "v2.0"}, false},
		{0, "b", []string{"beta", "latest", "main", "v1.0", "v2.0"}, false},
		{5, "v2.0", []string{}, false},
	}
	for _, c := range cases {
		got, err := e.tags("app", c.limit, c.last)
		if err != nil {
			t.Errorf("ListTags(app, %d, %q) error: %v", c.limit, c.last, err)
			continue
		}
		if !slices.Equal(got.GetTags(), c.want) || got.GetMore() != c.more {
			t.Errorf("ListTags(app, %d, %q) = %v more=%v, want %v more=%v",
				c.limit, c.last, got.GetTags(), got.GetMore(), c.want, c.more)
		}
	}

	_, err := e.tags("unknown", 0, "")
	wantCode(t, "ListTags(unknown)", err, ocierr.NameUnknown)
	_, err = e.tags("unknown", 2, "a")
	wantCode(t, "ListTags(unknown, last)", err, ocierr.NameUnknown)

	// A repository with manifests but no tags lists no tags.
	untagged := e.image("untagged", "u")
	e.put("untagged", sha256Of(untagged), mediaTypeOCIManifest, untagged)
	got, err := e.tags("untagged", 0, "")
	if err != nil || len(got.GetTags()) != 0 || got.GetMore() {
		t.Errorf("ListTags(untagged) = %v, %v; want no tags", got, err)
	}
}

func TestListRepositoriesPaging(t *testing.T) {
	e := newEnv(t, Options{})
	list := func(limit int32, last string) *manifestv1.ListRepositoriesResponse {
		t.Helper()
		resp, err := e.srv.ListRepositories(e.ctx, &manifestv1.ListRepositoriesRequest{
			Limit: limit, Last: last,
		})
		if err != nil {
			t.Fatalf("ListRepositories(%d, %q) error: %v", limit, last, err)
		}
		return resp
	}
	if got := list(0, ""); len(got.GetRepositories()) != 0 || got.GetMore() {
		t.Errorf("ListRepositories(empty) = %v, want nothing", got)
	}

	for _, repo := range []string{"zeta", "alpha/one", "alpha", "beta/x/y", "mid", "alpha"} {
		e.put(repo, "v1", mediaTypeOCIManifest, e.image(repo, repo))
	}
	cases := []struct {
		limit int32
		last  string
		want  []string
		more  bool
	}{
		{0, "", []string{"alpha", "alpha/one", "beta/x/y", "mid", "zeta"}, false},
		{2, "", []string{"alpha", "alpha/one"}, true},
		{2, "alpha/one", []string{"beta/x/y", "mid"}, true},
		{2, "mid", []string{"zeta"}, false},
		{1, "mid", []string{"zeta"}, false},
		{0, "alpha", []string{"alpha/one", "beta/x/y", "mid", "zeta"}, false},
	}
	for _, c := range cases {
		got := list(c.limit, c.last)
		if !slices.Equal(got.GetRepositories(), c.want) || got.GetMore() != c.more {
			t.Errorf("ListRepositories(%d, %q) = %v more=%v, want %v more=%v",
				c.limit, c.last, got.GetRepositories(), got.GetMore(), c.want, c.more)
		}
	}
}

func TestInvalidNames(t *testing.T) {
	e := newEnv(t, Options{})
	content := e.image("app", "a")
	dgst := sha256Of(content)
	for _, name := range []string{"", "App", "a//b", "-a", "a/_revisions", "a/", "a b"} {
		call := func(rpc string) string { return fmt.Sprintf("%s(%q)", rpc, name) }
		wantCode(t, call("PutManifest"), e.putErr(name, "v1", mediaTypeOCIManifest, content),
			ocierr.NameInvalid)
		_, err := e.get(name, "v1", false)
		wantCode(t, call("GetManifest"), err, ocierr.NameInvalid)
		wantCode(t, call("DeleteManifest"), e.del(name, dgst), ocierr.NameInvalid)
		_, err = e.tags(name, 0, "")
		wantCode(t, call("ListTags"), err, ocierr.NameInvalid)
		_, err = e.srv.ListReferrers(e.ctx, &manifestv1.ListReferrersRequest{
			Repository: name, Digest: dgst,
		})
		wantCode(t, call("ListReferrers"), err, ocierr.NameInvalid)
	}
}

// TestReplicasShareAStore runs two servers over one bucket, as two replicas
// do, pushing the same manifest concurrently under different tags.
func TestReplicasShareAStore(t *testing.T) {
	e := newEnv(t, Options{})
	other := NewServer(e.store, e.blobs, Options{})
	content := e.image("app", "a")

	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		srv := e.srv
		if i%2 == 1 {
			srv = other
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = srv.PutManifest(e.ctx, &manifestv1.PutManifestRequest{
				Repository: "app", Reference: fmt.Sprintf("t%d", i),
				MediaType: mediaTypeOCIManifest, Content: content,
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("PutManifest(t%d) error: %v", i, err)
		}
	}

	got, err := e.tags("app", 0, "")
	if err != nil || len(got.GetTags()) != len(errs) {
		t.Fatalf("ListTags(app) = %v, %v; want %d tags", got.GetTags(), err, len(errs))
	}
	for _, tag := range got.GetTags() {
		e.wantManifest("app", tag, mediaTypeOCIManifest, content)
	}
	repos, err := other.ListRepositories(e.ctx, &manifestv1.ListRepositoriesRequest{})
	if err != nil || !slices.Equal(repos.GetRepositories(), []string{"app"}) {
		t.Errorf("ListRepositories() = %v, %v; want [app]", repos.GetRepositories(), err)
	}
}
