package manifest

import (
	"fmt"
	"maps"
	"slices"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/ocierr"
)

// wantStatus fails the test unless err is a gRPC status with code want.
func wantStatus(t *testing.T, call string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Errorf("%s = %v (code %v), want code %v", call, err, got, want)
	}
}

// allTags pages through a repository's tags with page size n, checking
// that every page but the last is full and carries a token.
func allTags(t *testing.T, e *env, q *QueryServer, repo string, n int32) []string {
	t.Helper()
	var out []string
	token := ""
	for range 100 {
		resp, err := q.ListTags(e.ctx, &manifestv1.QueryServiceListTagsRequest{
			Repository: repo, PageSize: n, PageToken: token,
		})
		if err != nil {
			t.Fatalf("ListTags(%s, %d, %q) error: %v", repo, n, token, err)
		}
		out = append(out, resp.GetTags()...)
		token = resp.GetNextPageToken()
		if token == "" {
			return out
		}
		if int32(len(resp.GetTags())) != n {
			t.Errorf("ListTags(%s, %d) page with a next token has %d tags, want %d",
				repo, n, len(resp.GetTags()), n)
		}
	}
	t.Fatalf("ListTags(%s, %d) never ended", repo, n)
	return nil
}

func TestQueryListPaging(t *testing.T) {
	e := newEnv(t, Options{})
	q := NewQueryServer(e.srv, QueryOptions{})
	content := e.image("app", "a")
	tags := []string{"v1.0", "latest", "beta", "alpha", "v2.0", "Zeta", "main"}
	for _, tag := range tags {
		e.put("app", tag, mediaTypeOCIManifest, content)
	}
	repos := []string{"app", "app/sub", "b", "c/d/e", "z"}
	for _, r := range repos[1:] {
		e.put(r, "v1", mediaTypeOCIManifest, e.image(r, r))
	}

	sorted := slices.Sorted(slices.Values(tags))
	for _, n := range []int32{0, 1, 2, 3, 7, 8} {
		if got := allTags(t, e, q, "app", n); !slices.Equal(got, sorted) {
			t.Errorf("ListTags(app) in pages of %d = %v, want %v", n, got, sorted)
		}
	}

	var names []string
	token := ""
	for pages := 1; ; pages++ {
		resp, err := q.ListRepositories(e.ctx, &manifestv1.QueryServiceListRepositoriesRequest{
			PageSize: 2, PageToken: token,
		})
		if err != nil {
			t.Fatalf("ListRepositories(page %d) error: %v", pages, err)
		}
		names = append(names, resp.GetRepositories()...)
		token = resp.GetNextPageToken()
		if token == "" {
			if pages != 3 {
				t.Errorf("ListRepositories in pages of 2 took %d pages, want 3", pages)
			}
			break
		}
	}
	if !slices.Equal(names, repos) {
		t.Errorf("ListRepositories in pages of 2 = %v, want %v", names, repos)
	}

	first, err := q.ListTags(e.ctx, &manifestv1.QueryServiceListTagsRequest{
		Repository: "app", PageSize: 2,
	})
	if err != nil || first.GetNextPageToken() == "" {
		t.Fatalf("ListTags(app, 2) = %v, %v; want a page and a token", first, err)
	}
	_, err = q.ListTags(e.ctx, &manifestv1.QueryServiceListTagsRequest{
		Repository: "b", PageToken: first.GetNextPageToken(),
	})
	wantStatus(t, "ListTags(b, token of app)", err, codes.InvalidArgument)
	_, err = q.ListRepositories(e.ctx, &manifestv1.QueryServiceListRepositoriesRequest{
		PageToken: first.GetNextPageToken(),
	})
	wantStatus(t, "ListRepositories(token of tags)", err, codes.InvalidArgument)
	_, err = q.ListTags(e.ctx, &manifestv1.QueryServiceListTagsRequest{
		Repository: "app", PageToken: "!!not base64",
	})
	wantStatus(t, "ListTags(malformed token)", err, codes.InvalidArgument)
	_, err = q.ListTags(e.ctx, &manifestv1.QueryServiceListTagsRequest{
		Repository: "app", PageSize: -1,
	})
	wantStatus(t, "ListTags(page size -1)", err, codes.InvalidArgument)

	_, err = q.ListTags(e.ctx, &manifestv1.QueryServiceListTagsRequest{Repository: "unknown"})
	wantCode(t, "ListTags(unknown)", err, ocierr.NameUnknown)
	wantStatus(t, "ListTags(unknown)", err, codes.NotFound)
	_, err = q.ListTags(e.ctx, &manifestv1.QueryServiceListTagsRequest{Repository: "Bad"})
	wantCode(t, "ListTags(Bad)", err, ocierr.NameInvalid)

	for _, c := range []struct{ in, want int32 }{{0, 100}, {5, 5}, {1000, 1000}, {5000, 1000}} {
		if got, err := pageSize(c.in); got != c.want || err != nil {
			t.Errorf("pageSize(%d) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
}

func TestQueryResolveAndInspectImage(t *testing.T) {
	e := newEnv(t, Options{})
	q := NewQueryServer(e.srv, QueryOptions{})
	base := e.image("app", "base")
	e.put("app", "base", mediaTypeOCIManifest, base)
	subject := descriptor{MediaType: mediaTypeOCIManifest, Digest: sha256Of(base),
		Size: int64(len(base))}

	cfg := e.blobs.add("app", "application/vnd.oci.image.config.v1+json", `{"os":"linux"}`)
	l1 := e.blobs.add("app", "application/vnd.oci.image.layer.v1.tar+gzip", "first layer")
	l2 := e.blobs.add("app", "application/vnd.oci.image.layer.v1.tar+gzip", "second")
	l2.Annotations = map[string]string{"org.example.layer": "2"}
	annotations := map[string]string{"org.opencontainers.image.title": "app"}
	content := manifestJSON(t, map[string]any{
		"schemaVersion": 2,
		"mediaType":     mediaTypeOCIManifest,
		"artifactType":  "application/vnd.example.thing",
		"config":        cfg,
		// The same layer twice counts once in the total.
		"layers":      []descriptor{l1, l2, l1},
		"subject":     subject,
		"annotations": annotations,
	})
	dgst := sha256Of(content)
	e.put("app", "v1", mediaTypeOCIManifest, content)

	for _, ref := range []string{"v1", dgst} {
		res, err := q.ResolveReference(e.ctx, &manifestv1.QueryServiceResolveReferenceRequest{
			Repository: "app", Reference: ref,
		})
		want := &manifestv1.Descriptor{MediaType: mediaTypeOCIManifest, Digest: dgst,
			Size: int64(len(content))}
		if err != nil || !proto.Equal(res.GetDescriptor_(), want) {
			t.Errorf("ResolveReference(app, %s) = %v, %v; want %v", ref, res, err, want)
		}

		resp, err := q.InspectManifest(e.ctx, &manifestv1.QueryServiceInspectManifestRequest{
			Repository: "app", Reference: ref,
		})
		if err != nil {
			t.Fatalf("InspectManifest(app, %s) error: %v", ref, err)
		}
		m := resp.GetManifest()
		wantManifest := &manifestv1.Manifest{
			MediaType:    mediaTypeOCIManifest,
			Digest:       dgst,
			Size:         int64(len(content)),
			ArtifactType: "application/vnd.example.thing",
			Config:       cfg.proto(),
			Layers:       []*manifestv1.Descriptor{l1.proto(), l2.proto(), l1.proto()},
			Subject:      subject.proto(),
			Annotations:  annotations,
			TotalSize:    int64(len(content)) + cfg.Size + l1.Size + l2.Size,
		}
		if !proto.Equal(m, wantManifest) {
			t.Errorf("InspectManifest(app, %s) =\n%v\nwant\n%v", ref, m, wantManifest)
		}
	}

	_, err := q.InspectManifest(e.ctx, &manifestv1.QueryServiceInspectManifestRequest{
		Repository: "app", Reference: "missing",
	})
	wantCode(t, "InspectManifest(missing tag)", err, ocierr.ManifestUnknown)
	wantStatus(t, "InspectManifest(missing tag)", err, codes.NotFound)
	_, err = q.ResolveReference(e.ctx, &manifestv1.QueryServiceResolveReferenceRequest{
		Repository: "app", Reference: sha256Of([]byte("nothing")),
	})
	wantCode(t, "ResolveReference(missing digest)", err, ocierr.ManifestUnknown)
	_, err = q.InspectManifest(e.ctx, &manifestv1.QueryServiceInspectManifestRequest{
		Repository: "app", Reference: "bad tag!",
	})
	wantStatus(t, "InspectManifest(bad tag)", err, codes.InvalidArgument)
}

func TestQueryInspectIndex(t *testing.T) {
	e := newEnv(t, Options{})
	q := NewQueryServer(e.srv, QueryOptions{})

	// Two images sharing one layer, a Docker manifest list child, and a
	// blob child: what BuildKit and multi-platform builds push.
	shared := e.blobs.add("app", "application/vnd.oci.image.layer.v1.tar+gzip", "shared")
	img := func(name string) ([]byte, descriptor, descriptor) {
		cfg := e.blobs.add("app", "application/vnd.oci.image.config.v1+json",
			fmt.Sprintf(`{"name":%q}`, name))
		own := e.blobs.add("app", "application/vnd.oci.image.layer.v1.tar+gzip", "own "+name)
		content := manifestJSON(t, map[string]any{
			"schemaVersion": 2, "mediaType": mediaTypeOCIManifest,
			"config": cfg, "layers": []descriptor{shared, own},
		})
		e.put("app", sha256Of(content), mediaTypeOCIManifest, content)
		return content, cfg, own
	}
	amd64, amd64Cfg, amd64Own := img("amd64")
	arm64, arm64Cfg, arm64Own := img("arm64")
	nested := manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeDockerList,
		"manifests": []descriptor{{MediaType: mediaTypeOCIManifest, Digest: sha256Of(arm64),
			Size: int64(len(arm64))}},
	})
	e.put("app", sha256Of(nested), mediaTypeDockerList, nested)
	cache := e.blobs.add("app", "application/vnd.buildkit.cacheconfig.v0", "cache")

	entry := func(mediaType string, content []byte, plat map[string]any) map[string]any {
		out := map[string]any{"mediaType": mediaType, "digest": sha256Of(content),
			"size": len(content)}
		if plat != nil {
			out["platform"] = plat
		}
		return out
	}
	index := manifestJSON(t, map[string]any{
		"schemaVersion": 2, "mediaType": mediaTypeOCIIndex,
		"manifests": []any{
			entry(mediaTypeOCIManifest, amd64, map[string]any{
				"architecture": "amd64", "os": "linux"}),
			entry(mediaTypeOCIManifest, arm64, map[string]any{
				"architecture": "arm64", "os": "linux", "variant": "v8",
				"os.version": "6.1", "os.features": []string{"sse4"}}),
			entry(mediaTypeDockerList, nested, nil),
			map[string]any{"mediaType": cache.MediaType, "digest": cache.Digest,
				"size": cache.Size},
		},
		"annotations": map[string]string{"org.example": "index"},
	})
	e.put("app", "multi", mediaTypeOCIIndex, index)

	resp, err := q.InspectManifest(e.ctx, &manifestv1.QueryServiceInspectManifestRequest{
		Repository: "app", Reference: "multi",
	})
	if err != nil {
		t.Fatalf("InspectManifest(app, multi) error: %v", err)
	}
	m := resp.GetManifest()
	imageTotal := func(content []byte, cfg, own descriptor) int64 {
		return int64(len(content)) + cfg.Size + own.Size + shared.Size
	}
	wantEntries := []*manifestv1.IndexEntry{
		{
			Descriptor_: &manifestv1.Descriptor{MediaType: mediaTypeOCIManifest,
				Digest: sha256Of(amd64), Size: int64(len(amd64))},
			Platform:  &manifestv1.Platform{Architecture: "amd64", Os: "linux"},
			TotalSize: imageTotal(amd64, amd64Cfg, amd64Own),
		},
		{
			Descriptor_: &manifestv1.Descriptor{MediaType: mediaTypeOCIManifest,
				Digest: sha256Of(arm64), Size: int64(len(arm64))},
			Platform: &manifestv1.Platform{Architecture: "arm64", Os: "linux", Variant: "v8",
				OsVersion: "6.1", OsFeatures: []string{"sse4"}},
			TotalSize: imageTotal(arm64, arm64Cfg, arm64Own),
		},
		{
			Descriptor_: &manifestv1.Descriptor{MediaType: mediaTypeDockerList,
				Digest: sha256Of(nested), Size: int64(len(nested))},
			TotalSize: int64(len(nested)),
		},
		{
			Descriptor_: cache.proto(),
			TotalSize:   cache.Size,
		},
	}
	if len(m.GetManifests()) != len(wantEntries) {
		t.Fatalf("InspectManifest(app, multi) manifests = %v, want %d entries",
			m.GetManifests(), len(wantEntries))
	}
	for i, want := range wantEntries {
		if got := m.GetManifests()[i]; !proto.Equal(got, want) {
			t.Errorf("InspectManifest(app, multi) manifests[%d] = %v, want %v", i, got, want)
		}
	}

	// Distinct content: the index, its four children, and the configs and
	// layers of the two images, the shared layer once.
	wantTotal := int64(len(index)) + imageTotal(amd64, amd64Cfg, amd64Own) +
		int64(len(arm64)) + arm64Cfg.Size + arm64Own.Size + int64(len(nested)) + cache.Size
	if m.GetTotalSize() != wantTotal {
		t.Errorf("InspectManifest(app, multi) total size = %d, want %d",
			m.GetTotalSize(), wantTotal)
	}
	if m.GetMediaType() != mediaTypeOCIIndex || m.GetConfig() != nil || len(m.GetLayers()) != 0 ||
		!maps.Equal(m.GetAnnotations(), map[string]string{"org.example": "index"}) {
		t.Errorf("InspectManifest(app, multi) = %v, want an index with its annotations", m)
	}
}

func TestQueryInspectOpaque(t *testing.T) {
	e := newEnv(t, Options{})
	q := NewQueryServer(e.srv, QueryOptions{})
	const mediaType = "application/vnd.example.custom+json"
	content := []byte(`{"custom":true}`)
	e.put("app", "odd", mediaType, content)

	resp, err := q.InspectManifest(e.ctx, &manifestv1.QueryServiceInspectManifestRequest{
		Repository: "app", Reference: "odd",
	})
	want := &manifestv1.Manifest{MediaType: mediaType, Digest: sha256Of(content),
		Size: int64(len(content)), TotalSize: int64(len(content))}
	if err != nil || !proto.Equal(resp.GetManifest(), want) {
		t.Errorf("InspectManifest(app, odd) = %v, %v; want %v", resp, err, want)
	}
}

func TestQueryReferrers(t *testing.T) {
	e := newEnv(t, Options{})
	q := NewQueryServer(e.srv, QueryOptions{})
	base := e.image("app", "base")
	e.put("app", "base", mediaTypeOCIManifest, base)
	subject := descriptor{MediaType: mediaTypeOCIManifest, Digest: sha256Of(base),
		Size: int64(len(base))}
	empty := e.blobs.add("app", "application/vnd.oci.empty.v1+json", "{}")
	artifact := func(artifactType, note string) []byte {
		layer := e.blobs.add("app", "application/octet-stream", note)
		content := manifestJSON(t, map[string]any{
			"schemaVersion": 2, "mediaType": mediaTypeOCIManifest,
			"artifactType": artifactType, "config": empty, "layers": []descriptor{layer},
			"subject": subject, "annotations": map[string]string{"note": note},
		})
		e.put("app", sha256Of(content), mediaTypeOCIManifest, content)
		return content
	}
	sbom := artifact("application/vnd.example.sbom", "sbom")
	sig := artifact("application/vnd.example.sig", "sig")

	refs := func(filter string) []string {
		t.Helper()
		resp, err := q.ListReferrers(e.ctx, &manifestv1.QueryServiceListReferrersRequest{
			Repository: "app", Digest: subject.Digest, ArtifactType: filter,
		})
		if err != nil {
			t.Fatalf("ListReferrers(app, %q) error: %v", filter, err)
		}
		var out []string
		for _, d := range resp.GetReferrers() {
			out = append(out, d.GetArtifactType()+" "+d.GetDigest()+" "+d.GetAnnotations()["note"])
		}
		slices.Sort(out)
		return out
	}
	all := []string{
		"application/vnd.example.sbom " + sha256Of(sbom) + " sbom",
		"application/vnd.example.sig " + sha256Of(sig) + " sig",
	}
	slices.Sort(all)
	if got := refs(""); !slices.Equal(got, all) {
		t.Errorf("ListReferrers(app) = %v, want %v", got, all)
	}
	want := []string{"application/vnd.example.sig " + sha256Of(sig) + " sig"}
	if got := refs("application/vnd.example.sig"); !slices.Equal(got, want) {
		t.Errorf("ListReferrers(app, sig) = %v, want %v", got, want)
	}
	_, err := q.ListReferrers(e.ctx, &manifestv1.QueryServiceListReferrersRequest{
		Repository: "app", Digest: "sha256:nothex",
	})
	wantStatus(t, "ListReferrers(malformed digest)", err, codes.InvalidArgument)
}
