package querycli_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/keel-registry/keel/gateway"
	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/querycli"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
	"github.com/keel-registry/keel/services/auth"
	"github.com/keel-registry/keel/services/manifest"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// The account the gateway knows.
const (
	user     = "ops"
	password = "ops-secret"
)

// Media types of the test content.
const (
	mtManifest = "application/vnd.oci.image.manifest.v1+json"
	mtConfig   = "application/vnd.oci.image.config.v1+json"
	mtLayer    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

// blobs stands in for the upload service: every blob the tests made.
type blobs struct {
	mu    sync.Mutex
	sizes map[string]int64
}

func (b *blobs) StatBlob(
	_ context.Context, in *uploadv1.StatBlobRequest, _ ...grpc.CallOption,
) (*uploadv1.StatBlobResponse, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	size, ok := b.sizes[in.GetDigest()]
	if !ok {
		return nil, ocierr.New(ocierr.BlobUnknown, "no blob %s", in.GetDigest())
	}
	return &uploadv1.StatBlobResponse{Blob: &uploadv1.BlobDescriptor{
		Digest: in.GetDigest(), Size: size}}, nil
}

// descriptor is an OCI descriptor.
type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// registry is a manifest service on real S3, served over gRPC, and a
// gateway in front of it.
type registry struct {
	t        *testing.T
	ctx      context.Context
	manifest *manifest.Server
	blobs    *blobs
	grpcAddr string
	url      string
}

func newRegistry(t *testing.T) *registry {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	store, err := objstore.New(ctx, s3test.Start(t))
	if err != nil {
		t.Fatalf("objstore.New: %v", err)
	}
	r := &registry{t: t, ctx: ctx, blobs: &blobs{sizes: map[string]int64{}}}
	r.manifest = manifest.NewServer(store, r.blobs, manifest.Options{})
	query := manifest.NewQueryServer(r.manifest, manifest.QueryOptions{
		SettleWindow: 200 * time.Millisecond, PollInterval: 20 * time.Millisecond,
	})
	authServer, err := auth.NewServer(auth.Config{Users: []auth.User{
		{Name: user, Password: password, Access: auth.ReadOnly},
	}})
	if err != nil {
		t.Fatalf("auth.NewServer: %v", err)
	}

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	manifestv1.RegisterQueryServiceServer(gs, query)
	authv1.RegisterAuthServiceServer(gs, authServer)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	r.grpcAddr = lis.Addr().String()

	conn, err := grpc.NewClient(r.grpcAddr,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient: %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	srv := httptest.NewServer(gateway.New(gateway.Options{
		Auth:      authv1.NewAuthServiceClient(conn),
		Uploads:   uploadv1.NewUploadServiceClient(conn),
		Manifests: manifestv1.NewManifestServiceClient(conn),
		Query:     manifestv1.NewQueryServiceClient(conn),
		Logger:    slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// blob makes data a blob and returns its descriptor.
func (r *registry) blob(mediaType, data string) descriptor {
	r.blobs.mu.Lock()
	defer r.blobs.mu.Unlock()
	d := descriptor{MediaType: mediaType, Digest: digest([]byte(data)), Size: int64(len(data))}
	r.blobs.sizes[d.Digest] = d.Size
	return d
}

// push stores a manifest made of fields under ref and returns its digest.
func (r *registry) push(repo, ref string, fields map[string]any) (string, []byte) {
	r.t.Helper()
	content, err := json.Marshal(fields)
	if err != nil {
		r.t.Fatal(err)
	}
	_, err = r.manifest.PutManifest(r.ctx, &manifestv1.PutManifestRequest{
		Repository: repo, Reference: ref, MediaType: fields["mediaType"].(string),
		Content: content,
	})
	if err != nil {
		r.t.Fatalf("PutManifest(%s:%s): %v", repo, ref, err)
	}
	return digest(content), content
}

// image pushes an image of two layers under tag.
func (r *registry) image(repo, tag string) (string, descriptor, []descriptor) {
	cfg := r.blob(mtConfig, `{"tag":"`+repo+tag+`"}`)
	layers := []descriptor{r.blob(mtLayer, "one "+repo+tag), r.blob(mtLayer, "two "+repo+tag)}
	dgst, _ := r.push(repo, tag, map[string]any{
		"schemaVersion": 2, "mediaType": mtManifest, "config": cfg, "layers": layers,
	})
	return dgst, cfg, layers
}

// face is one way keelctl reaches the registry.
type face struct {
	name string
	args []string
}

func (r *registry) faces() []face {
	return []face{
		{"grpc", []string{"--grpc", r.grpcAddr}},
		{"json", []string{"--url", r.url, "--username", user, "--password", password}},
	}
}

// result is one keelctl run.
type result struct {
	code           int
	stdout, stderr string
}

// keelctl runs keelctl with args and the environment env.
func keelctl(t *testing.T, env map[string]string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := querycli.Run(ctx, args, &stdout, &stderr, func(k string) string { return env[k] })
	return result{code, stdout.String(), stderr.String()}
}

// ok runs keelctl and fails the test unless it succeeds.
func ok(t *testing.T, args ...string) result {
	t.Helper()
	res := keelctl(t, nil, args...)
	if res.code != 0 {
		t.Fatalf("keelctl %s = exit %d, stderr %q", strings.Join(args, " "), res.code, res.stderr)
	}
	return res
}

// lines splits output into trimmed lines, each with its fields.
func lines(s string) [][]string {
	var out [][]string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		out = append(out, strings.Fields(l))
	}
	return out
}

func TestListCommands(t *testing.T) {
	r := newRegistry(t)
	tags := []string{"v1", "v2", "v3", "latest", "beta"}
	for _, tag := range tags {
		r.image("app", tag)
	}
	r.image("lib/other", "x")
	slices.Sort(tags)

	for _, f := range r.faces() {
		t.Run(f.name, func(t *testing.T) {
			args := func(more ...string) []string { return append(slices.Clone(f.args), more...) }

			res := ok(t, args("repos")...)
			if got, want := res.stdout, "REPOSITORY\napp\nlib/other\n"; got != want {
				t.Errorf("keelctl repos = %q, want %q", got, want)
			}

			// Flags after the arguments work too.
			res = ok(t, append([]string{"tags", "app", "--page-size", "2"}, f.args...)...)
			if got, want := res.stdout, "TAG\n"+tags[0]+"\n"+tags[1]+"\n"; got != want {
				t.Errorf("keelctl tags app --page-size 2 = %q, want %q", got, want)
			}
			if !strings.Contains(res.stderr, "--page-token") {
				t.Errorf("keelctl tags app --page-size 2 stderr = %q, want a --page-token hint",
					res.stderr)
			}
			res = ok(t, args("tags", "app", "--page-size", "2", "--all")...)
			if got, want := res.stdout, "TAG\n"+strings.Join(tags, "\n")+"\n"; got != want {
				t.Errorf("keelctl tags app --all = %q, want %q", got, want)
			}

			// JSON pages, followed by hand.
			var got []string
			token := ""
			for range len(tags) {
				more := args("tags", "app", "-o", "json", "--page-size", "2")
				if token != "" {
					more = append(more, "--page-token", token)
				}
				var page manifestv1.QueryServiceListTagsResponse
				if err := protojson.Unmarshal([]byte(ok(t, more...).stdout), &page); err != nil {
					t.Fatalf("keelctl tags -o json: %v", err)
				}
				got = append(got, page.GetTags()...)
				if token = page.GetNextPageToken(); token == "" {
					break
				}
			}
			if !slices.Equal(got, tags) {
				t.Errorf("keelctl tags -o json, page by page = %v, want %v", got, tags)
			}

			var repos manifestv1.QueryServiceListRepositoriesResponse
			out := ok(t, args("repos", "-o", "json")...).stdout
			if err := protojson.Unmarshal([]byte(out), &repos); err != nil ||
				!slices.Equal(repos.GetRepositories(), []string{"app", "lib/other"}) {
				t.Errorf("keelctl repos -o json = %s (%v), want app and lib/other", out, err)
			}

			res = keelctl(t, nil, args("tags", "nothing/here")...)
			if res.code != 1 || res.stdout != "" || !strings.Contains(res.stderr, "NAME_UNKNOWN") {
				t.Errorf("keelctl tags nothing/here = %+v, want exit 1 and NAME_UNKNOWN", res)
			}
		})
	}
}

func TestInspectAndReferrers(t *testing.T) {
	r := newRegistry(t)
	dgst, cfg, layers := r.image("lib/app", "v1")
	empty := r.blob("application/vnd.oci.empty.v1+json", "{}")
	sig, _ := r.push("lib/app", "sig", map[string]any{
		"schemaVersion": 2, "mediaType": mtManifest,
		"artifactType": "application/vnd.example.sig", "config": empty,
		"layers":  []descriptor{r.blob("application/octet-stream", "signature")},
		"subject": map[string]any{"mediaType": mtManifest, "digest": dgst, "size": 1},
	})

	for _, f := range r.faces() {
		t.Run(f.name, func(t *testing.T) {
			args := func(more ...string) []string { return append(slices.Clone(f.args), more...) }

			for _, ref := range []string{"lib/app:v1", "lib/app@" + dgst} {
				out := ok(t, args("inspect", ref)...).stdout
				rows := lines(out)
				wantRows := [][]string{
					{"1", layers[0].Digest, fmt.Sprint(layers[0].Size), mtLayer},
					{"2", layers[1].Digest, fmt.Sprint(layers[1].Size), mtLayer},
				}
				if len(rows) < 3 || !slices.EqualFunc(rows[len(rows)-2:], wantRows,
					slices.Equal) {
					t.Errorf("keelctl inspect %s ends with %q, want layers %q", ref,
						rows[max(len(rows)-2, 0):], wantRows)
				}
				for _, want := range []string{"Digest: " + dgst, "Config: " + cfg.Digest,
					"Repository: lib/app"} {
					if !strings.Contains(strings.Join(strings.Fields(out), " "), want) {
						t.Errorf("keelctl inspect %s = %q, want %q in it", ref, out, want)
					}
				}

				var m manifestv1.Manifest
				js := ok(t, args("inspect", ref, "-o", "json")...).stdout
				if err := protojson.Unmarshal([]byte(js), &m); err != nil {
					t.Fatalf("keelctl inspect -o json = %s: %v", js, err)
				}
				if m.GetDigest() != dgst || m.GetConfig().GetDigest() != cfg.Digest ||
					len(m.GetLayers()) != 2 || m.GetLayers()[1].GetSize() != layers[1].Size {
					t.Errorf("keelctl inspect %s -o json = %v, want the pushed image", ref, &m)
				}
			}

			out := ok(t, args("referrers", "lib/app:v1")...).stdout
			want := [][]string{{"DIGEST", "ARTIFACT", "TYPE", "SIZE", "MEDIA", "TYPE"}}
			if rows := lines(out); len(rows) != 2 || !slices.Equal(rows[0], want[0]) ||
				rows[1][0] != sig || rows[1][1] != "application/vnd.example.sig" {
				t.Errorf("keelctl referrers lib/app:v1 = %q, want the signature %s", out, sig)
			}
			out = ok(t, args("referrers", "lib/app@"+dgst, "--artifact-type", "x/y", "-o",
				"json")...).stdout
			var refs manifestv1.QueryServiceListReferrersResponse
			if err := protojson.Unmarshal([]byte(out), &refs); err != nil ||
				len(refs.GetReferrers()) != 0 {
				t.Errorf("keelctl referrers --artifact-type x/y = %s (%v), want none", out, err)
			}
		})
	}
}

// waitFor polls out until it has n lines.
func waitFor(t *testing.T, out *telemetrytest.LogBuffer, n int) []string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if l := strings.Split(strings.TrimSpace(out.String()), "\n"); len(l) >= n &&
			strings.TrimSpace(out.String()) != "" {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("output has not %d lines after 30s: %q", n, out.String())
	return nil
}

func TestWatch(t *testing.T) {
	r := newRegistry(t)
	for _, f := range r.faces() {
		t.Run(f.name, func(t *testing.T) {
			for _, format := range []string{"table", "json"} {
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				var stdout, stderr telemetrytest.LogBuffer
				done := make(chan int)
				go func() {
					args := append(slices.Clone(f.args), "watch", "-o", format)
					done <- querycli.Run(ctx, args, &stdout, &stderr,
						func(string) string { return "" })
				}()

				// The watch starts at the time of the call: wait for it.
				time.Sleep(300 * time.Millisecond)
				repo := "watch/" + f.name + "/" + format
				dgst, _, _ := r.image(repo, "v1")
				if _, err := r.manifest.DeleteManifest(r.ctx, &manifestv1.DeleteManifestRequest{
					Repository: repo, Reference: dgst,
				}); err != nil {
					t.Fatalf("DeleteManifest: %v", err)
				}

				header := 0
				if format == "table" {
					header = 1
				}
				got := waitFor(t, &stdout, header+2)
				cancel()
				if code := <-done; code != 0 {
					t.Errorf("keelctl watch -o %s exit = %d, want 0 when interrupted; "+
						"stderr %q", format, code, stderr.String())
				}

				var events []string
				for _, l := range got[header:] {
					if format == "table" {
						fs := strings.Fields(l)
						events = append(events, fs[1]+" "+fs[2]+" "+fs[3]+" "+fs[4])
						continue
					}
					var resp manifestv1.QueryServiceWatchChangesResponse
					if err := protojson.Unmarshal([]byte(l), &resp); err != nil {
						t.Fatalf("keelctl watch -o json line %q: %v", l, err)
					}
					c := resp.GetChange()
					events = append(events, c.GetKind().String()+" "+c.GetRepository()+" "+
						c.GetDigest()+" "+strings.Join(c.GetTags(), ","))
				}
				want := map[string][]string{
					"table": {"pushed " + repo + " " + dgst + " v1",
						"deleted " + repo + " " + dgst + " -"},
					"json": {"CHANGE_KIND_MANIFEST_PUSHED " + repo + " " + dgst + " v1",
						"CHANGE_KIND_MANIFEST_DELETED " + repo + " " + dgst + " "},
				}[format]
				if !slices.Equal(events, want) {
					t.Errorf("keelctl watch -o %s = %q, want %q", format, events, want)
				}
			}
		})
	}
}

func TestUsageAndErrors(t *testing.T) {
	r := newRegistry(t)
	for _, args := range [][]string{{"--help"}, {"-h"}} {
		res := keelctl(t, nil, args...)
		if res.code != 0 || !strings.Contains(res.stdout, "Commands:") || res.stderr != "" {
			t.Errorf("keelctl %v = %+v, want the help on stdout and exit 0", args, res)
		}
	}
	for _, cmd := range []string{"repos", "tags", "inspect", "referrers", "watch"} {
		res := keelctl(t, nil, cmd, "--help")
		if res.code != 0 || !strings.HasPrefix(res.stdout, "Usage:\n  keelctl "+cmd) {
			t.Errorf("keelctl %s --help = %+v, want its usage and exit 0", cmd, res)
		}
	}

	grpcArgs := []string{"--grpc", r.grpcAddr}
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "no command"},
		{[]string{"frobnicate"}, nil, "unknown command"},
		{[]string{"repos"}, nil, "--grpc host:port or --url URL"},
		{[]string{"repos", "--grpc", "a:1", "--url", "http://b"}, nil, "exclusive"},
		{append([]string{"repos", "-o", "yaml"}, grpcArgs...), nil, "neither table nor json"},
		{append([]string{"tags"}, grpcArgs...), nil, "takes 1 argument"},
		{append([]string{"tags", "a", "b"}, grpcArgs...), nil, "takes 1 argument"},
		{append([]string{"repos", "--no-such-flag"}, grpcArgs...), nil, "no-such-flag"},
		{append([]string{"inspect", "@sha256:x"}, grpcArgs...), nil, "want <repo>:<tag>"},
		{append([]string{"inspect", "Bad:v1"}, grpcArgs...), nil, "NAME_INVALID"},
		{[]string{"repos", "--url", "ftp://x"}, nil, "not http(s)"},
		// Through the gateway without credentials: a hint about them.
		{[]string{"repos", "--url", r.url}, nil, "KEEL_USERNAME"},
		{[]string{"repos", "--url", r.url, "--username", user, "--password", "wrong"}, nil,
			"UNAUTHORIZED"},
	}
	for _, c := range cases {
		res := keelctl(t, c.env, c.args...)
		if res.code != 1 || res.stdout != "" || !strings.Contains(res.stderr, c.want) ||
			!strings.HasPrefix(res.stderr, "keelctl: ") {
			t.Errorf("keelctl %v = %+v, want exit 1 and %q on stderr", c.args, res, c.want)
		}
	}

	// Credentials from the environment.
	env := map[string]string{querycli.EnvUsername: user, querycli.EnvPassword: password}
	r.image("app", "v1")
	res := keelctl(t, env, "repos", "--url", r.url)
	if res.code != 0 || res.stdout != "REPOSITORY\napp\n" {
		t.Errorf("keelctl repos --url with KEEL_USERNAME/KEEL_PASSWORD = %+v, want app", res)
	}
}
