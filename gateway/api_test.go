package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/keel-registry/keel/gateway"
	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/ocierr"
)

// fakeQuery is a QueryService that records the requests it gets and
// answers with canned responses, or with err when it is set.
type fakeQuery struct {
	manifestv1.UnimplementedQueryServiceServer

	mu   sync.Mutex
	got  []proto.Message
	err  error
	tags []string
	// changes are sent by WatchChanges, the first one before it waits for
	// release (when set) to be closed.
	changes []*manifestv1.QueryServiceWatchChangesResponse
	release chan struct{}
}

func (f *fakeQuery) record(m proto.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.got = append(f.got, m)
	return f.err
}

// requests returns the requests received so far.
func (f *fakeQuery) requests() []proto.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]proto.Message(nil), f.got...)
}

func (f *fakeQuery) ListRepositories(
	_ context.Context, in *manifestv1.QueryServiceListRepositoriesRequest,
) (*manifestv1.QueryServiceListRepositoriesResponse, error) {
	if err := f.record(in); err != nil {
		return nil, err
	}
	return &manifestv1.QueryServiceListRepositoriesResponse{
		Repositories: []string{"a", "b/c"}, NextPageToken: "next",
	}, nil
}

func (f *fakeQuery) ListTags(
	_ context.Context, in *manifestv1.QueryServiceListTagsRequest,
) (*manifestv1.QueryServiceListTagsResponse, error) {
	if err := f.record(in); err != nil {
		return nil, err
	}
	return &manifestv1.QueryServiceListTagsResponse{Tags: f.tags}, nil
}

func (f *fakeQuery) ResolveReference(
	_ context.Context, in *manifestv1.QueryServiceResolveReferenceRequest,
) (*manifestv1.QueryServiceResolveReferenceResponse, error) {
	if err := f.record(in); err != nil {
		return nil, err
	}
	return &manifestv1.QueryServiceResolveReferenceResponse{
		Descriptor_: &manifestv1.Descriptor{Digest: testDigest, Size: 1 << 40},
	}, nil
}

func (f *fakeQuery) InspectManifest(
	_ context.Context, in *manifestv1.QueryServiceInspectManifestRequest,
) (*manifestv1.QueryServiceInspectManifestResponse, error) {
	if err := f.record(in); err != nil {
		return nil, err
	}
	return &manifestv1.QueryServiceInspectManifestResponse{
		Manifest: &manifestv1.Manifest{Digest: testDigest, TotalSize: 42},
	}, nil
}

func (f *fakeQuery) ListReferrers(
	_ context.Context, in *manifestv1.QueryServiceListReferrersRequest,
) (*manifestv1.QueryServiceListReferrersResponse, error) {
	if err := f.record(in); err != nil {
		return nil, err
	}
	return &manifestv1.QueryServiceListReferrersResponse{}, nil
}

func (f *fakeQuery) WatchChanges(
	in *manifestv1.QueryServiceWatchChangesRequest,
	stream grpc.ServerStreamingServer[manifestv1.QueryServiceWatchChangesResponse],
) error {
	if err := f.record(in); err != nil {
		return err
	}
	for i, c := range f.changes {
		if err := stream.Send(c); err != nil {
			return err
		}
		if i == 0 && f.release != nil {
			select {
			case <-f.release:
			case <-stream.Context().Done():
				return stream.Context().Err()
			}
		}
	}
	return nil
}

// testDigest is a well-formed digest.
var testDigest = "sha256:" + strings.Repeat("ab", 32)

// newAPIHarness is a harness whose gateway has a query client of f.
func newAPIHarness(t *testing.T, f *fakeQuery, anonymousPull bool) *harness {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	gs := grpc.NewServer()
	manifestv1.RegisterQueryServiceServer(gs, f)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() error = %v", err)
	}
	t.Cleanup(func() { conn.Close() })

	return newHarness(t, harnessConfig{
		anonymousPull: anonymousPull,
		options: func(o *gateway.Options) {
			o.Query = manifestv1.NewQueryServiceClient(conn)
		},
	})
}

// apiGet sends GET path as user (none for anonymous).
func (h *harness) apiGet(t *testing.T, user, pass, path string) (*http.Response, []byte) {
	t.Helper()
	req := h.newRequest(t, http.MethodGet, path, nil)
	req.Header.Del("Authorization")
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	return send(t, req)
}

// wantRPCError fails the test unless the body is a google.rpc.Status with
// code want and, when reason is set, an OCI ErrorInfo with that reason.
func wantRPCError(t *testing.T, path string, body []byte, want codes.Code, reason string) {
	t.Helper()
	var st struct {
		Code    codes.Code `json:"code"`
		Message string     `json:"message"`
		Details []struct {
			Type   string `json:"@type"`
			Reason string `json:"reason"`
		} `json:"details"`
	}
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("GET %s body = %s, want a JSON status: %v", path, body, err)
	}
	if st.Code != want {
		t.Errorf("GET %s error code = %v, want %v; body %s", path, st.Code, want, body)
	}
	if reason == "" {
		return
	}
	for _, d := range st.Details {
		if d.Reason == reason {
			return
		}
	}
	t.Errorf("GET %s error details = %+v, want reason %s", path, st.Details, reason)
}

func TestAPIRoutes(t *testing.T) {
	f := &fakeQuery{tags: []string{"v1", "v2"}}
	h := newAPIHarness(t, f, false)

	cases := []struct {
		path string
		want proto.Message
	}{
		{"/api/v1/repositories?pageSize=2&pageToken=tok",
			&manifestv1.QueryServiceListRepositoriesRequest{PageSize: 2, PageToken: "tok"}},
		{"/api/v1/tags/a/b/c?pageSize=3",
			&manifestv1.QueryServiceListTagsRequest{Repository: "a/b/c", PageSize: 3}},
		// Repository components that look like the API's own words.
		{"/api/v1/tags/manifests/tags",
			&manifestv1.QueryServiceListTagsRequest{Repository: "manifests/tags"}},
		{"/api/v1/resolve/a/b/v1",
			&manifestv1.QueryServiceResolveReferenceRequest{Repository: "a/b", Reference: "v1"}},
		{"/api/v1/manifests/lib/app/" + testDigest,
			&manifestv1.QueryServiceInspectManifestRequest{Repository: "lib/app",
				Reference: testDigest}},
		{"/api/v1/manifests/app/latest",
			&manifestv1.QueryServiceInspectManifestRequest{Repository: "app",
				Reference: "latest"}},
		{"/api/v1/referrers/x/y/" + testDigest + "?artifactType=application%2Fspdx%2Bjson",
			&manifestv1.QueryServiceListReferrersRequest{Repository: "x/y", Digest: testDigest,
				ArtifactType: "application/spdx+json"}},
	}
	for i, c := range cases {
		resp, body := h.apiGet(t, writerName, writerPass, c.path)
		wantStatus(t, resp, body, http.StatusOK)
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("GET %s Content-Type = %q, want application/json", c.path, ct)
		}
		got := f.requests()
		if len(got) != i+1 || !proto.Equal(got[i], c.want) {
			t.Errorf("GET %s: service got %v, want %v", c.path, got[len(got)-1], c.want)
		}
	}

	resp, body := h.apiGet(t, writerName, writerPass, "/api/v1/repositories")
	var repos manifestv1.QueryServiceListRepositoriesResponse
	if err := protojson.Unmarshal(body, &repos); err != nil || repos.GetNextPageToken() != "next" ||
		strings.Join(repos.GetRepositories(), ",") != "a,b/c" {
		t.Errorf("GET /api/v1/repositories = %d %s (%v), want the service's answer",
			resp.StatusCode, body, err)
	}
	// 64-bit sizes are JSON strings, as proto3's JSON mapping says.
	_, body = h.apiGet(t, writerName, writerPass, "/api/v1/resolve/a/v1")
	if !strings.Contains(string(body), `"size":"1099511627776"`) {
		t.Errorf("GET /api/v1/resolve/a/v1 = %s, want the size as a string", body)
	}
	if resp.Header.Get("Grpc-Metadata-Content-Type") != "" {
		t.Errorf("GET /api/v1/repositories forwards gRPC metadata: %v", resp.Header)
	}

	logs := h.logs.Records(t)
	last := logs[len(logs)-1]
	if last["route"] != "/api/v1/resolve/{repository=**}/{reference}" ||
		last["repository"] != "a" || last["status"] != float64(200) {
		t.Errorf("log line = %v, want the route template, the repository and 200", last)
	}
}

func TestAPIErrors(t *testing.T) {
	f := &fakeQuery{}
	h := newAPIHarness(t, f, false)

	f.err = ocierr.New(ocierr.NameUnknown, "repository %q is not known", "gone")
	resp, body := h.apiGet(t, writerName, writerPass, "/api/v1/tags/gone")
	wantStatus(t, resp, body, http.StatusNotFound)
	wantRPCError(t, "/api/v1/tags/gone", body, codes.NotFound, "NAME_UNKNOWN")

	f.err = status.Error(codes.InvalidArgument, "page_token is malformed")
	resp, body = h.apiGet(t, writerName, writerPass, "/api/v1/tags/a?pageToken=x")
	wantStatus(t, resp, body, http.StatusBadRequest)
	wantRPCError(t, "/api/v1/tags/a", body, codes.InvalidArgument, "")

	f.err = errors.New("dial tcp 10.0.0.7:9003: secret internal detail")
	resp, body = h.apiGet(t, writerName, writerPass, "/api/v1/tags/a")
	wantStatus(t, resp, body, http.StatusInternalServerError)
	if strings.Contains(string(body), "secret") {
		t.Errorf("GET /api/v1/tags/a = %s, leaks the cause", body)
	}

	f.err = nil
	calls := len(f.requests())
	resp, body = h.apiGet(t, writerName, writerPass, "/api/v1/tags/Not-Valid")
	wantStatus(t, resp, body, http.StatusBadRequest)
	wantRPCError(t, "/api/v1/tags/Not-Valid", body, codes.InvalidArgument, "NAME_INVALID")
	resp, body = h.apiGet(t, writerName, writerPass, "/api/v1/nothing/here")
	wantStatus(t, resp, body, http.StatusNotFound)
	if got := len(f.requests()); got != calls {
		t.Errorf("the service got %d calls for invalid requests, want none", got-calls)
	}

	resp, body = send(t, h.newRequest(t, http.MethodPost, "/api/v1/repositories", nil))
	wantStatus(t, resp, body, http.StatusMethodNotAllowed)
	if got := resp.Header.Get("Allow"); got != "GET" {
		t.Errorf("POST /api/v1/repositories Allow = %q, want GET", got)
	}
}

func TestAPIAuth(t *testing.T) {
	f := &fakeQuery{}
	h := newAPIHarness(t, f, true)

	cases := []struct {
		user, pass, path string
		want             int
	}{
		// Anonymous pull is on: pulls are allowed, the catalog is not.
		{"", "", "/api/v1/tags/a", http.StatusOK},
		{"", "", "/api/v1/repositories", http.StatusUnauthorized},
		{"", "", "/api/v1/changes", http.StatusUnauthorized},
		{readerName, readerPass, "/api/v1/repositories", http.StatusOK},
		{readerName, "wrong", "/api/v1/tags/a", http.StatusUnauthorized},
		{readerName, readerPass, "/api/v1/tags/closed/b", http.StatusForbidden},
		{readerName, readerPass, "/api/v1/manifests/closed/b/v1", http.StatusForbidden},
		{readerName, readerPass, "/api/v1/changes?repository=closed/b", http.StatusForbidden},
		{readerName, readerPass, "/api/v1/resolve/open/a/v1", http.StatusOK},
	}
	deny := "closed/b"
	h.auth.denyPull.Store(&deny)
	for _, c := range cases {
		before := len(f.requests())
		resp, body := h.apiGet(t, c.user, c.pass, c.path)
		if resp.StatusCode != c.want {
			t.Errorf("GET %s as %q = %d %s, want %d", c.path, c.user, resp.StatusCode, body,
				c.want)
			continue
		}
		called := len(f.requests()) > before
		if called != (c.want == http.StatusOK) {
			t.Errorf("GET %s as %q: service called = %v, want %v", c.path, c.user, called,
				!called)
		}
		switch c.want {
		case http.StatusUnauthorized:
			if got := resp.Header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Basic ") {
				t.Errorf("GET %s as %q WWW-Authenticate = %q, want a Basic challenge",
					c.path, c.user, got)
			}
			wantRPCError(t, c.path, body, codes.Unauthenticated, "UNAUTHORIZED")
		case http.StatusForbidden:
			wantRPCError(t, c.path, body, codes.PermissionDenied, "DENIED")
		}
	}
}

func TestAPIWatch(t *testing.T) {
	change := func(cursor, repo string) *manifestv1.QueryServiceWatchChangesResponse {
		return &manifestv1.QueryServiceWatchChangesResponse{Cursor: cursor,
			Change: &manifestv1.Change{Kind: manifestv1.ChangeKind_CHANGE_KIND_TAG_DELETED,
				Repository: repo, Tags: []string{"v1"}}}
	}
	f := &fakeQuery{changes: []*manifestv1.QueryServiceWatchChangesResponse{
		{Cursor: "c0"}, change("c1", "open/a"), change("c2", "closed/b"), change("c3", "open/c"),
	}}
	h := newAPIHarness(t, f, false)

	// watch reads the stream as user and returns each line's cursor and
	// changed repository. The first line must arrive while the service
	// still holds the stream open.
	watch := func(user, pass string) []string {
		t.Helper()
		f.release = make(chan struct{})
		req := h.newRequest(t, http.MethodGet, "/api/v1/changes?cursor=start", nil)
		req.SetBasicAuth(user, pass)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET /api/v1/changes error: %v", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /api/v1/changes as %s = %d, want 200", user, resp.StatusCode)
		}

		var out []string
		lines := bufio.NewScanner(resp.Body)
		for lines.Scan() {
			var line struct {
				Result json.RawMessage `json:"result"`
			}
			if err := json.Unmarshal(lines.Bytes(), &line); err != nil {
				t.Fatalf("GET /api/v1/changes line %q: %v", lines.Bytes(), err)
			}
			var r manifestv1.QueryServiceWatchChangesResponse
			if err := protojson.Unmarshal(line.Result, &r); err != nil {
				t.Fatalf("GET /api/v1/changes result %s: %v", line.Result, err)
			}
			out = append(out, r.GetCursor()+" "+r.GetChange().GetRepository())
			if len(out) == 1 {
				close(f.release)
			}
		}
		if err := lines.Err(); err != nil {
			t.Fatalf("GET /api/v1/changes: reading the stream: %v", err)
		}
		return out
	}

	want := "c0 ,c1 open/a,c2 closed/b,c3 open/c"
	if got := strings.Join(watch(writerName, writerPass), ","); got != want {
		t.Errorf("GET /api/v1/changes as writer = %q, want %q", got, want)
	}
	// A caller who may not pull closed/b gets a bookmark for its change.
	deny := "closed/b"
	h.auth.denyPull.Store(&deny)
	want = "c0 ,c1 open/a,c2 ,c3 open/c"
	if got := strings.Join(watch(readerName, readerPass), ","); got != want {
		t.Errorf("GET /api/v1/changes as reader = %q, want %q", got, want)
	}
	reqs := f.requests()
	wantReq := &manifestv1.QueryServiceWatchChangesRequest{Cursor: "start"}
	if !proto.Equal(reqs[len(reqs)-1], wantReq) {
		t.Errorf("service got %v, want %v", reqs[len(reqs)-1], wantReq)
	}
}

func TestAPIEndStreams(t *testing.T) {
	f := &fakeQuery{
		changes: []*manifestv1.QueryServiceWatchChangesResponse{{Cursor: "c0"}, {Cursor: "c1"}},
		release: make(chan struct{}), // never closed: the stream stays open
	}
	h := newAPIHarness(t, f, false)

	resp, err := http.DefaultClient.Do(h.newRequest(t, http.MethodGet, "/api/v1/changes", nil))
	if err != nil {
		t.Fatalf("GET /api/v1/changes error: %v", err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	if !lines.Scan() || !strings.Contains(lines.Text(), `"c0"`) {
		t.Fatalf("GET /api/v1/changes first line = %q, want the bookmark c0", lines.Text())
	}

	h.handler.(gateway.StreamEnder).EndStreams()
	var rest []string
	for lines.Scan() {
		rest = append(rest, lines.Text())
	}
	if len(rest) != 1 {
		t.Fatalf("GET /api/v1/changes after EndStreams = %q, want one error line", rest)
	}
	var last struct {
		Error struct {
			Code    codes.Code `json:"code"`
			Message string     `json:"message"`
		} `json:"error"`
	}
	if err := json.Unmarshal([]byte(rest[0]), &last); err != nil ||
		last.Error.Code != codes.Unavailable || !strings.Contains(last.Error.Message, "cursor") {
		t.Errorf("GET /api/v1/changes last line = %q, want UNAVAILABLE naming the cursor", rest[0])
	}

	// A stopping gateway opens no more streams; other calls still work.
	again, body := h.apiGet(t, writerName, writerPass, "/api/v1/changes")
	wantStatus(t, again, body, http.StatusServiceUnavailable)
	tags, body := h.apiGet(t, writerName, writerPass, "/api/v1/tags/a")
	wantStatus(t, tags, body, http.StatusOK)
}
