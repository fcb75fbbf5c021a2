package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/querycli"
)

// queryPageSize is the page size the query tests list with: smaller than
// what they push, so that every list spans several pages.
const queryPageSize = 3

// queryFace is one way to reach the query API.
type queryFace struct {
	name   string
	client querycli.Client
	// keelctl are the keelctl flags that reach it.
	keelctl []string
}

// queryFaces returns the query API over gRPC, straight to the manifest
// service, and as JSON through the gateway, as the admin.
func queryFaces(t *testing.T, s *stack) []queryFace {
	t.Helper()
	direct, err := querycli.DialGRPC(s.manifestGRPC)
	if err != nil {
		t.Fatalf("DialGRPC(%s) error: %v", s.manifestGRPC, err)
	}
	t.Cleanup(func() { direct.Close() })
	viaGateway, err := querycli.NewHTTP("http://"+s.registry, s.admin.user, s.admin.pass)
	if err != nil {
		t.Fatalf("NewHTTP(%s) error: %v", s.registry, err)
	}
	t.Cleanup(func() { viaGateway.Close() })
	return []queryFace{
		{"grpc", direct, []string{"--grpc", s.manifestGRPC}},
		{"json", viaGateway, []string{"--url", "http://" + s.registry}},
	}
}

// queryContext is a context for one test's calls.
func queryContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// pushedImage is what a client tool shows about an image it pushed.
type pushedImage struct {
	ref      string
	digest   string
	manifest []byte
	parsed   struct {
		MediaType string       `json:"mediaType"`
		Config    descriptor   `json:"config"`
		Layers    []descriptor `json:"layers"`
	}
}

// cranePush appends layers of the given sizes to an empty image, pushes it
// as ref and reads it back with crane.
func cranePush(t *testing.T, crane tool, ref string, sizes ...int) pushedImage {
	t.Helper()
	args := []string{"append", "--insecure", "--oci-empty-base", "-t", ref}
	for i, size := range sizes {
		path := filepath.Join(crane.dir, fmt.Sprintf("query-%d-%d.tar", i, size))
		if err := os.WriteFile(path, randomTar(t, "f.bin", size), 0o644); err != nil {
			t.Fatalf("write layer: %v", err)
		}
		args = append(args, "-f", path)
	}
	crane.run(args...)

	img := pushedImage{ref: ref}
	img.digest = strings.TrimSpace(crane.run("digest", "--insecure", ref))
	img.manifest = []byte(crane.run("manifest", "--insecure", ref))
	if err := json.Unmarshal(img.manifest, &img.parsed); err != nil {
		t.Fatalf("crane manifest %s = %s: %v", ref, img.manifest, err)
	}
	return img
}

// totalSize is an image's manifest, config and layers, each digest once.
func (img pushedImage) totalSize() int64 {
	sizes := map[string]int64{img.digest: int64(len(img.manifest)),
		img.parsed.Config.Digest: img.parsed.Config.Size}
	for _, l := range img.parsed.Layers {
		sizes[l.Digest] = l.Size
	}
	var n int64
	for _, s := range sizes {
		n += s
	}
	return n
}

// checkInspected fails the test unless m is img as crane showed it.
func checkInspected(t *testing.T, call string, m *manifestv1.Manifest, img pushedImage) {
	t.Helper()
	if m.GetDigest() != img.digest || m.GetMediaType() != img.parsed.MediaType ||
		m.GetSize() != int64(len(img.manifest)) || m.GetTotalSize() != img.totalSize() {
		t.Errorf("%s = %s %s size %d total %d, want %s %s size %d total %d", call,
			m.GetDigest(), m.GetMediaType(), m.GetSize(), m.GetTotalSize(), img.digest,
			img.parsed.MediaType, len(img.manifest), img.totalSize())
	}
	c := m.GetConfig()
	if c.GetDigest() != img.parsed.Config.Digest || c.GetSize() != img.parsed.Config.Size ||
		c.GetMediaType() != img.parsed.Config.MediaType {
		t.Errorf("%s config = %v, want %+v", call, c, img.parsed.Config)
	}
	if len(m.GetLayers()) != len(img.parsed.Layers) {
		t.Fatalf("%s has %d layers, want %d", call, len(m.GetLayers()), len(img.parsed.Layers))
	}
	for i, l := range m.GetLayers() {
		want := img.parsed.Layers[i]
		if l.GetDigest() != want.Digest || l.GetSize() != want.Size ||
			l.GetMediaType() != want.MediaType {
			t.Errorf("%s layer %d = %v, want %+v", call, i, l, want)
		}
	}
}

// allTagsOf pages through a repository's tags and returns them with the
// number of pages it took.
func allTagsOf(ctx context.Context, t *testing.T, c querycli.Client, repo string) ([]string, int) {
	t.Helper()
	var tags []string
	token := ""
	for pages := 1; pages < 1000; pages++ {
		resp, err := c.ListTags(ctx, &manifestv1.QueryServiceListTagsRequest{
			Repository: repo, PageSize: queryPageSize, PageToken: token,
		})
		if err != nil {
			t.Fatalf("ListTags(%s, page %d) error: %v", repo, pages, err)
		}
		tags = append(tags, resp.GetTags()...)
		if token = resp.GetNextPageToken(); token == "" {
			return tags, pages
		}
	}
	t.Fatalf("ListTags(%s) never ended", repo)
	return nil, 0
}

func TestQueryAPI(t *testing.T) {
	s := sharedStack(t)
	ctx := queryContext(t)
	base := "query/" + randomHex(4)
	craneRepo, regctlRepo := base+"/crane", base+"/regctl"

	// crane: an image of two layers under v0, then more tags than a page.
	crane := tool{t: t, path: pinnedTool(t, "crane"), env: toolEnv(t), dir: t.TempDir(),
		secret: s.admin.pass}
	crane.run("auth", "login", s.registry, "-u", s.admin.user, "-p", s.admin.pass)
	img := cranePush(t, crane, s.registry+"/"+craneRepo+":v0", 2048, 100)
	for i := range 2*queryPageSize + 1 {
		crane.run("tag", "--insecure", img.ref, fmt.Sprintf("t%02d", i))
	}
	craneTags := strings.Fields(crane.run("ls", "--insecure", s.registry+"/"+craneRepo))
	slices.Sort(craneTags)
	// A third repository, so that the catalog spans pages of two.
	copyRepo := base + "/copy"
	crane.run("copy", "--insecure", img.ref, s.registry+"/"+copyRepo+":v0")

	// regctl: an image, an index of it, and an SBOM that refers to it.
	regctl := tool{t: t, path: pinnedTool(t, "regctl"), env: toolEnv(t), dir: t.TempDir(),
		secret: s.admin.pass}
	regctl.run("registry", "set", "--skip-check", s.registry, "--tls", "disabled")
	regctl.run("registry", "login", s.registry, "-u", s.admin.user, "-p", s.admin.pass)
	regImg := newImage(t, 4096)
	src := filepath.Join(t.TempDir(), "src")
	regImg.writeLayout(t, src, "v1")
	regRef := s.registry + "/" + regctlRepo
	regctl.run("image", "copy", "ocidir://"+src+":v1", regRef+":v1")
	regctl.run("index", "create", regRef+":multi", "--ref", regRef+":v1")
	index := []byte(crane.run("manifest", "--insecure", regRef+":multi"))
	sbomFile := filepath.Join(regctl.dir, "sbom.json")
	if err := os.WriteFile(sbomFile, []byte(`{"spdxVersion":"SPDX-2.3"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	regctl.run("artifact", "put", "--artifact-type", "application/spdx+json",
		"--subject", regRef+":v1", "-f", sbomFile, regRef+":sbom")
	sbomDigest := strings.TrimSpace(regctl.run("image", "digest", regRef+":sbom"))

	for _, f := range queryFaces(t, s) {
		t.Run(f.name, func(t *testing.T) {
			c := f.client

			// Repositories, page by page: ours among every test's.
			var repos []string
			token, pages := "", 0
			for pages = 1; pages < 1000; pages++ {
				req := &manifestv1.QueryServiceListRepositoriesRequest{
					PageSize: 2, PageToken: token,
				}
				resp, err := c.ListRepositories(ctx, req)
				if err != nil {
					t.Fatalf("ListRepositories(page %d) error: %v", pages, err)
				}
				repos = append(repos, resp.GetRepositories()...)
				if token = resp.GetNextPageToken(); token == "" {
					break
				}
			}
			if pages < 2 || !slices.IsSorted(repos) ||
				len(slices.Compact(slices.Clone(repos))) != len(repos) ||
				!slices.Contains(repos, craneRepo) || !slices.Contains(repos, regctlRepo) ||
				!slices.Contains(repos, copyRepo) {
				t.Errorf("ListRepositories in pages of 2 = %v in %d pages, want %s, %s and %s "+
					"sorted over several pages", repos, pages, craneRepo, regctlRepo, copyRepo)
			}

			tags, pages := allTagsOf(ctx, t, c, craneRepo)
			if !slices.Equal(tags, craneTags) || pages < 3 {
				t.Errorf("ListTags(%s) = %v in %d pages, want crane ls %v over 3 or more",
					craneRepo, tags, pages, craneTags)
			}

			for _, ref := range []string{"v0", "t03", img.digest} {
				res, err := c.ResolveReference(ctx, &manifestv1.QueryServiceResolveReferenceRequest{
					Repository: craneRepo, Reference: ref,
				})
				d := res.GetDescriptor_()
				if err != nil || d.GetDigest() != img.digest ||
					d.GetSize() != int64(len(img.manifest)) ||
					d.GetMediaType() != img.parsed.MediaType {
					t.Errorf("ResolveReference(%s, %s) = %v, %v; want %s", craneRepo, ref, d, err,
						img.digest)
				}
			}

			resp, err := c.InspectManifest(ctx, &manifestv1.QueryServiceInspectManifestRequest{
				Repository: craneRepo, Reference: "v0",
			})
			if err != nil {
				t.Fatalf("InspectManifest(%s, v0) error: %v", craneRepo, err)
			}
			checkInspected(t, "InspectManifest("+craneRepo+", v0)", resp.GetManifest(), img)

			checkIndex(ctx, t, c, regctlRepo, index, regImg)

			refs, err := c.ListReferrers(ctx, &manifestv1.QueryServiceListReferrersRequest{
				Repository: regctlRepo, Digest: regImg.digest,
			})
			if err != nil || len(refs.GetReferrers()) != 1 ||
				refs.GetReferrers()[0].GetDigest() != sbomDigest ||
				refs.GetReferrers()[0].GetArtifactType() != "application/spdx+json" {
				t.Errorf("ListReferrers(%s, %s) = %v, %v; want the SBOM %s", regctlRepo,
					regImg.digest, refs, err, sbomDigest)
			}

			_, err = c.InspectManifest(ctx, &manifestv1.QueryServiceInspectManifestRequest{
				Repository: craneRepo, Reference: "nope",
			})
			if status.Code(err) != codes.NotFound {
				t.Errorf("InspectManifest(%s, nope) error = %v, want NotFound", craneRepo, err)
			}
			_, err = c.ListTags(ctx, &manifestv1.QueryServiceListTagsRequest{
				Repository: base + "/none",
			})
			if status.Code(err) != codes.NotFound {
				t.Errorf("ListTags(unknown) error = %v, want NotFound", err)
			}
		})
	}

	t.Run("raw JSON", func(t *testing.T) {
		admin := registryClient{t: t, base: "http://" + s.registry, creds: &s.admin}
		path := fmt.Sprintf("/api/v1/tags/%s?pageSize=%d", craneRepo, queryPageSize)
		resp := admin.do("GET", path, nil, nil)
		var page struct {
			Tags          []string `json:"tags"`
			NextPageToken string   `json:"nextPageToken"`
		}
		if resp.status != http.StatusOK || json.Unmarshal(resp.body, &page) != nil ||
			!slices.Equal(page.Tags, craneTags[:queryPageSize]) || page.NextPageToken == "" {
			t.Errorf("GET %s = %d %s, want the first %d tags and a token", path, resp.status,
				resp.body, queryPageSize)
		}

		anonymous := registryClient{t: t, base: "http://" + s.registry}
		if resp := anonymous.do("GET", path, nil, nil); resp.status != http.StatusUnauthorized {
			t.Errorf("anonymous GET %s = %d, want 401", path, resp.status)
		}
		reader := registryClient{t: t, base: "http://" + s.registry, creds: &s.reader}
		path = "/api/v1/manifests/" + base + "/none/v1"
		if resp := reader.do("GET", path, nil, nil); resp.status != http.StatusNotFound {
			t.Errorf("GET %s = %d %s, want 404", path, resp.status, resp.body)
		}
	})

	t.Run("keelctl", func(t *testing.T) {
		keelctl := tool{t: t, path: buildKeelctl(t), dir: t.TempDir(), env: append(os.Environ(),
			querycli.EnvUsername+"="+s.admin.user, querycli.EnvPassword+"="+s.admin.pass)}
		for _, f := range queryFaces(t, s) {
			run := func(args ...string) string {
				return keelctl.run(append(slices.Clone(f.keelctl), args...)...)
			}

			// tags: crane ls's tags, under a header.
			out := strings.Fields(run("tags", craneRepo, "--all", "--page-size", "2"))
			if len(out) == 0 || out[0] != "TAG" || !slices.Equal(out[1:], craneTags) {
				t.Errorf("keelctl (%s) tags %s = %q, want TAG and crane ls %q", f.name, craneRepo,
					out, craneTags)
			}
			var tags manifestv1.QueryServiceListTagsResponse
			js := run("tags", craneRepo, "--all", "-o", "json")
			if err := protojson.Unmarshal([]byte(js), &tags); err != nil ||
				!slices.Equal(tags.GetTags(), craneTags) {
				t.Errorf("keelctl (%s) tags -o json = %s (%v), want crane ls %q", f.name, js, err,
					craneTags)
			}

			// inspect: crane manifest's content, as JSON and as a table.
			var m manifestv1.Manifest
			js = run("inspect", craneRepo+":v0", "-o", "json")
			if err := protojson.Unmarshal([]byte(js), &m); err != nil {
				t.Fatalf("keelctl (%s) inspect -o json = %s: %v", f.name, js, err)
			}
			checkInspected(t, "keelctl ("+f.name+") inspect -o json", &m, img)
			table := strings.Join(strings.Fields(run("inspect", craneRepo+"@"+img.digest)), " ")
			wants := []string{"Digest: " + img.digest, "Media type: " + img.parsed.MediaType,
				fmt.Sprintf("Size: %d", len(img.manifest)),
				fmt.Sprintf("Config: %s %d", img.parsed.Config.Digest, img.parsed.Config.Size)}
			for i, l := range img.parsed.Layers {
				wants = append(wants, fmt.Sprintf("%d %s %d %s", i+1, l.Digest, l.Size,
					l.MediaType))
			}
			for _, want := range wants {
				if !strings.Contains(table, want) {
					t.Errorf("keelctl (%s) inspect = %q, want %q in it", f.name, table, want)
				}
			}

			var repos manifestv1.QueryServiceListRepositoriesResponse
			js = run("repos", "--all", "-o", "json")
			if err := protojson.Unmarshal([]byte(js), &repos); err != nil ||
				!slices.Contains(repos.GetRepositories(), regctlRepo) {
				t.Errorf("keelctl (%s) repos -o json = %s (%v), want %s in it", f.name, js, err,
					regctlRepo)
			}
			out = strings.Fields(run("referrers", regctlRepo+":v1"))
			if !slices.Contains(out, sbomDigest) {
				t.Errorf("keelctl (%s) referrers %s:v1 = %q, want %s", f.name, regctlRepo, out,
					sbomDigest)
			}
		}
	})
}

// checkIndex checks InspectManifest of the index regctl made of img.
func checkIndex(
	ctx context.Context, t *testing.T, c querycli.Client, repo string, index []byte, img image,
) {
	t.Helper()
	var parsed struct {
		MediaType string `json:"mediaType"`
		Manifests []struct {
			descriptor
			Platform struct {
				OS           string `json:"os"`
				Architecture string `json:"architecture"`
			} `json:"platform"`
		} `json:"manifests"`
	}
	if err := json.Unmarshal(index, &parsed); err != nil || len(parsed.Manifests) != 1 {
		t.Fatalf("regctl index = %s (%v), want one manifest", index, err)
	}
	resp, err := c.InspectManifest(ctx, &manifestv1.QueryServiceInspectManifestRequest{
		Repository: repo, Reference: "multi",
	})
	if err != nil {
		t.Fatalf("InspectManifest(%s, multi) error: %v", repo, err)
	}
	m := resp.GetManifest()
	imageTotal := int64(len(img.manifest)) + img.config.Size
	for _, l := range img.layers {
		imageTotal += l.Size
	}
	if m.GetMediaType() != parsed.MediaType || m.GetSize() != int64(len(index)) ||
		m.GetTotalSize() != int64(len(index))+imageTotal || len(m.GetManifests()) != 1 {
		t.Fatalf("InspectManifest(%s, multi) = %v, want the %s of %d bytes, total %d", repo, m,
			parsed.MediaType, len(index), int64(len(index))+imageTotal)
	}
	e, want := m.GetManifests()[0], parsed.Manifests[0]
	if e.GetDescriptor_().GetDigest() != img.digest || want.Digest != img.digest ||
		e.GetPlatform().GetOs() != want.Platform.OS ||
		e.GetPlatform().GetArchitecture() != want.Platform.Architecture ||
		e.GetPlatform().GetOs() != "linux" || e.GetTotalSize() != imageTotal {
		t.Errorf("InspectManifest(%s, multi) entry = %v, want %s for %s/%s, total %d", repo, e,
			img.digest, want.Platform.OS, want.Platform.Architecture, imageTotal)
	}
}

// buildKeelctl builds ./cmd/keelctl for the test.
func buildKeelctl(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "keelctl")
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/keelctl")
	cmd.Dir = repoRoot(t)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/keelctl: %v\n%s", err, out)
	}
	return bin
}

// changeSummary is a change as the watch test compares it.
func changeSummary(c *manifestv1.Change) string {
	return strings.Join([]string{c.GetKind().String(), c.GetRepository(), c.GetDigest(),
		strings.Join(c.GetTags(), ",")}, " ")
}

// watchChanges follows the changes of repo from cursor and sends each
// response on the channel it returns, which closes when the watch ends.
func watchChanges(
	ctx context.Context, c querycli.Client, repo, cursor string,
) <-chan *manifestv1.QueryServiceWatchChangesResponse {
	out := make(chan *manifestv1.QueryServiceWatchChangesResponse, 100)
	go func() {
		defer close(out)
		c.WatchChanges(ctx, &manifestv1.QueryServiceWatchChangesRequest{
			Repository: repo, Cursor: cursor,
		}, func(r *manifestv1.QueryServiceWatchChangesResponse) error {
			out <- r
			return nil
		})
	}()
	return out
}

// nextChange returns the next change from a watch, skipping bookmarks.
func nextChange(
	t *testing.T, w <-chan *manifestv1.QueryServiceWatchChangesResponse,
) *manifestv1.QueryServiceWatchChangesResponse {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		select {
		case r, ok := <-w:
			if !ok {
				t.Fatal("the watch ended before the change came")
			}
			if r.GetChange() != nil {
				return r
			}
		case <-timeout:
			t.Fatal("no change within a minute")
		}
	}
}

func TestQueryWatch(t *testing.T) {
	s := sharedStack(t)
	crane := tool{t: t, path: pinnedTool(t, "crane"), env: toolEnv(t), dir: t.TempDir(),
		secret: s.admin.pass}
	crane.run("auth", "login", s.registry, "-u", s.admin.user, "-p", s.admin.pass)

	for _, f := range queryFaces(t, s) {
		t.Run(f.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			repo := "query/watch-" + f.name + "-" + randomHex(4)
			w := watchChanges(ctx, f.client, repo, "")
			first, ok := <-w
			if !ok || first.GetChange() != nil || first.GetCursor() == "" {
				t.Fatalf("first watch response = %v, want a bookmark", first)
			}

			img := cranePush(t, crane, s.registry+"/"+repo+":w1", 10)
			crane.run("delete", "--insecure", s.registry+"/"+repo+"@"+img.digest)

			pushed := "CHANGE_KIND_MANIFEST_PUSHED " + repo + " " + img.digest + " w1"
			deleted := "CHANGE_KIND_MANIFEST_DELETED " + repo + " " + img.digest + " "
			push, del := nextChange(t, w), nextChange(t, w)
			got := []string{changeSummary(push.GetChange()), changeSummary(del.GetChange())}
			if !slices.Equal(got, []string{pushed, deleted}) {
				t.Errorf("WatchChanges(%s) = %q, want %q", repo, got, []string{pushed, deleted})
			}
			cancel()

			// A watch resumed after the push gets the delete next.
			ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel2()
			resumed := watchChanges(ctx2, f.client, repo, push.GetCursor())
			if got := changeSummary(nextChange(t, resumed).GetChange()); got != deleted {
				t.Errorf("WatchChanges(%s, after the push) = %q, want %q", repo, got, deleted)
			}
		})
	}
}

// TestQueryWatchShutdown stops a stack while watches are open over gRPC
// and through the gateway: the processes must still stop at once with
// status 0, and the watches end with UNAVAILABLE, for their clients to
// reconnect.
func TestQueryWatchShutdown(t *testing.T) {
	s, err := startStack(keelBinary(t), stackEnv{})
	if err != nil {
		msg := ""
		if s != nil {
			msg = s.logs()
		}
		t.Fatalf("start a stack: %v\n%s", err, msg)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			s.stop()
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ended := make(chan error, 2)
	for _, f := range queryFaces(t, s) {
		opened := make(chan struct{})
		go func() {
			ended <- f.client.WatchChanges(ctx, &manifestv1.QueryServiceWatchChangesRequest{},
				func(*manifestv1.QueryServiceWatchChangesResponse) error {
					select {
					case <-opened:
					default:
						close(opened)
					}
					return nil
				})
		}()
		select {
		case <-opened:
		case <-time.After(time.Minute):
			t.Fatalf("the %s watch did not open", f.name)
		}
	}

	start := time.Now()
	err = s.stop()
	stopped = true
	if err != nil {
		t.Fatalf("stop the stack with watches open: %v\n%s", err, s.logs())
	}
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("the stack took %v to stop with watches open, want well under the "+
			"10s stop timeout", d)
	}
	for range 2 {
		if err := <-ended; status.Code(err) != codes.Unavailable {
			t.Errorf("watch ended with %v, want UNAVAILABLE", err)
		}
	}
}
