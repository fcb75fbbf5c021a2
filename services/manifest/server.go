// Package manifest is the manifest service: it stores manifests, tags,
// referrers and the repository catalog in the object store, and answers the
// ManifestService gRPC API. Blobs belong to the upload service, which it
// asks whether a manifest's blobs exist.
//
// # Concurrency
//
// Several replicas may serve the same repository at once, with no lock and
// no database; every object is written so that any interleaving leaves a
// consistent state:
//
//   - A revision is content-addressed, so every writer of a key writes the
//     same bytes. It is written with If-None-Match, which makes a repeated or
//     concurrent push a no-op rather than a rewrite.
//   - The catalog marker has no content; it is written with If-None-Match
//     for the same reason.
//   - A referrer entry is derived from the manifest's bytes alone, so
//     concurrent writers write identical content and an unconditional put is
//     safe.
//   - A tag is written unconditionally: two pushes to one tag race in the
//     registry exactly as they race from the clients' side, and either
//     result, last writer wins, is a valid outcome.
//
// Objects are written in dependency order (revision, referrer entry, tag,
// catalog marker) and removed in the reverse order, so a crash part way
// leaves nothing pointing at a missing revision, and retrying the request
// completes it.
package manifest

import (
	"context"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// DefaultMaxManifestSize is the manifest size limit when Options leaves it
// at zero: the 4 MiB the distribution spec says clients and registries
// should expect to handle.
const DefaultMaxManifestSize = 4 << 20

// BlobStater is the part of the upload service the manifest service needs.
// uploadv1.UploadServiceClient satisfies it.
type BlobStater interface {
	StatBlob(ctx context.Context, in *uploadv1.StatBlobRequest,
		opts ...grpc.CallOption) (*uploadv1.StatBlobResponse, error)
}

// Options configures a Server.
type Options struct {
	// MaxManifestSize is the largest manifest accepted, in bytes; zero or
	// less means DefaultMaxManifestSize.
	MaxManifestSize int64
	// CacheBytes bounds the cache of manifests by digest; zero means
	// DefaultCacheBytes, less than zero no cache.
	CacheBytes int64
	// Staleness is how long a cached tag or manifest is trusted before it
	// is confirmed against the store again, and so how late this replica
	// may see a change made through another one. Zero means
	// DefaultStaleness; less than zero, confirm on every request.
	Staleness time.Duration
}

// Server implements manifestv1.ManifestServiceServer over an object store.
type Server struct {
	manifestv1.UnimplementedManifestServiceServer

	store   *objstore.Store
	blobs   BlobStater
	maxSize int64
	cache   *caches
}

// NewServer returns a Server that keeps its objects in store and asks blobs
// whether referenced blobs exist.
func NewServer(store *objstore.Store, blobs BlobStater, opts Options) *Server {
	maxSize := opts.MaxManifestSize
	if maxSize <= 0 {
		maxSize = DefaultMaxManifestSize
	}
	cacheBytes := opts.CacheBytes
	if cacheBytes == 0 {
		cacheBytes = DefaultCacheBytes
	}
	staleness := opts.Staleness
	if staleness == 0 {
		staleness = DefaultStaleness
	}
	return &Server{store: store, blobs: blobs, maxSize: maxSize,
		cache: newCaches(max(cacheBytes, 0), max(staleness, 0))}
}

// PutManifest validates a manifest, checks that what it references exists,
// and stores it under its digest and, for a tag reference, the tag.
func (s *Server) PutManifest(
	ctx context.Context, req *manifestv1.PutManifestRequest,
) (*manifestv1.PutManifestResponse, error) {
	repo := req.GetRepository()
	tag, want, err := parseTarget(repo, req.GetReference())
	if err != nil {
		return nil, err
	}

	extra, err := extraTags(req.GetTags())
	if err != nil {
		return nil, err
	}
	tags := extra
	if tag != "" {
		tags = append([]string{tag}, extra...)
	}

	content := req.GetContent()
	if int64(len(content)) > s.maxSize {
		return nil, ocierr.New(ocierr.ManifestTooBig,
			"manifest is %d bytes; the limit is %d", len(content), s.maxSize)
	}
	m, err := parse(req.GetMediaType(), content)
	if err != nil {
		return nil, err
	}

	alg := reference.SHA256
	if want != "" {
		alg = want.Algorithm()
	}
	dgst := digestOf(alg, content)
	if want != "" && dgst != want {
		return nil, ocierr.New(ocierr.DigestInvalid,
			"manifest digest is %s, not %s", dgst, want).With("digest", want.String())
	}

	if err := s.checkBlobs(ctx, repo, m.blobs()); err != nil {
		return nil, err
	}
	if err := s.checkChildren(ctx, repo, m.children()); err != nil {
		return nil, err
	}

	subject, err := s.save(ctx, repo, tags, dgst, m, content)
	if err != nil {
		return nil, err
	}
	s.recordChange(ctx, pushed(repo, dgst, m.mediaType, tags))
	return &manifestv1.PutManifestResponse{Digest: dgst.String(), Subject: subject,
		Tags: extra}, nil
}

// extraTags validates the tags a push by digest asks for (the `tag` query
// parameters), dropping repeats.
func extraTags(tags []string) ([]string, error) {
	var out []string
	for _, t := range tags {
		if err := reference.ValidateTag(t); err != nil {
			return nil, err
		}
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
	}
	return out, nil
}

// save writes a validated manifest's objects in dependency order: the
// revision, its referrer entry, its tags and the catalog marker. It returns
// the subject's digest, or "" when there is none.
func (s *Server) save(
	ctx context.Context, repo string, tags []string, dgst reference.Digest, m *parsed,
	content []byte,
) (subject string, err error) {
	// Conditional: content-addressed, so an existing object already holds
	// these bytes. (If the same bytes were pushed before with another
	// Content-Type and no mediaType field, the first media type stays.)
	revKey := layout.Key(layout.Revision{Repo: repo, Digest: dgst})
	stored := encodeRevision(m.mediaType, content)
	_, err = s.store.Put(ctx, revKey, stored, objstore.Condition{IfNoneMatch: true})
	if err != nil && !errors.Is(err, objstore.ErrPreconditionFailed) {
		return "", fmt.Errorf("manifest: store revision %s: %w", dgst, err)
	}
	if err == nil {
		// Only the bytes this replica wrote: after a precondition failure the
		// stored media type may differ from this push's.
		mediaType, content, _ := decodeRevision(stored)
		s.cacheRevision(revKey, revision{mediaType: mediaType, content: content}, time.Now())
	}

	if sub, ok := m.subject(); ok {
		// Unconditional: the entry is a function of the manifest's bytes.
		entry, err := json.Marshal(m.referrer(dgst, int64(len(content))))
		if err != nil {
			return "", fmt.Errorf("manifest: encode referrer: %w", err)
		}
		key := layout.Key(layout.Referrer{Repo: repo, Subject: sub, Digest: dgst})
		if _, err := s.store.Put(ctx, key, entry, objstore.Condition{}); err != nil {
			return "", fmt.Errorf("manifest: file referrer of %s: %w", sub, err)
		}
		subject = sub.String()
	}

	for _, tag := range tags {
		// Unconditional: moving a tag is last writer wins.
		key := layout.Key(layout.Tag{Repo: repo, Tag: tag})
		begin := time.Now()
		if _, err := s.store.Put(ctx, key, []byte(dgst), objstore.Condition{}); err != nil {
			s.cache.tags.remove(key)
			return "", fmt.Errorf("manifest: tag %s: %w", tag, err)
		}
		s.cache.tags.put(key, dgst, 1, begin)
	}

	// Conditional: the marker has no content, so an existing one is as good.
	_, err = s.store.Put(ctx, layout.Key(layout.Repository{Repo: repo}), nil,
		objstore.Condition{IfNoneMatch: true})
	if err != nil && !errors.Is(err, objstore.ErrPreconditionFailed) {
		return "", fmt.Errorf("manifest: catalog %s: %w", repo, err)
	}
	return subject, nil
}

// GetManifest returns a manifest by tag or digest, or only its descriptor
// for a head request.
//
// The Accept list is not consulted: the service returns the stored manifest
// whatever the client accepts, and the descriptor's media type tells the
// client what it got. A registry cannot convert between manifest formats
// without changing the digest, and clients already handle being sent a type
// they did not list first.
func (s *Server) GetManifest(
	ctx context.Context, req *manifestv1.GetManifestRequest,
) (*manifestv1.GetManifestResponse, error) {
	repo := req.GetRepository()
	tag, dgst, err := parseTarget(repo, req.GetReference())
	if err != nil {
		return nil, err
	}
	if dgst, err = s.resolveTarget(ctx, repo, tag, dgst); err != nil {
		return nil, err
	}

	if req.GetHead() {
		mediaType, size, err := s.statRevision(ctx, repo, dgst)
		if err != nil {
			return nil, err
		}
		desc := &manifestv1.Descriptor{MediaType: mediaType, Digest: dgst.String(), Size: size}
		return &manifestv1.GetManifestResponse{Descriptor_: desc}, nil
	}

	mediaType, content, err := s.readRevision(ctx, repo, dgst)
	if err != nil {
		return nil, err
	}
	desc := &manifestv1.Descriptor{
		MediaType: mediaType,
		Digest:    dgst.String(),
		Size:      int64(len(content)),
	}
	return &manifestv1.GetManifestResponse{Descriptor_: desc, Content: content}, nil
}

// DeleteManifest deletes a tag, or a manifest by digest together with every
// tag of the repository that points at it and its referrer entry.
func (s *Server) DeleteManifest(
	ctx context.Context, req *manifestv1.DeleteManifestRequest,
) (*manifestv1.DeleteManifestResponse, error) {
	repo := req.GetRepository()
	tag, dgst, err := parseTarget(repo, req.GetReference())
	if err != nil {
		return nil, err
	}

	if tag != "" {
		err = s.deleteTag(ctx, repo, tag)
	} else {
		err = s.deleteRevision(ctx, repo, dgst)
	}
	if err != nil {
		return nil, err
	}
	s.recordChange(ctx, deleted(repo, tag, dgst))
	return &manifestv1.DeleteManifestResponse{}, nil
}

// ListTags lists a repository's tags in lexical (byte) order, a page at a
// time.
func (s *Server) ListTags(
	ctx context.Context, req *manifestv1.ListTagsRequest,
) (*manifestv1.ListTagsResponse, error) {
	repo := req.GetRepository()
	if err := reference.ValidateName(repo); err != nil {
		return nil, err
	}

	after := ""
	if req.GetLast() != "" {
		after = layout.Key(layout.Tag{Repo: repo, Tag: req.GetLast()})
	}
	tags, more, err := s.listPage(ctx, layout.Key(layout.Tags{Repo: repo}),
		layout.Key(layout.Tag{Repo: repo}), after, req.GetLimit())
	if err != nil {
		return nil, fmt.Errorf("manifest: list tags of %s: %w", repo, err)
	}

	if len(tags) == 0 {
		known, err := s.repositoryKnown(ctx, repo, after != "")
		if err != nil {
			return nil, err
		}
		if !known {
			return nil, ocierr.New(ocierr.NameUnknown, "repository %q is not known", repo)
		}
	}
	return &manifestv1.ListTagsResponse{Tags: tags, More: more}, nil
}

// ListRepositories lists the catalog in lexical (byte) order, a page at a
// time. A repository enters the catalog with its first manifest.
//
// Shortcoming: nothing removes a catalog entry, so a repository whose
// manifests were all deleted is still listed here (while ListTags answers
// NAME_UNKNOWN for it); removing the entry safely would need to know that no
// replica is pushing to the repository at that moment.
func (s *Server) ListRepositories(
	ctx context.Context, req *manifestv1.ListRepositoriesRequest,
) (*manifestv1.ListRepositoriesResponse, error) {
	after := ""
	if req.GetLast() != "" {
		after = layout.Key(layout.Repository{Repo: req.GetLast()})
	}
	names, more, err := s.listPage(ctx, layout.Key(layout.Repositories{}),
		layout.Key(layout.Repository{}), after, req.GetLimit())
	if err != nil {
		return nil, fmt.Errorf("manifest: list repositories: %w", err)
	}
	return &manifestv1.ListRepositoriesResponse{Repositories: names, More: more}, nil
}

// ListReferrers lists the manifests of a repository whose subject is a
// digest, optionally only those of one artifact type. A subject with no
// referrers, stored or not, has an empty list.
//
// Shortcoming: the list is not paged and costs one object read per
// referrer, so a subject with thousands of referrers makes a slow, large
// response; the API has no page token to spread it out.
func (s *Server) ListReferrers(
	ctx context.Context, req *manifestv1.ListReferrersRequest,
) (*manifestv1.ListReferrersResponse, error) {
	repo := req.GetRepository()
	if err := reference.ValidateName(repo); err != nil {
		return nil, err
	}
	subject, err := reference.ParseDigest(req.GetDigest())
	if err != nil {
		return nil, err
	}

	keys, _, _, err := s.store.List(ctx,
		layout.Key(layout.Referrers{Repo: repo, Subject: subject}), "", "", 0)
	if err != nil {
		return nil, fmt.Errorf("manifest: list referrers of %s: %w", subject, err)
	}
	entries := make([]*descriptor, len(keys))
	err = parallel(ctx, len(keys), func(ctx context.Context, i int) error {
		b, _, err := s.store.Get(ctx, keys[i])
		if errors.Is(err, objstore.ErrNotFound) {
			return nil // deleted since the listing
		}
		if err != nil {
			return fmt.Errorf("manifest: read referrer %s: %w", keys[i], err)
		}
		var d descriptor
		if err := json.Unmarshal(b, &d); err != nil {
			return fmt.Errorf("manifest: corrupt referrer %s: %w", keys[i], err)
		}
		entries[i] = &d
		return nil
	})
	if err != nil {
		return nil, err
	}

	filter := req.GetArtifactType()
	resp := &manifestv1.ListReferrersResponse{Filtered: filter != ""}
	for _, d := range entries {
		if d == nil || (filter != "" && d.ArtifactType != filter) {
			continue
		}
		resp.Referrers = append(resp.Referrers, &manifestv1.Descriptor{
			MediaType:    d.MediaType,
			Digest:       d.Digest,
			Size:         d.Size,
			ArtifactType: d.ArtifactType,
			Annotations:  d.Annotations,
		})
	}
	return resp, nil
}

// listPage lists the names whose keys are under prefix and sort after the
// key after, at most limit of them (zero or less: all), and whether more
// follow. blank is the key of the empty name; a name's key is blank with
// the name inserted after prefix. It asks the store for one key beyond the
// page, so that more is exact even where a store reports a listing
// truncated when the page ends exactly at the last key.
func (s *Server) listPage(
	ctx context.Context, prefix, blank, after string, limit int32,
) (names []string, more bool, err error) {
	n := 0
	if limit > 0 {
		n = int(limit) + 1
	}
	keys, _, _, err := s.store.List(ctx, prefix, after, "", n)
	if err != nil {
		return nil, false, err
	}

	if limit > 0 && len(keys) > int(limit) {
		keys, more = keys[:limit], true
	}
	suffix := strings.TrimPrefix(blank, prefix)
	names = make([]string, len(keys))
	for i, k := range keys {
		names[i] = strings.TrimSuffix(strings.TrimPrefix(k, prefix), suffix)
	}
	return names, more, nil
}

// parseTarget validates a repository name and a manifest reference, which
// is either a tag (returned in tag) or a digest (returned in dgst).
func parseTarget(repo, ref string) (tag string, dgst reference.Digest, err error) {
	if err := reference.ValidateName(repo); err != nil {
		return "", "", err
	}
	if reference.IsDigest(ref) {
		dgst, err = reference.ParseDigest(ref)
		return "", dgst, err
	}
	if err := reference.ValidateTag(ref); err != nil {
		return "", "", err
	}
	return ref, "", nil
}

// resolveTarget returns the digest a parsed target names: dgst itself, or
// what tag points at.
func (s *Server) resolveTarget(
	ctx context.Context, repo, tag string, dgst reference.Digest,
) (reference.Digest, error) {
	if tag == "" {
		return dgst, nil
	}
	return s.resolveTag(ctx, repo, tag)
}

// digestOf returns the digest of b under alg, which must be supported.
func digestOf(alg reference.Algorithm, b []byte) reference.Digest {
	var sum []byte
	switch alg {
	case reference.SHA512:
		s := sha512.Sum512(b)
		sum = s[:]
	default:
		s := sha256.Sum256(b)
		sum = s[:]
	}
	return reference.Digest(string(alg) + ":" + hex.EncodeToString(sum))
}

// checkBlobs checks that every blob is visible in repo with the size its
// descriptor states.
func (s *Server) checkBlobs(ctx context.Context, repo string, blobs []descriptor) error {
	unique := uniqueDigests(blobs)
	var (
		mu    sync.Mutex
		sizes = make(map[string]int64, len(unique))
	)
	err := parallel(ctx, len(unique), func(ctx context.Context, i int) error {
		size, err := s.blobSize(ctx, repo, unique[i])
		if err != nil {
			return err
		}
		mu.Lock()
		sizes[unique[i]] = size
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	return checkSizes(blobs, sizes)
}

// checkChildren checks that every manifest an index lists is stored in
// repo with the size its descriptor states. The distribution spec lets a
// registry refuse a manifest that references content it does not have, and
// accepting an index whose children are missing would hand clients an image
// they cannot pull. A child whose media type is not a manifest type may be
// a blob instead (BuildKit's registry cache lists its layers this way), so
// for such a child a visible blob also counts.
func (s *Server) checkChildren(ctx context.Context, repo string, children []descriptor) error {
	unique := uniqueDigests(children)
	mediaTypes := make(map[string]string, len(children))
	for _, c := range children {
		mediaTypes[c.Digest] = c.MediaType
	}
	var (
		mu    sync.Mutex
		sizes = make(map[string]int64, len(unique))
	)
	err := parallel(ctx, len(unique), func(ctx context.Context, i int) error {
		dgst := reference.Digest(unique[i])
		_, size, err := s.statRevision(ctx, repo, dgst)
		if ocierr.Is(err, ocierr.ManifestUnknown) {
			err = ocierr.New(ocierr.ManifestBlobUnknown,
				"manifest %s is not in repository %q", dgst, repo).With("digest", dgst.String())
			if !isManifestType(mediaTypes[unique[i]]) {
				size, err = s.blobSize(ctx, repo, unique[i])
			}
		}
		if err != nil {
			return err
		}
		mu.Lock()
		sizes[unique[i]] = size
		mu.Unlock()
		return nil
	})
	if err != nil {
		return err
	}
	return checkSizes(children, sizes)
}

// blobSize asks the upload service for the size of a blob visible in repo.
// A blob it does not know is MANIFEST_BLOB_UNKNOWN.
func (s *Server) blobSize(ctx context.Context, repo, dgst string) (int64, error) {
	resp, err := s.blobs.StatBlob(ctx, &uploadv1.StatBlobRequest{Repository: repo, Digest: dgst})
	if ocierr.Is(err, ocierr.BlobUnknown) {
		return 0, ocierr.New(ocierr.ManifestBlobUnknown,
			"blob %s is not in repository %q", dgst, repo).With("digest", dgst)
	}
	if err != nil {
		return 0, fmt.Errorf("manifest: stat blob %s: %w", dgst, err)
	}
	return resp.GetBlob().GetSize(), nil
}

// uniqueDigests returns the distinct digests of ds, in first-seen order.
func uniqueDigests(ds []descriptor) []string {
	seen := make(map[string]bool, len(ds))
	var out []string
	for _, d := range ds {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			out = append(out, d.Digest)
		}
	}
	return out
}

// checkSizes checks each descriptor's size against the size found for its
// digest.
func checkSizes(ds []descriptor, sizes map[string]int64) error {
	for _, d := range ds {
		if got := sizes[d.Digest]; got != d.Size {
			return ocierr.New(ocierr.ManifestInvalid,
				"descriptor of %s says %d bytes; the content has %d", d.Digest, d.Size, got).
				With("digest", d.Digest)
		}
	}
	return nil
}

// resolveTag returns the digest a tag points at, from the tag cache while
// the entry is within the staleness bound.
func (s *Server) resolveTag(ctx context.Context, repo, tag string) (reference.Digest, error) {
	key := layout.Key(layout.Tag{Repo: repo, Tag: tag})
	begin := time.Now()
	if dgst, checked, ok := s.cache.tags.get(key); ok && s.cache.fresh(checked, begin) {
		return dgst, nil
	}

	b, _, err := s.store.Get(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		s.cache.tags.remove(key)
		return "", ocierr.New(ocierr.ManifestUnknown, "tag %q is not in repository %q", tag, repo)
	}
	if err != nil {
		return "", fmt.Errorf("manifest: read tag %s: %w", tag, err)
	}
	dgst, err := reference.ParseDigest(string(b))
	if err != nil {
		return "", fmt.Errorf("manifest: corrupt tag %s in %s: %.80q", tag, repo, b)
	}
	s.cache.tags.put(key, dgst, 1, begin)
	return dgst, nil
}

// readRevision returns a stored manifest, from the revision cache when it
// holds it. The content must not be modified.
func (s *Server) readRevision(
	ctx context.Context, repo string, dgst reference.Digest,
) (mediaType string, content []byte, err error) {
	key := layout.Key(layout.Revision{Repo: repo, Digest: dgst})
	if r, ok, err := s.cachedRevision(ctx, repo, dgst, key); err != nil || ok {
		return r.mediaType, r.content, err
	}

	begin := time.Now()
	b, _, err := s.store.Get(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return "", nil, manifestUnknown(repo, dgst)
	}
	if err != nil {
		return "", nil, fmt.Errorf("manifest: read %s: %w", dgst, err)
	}
	mediaType, content, err = decodeRevision(b)
	if err != nil {
		return "", nil, fmt.Errorf("manifest: %s: %w", key, err)
	}
	s.cacheRevision(key, revision{mediaType: mediaType, content: content}, begin)
	return mediaType, content, nil
}

// cachedRevision returns the cached revision under key, if there is one. An
// entry older than the staleness bound is confirmed with a HEAD first, so
// that a manifest deleted through another replica stops being served
// within the bound.
func (s *Server) cachedRevision(
	ctx context.Context, repo string, dgst reference.Digest, key string,
) (revision, bool, error) {
	r, checked, ok := s.cache.revisions.get(key)
	if !ok {
		return revision{}, false, nil
	}
	now := time.Now()
	if s.cache.fresh(checked, now) {
		return r, true, nil
	}

	_, err := s.store.Head(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		s.cache.revisions.remove(key)
		return revision{}, false, manifestUnknown(repo, dgst)
	}
	if err != nil {
		return revision{}, false, fmt.Errorf("manifest: stat %s: %w", dgst, err)
	}
	s.cache.revisions.touch(key, now)
	return r, true, nil
}

// cacheRevision keeps a revision read or written at checked.
func (s *Server) cacheRevision(key string, r revision, checked time.Time) {
	s.cache.revisions.put(key, r, revisionCost(key, r), checked)
}

// statRevision returns a stored manifest's media type and size: from the
// revision cache when it holds the manifest, else reading only the
// revision's first line.
func (s *Server) statRevision(
	ctx context.Context, repo string, dgst reference.Digest,
) (mediaType string, size int64, err error) {
	key := layout.Key(layout.Revision{Repo: repo, Digest: dgst})
	if r, ok, err := s.cachedRevision(ctx, repo, dgst, key); err != nil || ok {
		return r.mediaType, int64(len(r.content)), err
	}

	r, info, err := s.store.Open(ctx, key, 0, maxMediaTypeLen+1)
	if errors.Is(err, objstore.ErrNotFound) {
		return "", 0, manifestUnknown(repo, dgst)
	}
	if err != nil {
		return "", 0, fmt.Errorf("manifest: stat %s: %w", dgst, err)
	}
	defer r.Close()
	head, err := io.ReadAll(r)
	if err != nil {
		return "", 0, fmt.Errorf("manifest: stat %s: %w", dgst, err)
	}

	mediaType, _, err = decodeRevision(head)
	if err != nil {
		return "", 0, fmt.Errorf("manifest: %s: %w", key, err)
	}
	return mediaType, info.Size - int64(len(mediaType)) - 1, nil
}

// manifestUnknown is the error for a digest repo does not hold.
func manifestUnknown(repo string, dgst reference.Digest) error {
	return ocierr.New(ocierr.ManifestUnknown, "manifest %s is not in repository %q", dgst, repo)
}

// deleteTag deletes a tag.
//
// Shortcoming: the existence check and the delete are two requests and the
// store offers no conditional delete, so a tag pushed by another replica
// between them is deleted too; the cost is a lost tag push that was racing a
// delete of the same tag, which the client cannot tell from a push that lost
// an ordinary race.
func (s *Server) deleteTag(ctx context.Context, repo, tag string) error {
	key := layout.Key(layout.Tag{Repo: repo, Tag: tag})
	_, err := s.store.Head(ctx, key)
	if errors.Is(err, objstore.ErrNotFound) {
		return ocierr.New(ocierr.ManifestUnknown, "tag %q is not in repository %q", tag, repo)
	}
	if err != nil {
		return fmt.Errorf("manifest: stat tag %s: %w", tag, err)
	}

	s.cache.tags.remove(key)
	if err := s.store.Delete(ctx, key); err != nil {
		return fmt.Errorf("manifest: delete tag %s: %w", tag, err)
	}
	s.cache.tags.remove(key) // again: a read may have refilled it meanwhile
	return nil
}

// deleteRevision deletes a manifest, the tags of repo that point at it and
// its referrer entry. It removes the revision last, so that a failure part
// way leaves the manifest visible and a retry finishes the job.
//
// Shortcoming: with no lock, a replica that tags this digest while it is
// being deleted can leave a tag pointing at the deleted revision. Such a tag
// is listed by ListTags but answers MANIFEST_UNKNOWN, until it is pushed
// again or deleted.
func (s *Server) deleteRevision(ctx context.Context, repo string, dgst reference.Digest) error {
	mediaType, content, err := s.readRevision(ctx, repo, dgst)
	if err != nil {
		return err
	}

	if err := s.deleteTagsOf(ctx, repo, dgst); err != nil {
		return err
	}

	if kinds[mediaType] != kindOpaque {
		m, err := parse(mediaType, content)
		if err != nil {
			return fmt.Errorf("manifest: %s: %w: %v", dgst, errCorruptRevision, err)
		}
		if subject, ok := m.subject(); ok {
			key := layout.Key(layout.Referrer{Repo: repo, Subject: subject, Digest: dgst})
			if err := s.store.Delete(ctx, key); err != nil {
				return fmt.Errorf("manifest: delete referrer of %s: %w", subject, err)
			}
		}
	}

	key := layout.Key(layout.Revision{Repo: repo, Digest: dgst})
	s.cache.revisions.remove(key)
	if err := s.store.Delete(ctx, key); err != nil {
		return fmt.Errorf("manifest: delete %s: %w", dgst, err)
	}
	return nil
}

// deleteTagsOf deletes every tag of repo that points at dgst.
//
// Shortcoming: a tag's object holds its digest, so finding the tags of one
// manifest reads every tag of the repository, one request each (eight at a
// time); deleting a manifest in a repository with many thousands of tags is
// slow. And since a tag is read and then deleted without a condition, a tag
// another replica moves to a different manifest in between is deleted too.
func (s *Server) deleteTagsOf(ctx context.Context, repo string, dgst reference.Digest) error {
	keys, _, _, err := s.store.List(ctx, layout.Key(layout.Tags{Repo: repo}), "", "", 0)
	if err != nil {
		return fmt.Errorf("manifest: list tags of %s: %w", repo, err)
	}
	return parallel(ctx, len(keys), func(ctx context.Context, i int) error {
		b, _, err := s.store.Get(ctx, keys[i])
		if errors.Is(err, objstore.ErrNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("manifest: read tag %s: %w", keys[i], err)
		}
		if string(b) != dgst.String() {
			return nil
		}
		s.cache.tags.remove(keys[i])
		if err := s.store.Delete(ctx, keys[i]); err != nil {
			return fmt.Errorf("manifest: delete tag %s: %w", keys[i], err)
		}
		return nil
	})
}

// repositoryKnown reports whether repo holds any manifest or, when
// checkTags is set, any tag. ListTags asks it when a page came back empty.
func (s *Server) repositoryKnown(ctx context.Context, repo string, checkTags bool) (bool, error) {
	if checkTags {
		keys, _, _, err := s.store.List(ctx, layout.Key(layout.Tags{Repo: repo}), "", "", 1)
		if err != nil {
			return false, fmt.Errorf("manifest: list tags of %s: %w", repo, err)
		}
		if len(keys) > 0 {
			return true, nil
		}
	}
	keys, _, _, err := s.store.List(ctx, layout.Key(layout.Revisions{Repo: repo}), "", "", 1)
	if err != nil {
		return false, fmt.Errorf("manifest: list manifests of %s: %w", repo, err)
	}
	return len(keys) > 0, nil
}
