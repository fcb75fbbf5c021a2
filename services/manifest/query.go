package manifest

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// Defaults for the zero values of QueryOptions, and the page size bounds.
const (
	DefaultChangeRetention  = 24 * time.Hour
	DefaultSettleWindow     = 2 * time.Second
	DefaultPollInterval     = 500 * time.Millisecond
	DefaultBookmarkInterval = 30 * time.Second
	// DefaultPageSize is the page size of a list request that names none.
	DefaultPageSize = 100
	// MaxPageSize is the largest page a list request gets; asking for more
	// gets this many.
	MaxPageSize = 1000
)

// QueryOptions configures a QueryServer.
type QueryOptions struct {
	// ChangeRetention is how long a change stays in the change log;
	// ExpireChanges removes older ones. Zero or less means
	// DefaultChangeRetention.
	ChangeRetention time.Duration
	// SettleWindow is how old a change must be before WatchChanges sends
	// it. It bounds the clock difference between replicas plus the time a
	// change takes to write that WatchChanges tolerates: a change that
	// lands in the store later than this after its time may be missed.
	// Zero or less means DefaultSettleWindow.
	SettleWindow time.Duration
	// PollInterval is how often WatchChanges lists the change log. Zero or
	// less means DefaultPollInterval.
	PollInterval time.Duration
	// BookmarkInterval is how long a quiet WatchChanges stream goes without
	// a bookmark. Zero or less means DefaultBookmarkInterval.
	BookmarkInterval time.Duration
}

// withDefaults returns o with every unset field at its default.
func (o QueryOptions) withDefaults() QueryOptions {
	orDefault := func(d *time.Duration, def time.Duration) {
		if *d <= 0 {
			*d = def
		}
	}
	orDefault(&o.ChangeRetention, DefaultChangeRetention)
	orDefault(&o.SettleWindow, DefaultSettleWindow)
	orDefault(&o.PollInterval, DefaultPollInterval)
	orDefault(&o.BookmarkInterval, DefaultBookmarkInterval)
	return o
}

// QueryServer implements manifestv1.QueryServiceServer: read-only queries
// for operators' tools over what a Server stores, and the stream of its
// changes.
type QueryServer struct {
	manifestv1.UnimplementedQueryServiceServer

	manifests *Server
	opts      QueryOptions

	// ending is closed by EndWatches.
	ending  chan struct{}
	endOnce sync.Once
}

// NewQueryServer returns a QueryServer that reads what manifests stores.
func NewQueryServer(manifests *Server, opts QueryOptions) *QueryServer {
	return &QueryServer{manifests: manifests, opts: opts.withDefaults(),
		ending: make(chan struct{})}
}

// EndWatches ends every WatchChanges stream, open or to come, with
// UNAVAILABLE, so that a graceful stop of the gRPC server need not wait for
// streams that never end on their own; their clients reconnect, with their
// cursor, to another replica. Call it when the server starts stopping.
func (q *QueryServer) EndWatches() {
	q.endOnce.Do(func() { close(q.ending) })
}

// errEnding answers a watch when the server is stopping.
var errEnding = status.Error(codes.Unavailable,
	"the manifest service is stopping; watch again from your last cursor")

// ListRepositories lists the catalog a page at a time.
func (q *QueryServer) ListRepositories(
	ctx context.Context, req *manifestv1.QueryServiceListRepositoriesRequest,
) (*manifestv1.QueryServiceListRepositoriesResponse, error) {
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	last, err := parsePageToken(req.GetPageToken(), pageOfRepositories, "")
	if err != nil {
		return nil, err
	}

	resp, err := q.manifests.ListRepositories(ctx, &manifestv1.ListRepositoriesRequest{
		Limit: limit, Last: last,
	})
	if err != nil {
		return nil, err
	}
	names := resp.GetRepositories()
	return &manifestv1.QueryServiceListRepositoriesResponse{
		Repositories:  names,
		NextPageToken: nextPageToken(pageOfRepositories, "", names, resp.GetMore()),
	}, nil
}

// ListTags lists a repository's tags a page at a time. An unknown
// repository is NAME_UNKNOWN.
func (q *QueryServer) ListTags(
	ctx context.Context, req *manifestv1.QueryServiceListTagsRequest,
) (*manifestv1.QueryServiceListTagsResponse, error) {
	repo := req.GetRepository()
	if err := reference.ValidateName(repo); err != nil {
		return nil, err
	}
	limit, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, err
	}
	last, err := parsePageToken(req.GetPageToken(), pageOfTags, repo)
	if err != nil {
		return nil, err
	}

	resp, err := q.manifests.ListTags(ctx, &manifestv1.ListTagsRequest{
		Repository: repo, Limit: limit, Last: last,
	})
	if err != nil {
		return nil, err
	}
	tags := resp.GetTags()
	return &manifestv1.QueryServiceListTagsResponse{
		Tags:          tags,
		NextPageToken: nextPageToken(pageOfTags, repo, tags, resp.GetMore()),
	}, nil
}

// ResolveReference returns the descriptor of the manifest a tag or digest
// names.
func (q *QueryServer) ResolveReference(
	ctx context.Context, req *manifestv1.QueryServiceResolveReferenceRequest,
) (*manifestv1.QueryServiceResolveReferenceResponse, error) {
	resp, err := q.manifests.GetManifest(ctx, &manifestv1.GetManifestRequest{
		Repository: req.GetRepository(), Reference: req.GetReference(), Head: true,
	})
	if err != nil {
		return nil, err
	}
	return &manifestv1.QueryServiceResolveReferenceResponse{
		Descriptor_: resp.GetDescriptor_(),
	}, nil
}

// InspectManifest returns a manifest parsed. For an index it also reads
// each child that is an image manifest, to give its total size.
func (q *QueryServer) InspectManifest(
	ctx context.Context, req *manifestv1.QueryServiceInspectManifestRequest,
) (*manifestv1.QueryServiceInspectManifestResponse, error) {
	repo := req.GetRepository()
	tag, dgst, err := parseTarget(repo, req.GetReference())
	if err != nil {
		return nil, err
	}
	if dgst, err = q.manifests.resolveTarget(ctx, repo, tag, dgst); err != nil {
		return nil, err
	}

	mediaType, content, err := q.manifests.readRevision(ctx, repo, dgst)
	if err != nil {
		return nil, err
	}
	m, err := inspect(mediaType, dgst, content)
	if err != nil {
		return nil, fmt.Errorf("manifest: inspect %s in %s: %w", dgst, repo, err)
	}
	if kinds[mediaType] == kindIndex {
		if err := q.addChildSizes(ctx, repo, m); err != nil {
			return nil, err
		}
	}
	return &manifestv1.QueryServiceInspectManifestResponse{Manifest: m.manifest}, nil
}

// ListReferrers lists the manifests whose subject is a digest, optionally
// only those of one artifact type.
func (q *QueryServer) ListReferrers(
	ctx context.Context, req *manifestv1.QueryServiceListReferrersRequest,
) (*manifestv1.QueryServiceListReferrersResponse, error) {
	resp, err := q.manifests.ListReferrers(ctx, &manifestv1.ListReferrersRequest{
		Repository:   req.GetRepository(),
		Digest:       req.GetDigest(),
		ArtifactType: req.GetArtifactType(),
	})
	if err != nil {
		return nil, err
	}
	return &manifestv1.QueryServiceListReferrersResponse{Referrers: resp.GetReferrers()}, nil
}

// WatchChanges streams the change log from the request's cursor (or from
// the time of the call), in log order, then follows it by listing it every
// PollInterval. It sends a bookmark first, so that the caller holds a
// cursor at once, and again after BookmarkInterval without a change sent.
//
// A change is sent once it is older than SettleWindow, and the stream's
// position then moves past it for good. So a change whose object lands in
// the store more than SettleWindow after its time (because its replica's
// clock is that far behind, or its write was that slow) is missed by
// every watcher already past that time. A stream that fails (the store
// could not be listed) ends with an error; the caller reconnects with its
// last cursor and misses nothing the log still holds.
//
// Shortcoming: every open stream lists the store once per PollInterval
// (two list requests a second by default) even when nothing changes; on a
// store that bills list requests, each watcher has a steady cost.
func (q *QueryServer) WatchChanges(
	req *manifestv1.QueryServiceWatchChangesRequest,
	stream grpc.ServerStreamingServer[manifestv1.QueryServiceWatchChangesResponse],
) error {
	ctx := stream.Context()
	repo := req.GetRepository()
	if repo != "" {
		if err := reference.ValidateName(repo); err != nil {
			return err
		}
	}
	pos, err := q.startPosition(req.GetCursor(), time.Now())
	if err != nil {
		return err
	}
	select {
	case <-q.ending:
		return errEnding
	default:
	}

	if err := stream.Send(&manifestv1.QueryServiceWatchChangesResponse{Cursor: pos}); err != nil {
		return err
	}
	sent, sentAt := pos, time.Now()

	tick := time.NewTicker(q.opts.PollInterval)
	defer tick.Stop()
	for {
		horizon := time.Now().Add(-q.opts.SettleWindow)
		batch, full, err := q.manifests.readChanges(ctx, pos, horizon)
		if err != nil {
			return err
		}
		for _, l := range batch {
			pos = l.id
			if l.c == nil || (repo != "" && l.c.Repository != repo) {
				continue
			}
			resp := &manifestv1.QueryServiceWatchChangesResponse{Cursor: l.id, Change: l.proto()}
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent, sentAt = pos, time.Now()
		}
		if full {
			continue
		}

		// Every change made before the horizon has now been listed.
		if at := positionAt(horizon); at > pos {
			pos = at
		}
		if pos != sent && time.Since(sentAt) >= q.opts.BookmarkInterval {
			resp := &manifestv1.QueryServiceWatchChangesResponse{Cursor: pos}
			if err := stream.Send(resp); err != nil {
				return err
			}
			sent, sentAt = pos, time.Now()
		}

		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-q.ending:
			return errEnding
		case <-tick.C:
		}
	}
}

// startPosition returns where a watch with cursor starts: after the cursor,
// or at now without one. A cursor older than the retention is refused with
// OUT_OF_RANGE, since changes after it may already be gone.
func (q *QueryServer) startPosition(cursor string, now time.Time) (string, error) {
	if cursor == "" {
		return positionAt(now), nil
	}
	t, err := parsePosition(cursor)
	if err != nil {
		return "", status.Errorf(codes.InvalidArgument, "cursor %.64q is malformed", cursor)
	}
	if t.Before(now.Add(-q.opts.ChangeRetention)) {
		return "", status.Errorf(codes.OutOfRange, "cursor is older than the change log's "+
			"retention of %v, so changes after it may be lost; watch again without a cursor",
			q.opts.ChangeRetention)
	}
	return cursor, nil
}

// ExpireChanges deletes the changes older than the retention as of now and
// returns how many it deleted. Any replica may run it at any time; two
// running at once do no harm.
func (q *QueryServer) ExpireChanges(ctx context.Context, now time.Time) (int, error) {
	return q.manifests.expireChanges(ctx, now.Add(-q.opts.ChangeRetention))
}

// The lists a page token may belong to.
const (
	pageOfRepositories = "repositories"
	pageOfTags         = "tags"
)

// pageSize returns the service limit for a requested page size.
func pageSize(n int32) (int32, error) {
	switch {
	case n < 0:
		return 0, status.Errorf(codes.InvalidArgument, "page_size %d is negative", n)
	case n == 0:
		return DefaultPageSize, nil
	}
	return min(n, MaxPageSize), nil
}

// nextPageToken returns the token of the page after names, or "" when no
// more follow. A token names its list (which and, for tags, whose) and the
// last name of the page; it is opaque to clients.
func nextPageToken(list, repo string, names []string, more bool) string {
	if !more || len(names) == 0 {
		return ""
	}
	raw := list + "\n" + repo + "\n" + names[len(names)-1]
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// parsePageToken returns the last name of the previous page from a token
// made by nextPageToken for the same list, or "" for no token.
func parsePageToken(token, list, repo string) (string, error) {
	if token == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(token)
	parts := strings.SplitN(string(raw), "\n", 3)
	if err != nil || len(parts) != 3 || parts[2] == "" {
		return "", status.Error(codes.InvalidArgument, "page_token is malformed")
	}
	if parts[0] != list || parts[1] != repo {
		return "", status.Error(codes.InvalidArgument,
			"page_token belongs to another list; start again without it")
	}
	return parts[2], nil
}

// platform is an OCI platform as an index lists it.
type platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version"`
	OSFeatures   []string `json:"os.features"`
	Variant      string   `json:"variant"`
}

// indexChild is one entry of an index's manifests.
type indexChild struct {
	descriptor
	Platform *platform `json:"platform"`
}

// inspectDoc is what InspectManifest reads from a manifest: document with
// the index entries' platforms.
type inspectDoc struct {
	ArtifactType string            `json:"artifactType"`
	Config       *descriptor       `json:"config"`
	Layers       []descriptor      `json:"layers"`
	Manifests    []indexChild      `json:"manifests"`
	Subject      *descriptor       `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

// inspected is a manifest being inspected: its answer so far, and the
// sizes by digest of the content it reaches.
type inspected struct {
	manifest *manifestv1.Manifest
	sizes    map[string]int64
}

// inspect parses a stored manifest. The total size it sets counts the
// manifest itself and, for an image, its config and layers; an index's
// children are counted by addChildSizes.
func inspect(mediaType string, dgst reference.Digest, content []byte) (*inspected, error) {
	m := &manifestv1.Manifest{MediaType: mediaType, Digest: dgst.String(),
		Size: int64(len(content))}
	out := &inspected{manifest: m, sizes: map[string]int64{dgst.String(): m.Size}}
	if kinds[mediaType] == kindOpaque {
		m.TotalSize = m.Size
		return out, nil
	}

	var doc inspectDoc
	if err := json.Unmarshal(content, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", errCorruptRevision, err)
	}
	m.ArtifactType = doc.ArtifactType
	m.Annotations = doc.Annotations
	if doc.Subject != nil {
		m.Subject = doc.Subject.proto()
	}
	if doc.Config != nil {
		m.Config = doc.Config.proto()
		out.sizes[doc.Config.Digest] = doc.Config.Size
	}
	for _, l := range doc.Layers {
		m.Layers = append(m.Layers, l.proto())
		out.sizes[l.Digest] = l.Size
	}
	for _, c := range doc.Manifests {
		m.Manifests = append(m.Manifests, &manifestv1.IndexEntry{
			Descriptor_: c.proto(),
			Platform:    c.Platform.proto(),
			TotalSize:   c.Size,
		})
		out.sizes[c.Digest] = c.Size
	}
	m.TotalSize = out.total()
	return out, nil
}

// total sums the sizes of the distinct content reached.
func (in *inspected) total() int64 {
	var n int64
	for _, s := range in.sizes {
		n += s
	}
	return n
}

// addChildSizes reads the children of an index that are stored image
// manifests, sets each one's total size on its entry and adds its config
// and layers to the index's total. Other children (nested indexes, blobs
// listed as children, manifests of unknown types) count for their
// descriptor's size only.
func (q *QueryServer) addChildSizes(ctx context.Context, repo string, m *inspected) error {
	entries := m.manifest.GetManifests()
	var mu sync.Mutex
	err := parallel(ctx, len(entries), func(ctx context.Context, i int) error {
		d := entries[i].GetDescriptor_()
		if kinds[d.GetMediaType()] != kindImage {
			return nil
		}
		dgst, err := reference.ParseDigest(d.GetDigest())
		if err != nil {
			return nil
		}
		mediaType, content, err := q.manifests.readRevision(ctx, repo, dgst)
		if ocierr.Is(err, ocierr.ManifestUnknown) {
			return nil
		}
		if err != nil {
			return err
		}
		child, err := inspect(mediaType, dgst, content)
		if err != nil {
			return fmt.Errorf("manifest: inspect child %s in %s: %w", dgst, repo, err)
		}

		mu.Lock()
		defer mu.Unlock()
		entries[i].TotalSize = child.manifest.GetTotalSize()
		for k, v := range child.sizes {
			m.sizes[k] = v
		}
		return nil
	})
	if err != nil {
		return err
	}
	m.manifest.TotalSize = m.total()
	return nil
}

// proto returns the descriptor as the API sends it.
func (d descriptor) proto() *manifestv1.Descriptor {
	return &manifestv1.Descriptor{
		MediaType:    d.MediaType,
		Digest:       d.Digest,
		Size:         d.Size,
		ArtifactType: d.ArtifactType,
		Annotations:  d.Annotations,
	}
}

// proto returns the platform as the API sends it; nil for none.
func (p *platform) proto() *manifestv1.Platform {
	if p == nil {
		return nil
	}
	return &manifestv1.Platform{
		Architecture: p.Architecture,
		Os:           p.OS,
		OsVersion:    p.OSVersion,
		OsFeatures:   p.OSFeatures,
		Variant:      p.Variant,
	}
}
