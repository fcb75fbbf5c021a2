package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/keel-registry/keel/gateway"
)

// chunkSize is the size the gateway must cut upload bodies into.
const chunkSize = 1<<20 - 64

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newRequest builds a request to the harness, logged in as the writer.
func (h *harness) newRequest(t *testing.T, method, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(testContext(t), method, h.url+path, body)
	if err != nil {
		t.Fatalf("NewRequest(%s %s) error = %v", method, path, err)
	}
	req.SetBasicAuth(writerName, writerPass)
	return req
}

// noRedirects is a client that shows redirects instead of following them.
var noRedirects = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// send does req and returns the response with its whole body.
func send(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatalf("%s %s error = %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", req.Method, req.URL.Path, err)
	}
	if got := resp.Header.Get("Docker-Distribution-API-Version"); got != "registry/2.0" {
		t.Errorf("%s %s: Docker-Distribution-API-Version = %q, want registry/2.0",
			req.Method, req.URL.Path, got)
	}
	return resp, body
}

// do sends a request as the writer.
func (h *harness) do(t *testing.T, method, path string, body []byte) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	return send(t, h.newRequest(t, method, path, r))
}

// wantStatus fails the test unless resp has status want.
func wantStatus(t *testing.T, resp *http.Response, body []byte, want int) {
	t.Helper()
	if resp.StatusCode != want {
		t.Fatalf("%s %s status = %d, want %d; body %s",
			resp.Request.Method, resp.Request.URL, resp.StatusCode, want, body)
	}
}

// wantError fails the test unless resp is an OCI error with status and code.
func wantError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	wantStatus(t, resp, body, status)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s %s Content-Type = %q, want application/json",
			resp.Request.Method, resp.Request.URL, ct)
	}
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("%s %s body = %s, want one OCI error", resp.Request.Method, resp.Request.URL, body)
	}
	if e.Errors[0].Code != code {
		t.Errorf("%s %s error code = %s, want %s",
			resp.Request.Method, resp.Request.URL, e.Errors[0].Code, code)
	}
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushBlob uploads b to repo in one POST and returns its digest.
func (h *harness) pushBlob(t *testing.T, repo string, b []byte) string {
	t.Helper()
	d := sha256Digest(b)
	resp, body := h.do(t, http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+d, b)
	wantStatus(t, resp, body, http.StatusCreated)
	return d
}

// pushManifest stores a manifest under ref and returns its digest.
func (h *harness) pushManifest(t *testing.T, repo, ref, mediaType string, m []byte) string {
	t.Helper()
	req := h.newRequest(t, http.MethodPut, "/v2/"+repo+"/manifests/"+ref, bytes.NewReader(m))
	req.Header.Set("Content-Type", mediaType)
	resp, body := send(t, req)
	wantStatus(t, resp, body, http.StatusCreated)
	return resp.Header.Get("Docker-Content-Digest")
}

const ociManifestType = "application/vnd.oci.image.manifest.v1+json"

func TestClientPushPull(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	ctx := testContext(t)
	img, err := random.Image(3<<20, 4)
	if err != nil {
		t.Fatalf("random.Image() error = %v", err)
	}
	ref, err := name.ParseReference(h.host + "/team/app:v1")
	if err != nil {
		t.Fatalf("ParseReference() error = %v", err)
	}
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuth(&authn.Basic{Username: writerName, Password: writerPass}),
	}

	if err := remote.Write(ref, img, opts...); err != nil {
		t.Fatalf("remote.Write(%s) error = %v", ref, err)
	}
	pulled, err := remote.Image(ref, opts...)
	if err != nil {
		t.Fatalf("remote.Image(%s) error = %v", ref, err)
	}

	want, _ := img.Digest()
	if got, err := pulled.Digest(); err != nil || got != want {
		t.Errorf("pulled digest = %v, %v; want %v", got, err, want)
	}
	wantLayers, _ := img.Layers()
	gotLayers, err := pulled.Layers()
	if err != nil || len(gotLayers) != len(wantLayers) {
		t.Fatalf("pulled layers = %d, %v; want %d", len(gotLayers), err, len(wantLayers))
	}
	for i, l := range gotLayers {
		wantDigest, _ := wantLayers[i].Digest()
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("layer %d Compressed() error = %v", i, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || sha256Digest(b) != wantDigest.String() {
			t.Errorf("layer %d content digest = %s, %v; want %s", i, sha256Digest(b), err, wantDigest)
		}
	}

	byDigest, err := name.NewDigest(h.host + "/team/app@" + want.String())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Image(byDigest, opts...); err != nil {
		t.Errorf("remote.Image(%s) error = %v", byDigest, err)
	}
	tags, err := remote.List(ref.Context(), opts...)
	if err != nil || !slices.Equal(tags, []string{"v1"}) {
		t.Errorf("remote.List() = %q, %v; want [v1]", tags, err)
	}
	repos, err := remote.Catalog(ctx, ref.Context().Registry, opts...)
	if err != nil || !slices.Equal(repos, []string{"team/app"}) {
		t.Errorf("remote.Catalog() = %q, %v; want [team/app]", repos, err)
	}

	// Every upload stream the client caused was cut into full chunks.
	writes, commits := h.uploads.records()
	for _, rec := range append(writes, commits...) {
		for i, n := range rec.sizes {
			if i < len(rec.sizes)-1 && n != chunkSize {
				t.Errorf("upload stream message sizes = %v, want %d but the last", rec.sizes, chunkSize)
				break
			}
		}
	}
}

func TestNameValidation(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	digest := sha256Digest([]byte("x"))
	long := strings.Repeat("a", 256)
	paths := []string{
		"/v2/Team/App/manifests/latest",
		"/v2/" + long + "/manifests/latest",
		"/v2/" + long + "/tags/list",
		"/v2/team/../app/manifests/latest",
		"/v2/../manifests/latest",
		"/v2/team/app/../blobs/" + digest,
		"/v2//blobs/uploads/",
		"/v2/a//b/tags/list",
		"/v2/-a/referrers/" + digest,
	}
	for _, p := range paths {
		method := http.MethodGet
		if strings.HasSuffix(p, "/uploads/") {
			method = http.MethodPost
		}
		resp, body := h.do(t, method, p, nil)
		wantError(t, resp, body, http.StatusBadRequest, "NAME_INVALID")
	}

	resp, body := h.do(t, http.MethodGet, "/v2/"+strings.Repeat("a", 255)+"/tags/list", nil)
	wantError(t, resp, body, http.StatusNotFound, "NAME_UNKNOWN")
}

func TestRoutesAndMethods(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	digest := sha256Digest([]byte("x"))

	resp, body := h.do(t, http.MethodGet, "/v2/", nil)
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != "{}" {
		t.Errorf("GET /v2/ body = %s, want {}", body)
	}

	noRoute := []string{"/v3/", "/v2/team/app", "/v2/team/app/blobs/", "/v2/a/tags/list/x", "/"}
	for _, p := range noRoute {
		resp, body := h.do(t, http.MethodGet, p, nil)
		wantError(t, resp, body, http.StatusNotFound, "UNSUPPORTED")
	}

	resp, body = h.do(t, http.MethodDelete, "/v2/_catalog", nil)
	wantError(t, resp, body, http.StatusMethodNotAllowed, "UNSUPPORTED")
	if got := resp.Header.Get("Allow"); got != "GET" {
		t.Errorf("DELETE /v2/_catalog Allow = %q, want GET", got)
	}
	resp, body = h.do(t, http.MethodPost, "/v2/team/app/blobs/"+digest, nil)
	wantError(t, resp, body, http.StatusMethodNotAllowed, "UNSUPPORTED")

	resp, body = h.do(t, http.MethodGet, "/v2/team/app/blobs/sha256:nothex", nil)
	wantError(t, resp, body, http.StatusBadRequest, "DIGEST_INVALID")
	resp, body = h.do(t, http.MethodGet, "/v2/team/app/blobs/"+digest, nil)
	wantError(t, resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
	resp, body = h.do(t, http.MethodGet, "/v2/team/app/manifests/bad:tag", nil)
	wantError(t, resp, body, http.StatusBadRequest, "DIGEST_INVALID")
	resp, body = h.do(t, http.MethodGet, "/v2/team/app/manifests/missing", nil)
	wantError(t, resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")

	// A repository whose name holds a route word still routes by the last
	// marker.
	d := h.pushBlob(t, "a/manifests/blobs", []byte("tricky"))
	resp, body = h.do(t, http.MethodGet, "/v2/a/manifests/blobs/blobs/"+d, nil)
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != "tricky" {
		t.Errorf("GET blob in a/manifests/blobs = %q, want tricky", body)
	}
}

func TestChunkedUpload(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	blob := randomBytes(t, 3000)

	resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	id := resp.Header.Get("Docker-Upload-UUID")
	if id == "" || loc != "/v2/team/app/blobs/uploads/"+id || resp.Header.Get("Range") != "0-0" {
		t.Fatalf("POST upload headers = Location %q, UUID %q, Range %q; want a session at 0-0",
			loc, id, resp.Header.Get("Range"))
	}

	patch := func(first, last int, contentRange string) (*http.Response, []byte) {
		req := h.newRequest(t, http.MethodPatch, loc, bytes.NewReader(blob[first:last+1]))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", contentRange)
		return send(t, req)
	}
	resp, body = patch(0, 999, "0-999")
	wantStatus(t, resp, body, http.StatusAccepted)
	if got := resp.Header.Get("Range"); got != "0-999" {
		t.Errorf("PATCH 0-999 Range = %q, want 0-999", got)
	}

	resp, body = patch(1500, 1999, "1500-1999")
	wantError(t, resp, body, http.StatusRequestedRangeNotSatisfiable, "BLOB_UPLOAD_INVALID")
	if got := resp.Header.Get("Range"); got != "0-999" {
		t.Errorf("out-of-order PATCH Range = %q, want 0-999", got)
	}
	if got := resp.Header.Get("Location"); got != loc {
		t.Errorf("out-of-order PATCH Location = %q, want %q", got, loc)
	}

	resp, body = patch(1000, 1999, "bytes 1000-1999/*")
	wantStatus(t, resp, body, http.StatusAccepted)
	if got := resp.Header.Get("Range"); got != "0-1999" {
		t.Errorf("PATCH 1000-1999 Range = %q, want 0-1999", got)
	}

	resp, body = h.do(t, http.MethodGet, loc, nil)
	wantStatus(t, resp, body, http.StatusNoContent)
	if got := resp.Header.Get("Range"); got != "0-1999" {
		t.Errorf("GET upload Range = %q, want 0-1999", got)
	}

	resp, body = h.do(t, http.MethodPut, loc, blob[2000:])
	wantError(t, resp, body, http.StatusBadRequest, "DIGEST_INVALID")

	d := sha256Digest(blob)
	req := h.newRequest(t, http.MethodPut, loc+"?digest="+d, bytes.NewReader(blob[2000:]))
	req.Header.Set("Content-Range", "2000-2999")
	resp, body = send(t, req)
	wantStatus(t, resp, body, http.StatusCreated)
	if resp.Header.Get("Location") != "/v2/team/app/blobs/"+d ||
		resp.Header.Get("Docker-Content-Digest") != d {
		t.Errorf("PUT upload headers = Location %q, digest %q; want the blob %s",
			resp.Header.Get("Location"), resp.Header.Get("Docker-Content-Digest"), d)
	}

	resp, body = h.do(t, http.MethodGet, "/v2/team/app/blobs/"+d, nil)
	wantStatus(t, resp, body, http.StatusOK)
	if !bytes.Equal(body, blob) {
		t.Errorf("GET blob = %d bytes, want the %d uploaded", len(body), len(blob))
	}
}

func TestUploadCancelAndMonolithic(t *testing.T) {
	h := newHarness(t, harnessConfig{})

	resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	resp, body = h.do(t, http.MethodDelete, loc, nil)
	wantStatus(t, resp, body, http.StatusNoContent)
	resp, body = h.do(t, http.MethodGet, loc, nil)
	wantError(t, resp, body, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")

	blob := []byte("monolithic blob")
	wrong := sha256Digest([]byte("something else"))
	resp, body = h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/?digest="+wrong, blob)
	wantError(t, resp, body, http.StatusBadRequest, "DIGEST_INVALID")
	resp, body = h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/?digest=md5:abc", blob)
	wantError(t, resp, body, http.StatusBadRequest, "DIGEST_INVALID")

	d := sha256Digest(blob)
	resp, body = h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/?digest="+d, blob)
	wantStatus(t, resp, body, http.StatusCreated)
	if resp.Header.Get("Location") != "/v2/team/app/blobs/"+d {
		t.Errorf("monolithic POST Location = %q, want the blob", resp.Header.Get("Location"))
	}
	_, commits := h.uploads.records()
	last := commits[len(commits)-1]
	if last.start == nil || *last.start != 0 ||
		last.length == nil || *last.length != int64(len(blob)) {
		t.Errorf("monolithic commit header start/length = %v/%v, want 0/%d",
			last.start, last.length, len(blob))
	}

	resp, body = h.do(t, http.MethodDelete, "/v2/team/app/blobs/"+d, nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	resp, body = h.do(t, http.MethodHead, "/v2/team/app/blobs/"+d, nil)
	wantStatus(t, resp, body, http.StatusNotFound)
}

func TestMount(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	d := h.pushBlob(t, "team/base", []byte("shared layer"))

	resp, body := h.do(t, http.MethodPost,
		"/v2/team/app/blobs/uploads/?mount="+d+"&from=team/base", nil)
	wantStatus(t, resp, body, http.StatusCreated)
	if resp.Header.Get("Location") != "/v2/team/app/blobs/"+d {
		t.Errorf("mount Location = %q, want the blob", resp.Header.Get("Location"))
	}
	resp, body = h.do(t, http.MethodGet, "/v2/team/app/blobs/"+d, nil)
	wantStatus(t, resp, body, http.StatusOK)

	missing := sha256Digest([]byte("not there"))
	for _, q := range []string{"?mount=" + missing + "&from=team/base", "?mount=" + d} {
		resp, body = h.do(t, http.MethodPost, "/v2/team/other/blobs/uploads/"+q, nil)
		wantStatus(t, resp, body, http.StatusAccepted)
		if resp.Header.Get("Docker-Upload-UUID") == "" {
			t.Errorf("mount fallback %s gave no upload session", q)
		}
	}
}

// TestDigestAlgorithmHint checks that a POST passes on the algorithm its
// session will be closed with, when it says: the digest-algorithm
// parameter, or the algorithm of a mount or digest parameter.
func TestDigestAlgorithmHint(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	s512 := "sha512:" + strings.Repeat("ab", 64)
	blob := []byte("monolithic")
	for _, tc := range []struct {
		query, want string
		body        []byte
	}{
		{"", "", nil},
		{"?digest-algorithm=sha512", "sha512", nil},
		{"?digest-algorithm=sha256", "sha256", nil},
		{"?mount=" + s512, "sha512", nil},
		{"?mount=" + s512 + "&from=team/none", "sha512", nil},
		{"?digest=" + sha256Digest(blob), "sha256", blob},
	} {
		h.uploads.mu.Lock()
		h.uploads.hints = nil
		h.uploads.mu.Unlock()
		resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/"+tc.query, tc.body)
		if resp.StatusCode/100 != 2 {
			t.Fatalf("POST %s = %d %s", tc.query, resp.StatusCode, body)
		}
		h.uploads.mu.Lock()
		hints := h.uploads.hints
		h.uploads.mu.Unlock()
		if len(hints) != 1 || hints[0] != tc.want {
			t.Errorf("POST %s opened sessions with algorithms %q, want [%q]", tc.query, hints, tc.want)
		}
	}
}

func TestMountNeedsPullOnSource(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	d := h.pushBlob(t, "team/secret", []byte("secret layer"))
	secret := "team/secret"
	h.auth.denyPull.Store(&secret)

	resp, body := h.do(t, http.MethodPost,
		"/v2/team/app/blobs/uploads/?mount="+d+"&from=team/secret", nil)

	wantStatus(t, resp, body, http.StatusAccepted)
	resp, body = h.do(t, http.MethodHead, "/v2/team/app/blobs/"+d, nil)
	wantStatus(t, resp, body, http.StatusNotFound)
}

func TestStreamedPatchMessageSizes(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	blob := randomBytes(t, 3*chunkSize+1000)

	resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	loc := resp.Header.Get("Location")

	// A reader without a known length makes the client send the body with
	// Transfer-Encoding: chunked, as Docker does.
	pr, pw := io.Pipe()
	go func() {
		for p := blob; len(p) > 0; {
			n := min(len(p), 50_000)
			if _, err := pw.Write(p[:n]); err != nil {
				return
			}
			p = p[n:]
		}
		pw.Close()
	}()
	req := h.newRequest(t, http.MethodPatch, loc, pr)
	resp, body = send(t, req)
	wantStatus(t, resp, body, http.StatusAccepted)
	if want := fmt.Sprintf("0-%d", len(blob)-1); resp.Header.Get("Range") != want {
		t.Errorf("streamed PATCH Range = %q, want %q", resp.Header.Get("Range"), want)
	}

	writes, _ := h.uploads.records()
	if len(writes) != 1 {
		t.Fatalf("WriteUpload streams = %d, want 1", len(writes))
	}
	w := writes[0]
	want := []int{chunkSize, chunkSize, chunkSize, 1000}
	if !slices.Equal(w.sizes, want) {
		t.Errorf("WriteUpload message sizes = %v, want %v", w.sizes, want)
	}
	if w.start != nil || w.length != nil {
		t.Errorf("streamed WriteHeader start/length = %v/%v, want unset", w.start, w.length)
	}

	d := sha256Digest(blob)
	resp, body = h.do(t, http.MethodPut, loc+"?digest="+d, nil)
	wantStatus(t, resp, body, http.StatusCreated)
}

// failingReader yields n bytes and then fails, as a client that drops
// mid-upload does.
type failingReader struct{ n int }

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, io.ErrUnexpectedEOF
	}
	k := min(len(p), r.n)
	r.n -= k
	return k, nil
}

func TestBrokenBodyCancelsStream(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	loc := resp.Header.Get("Location")

	// Straight into the handler, so the body's failure reaches the gateway
	// as it would from a dropped connection.
	req := httptest.NewRequestWithContext(testContext(t), http.MethodPatch, loc,
		&failingReader{n: 2*chunkSize + 10})
	req.SetBasicAuth(writerName, writerPass)
	rec := httptest.NewRecorder()
	h.handler.ServeHTTP(rec, req)

	if rec.Code != http.StatusBadRequest {
		t.Errorf("PATCH with a failing body status = %d, want 400", rec.Code)
	}
	// The fake keeps a stream's bytes only if it was closed cleanly; a
	// cancelled stream leaves the session where it was.
	resp, body = h.do(t, http.MethodGet, loc, nil)
	wantStatus(t, resp, body, http.StatusNoContent)
	if got := resp.Header.Get("Range"); got != "0-0" {
		t.Errorf("after a failed PATCH, upload Range = %q, want 0-0 (nothing kept)", got)
	}
}

// countingBody counts the bytes the gateway reads from a request body.
type countingBody struct {
	r io.Reader
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestManifestTooBig(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	const limit = gateway.DefaultMaxManifestSize

	tests := []struct {
		name          string
		size          int64
		contentLength int64
		maxRead       int64
	}{
		{name: "declared length", size: limit + 1<<20, contentLength: limit + 1<<20, maxRead: 0},
		{name: "chunked", size: 2 * limit, contentLength: -1, maxRead: limit + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := &countingBody{r: io.LimitReader(zeroReader{}, tt.size)}
			req := httptest.NewRequestWithContext(testContext(t), http.MethodPut,
				"/v2/team/app/manifests/big", body)
			req.ContentLength = tt.contentLength
			req.SetBasicAuth(writerName, writerPass)
			req.Header.Set("Content-Type", ociManifestType)
			rec := httptest.NewRecorder()

			h.handler.ServeHTTP(rec, req)

			if rec.Code != http.StatusRequestEntityTooLarge ||
				!strings.Contains(rec.Body.String(), "MANIFEST_TOO_BIG") {
				t.Errorf("PUT %d-byte manifest = %d %s, want 413 MANIFEST_TOO_BIG",
					tt.size, rec.Code, rec.Body)
			}
			if body.n > tt.maxRead {
				t.Errorf("gateway read %d bytes of the manifest, want at most %d", body.n, tt.maxRead)
			}
			if n := h.manifests.putCount(); n != 0 {
				t.Errorf("PutManifest calls = %d, want 0", n)
			}
		})
	}
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestManifestAccept(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	m := []byte(`{"schemaVersion":2,"mediaType":"` + ociManifestType + `","layers":[]}`)
	d := h.pushManifest(t, "team/app", "v1", ociManifestType, m)
	if d != sha256Digest(m) {
		t.Fatalf("PUT manifest digest = %q, want %q", d, sha256Digest(m))
	}

	for _, method := range []string{http.MethodGet, http.MethodHead} {
		req := h.newRequest(t, method, "/v2/team/app/manifests/v1", nil)
		req.Header.Add("Accept", ociManifestType+"; q=0.9, application/vnd.oci.image.index.v1+json")
		req.Header.Add("Accept", "application/vnd.docker.distribution.manifest.v2+json;q=0.5")
		resp, body := send(t, req)
		wantStatus(t, resp, body, http.StatusOK)

		wantAccept := []string{
			ociManifestType,
			"application/vnd.oci.image.index.v1+json",
			"application/vnd.docker.distribution.manifest.v2+json",
		}
		accepts := h.manifests.seenAccepts()
		if got := accepts[len(accepts)-1]; !slices.Equal(got, wantAccept) {
			t.Errorf("%s manifest: service saw Accept %q, want %q", method, got, wantAccept)
		}
		if resp.Header.Get("Content-Type") != ociManifestType ||
			resp.Header.Get("Docker-Content-Digest") != d ||
			resp.Header.Get("Content-Length") != fmt.Sprint(len(m)) {
			t.Errorf("%s manifest headers = %v, want type, digest and length of the manifest",
				method, resp.Header)
		}
		wantBody := m
		if method == http.MethodHead {
			wantBody = nil
		}
		if !bytes.Equal(body, wantBody) {
			t.Errorf("%s manifest body = %q, want %q", method, body, wantBody)
		}
	}

	resp, body := h.do(t, http.MethodDelete, "/v2/team/app/manifests/"+d, nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	resp, body = h.do(t, http.MethodGet, "/v2/team/app/manifests/"+d, nil)
	wantError(t, resp, body, http.StatusNotFound, "MANIFEST_UNKNOWN")
}

func TestBlobRanges(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	blob := randomBytes(t, 1000)
	d := h.pushBlob(t, "team/app", blob)
	path := "/v2/team/app/blobs/" + d

	resp, body := h.do(t, http.MethodGet, path, nil)
	wantStatus(t, resp, body, http.StatusOK)
	if !bytes.Equal(body, blob) || resp.Header.Get("Accept-Ranges") != "bytes" ||
		resp.Header.Get("Docker-Content-Digest") != d ||
		resp.Header.Get("Content-Type") != "application/octet-stream" {
		t.Errorf("GET blob = %d bytes, headers %v; want the blob", len(body), resp.Header)
	}
	resp, body = h.do(t, http.MethodHead, path, nil)
	wantStatus(t, resp, body, http.StatusOK)
	if resp.ContentLength != 1000 || len(body) != 0 {
		t.Errorf("HEAD blob Content-Length = %d, body %d bytes; want 1000, none",
			resp.ContentLength, len(body))
	}

	ranges := []struct {
		header       string
		first, last  int
		contentRange string
	}{
		{"bytes=10-19", 10, 19, "bytes 10-19/1000"},
		{"bytes=990-", 990, 999, "bytes 990-999/1000"},
		{"bytes=-5", 995, 999, "bytes 995-999/1000"},
		{"bytes=900-5000", 900, 999, "bytes 900-999/1000"},
		{"bytes=-5000", 0, 999, "bytes 0-999/1000"},
	}
	for _, r := range ranges {
		req := h.newRequest(t, http.MethodGet, path, nil)
		req.Header.Set("Range", r.header)
		resp, body := send(t, req)
		wantStatus(t, resp, body, http.StatusPartialContent)
		if !bytes.Equal(body, blob[r.first:r.last+1]) {
			t.Errorf("Range %s body = %d bytes, want bytes %d-%d", r.header, len(body), r.first, r.last)
		}
		if got := resp.Header.Get("Content-Range"); got != r.contentRange {
			t.Errorf("Range %s Content-Range = %q, want %q", r.header, got, r.contentRange)
		}
	}

	for _, header := range []string{"bytes=1000-", "bytes=5000-6000", "bytes=-0", "bytes=500-0"} {
		req := h.newRequest(t, http.MethodGet, path, nil)
		req.Header.Set("Range", header)
		resp, body := send(t, req)
		wantError(t, resp, body, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
		if got := resp.Header.Get("Content-Range"); got != "bytes */1000" {
			t.Errorf("Range %s Content-Range = %q, want bytes */1000", header, got)
		}
	}

	// A Range the gateway does not understand is ignored: the whole blob.
	req := h.newRequest(t, http.MethodGet, path, nil)
	req.Header.Set("Range", "bytes=0-1,5-6")
	resp, body = send(t, req)
	wantStatus(t, resp, body, http.StatusOK)
	if len(body) != len(blob) {
		t.Errorf("multi-range GET body = %d bytes, want the whole %d", len(body), len(blob))
	}
}

func TestBlobRedirect(t *testing.T) {
	h := newHarness(t, harnessConfig{options: func(o *gateway.Options) { o.BlobRedirect = true }})
	d := h.pushBlob(t, "team/app", []byte("redirected"))
	const presigned = "http://127.0.0.1:9/bucket/blob?X-Amz-Signature=abc"
	h.uploads.mu.Lock()
	h.uploads.redirect = presigned
	h.uploads.mu.Unlock()

	resp, body := h.do(t, http.MethodGet, "/v2/team/app/blobs/"+d, nil)

	wantStatus(t, resp, body, http.StatusTemporaryRedirect)
	if got := resp.Header.Get("Location"); got != presigned {
		t.Errorf("redirected GET Location = %q, want %q", got, presigned)
	}
}

func TestTagsAndCatalogPages(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	m := []byte(`{"schemaVersion":2,"mediaType":"` + ociManifestType + `","layers":[]}`)
	for _, tag := range []string{"e", "a", "d", "b", "c"} {
		h.pushManifest(t, "team/app", tag, ociManifestType, m)
	}
	for _, repo := range []string{"team/b", "team/c"} {
		h.pushManifest(t, repo, "latest", ociManifestType, m)
	}

	type tagList struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	pages := []struct {
		path, link string
		tags       []string
	}{
		{
			"/v2/team/app/tags/list?n=2",
			`</v2/team/app/tags/list?last=b&n=2>; rel="next"`,
			[]string{"a", "b"},
		},
		{
			"/v2/team/app/tags/list?last=b&n=2",
			`</v2/team/app/tags/list?last=d&n=2>; rel="next"`,
			[]string{"c", "d"},
		},
		{"/v2/team/app/tags/list?last=d&n=2", "", []string{"e"}},
		{"/v2/team/app/tags/list", "", []string{"a", "b", "c", "d", "e"}},
		{"/v2/team/app/tags/list?n=0", "", []string{}},
	}
	for _, p := range pages {
		resp, body := h.do(t, http.MethodGet, p.path, nil)
		wantStatus(t, resp, body, http.StatusOK)
		var got tagList
		if err := json.Unmarshal(body, &got); err != nil || got.Name != "team/app" ||
			!slices.Equal(got.Tags, p.tags) || got.Tags == nil {
			t.Errorf("GET %s = %s, want tags %q", p.path, body, p.tags)
		}
		if link := resp.Header.Get("Link"); link != p.link {
			t.Errorf("GET %s Link = %q, want %q", p.path, link, p.link)
		}
	}

	for _, n := range []string{"-1", "abc", "99999999999"} {
		resp, body := h.do(t, http.MethodGet, "/v2/team/app/tags/list?n="+n, nil)
		wantError(t, resp, body, http.StatusBadRequest, "UNSUPPORTED")
	}

	resp, body := h.do(t, http.MethodGet, "/v2/_catalog?n=2", nil)
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != `{"repositories":["team/app","team/b"]}` {
		t.Errorf("GET /v2/_catalog?n=2 = %s, want the first two repositories", body)
	}
	if link := resp.Header.Get("Link"); link != `</v2/_catalog?last=team%2Fb&n=2>; rel="next"` {
		t.Errorf("GET /v2/_catalog?n=2 Link = %q", link)
	}
	resp, body = h.do(t, http.MethodGet, "/v2/_catalog?last=team%2Fb&n=2", nil)
	wantStatus(t, resp, body, http.StatusOK)
	if string(body) != `{"repositories":["team/c"]}` || resp.Header.Get("Link") != "" {
		t.Errorf("GET second catalog page = %s, Link %q; want [team/c] and no Link",
			body, resp.Header.Get("Link"))
	}
}

func TestReferrers(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	subject := sha256Digest([]byte("subject"))
	path := "/v2/team/app/referrers/" + subject

	resp, body := h.do(t, http.MethodGet, path, nil)
	wantStatus(t, resp, body, http.StatusOK)
	want := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`
	if string(body) != want {
		t.Errorf("GET referrers of nothing = %s, want %s", body, want)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/vnd.oci.image.index.v1+json" {
		t.Errorf("GET referrers Content-Type = %q, want the index type", ct)
	}

	sig := []byte(`{"schemaVersion":2,"mediaType":"` + ociManifestType + `",` +
		`"artifactType":"application/example.sig","layers":[],` +
		`"subject":{"mediaType":"` + ociManifestType + `","digest":"` + subject + `","size":2}}`)
	req := h.newRequest(t, http.MethodPut, "/v2/team/app/manifests/"+sha256Digest(sig),
		bytes.NewReader(sig))
	req.Header.Set("Content-Type", ociManifestType)
	resp, body = send(t, req)
	wantStatus(t, resp, body, http.StatusCreated)
	if got := resp.Header.Get("OCI-Subject"); got != subject {
		t.Errorf("PUT referrer OCI-Subject = %q, want %q", got, subject)
	}

	var index struct {
		Manifests []struct {
			Digest       string `json:"digest"`
			ArtifactType string `json:"artifactType"`
		} `json:"manifests"`
	}
	resp, body = h.do(t, http.MethodGet, path+"?artifactType=application/example.sig", nil)
	wantStatus(t, resp, body, http.StatusOK)
	if err := json.Unmarshal(body, &index); err != nil || len(index.Manifests) != 1 ||
		index.Manifests[0].Digest != sha256Digest(sig) ||
		index.Manifests[0].ArtifactType != "application/example.sig" {
		t.Errorf("GET filtered referrers = %s, want the signature", body)
	}
	if got := resp.Header.Get("OCI-Filters-Applied"); got != "artifactType" {
		t.Errorf("GET filtered referrers OCI-Filters-Applied = %q, want artifactType", got)
	}

	resp, body = h.do(t, http.MethodGet, "/v2/team/app/referrers/sha256:abc", nil)
	wantError(t, resp, body, http.StatusBadRequest, "DIGEST_INVALID")
}

func TestAuth(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	const challenge = `Basic realm="keel"`
	digest := sha256Digest([]byte("x"))

	anonymous := []struct{ method, path string }{
		{http.MethodGet, "/v2/"},
		{http.MethodGet, "/v2/team/app/manifests/latest"},
		{http.MethodPost, "/v2/team/app/blobs/uploads/"},
		{http.MethodGet, "/v2/_catalog"},
	}
	for _, a := range anonymous {
		req := h.newRequest(t, a.method, a.path, nil)
		req.Header.Del("Authorization")
		resp, body := send(t, req)
		wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
		if got := resp.Header.Get("WWW-Authenticate"); got != challenge {
			t.Errorf("anonymous %s %s WWW-Authenticate = %q, want %q", a.method, a.path, got, challenge)
		}
	}

	refused := map[string]string{
		"wrong password": "Basic " + basicToken(writerName, "nope"),
		"unknown user":   "Basic " + basicToken("mallory", writerPass),
		"bearer":         "Bearer abc.def.ghi",
		"bad base64":     "Basic !!!",
		"other scheme":   "Digest username=x",
	}
	for what, header := range refused {
		req := h.newRequest(t, http.MethodGet, "/v2/", nil)
		req.Header.Set("Authorization", header)
		resp, body := send(t, req)
		wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
		if got := resp.Header.Get("WWW-Authenticate"); got != challenge {
			t.Errorf("%s: WWW-Authenticate = %q, want %q", what, got, challenge)
		}
	}

	reader := func(method, path string) (*http.Response, []byte) {
		req := h.newRequest(t, method, path, nil)
		req.SetBasicAuth(readerName, readerPass)
		return send(t, req)
	}
	resp, body := reader(http.MethodPost, "/v2/team/app/blobs/uploads/")
	wantError(t, resp, body, http.StatusForbidden, "DENIED")
	resp, body = reader(http.MethodDelete, "/v2/team/app/blobs/"+digest)
	wantError(t, resp, body, http.StatusForbidden, "DENIED")
	resp, body = reader(http.MethodGet, "/v2/team/app/blobs/"+digest)
	wantError(t, resp, body, http.StatusNotFound, "BLOB_UNKNOWN")
	resp, body = reader(http.MethodGet, "/v2/_catalog")
	wantStatus(t, resp, body, http.StatusOK)

	before := h.auth.calls.Load()
	req := h.newRequest(t, http.MethodGet, "/v2/", nil)
	req.Header.Set("Authorization", "Basic "+strings.Repeat("A", 9000))
	resp, body = send(t, req)
	wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
	if n := h.auth.calls.Load() - before; n != 0 {
		t.Errorf("oversized Authorization header: Authorize calls = %d, want 0", n)
	}
}

func basicToken(user, password string) string {
	req, _ := http.NewRequest(http.MethodGet, "/", nil)
	req.SetBasicAuth(user, password)
	return strings.TrimPrefix(req.Header.Get("Authorization"), "Basic ")
}

func TestAnonymousPull(t *testing.T) {
	h := newHarness(t, harnessConfig{anonymousPull: true})
	d := h.pushBlob(t, "team/app", []byte("public"))
	anon := func(method, path string) (*http.Response, []byte) {
		req := h.newRequest(t, method, path, nil)
		req.Header.Del("Authorization")
		return send(t, req)
	}

	resp, body := anon(http.MethodGet, "/v2/")
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = anon(http.MethodGet, "/v2/team/app/blobs/"+d)
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = anon(http.MethodPost, "/v2/team/app/blobs/uploads/")
	wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
	resp, body = anon(http.MethodGet, "/v2/_catalog")
	wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
}

func TestAuthCache(t *testing.T) {
	const ttl = 300 * time.Millisecond
	h := newHarness(t, harnessConfig{options: func(o *gateway.Options) { o.AuthCacheTTL = ttl }})
	path := "/v2/team/app/tags/list"

	h.do(t, http.MethodGet, path, nil)
	if n := h.auth.calls.Load(); n != 1 {
		t.Fatalf("Authorize calls after one request = %d, want 1", n)
	}
	for range 3 {
		h.do(t, http.MethodGet, path, nil)
	}
	if n := h.auth.calls.Load(); n != 1 {
		t.Errorf("Authorize calls after repeats within the TTL = %d, want 1", n)
	}

	h.do(t, http.MethodDelete, "/v2/team/app/manifests/v1", nil)
	if n := h.auth.calls.Load(); n != 2 {
		t.Errorf("Authorize calls after a request needing other access = %d, want 2", n)
	}
	req := h.newRequest(t, http.MethodGet, path, nil)
	req.SetBasicAuth(readerName, readerPass)
	send(t, req)
	if n := h.auth.calls.Load(); n != 3 {
		t.Errorf("Authorize calls after another credential = %d, want 3", n)
	}

	// A refused password is cached too.
	for range 2 {
		req := h.newRequest(t, http.MethodGet, path, nil)
		req.SetBasicAuth(writerName, "nope")
		resp, body := send(t, req)
		wantError(t, resp, body, http.StatusUnauthorized, "UNAUTHORIZED")
	}
	if n := h.auth.calls.Load(); n != 4 {
		t.Errorf("Authorize calls after a wrong password twice = %d, want 4", n)
	}

	time.Sleep(ttl + 50*time.Millisecond)
	h.do(t, http.MethodGet, path, nil)
	if n := h.auth.calls.Load(); n != 5 {
		t.Errorf("Authorize calls after the TTL passed = %d, want 5", n)
	}
}

func TestRequestLog(t *testing.T) {
	h := newHarness(t, harnessConfig{})
	resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	id := resp.Header.Get("Docker-Upload-UUID")
	h.do(t, http.MethodPatch, resp.Header.Get("Location"), []byte("hello"))
	h.do(t, http.MethodGet, "/v2/team/app/manifests/missing", nil)

	lines := h.logs.Records(t)
	if len(lines) != 3 {
		t.Fatalf("log lines = %d, want one per request (3): %v", len(lines), lines)
	}
	want := []map[string]any{
		{"method": "POST", "route": "/v2/{name}/blobs/uploads/", "status": 202.0,
			"repository": "team/app", "upload": id},
		{"method": "PATCH", "route": "/v2/{name}/blobs/uploads/{uuid}", "status": 202.0,
			"upload": id, "bytes_in": 5.0},
		{"method": "GET", "route": "/v2/{name}/manifests/{reference}", "status": 404.0,
			"code": "MANIFEST_UNKNOWN"},
	}
	for i, w := range want {
		for k, v := range w {
			if lines[i][k] != v {
				t.Errorf("log line %d %s = %v, want %v", i, k, lines[i][k], v)
			}
		}
		if _, ok := lines[i]["duration"]; !ok {
			t.Errorf("log line %d has no duration", i)
		}
	}
	for _, l := range lines {
		if s := fmt.Sprint(l); strings.Contains(s, writerPass) {
			t.Errorf("log line %v contains the password", l)
		}
	}
}
