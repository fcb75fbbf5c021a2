package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCrane(t *testing.T) {
	s := sharedStack(t)
	crane := tool{t: t, path: pinnedTool(t, "crane"), env: toolEnv(t), dir: t.TempDir(),
		secret: s.admin.pass}
	ref := s.registry + "/clients/crane:v1"

	crane.run("auth", "login", s.registry, "-u", s.admin.user, "-p", s.admin.pass)
	var tars [][]byte
	args := []string{"append", "--insecure", "--oci-empty-base", "-t", ref}
	for i, size := range layerSizes {
		tarball := randomTar(t, fmt.Sprintf("crane-%d.bin", i), size)
		path := filepath.Join(crane.dir, fmt.Sprintf("layer-%d.tar", i))
		if err := os.WriteFile(path, tarball, 0o644); err != nil {
			t.Fatalf("write layer: %v", err)
		}
		tars = append(tars, tarball)
		args = append(args, "-f", path)
	}
	pushed := strings.TrimSpace(crane.run(args...))
	digest := strings.TrimSpace(crane.run("digest", "--insecure", ref))
	if !strings.HasSuffix(pushed, "@"+digest) {
		t.Errorf("crane append printed %q, want the pushed digest %s", pushed, digest)
	}

	out := filepath.Join(t.TempDir(), "pulled")
	crane.run("pull", "--insecure", "--format", "oci", ref, out)

	pulled := readLayout(t, out, "")
	if pulled.digest != digest {
		t.Errorf("pulled manifest digest = %s, want %s", pulled.digest, digest)
	}
	if len(pulled.parsed.Layers) != len(tars) {
		t.Fatalf("pulled image has %d layers, want %d", len(pulled.parsed.Layers), len(tars))
	}
	for i, l := range pulled.parsed.Layers {
		if got := gunzipBytes(t, pulled.blobs[l.Digest]); !bytes.Equal(got, tars[i]) {
			t.Errorf("pulled layer %d uncompresses to %d bytes, want the %d bytes appended",
				i, len(got), len(tars[i]))
		}
	}
	manifest := crane.run("manifest", "--insecure", ref)
	if manifest != string(pulled.manifest) {
		t.Errorf("crane manifest = %q, want the pulled manifest %q", manifest, pulled.manifest)
	}
}

func TestRegctl(t *testing.T) {
	s := sharedStack(t)
	regctl := tool{t: t, path: pinnedTool(t, "regctl"), env: toolEnv(t), dir: t.TempDir(),
		secret: s.admin.pass}
	img := newImage(t, layerSizes...)
	src := filepath.Join(t.TempDir(), "src")
	img.writeLayout(t, src, "v1")
	ref := s.registry + "/clients/regctl:v1"

	regctl.run("registry", "set", "--skip-check", s.registry, "--tls", "disabled")
	regctl.run("registry", "login", s.registry, "-u", s.admin.user, "-p", s.admin.pass)
	regctl.run("image", "copy", "ocidir://"+src+":v1", ref)

	digest := strings.TrimSpace(regctl.run("image", "digest", ref))
	if digest != img.digest {
		t.Errorf("regctl image digest = %s, want %s", digest, img.digest)
	}
	dst := filepath.Join(t.TempDir(), "dst")
	regctl.run("image", "copy", ref, "ocidir://"+dst+":v1")
	assertSameImage(t, img, readLayout(t, dst, "v1"))
}

func TestOras(t *testing.T) {
	s := sharedStack(t)
	files := t.TempDir()
	oras := tool{t: t, path: pinnedTool(t, "oras"), env: toolEnv(t), dir: files,
		secret: s.admin.pass}
	registryConfig := filepath.Join(t.TempDir(), "auth.json")
	ref := s.registry + "/clients/oras:v1"
	contents := map[string][]byte{}
	args := []string{"push", "--plain-http", "--registry-config", registryConfig,
		"--format", "json", ref}
	for i, size := range layerSizes {
		name := fmt.Sprintf("part-%d.bin", i)
		contents[name] = randomBytes(t, size)
		if err := os.WriteFile(filepath.Join(files, name), contents[name], 0o644); err != nil {
			t.Fatalf("write %s: %v", name, err)
		}
		args = append(args, name)
	}

	oras.run("login", "--plain-http", "--registry-config", registryConfig,
		"-u", s.admin.user, "-p", s.admin.pass, s.registry)
	var pushed struct {
		Digest string `json:"digest"`
	}
	if err := json.Unmarshal([]byte(oras.run(args...)), &pushed); err != nil {
		t.Fatalf("parse oras push output: %v", err)
	}
	var fetched struct {
		Digest string `json:"digest"`
	}
	desc := oras.run("manifest", "fetch", "--plain-http", "--registry-config", registryConfig,
		"--descriptor", ref)
	if err := json.Unmarshal([]byte(desc), &fetched); err != nil {
		t.Fatalf("parse oras manifest fetch output %q: %v", desc, err)
	}
	if pushed.Digest == "" || fetched.Digest != pushed.Digest {
		t.Errorf("oras manifest digest = %q, want the pushed %q", fetched.Digest, pushed.Digest)
	}

	out := t.TempDir()
	oras.run("pull", "--plain-http", "--registry-config", registryConfig, "-o", out, ref)
	for name, want := range contents {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("pulled %s: %d bytes, err %v; want %d identical bytes",
				name, len(got), err, len(want))
		}
	}
}

func TestSkopeo(t *testing.T) {
	s := sharedStack(t)
	skopeo := tool{t: t, path: pathTool(t, "skopeo", "apt-get install skopeo"),
		env: toolEnv(t), dir: t.TempDir(), secret: s.admin.pass}
	img := newImage(t, layerSizes...)
	src := filepath.Join(t.TempDir(), "src")
	img.writeLayout(t, src, "v1")
	ref := "docker://" + s.registry + "/clients/skopeo:v1"
	creds := s.admin.user + ":" + s.admin.pass

	skopeo.run("--insecure-policy", "copy", "--dest-creds", creds, "--dest-tls-verify=false",
		"oci:"+src+":v1", ref)
	dst := filepath.Join(t.TempDir(), "dst")
	skopeo.run("--insecure-policy", "copy", "--src-creds", creds, "--src-tls-verify=false",
		ref, "oci:"+dst+":v1")

	assertSameImage(t, img, readLayout(t, dst, "v1"))
}
