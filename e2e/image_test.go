package e2e

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Media types of the images the tests build.
const (
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
	mtIndex    = "application/vnd.oci.image.index.v1+json"
	refNameKey = "org.opencontainers.image.ref.name"
)

// layerSizes are the file sizes inside the layers of a test image: one
// layer spanning several upload parts, one small, one tiny.
var layerSizes = []int{12<<20 + 12345, 64 << 10, 1}

func sha256Digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

func randomBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatalf("random bytes: %v", err)
	}
	return b
}

// randomTar returns an uncompressed tar holding one file of size random
// bytes.
func randomTar(t *testing.T, name string, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	content := randomBytes(t, size)
	hdr := &tar.Header{Name: name, Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatalf("tar header: %v", err)
	}
	if _, err := tw.Write(content); err != nil {
		t.Fatalf("tar body: %v", err)
	}
	if err := tw.Close(); err != nil {
		t.Fatalf("tar close: %v", err)
	}
	return buf.Bytes()
}

func gzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("gzip close: %v", err)
	}
	return buf.Bytes()
}

func gunzipBytes(t *testing.T, b []byte) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	out, err := io.ReadAll(zr)
	if err != nil {
		t.Fatalf("gunzip: %v", err)
	}
	return out
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// ociManifest is the part of an OCI image manifest the tests read.
type ociManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

// image is an OCI image built in memory: a config, gzip layers and the
// manifest naming them.
type image struct {
	manifest []byte
	digest   string
	config   descriptor
	layers   []descriptor
	// tars are the uncompressed layers, in manifest order.
	tars [][]byte
	// blobs maps the digest of the config and of every layer to its bytes.
	blobs map[string][]byte
}

// newImage builds an image with one layer per size in sizes.
func newImage(t *testing.T, sizes ...int) image {
	t.Helper()
	img := image{blobs: map[string][]byte{}}
	var diffIDs []string
	for i, size := range sizes {
		tarball := randomTar(t, fmt.Sprintf("file-%d.bin", i), size)
		layer := gzipBytes(t, tarball)
		img.tars = append(img.tars, tarball)
		img.layers = append(img.layers, img.add(mtLayer, layer))
		diffIDs = append(diffIDs, sha256Digest(tarball))
	}

	config, err := json.Marshal(map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"rootfs":       map[string]any{"type": "layers", "diff_ids": diffIDs},
		"config":       map[string]any{},
	})
	if err != nil {
		t.Fatalf("marshal config: %v", err)
	}
	img.config = img.add(mtConfig, config)

	img.manifest, err = json.Marshal(ociManifest{
		SchemaVersion: 2,
		MediaType:     mtManifest,
		Config:        img.config,
		Layers:        img.layers,
	})
	if err != nil {
		t.Fatalf("marshal manifest: %v", err)
	}
	img.digest = sha256Digest(img.manifest)
	return img
}

// add records a blob and returns its descriptor.
func (img *image) add(mediaType string, b []byte) descriptor {
	d := descriptor{MediaType: mediaType, Digest: sha256Digest(b), Size: int64(len(b))}
	img.blobs[d.Digest] = b
	return d
}

// blobPath returns where a blob lives in an OCI image layout.
func blobPath(dir, digest string) string {
	algo, hexPart, _ := strings.Cut(digest, ":")
	return filepath.Join(dir, "blobs", algo, hexPart)
}

// writeLayout writes img into dir as an OCI image layout, tagged tag.
func (img image) writeLayout(t *testing.T, dir, tag string) {
	t.Helper()
	write := func(path string, b []byte) {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatalf("mkdir: %v", err)
		}
		if err := os.WriteFile(path, b, 0o644); err != nil {
			t.Fatalf("write %s: %v", path, err)
		}
	}
	write(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`))
	for digest, b := range img.blobs {
		write(blobPath(dir, digest), b)
	}
	write(blobPath(dir, img.digest), img.manifest)

	index, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mtIndex,
		"manifests": []descriptor{{
			MediaType:   mtManifest,
			Digest:      img.digest,
			Size:        int64(len(img.manifest)),
			Annotations: map[string]string{refNameKey: tag},
		}},
	})
	if err != nil {
		t.Fatalf("marshal index: %v", err)
	}
	write(filepath.Join(dir, "index.json"), index)
}

// pulledImage is an image read back from an OCI image layout.
type pulledImage struct {
	digest   string
	manifest []byte
	parsed   ociManifest
	blobs    map[string][]byte
}

// readLayout reads the image tagged tag (or the only image, when tag is
// "") from the OCI image layout in dir, checking every digest.
func readLayout(t *testing.T, dir, tag string) pulledImage {
	t.Helper()
	read := func(path string) []byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("read pulled layout: %v", err)
		}
		return b
	}
	var index struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(read(filepath.Join(dir, "index.json")), &index); err != nil {
		t.Fatalf("parse index.json: %v", err)
	}
	var found []descriptor
	for _, d := range index.Manifests {
		if tag == "" || d.Annotations[refNameKey] == tag {
			found = append(found, d)
		}
	}
	if len(found) != 1 {
		t.Fatalf("index.json of %s has %d manifests tagged %q, want 1: %+v",
			dir, len(found), tag, index.Manifests)
	}

	img := pulledImage{digest: found[0].Digest, blobs: map[string][]byte{}}
	img.manifest = read(blobPath(dir, img.digest))
	if got := sha256Digest(img.manifest); got != img.digest {
		t.Fatalf("pulled manifest hashes to %s, want %s", got, img.digest)
	}
	if err := json.Unmarshal(img.manifest, &img.parsed); err != nil {
		t.Fatalf("parse pulled manifest: %v", err)
	}
	for _, d := range append([]descriptor{img.parsed.Config}, img.parsed.Layers...) {
		b := read(blobPath(dir, d.Digest))
		if got := sha256Digest(b); got != d.Digest || int64(len(b)) != d.Size {
			t.Fatalf("pulled blob %s: digest %s size %d, want size %d", d.Digest, got,
				len(b), d.Size)
		}
		img.blobs[d.Digest] = b
	}
	return img
}

// assertSameImage checks that a pulled image is byte for byte the one
// pushed: the same manifest and the same config and layer files.
func assertSameImage(t *testing.T, pushed image, pulled pulledImage) {
	t.Helper()
	if pulled.digest != pushed.digest {
		t.Errorf("pulled manifest digest = %s, want %s", pulled.digest, pushed.digest)
	}
	if !bytes.Equal(pulled.manifest, pushed.manifest) {
		t.Errorf("pulled manifest = %s, want %s", pulled.manifest, pushed.manifest)
	}
	for digest, want := range pushed.blobs {
		if got, ok := pulled.blobs[digest]; !ok || !bytes.Equal(got, want) {
			t.Errorf("pulled blob %s: present %v, %d bytes; want %d identical bytes",
				digest, ok, len(got), len(want))
		}
	}
}

// pushImage pushes img to repo:tag over plain HTTP: each blob in one
// monolithic POST, then the manifest.
func pushImage(t *testing.T, c registryClient, repo, tag string, img image) {
	t.Helper()
	for digest, b := range img.blobs {
		path := "/v2/" + repo + "/blobs/uploads/?digest=" + digest
		resp := c.do("POST", path, http.Header{"Content-Type": {"application/octet-stream"}}, b)
		if resp.status != http.StatusCreated {
			t.Fatalf("POST %s = %d %s, want 201", path, resp.status, resp.body)
		}
	}
	path := "/v2/" + repo + "/manifests/" + tag
	resp := c.do("PUT", path, http.Header{"Content-Type": {mtManifest}}, img.manifest)
	if resp.status != http.StatusCreated {
		t.Fatalf("PUT %s = %d %s, want 201", path, resp.status, resp.body)
	}
	if got := resp.header.Get("Docker-Content-Digest"); got != img.digest {
		t.Errorf("PUT %s Docker-Content-Digest = %q, want %q", path, got, img.digest)
	}
}

// assertPullable pulls repo:tag over plain HTTP and checks it is img, byte
// for byte.
func assertPullable(t *testing.T, c registryClient, repo, tag string, img image) {
	t.Helper()
	path := "/v2/" + repo + "/manifests/" + tag
	resp := c.do("GET", path, http.Header{"Accept": {mtManifest}}, nil)
	if resp.status != http.StatusOK || !bytes.Equal(resp.body, img.manifest) {
		t.Fatalf("GET %s = %d %q, want 200 and the pushed manifest", path, resp.status,
			truncate(resp.body))
	}
	for digest, want := range img.blobs {
		path := "/v2/" + repo + "/blobs/" + digest
		resp := c.do("GET", path, nil, nil)
		if resp.status != http.StatusOK || !bytes.Equal(resp.body, want) {
			t.Fatalf("GET %s = %d with %d bytes, want 200 and %d identical bytes",
				path, resp.status, len(resp.body), len(want))
		}
	}
}

// truncate shortens a body for a failure message.
func truncate(b []byte) string {
	const max = 512
	if len(b) > max {
		return string(b[:max]) + "..."
	}
	return string(b)
}
