package e2e

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestBlobRedirect runs a gateway with KEEL_BLOB_REDIRECT on: a blob GET
// answers 307 with a short-lived presigned URL of the S3 server, which
// serves the exact bytes (ranges included) to a client that has no S3
// credentials, while HEAD and manifests are still answered by the gateway.
func TestBlobRedirect(t *testing.T) {
	s := ownStack(t, stackEnv{gateway: []string{"KEEL_BLOB_REDIRECT=true"}})
	admin := registryClient{t: t, base: s.url(""), creds: &s.admin}
	blob := randomBytes(t, 3<<20+17)
	loc := openSession(t, admin, "redirect/app")
	closeSession(t, admin, loc, blob, sha256Digest(blob))

	noFollow := &http.Client{
		Timeout: time.Minute,
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	req, _ := http.NewRequest("GET", s.url("/v2/redirect/app/blobs/"+sha256Digest(blob)), nil)
	req.SetBasicAuth(s.admin.user, s.admin.pass)
	resp, err := noFollow.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	target := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusTemporaryRedirect || !strings.Contains(target, "X-Amz-Signature") {
		t.Fatalf("GET blob = %d, Location %q; want 307 to a presigned URL", resp.StatusCode, target)
	}

	for _, rng := range []string{"", "bytes=100-199"} {
		get, _ := http.NewRequest("GET", target, nil)
		if rng != "" {
			get.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(get)
		if err != nil {
			t.Fatalf("GET presigned URL: %v", err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := blob
		if rng != "" {
			want = blob[100:200]
		}
		if !bytes.Equal(got, want) {
			t.Errorf("presigned GET (Range %q) = %d %d bytes, want the %d bytes pushed",
				rng, resp.StatusCode, len(got), len(want))
		}
	}

	head := admin.do("HEAD", "/v2/redirect/app/blobs/"+sha256Digest(blob), nil, nil)
	if head.status != http.StatusOK || head.header.Get("Content-Length") != "3145745" {
		t.Errorf("HEAD blob = %d, Content-Length %q; want 200 from the gateway",
			head.status, head.header.Get("Content-Length"))
	}
}
