package stack

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/keel-registry/keel/services/auth"
)

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// client sends requests to one registry as one user.
type client struct {
	t          *testing.T
	base       string
	user, pass string
}

func (c client) do(method, path, contentType string, body []byte) (*http.Response, []byte) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, bytes.NewReader(body))
	if err != nil {
		c.t.Fatalf("NewRequest(%s %s) = %v", method, path, err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.user != "" {
		req.SetBasicAuth(c.user, c.pass)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s = %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("read %s %s: %v", method, path, err)
	}
	return resp, got
}

// waitReady polls GET /v2/ until the gateway answers.
func waitReady(t *testing.T, base string, runErr <-chan error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-runErr:
			t.Fatalf("Run() returned %v before the gateway answered", err)
		default:
		}
		resp, err := http.Get(base + "/v2/")
		if err == nil {
			resp.Body.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("gateway at %s did not answer within 30s", base)
}

func TestRunAllInOne(t *testing.T) {
	addr := freeAddr(t)
	cfg := Config{
		HTTPAddr: addr,
		DataDir:  t.TempDir(),
		Users:    []auth.User{{Name: "admin", Password: "secret", Access: auth.ReadWrite}},
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- Run(ctx, cfg, slog.New(slog.DiscardHandler)) }()
	base := "http://" + addr
	waitReady(t, base, runErr)

	anon := client{t: t, base: base}
	if resp, _ := anon.do("GET", "/v2/", "", nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("anonymous GET /v2/ = %d, want 401", resp.StatusCode)
	}
	admin := client{t: t, base: base, user: "admin", pass: "secret"}
	if resp, _ := admin.do("GET", "/v2/", "", nil); resp.StatusCode != http.StatusOK {
		t.Errorf("admin GET /v2/ = %d, want 200", resp.StatusCode)
	}

	// Push layers and an empty config monolithically, then a manifest. Its
	// many layers make the manifest service check blobs in parallel, which
	// leaves spare connections to the embedded S3 server that shutdown must
	// deal with.
	const layerCount = 24
	var layers []string
	for i := range layerCount {
		layer := []byte(fmt.Sprintf("layer %d through every service", i))
		path := "/v2/app/blobs/uploads/?digest=" + sha256Digest(layer)
		resp, body := admin.do("POST", path, "application/octet-stream", layer)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("POST %s = %d %s, want 201", path, resp.StatusCode, body)
		}
		layers = append(layers, fmt.Sprintf(
			`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":%q,"size":%d}`,
			sha256Digest(layer), len(layer)))
	}
	config := []byte("{}")
	path := "/v2/app/blobs/uploads/?digest=" + sha256Digest(config)
	resp, body := admin.do("POST", path, "application/octet-stream", config)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("POST %s = %d %s, want 201", path, resp.StatusCode, body)
	}
	manifest := []byte(fmt.Sprintf(`{"schemaVersion":2,`+
		`"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},`+
		`"layers":[%s]}`, sha256Digest(config), strings.Join(layers, ",")))
	const mt = "application/vnd.oci.image.manifest.v1+json"
	resp, body = admin.do("PUT", "/v2/app/manifests/v1", mt, manifest)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT manifest = %d %s, want 201", resp.StatusCode, body)
	}

	resp, body = admin.do("GET", "/v2/app/manifests/v1", "", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, manifest) {
		t.Errorf("GET manifest = %d %q, want 200 and the pushed bytes", resp.StatusCode, body)
	}
	layer := []byte("layer 3 through every service")
	resp, body = admin.do("GET", "/v2/app/blobs/"+sha256Digest(layer), "", nil)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(body, layer) {
		t.Errorf("GET layer = %d %q, want 200 and the pushed bytes", resp.StatusCode, body)
	}

	// Every stop step is bounded by 10s (the default StopTimeout); a clean
	// stop takes well under a second.
	cancel()
	stopStart := time.Now()
	select {
	case err := <-runErr:
		if err != nil {
			t.Errorf("Run() after cancel = %v, want nil", err)
		}
		if d := time.Since(stopStart); d > 5*time.Second {
			t.Errorf("Run() took %v to stop, want under 5s", d)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("Run() did not return within 60s of cancel")
	}
	if _, err := http.Get(base + "/v2/"); err == nil {
		t.Errorf("GET /v2/ after Run returned succeeded, want the listener closed")
	}
}

func TestRunFailsWhenPortIsTaken(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	cfg := Config{HTTPAddr: ln.Addr().String(), DataDir: t.TempDir()}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	err = Run(ctx, cfg, slog.New(slog.DiscardHandler))

	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run(port taken) = %v, want a listen error", err)
	}
	if ctx.Err() != nil {
		t.Errorf("Run(port taken) returned only when its context ended, want at once")
	}
}
