package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// ociErrors is the OCI error body.
type ociErrors struct {
	Errors []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"errors"`
}

// assertOCIError checks a response's status and the OCI code in its JSON
// body; code "" accepts any code but still wants a JSON error body.
func assertOCIError(t *testing.T, what string, resp response, status int, code string) {
	t.Helper()
	if resp.status != status {
		t.Errorf("%s = %d %s, want %d %s", what, resp.status, truncate(resp.body), status, code)
		return
	}
	if !strings.HasPrefix(resp.header.Get("Content-Type"), "application/json") {
		t.Errorf("%s Content-Type = %q, want application/json", what,
			resp.header.Get("Content-Type"))
	}
	var body ociErrors
	if err := json.Unmarshal(resp.body, &body); err != nil || len(body.Errors) == 0 {
		t.Errorf("%s body = %q, want an OCI error body", what, truncate(resp.body))
		return
	}
	if code != "" && body.Errors[0].Code != code {
		t.Errorf("%s code = %s, want %s", what, body.Errors[0].Code, code)
	}
}

// TestBadInput sends malformed and unauthorized requests through the whole
// stack and checks each answer, and that content pushed before is still
// intact after each one.
func TestBadInput(t *testing.T) {
	s := sharedStack(t)
	admin := registryClient{t: t, base: s.url(""), creds: &s.admin}
	reader := registryClient{t: t, base: s.url(""), creds: &s.reader}
	anon := registryClient{t: t, base: s.url("")}
	const repo = "bad/input"
	baseline := newImage(t, 1<<20, 10)
	pushImage(t, admin, repo, "stable", baseline)
	intact := func(t *testing.T) {
		t.Helper()
		assertPullable(t, admin, repo, "stable", baseline)
	}

	t.Run("wrong digest on close", func(t *testing.T) {
		resp := admin.do("POST", "/v2/"+repo+"/blobs/uploads/", nil, nil)
		if resp.status != http.StatusAccepted {
			t.Fatalf("POST upload = %d %s, want 202", resp.status, resp.body)
		}
		location := resp.header.Get("Location")
		content := randomBytes(t, 4096)
		claimed := sha256Digest(randomBytes(t, 16))

		resp = admin.do("PUT", withDigest(location, claimed),
			http.Header{"Content-Type": {"application/octet-stream"}}, content)

		assertOCIError(t, "PUT with a wrong digest", resp, http.StatusBadRequest, "DIGEST_INVALID")
		for _, d := range []string{claimed, sha256Digest(content)} {
			resp := admin.do("HEAD", "/v2/"+repo+"/blobs/"+d, nil, nil)
			if resp.status != http.StatusNotFound {
				t.Errorf("HEAD %s after the failed close = %d, want 404", d, resp.status)
			}
		}
		intact(t)
	})

	t.Run("unsupported digest algorithm hint", func(t *testing.T) {
		resp := admin.do("POST", "/v2/"+repo+"/blobs/uploads/?digest-algorithm=md5", nil, nil)
		assertOCIError(t, "POST with digest-algorithm=md5", resp,
			http.StatusBadRequest, "DIGEST_INVALID")
		intact(t)
	})

	t.Run("close with an algorithm the session did not hash in", func(t *testing.T) {
		resp := admin.do("POST", "/v2/"+repo+"/blobs/uploads/?digest-algorithm=sha512", nil, nil)
		if resp.status != http.StatusAccepted {
			t.Fatalf("POST upload = %d %s, want 202", resp.status, resp.body)
		}
		content := randomBytes(t, 4096)
		wrong := sha256Digest(randomBytes(t, 16))
		resp = admin.do("PUT", withDigest(resp.header.Get("Location"), wrong),
			http.Header{"Content-Type": {"application/octet-stream"}}, content)
		assertOCIError(t, "PUT with a wrong sha256 on a sha512 session", resp,
			http.StatusBadRequest, "DIGEST_INVALID")
		intact(t)
	})

	t.Run("unknown upload id", func(t *testing.T) {
		path := "/v2/" + repo + "/blobs/uploads/" + randomHex(16)
		assertOCIError(t, "GET unknown upload", admin.do("GET", path, nil, nil),
			http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		assertOCIError(t, "PATCH unknown upload", admin.do("PATCH", path,
			http.Header{"Content-Type": {"application/octet-stream"}}, []byte("data")),
			http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		assertOCIError(t, "PUT unknown upload",
			admin.do("PUT", path+"?digest="+sha256Digest([]byte("x")), nil, []byte("x")),
			http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		intact(t)
	})

	t.Run("garbage manifest", func(t *testing.T) {
		resp := admin.do("PUT", "/v2/"+repo+"/manifests/garbage",
			http.Header{"Content-Type": {mtManifest}}, []byte("{not json at all"))
		assertOCIError(t, "PUT garbage manifest", resp, http.StatusBadRequest, "MANIFEST_INVALID")
		intact(t)
	})

	t.Run("manifest naming an unknown blob", func(t *testing.T) {
		img := newImage(t, 100)
		// Push the config but not the layer.
		path := "/v2/" + repo + "/blobs/uploads/?digest=" + img.config.Digest
		if resp := admin.do("POST", path, nil, img.blobs[img.config.Digest]); resp.status != 201 {
			t.Fatalf("POST config = %d %s, want 201", resp.status, resp.body)
		}
		resp := admin.do("PUT", "/v2/"+repo+"/manifests/dangling",
			http.Header{"Content-Type": {mtManifest}}, img.manifest)
		assertOCIError(t, "PUT manifest with a missing layer", resp, http.StatusNotFound,
			"MANIFEST_BLOB_UNKNOWN")
		resp = admin.do("GET", "/v2/"+repo+"/manifests/dangling", nil, nil)
		if resp.status != http.StatusNotFound {
			t.Errorf("GET the refused manifest's tag = %d, want 404", resp.status)
		}
		intact(t)
	})

	t.Run("invalid names", func(t *testing.T) {
		for name, path := range map[string]string{
			"uppercase": "/v2/Bad/Name/manifests/latest",
			"256 chars": "/v2/" + strings.Repeat("a", 256) + "/manifests/latest",
			"dot dot":   "/v2/a/../b/manifests/latest",
			"blob path": "/v2/UPPER/blobs/" + baseline.config.Digest,
		} {
			assertOCIError(t, name+" GET "+truncate([]byte(path)), admin.do("GET", path, nil, nil),
				http.StatusBadRequest, "NAME_INVALID")
		}
		resp := admin.do("POST", "/v2/Upper/blobs/uploads/", nil, nil)
		assertOCIError(t, "POST upload to an uppercase name", resp, http.StatusBadRequest,
			"NAME_INVALID")
		intact(t)
	})

	t.Run("invalid tag", func(t *testing.T) {
		for _, tag := range []string{".hidden", strings.Repeat("t", 129), "-dash"} {
			resp := admin.do("PUT", "/v2/"+repo+"/manifests/"+tag,
				http.Header{"Content-Type": {mtManifest}}, baseline.manifest)
			assertOCIError(t, fmt.Sprintf("PUT manifest with tag %.20q", tag), resp,
				http.StatusBadRequest, "")
		}
		intact(t)
	})

	t.Run("range past the end", func(t *testing.T) {
		layer := baseline.layers[0]
		path := "/v2/" + repo + "/blobs/" + layer.Digest
		resp := admin.do("GET", path, http.Header{"Range": {
			fmt.Sprintf("bytes=%d-%d", layer.Size+10, layer.Size+20)}}, nil)
		if resp.status != http.StatusRequestedRangeNotSatisfiable {
			t.Errorf("GET past the end = %d, want 416", resp.status)
		}
		wantRange := fmt.Sprintf("bytes */%d", layer.Size)
		if got := resp.header.Get("Content-Range"); got != wantRange {
			t.Errorf("GET past the end Content-Range = %q, want %q", got, wantRange)
		}

		resp = admin.do("GET", path, http.Header{"Range": {"bytes=10-19"}}, nil)
		want := baseline.blobs[layer.Digest][10:20]
		if resp.status != http.StatusPartialContent || string(resp.body) != string(want) {
			t.Errorf("GET bytes=10-19 = %d %q, want 206 %q", resp.status, resp.body, want)
		}
		intact(t)
	})

	t.Run("read-only user pushing", func(t *testing.T) {
		resp := reader.do("POST", "/v2/"+repo+"/blobs/uploads/", nil, nil)
		assertOCIError(t, "reader POST upload", resp, http.StatusForbidden, "DENIED")
		resp = reader.do("PUT", "/v2/"+repo+"/manifests/stable",
			http.Header{"Content-Type": {mtManifest}}, newImage(t, 1).manifest)
		assertOCIError(t, "reader PUT manifest", resp, http.StatusForbidden, "DENIED")
		resp = reader.do("DELETE", "/v2/"+repo+"/manifests/"+baseline.digest, nil, nil)
		assertOCIError(t, "reader DELETE manifest", resp, http.StatusForbidden, "DENIED")
		// The reader may pull.
		assertPullable(t, reader, repo, "stable", baseline)
		intact(t)
	})

	t.Run("anonymous", func(t *testing.T) {
		for _, req := range []struct{ method, path string }{
			{"GET", "/v2/"},
			{"GET", "/v2/" + repo + "/manifests/stable"},
			{"POST", "/v2/" + repo + "/blobs/uploads/"},
		} {
			resp := anon.do(req.method, req.path, nil, nil)
			what := "anonymous " + req.method + " " + req.path
			assertOCIError(t, what, resp, http.StatusUnauthorized, "UNAUTHORIZED")
			if got := resp.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("%s WWW-Authenticate = %q, want a Basic challenge", what, got)
			}
		}
		wrong := registryClient{t: t, base: s.url(""),
			creds: &credentials{s.admin.user, "wrong-" + s.admin.pass}}
		resp := wrong.do("GET", "/v2/"+repo+"/manifests/stable", nil, nil)
		assertOCIError(t, "wrong password", resp, http.StatusUnauthorized, "UNAUTHORIZED")
		intact(t)
	})
}
