package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// randomReader returns a fast reader of n pseudo-random bytes, so blobs do
// not compress and two runs never share a blob.
func randomReader(seed uint64, n int64) io.Reader {
	var key [32]byte
	for i := range 8 {
		key[i] = byte(seed >> (8 * i))
	}
	key[8] = byte(time.Now().UnixNano())
	return io.LimitReader(rand.NewChaCha8(key), n)
}

// StreamResult is one streamed blob push.
type StreamResult struct {
	// Push is the whole push: POST, PATCH and PUT.
	Push time.Duration
	// Close is the closing PUT alone, after every byte was sent.
	Close time.Duration
}

// StreamPush pushes size pseudo-random bytes as one blob the way docker
// push does: POST to open a session, one PATCH whose body is sent with
// chunked transfer encoding and no length, then PUT with the digest.
func StreamPush(
	ctx context.Context, c *http.Client, t Target, repo string, size int64, seed uint64,
) (StreamResult, error) {
	var res StreamResult
	begin := time.Now()
	loc, err := openUpload(ctx, c, t, repo)
	if err != nil {
		return res, err
	}

	h := sha256.New()
	body := io.TeeReader(randomReader(seed, size), h)
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc, io.NopCloser(body))
	if err != nil {
		return res, err
	}
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/octet-stream")
	req.SetBasicAuth(t.Username, t.Password)
	loc, err = expect(c, req, http.StatusAccepted)
	if err != nil {
		return res, fmt.Errorf("PATCH: %w", err)
	}

	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))
	closing := time.Now()
	if err := closeUpload(ctx, c, t, loc, digest); err != nil {
		return res, err
	}
	res.Close = time.Since(closing)
	res.Push = time.Since(begin)
	return res, nil
}

// openUpload starts an upload session and returns its absolute URL.
func openUpload(ctx context.Context, c *http.Client, t Target, repo string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost,
		t.URL("/v2/"+repo+"/blobs/uploads/"), nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth(t.Username, t.Password)
	loc, err := expect(c, req, http.StatusAccepted)
	if err != nil {
		return "", fmt.Errorf("POST: %w", err)
	}
	return loc, nil
}

// closeUpload finishes an upload session with its digest.
func closeUpload(ctx context.Context, c *http.Client, t Target, loc, digest string) error {
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, loc+sep+"digest="+digest, nil)
	if err != nil {
		return err
	}
	req.SetBasicAuth(t.Username, t.Password)
	if _, err := expect(c, req, http.StatusCreated); err != nil {
		return fmt.Errorf("PUT: %w", err)
	}
	return nil
}

// expect sends req, checks the status and returns the absolute Location.
func expect(c *http.Client, req *http.Request, want int) (string, error) {
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return "", fmt.Errorf("%s %s = %d %s, want %d", req.Method, req.URL.Path,
			resp.StatusCode, b, want)
	}
	io.Copy(io.Discard, resp.Body)
	loc := resp.Header.Get("Location")
	if loc == "" {
		return "", nil
	}
	u, err := req.URL.Parse(loc)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}
