package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/ocierr"
)

// base answers GET /v2/: the caller is authenticated, or anonymous access
// is on.
func (g *gateway) base(w http.ResponseWriter, req *request) error {
	return writeJSON(w, "application/json", struct{}{})
}

// page is the pagination a list request asks for.
type page struct {
	// n is the most entries wanted; hasN is false when the client did not
	// say, and the service's own limit applies.
	n    int32
	hasN bool
	last string
}

// parsePage reads the n and last query parameters. An n that is not a
// non-negative 32-bit integer is refused with UNSUPPORTED and status 400.
// The error table has no pagination code, so clients that look for Docker's
// PAGINATION_NUMBER_INVALID do not find it; the status still tells them the
// request was wrong.
func parsePage(q url.Values) (page, error) {
	p := page{last: q.Get("last")}
	if !q.Has("n") {
		return p, nil
	}
	n, err := strconv.ParseInt(q.Get("n"), 10, 32)
	if err != nil || n < 0 {
		return page{}, ocierr.New(ocierr.Unsupported,
			"n must be a non-negative integer").WithStatus(http.StatusBadRequest)
	}
	p.n, p.hasN = int32(n), true
	return p, nil
}

// limit is the limit to ask the service for. For n=0 it asks for one entry,
// so that an unknown repository still fails, and the answer is dropped.
func (p page) limit() int32 {
	if p.hasN && p.n == 0 {
		return 1
	}
	return p.n
}

// empty reports whether the client asked for no entries at all.
func (p page) empty() bool { return p.hasN && p.n == 0 }

// setNextLink adds the Link header that points at the next page.
func (p page) setNextLink(h http.Header, path string, entries []string, more bool) {
	if !more || len(entries) == 0 || p.empty() {
		return
	}
	q := "last=" + url.QueryEscape(entries[len(entries)-1])
	if p.hasN {
		q += "&n=" + strconv.Itoa(int(p.n))
	}
	h.Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, path, q))
}

// listTags answers GET /v2/<name>/tags/list.
func (g *gateway) listTags(w http.ResponseWriter, req *request) error {
	p, err := parsePage(req.URL.Query())
	if err != nil {
		return err
	}
	resp, err := g.manifests.ListTags(req.Context(), &manifestv1.ListTagsRequest{
		Repository: req.name,
		Limit:      p.limit(),
		Last:       p.last,
	})
	if err != nil {
		return err
	}

	tags := nonNil(resp.GetTags())
	if p.empty() {
		tags = []string{}
	}
	p.setNextLink(w.Header(), "/v2/"+req.name+"/tags/list", tags, resp.GetMore())
	return writeJSON(w, "application/json", struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{req.name, tags})
}

// catalog answers GET /v2/_catalog.
func (g *gateway) catalog(w http.ResponseWriter, req *request) error {
	p, err := parsePage(req.URL.Query())
	if err != nil {
		return err
	}
	resp, err := g.manifests.ListRepositories(req.Context(), &manifestv1.ListRepositoriesRequest{
		Limit: p.limit(),
		Last:  p.last,
	})
	if err != nil {
		return err
	}

	repos := nonNil(resp.GetRepositories())
	if p.empty() {
		repos = []string{}
	}
	p.setNextLink(w.Header(), "/v2/_catalog", repos, resp.GetMore())
	return writeJSON(w, "application/json", struct {
		Repositories []string `json:"repositories"`
	}{repos})
}

// ociIndexType is the media type of an OCI image index.
const ociIndexType = "application/vnd.oci.image.index.v1+json"

// descriptor is an OCI content descriptor as JSON.
type descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// listReferrers answers GET /v2/<name>/referrers/<digest> with an image
// index of the manifests whose subject is the digest.
func (g *gateway) listReferrers(w http.ResponseWriter, req *request) error {
	resp, err := g.manifests.ListReferrers(req.Context(), &manifestv1.ListReferrersRequest{
		Repository:   req.name,
		Digest:       req.param,
		ArtifactType: req.URL.Query().Get("artifactType"),
	})
	if err != nil {
		return err
	}

	manifests := make([]descriptor, 0, len(resp.GetReferrers()))
	for _, d := range resp.GetReferrers() {
		manifests = append(manifests, descriptor{
			MediaType:    d.GetMediaType(),
			Digest:       d.GetDigest(),
			Size:         d.GetSize(),
			ArtifactType: d.GetArtifactType(),
			Annotations:  d.GetAnnotations(),
		})
	}
	if resp.GetFiltered() {
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	return writeJSON(w, ociIndexType, struct {
		SchemaVersion int          `json:"schemaVersion"`
		MediaType     string       `json:"mediaType"`
		Manifests     []descriptor `json:"manifests"`
	}{2, ociIndexType, manifests})
}

// writeJSON answers 200 with v as JSON.
func writeJSON(w http.ResponseWriter, contentType string, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode answer: %w", err)
	}

	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(body)
	return err
}

// nonNil returns s, or an empty slice for nil, so that JSON shows [] and
// never null.
func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
