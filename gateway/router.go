package gateway

import (
	"net/http"
	"slices"
	"strings"

	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// route is a URL template of the distribution API; it names the route in
// logs.
type route string

// The routes of the distribution API.
const (
	routeBase      route = "/v2/"
	routeCatalog   route = "/v2/_catalog"
	routeManifest  route = "/v2/{name}/manifests/{reference}"
	routeBlob      route = "/v2/{name}/blobs/{digest}"
	routeUploads   route = "/v2/{name}/blobs/uploads/"
	routeUpload    route = "/v2/{name}/blobs/uploads/{uuid}"
	routeTags      route = "/v2/{name}/tags/list"
	routeReferrers route = "/v2/{name}/referrers/{digest}"
)

// handlerFunc answers one route and method. It returns an error instead of
// writing one, so that every error is written by gateway.fail.
type handlerFunc func(w http.ResponseWriter, req *request) error

// router maps a route and a method to a handler.
type router map[route]map[string]handlerFunc

// handle registers h for route ro and methods.
func (rt router) handle(ro route, h handlerFunc, methods ...string) {
	if rt[ro] == nil {
		rt[ro] = map[string]handlerFunc{}
	}
	for _, m := range methods {
		rt[ro][m] = h
	}
}

// lookup returns the handler for ro and method, or UNSUPPORTED (405) naming
// the methods the route does allow.
func (rt router) lookup(ro route, method string) (handlerFunc, error) {
	if h, ok := rt[ro][method]; ok {
		return h, nil
	}
	allowed := make([]string, 0, len(rt[ro]))
	for m := range rt[ro] {
		allowed = append(allowed, m)
	}
	slices.Sort(allowed)
	return nil, &methodError{allowed: allowed}
}

// methodError is a method a route does not answer.
type methodError struct{ allowed []string }

func (e *methodError) Error() string {
	return "method not allowed; allowed: " + strings.Join(e.allowed, ", ")
}

// Unwrap makes the error an UNSUPPORTED for the client.
func (e *methodError) Unwrap() error {
	return ocierr.New(ocierr.Unsupported, "method not allowed")
}

// routeMatch is a request path split into its route and parts.
type routeMatch struct {
	route route
	name  string
	param string
}

// pathMarkers are the path segments that end a repository name. Because
// names contain slashes, a path is split at the last marker it holds; on a
// tie the longer marker, listed first, wins.
var pathMarkers = []struct {
	marker string
	route  route
}{
	{"/blobs/uploads/", routeUploads},
	{"/manifests/", routeManifest},
	{"/blobs/", routeBlob},
	{"/tags/list", routeTags},
	{"/referrers/", routeReferrers},
}

// errNoRoute answers a path that is no route of the API.
var errNoRoute = ocierr.New(ocierr.Unsupported, "no such endpoint").WithStatus(http.StatusNotFound)

// match splits a request path into its route, repository name and last
// part. It does not validate them; see routeMatch.validate.
func match(path string) (routeMatch, error) {
	switch path {
	case "/v2", "/v2/":
		return routeMatch{route: routeBase}, nil
	case "/v2/_catalog":
		return routeMatch{route: routeCatalog}, nil
	}
	rest, ok := strings.CutPrefix(path, "/v2/")
	if !ok {
		return routeMatch{}, errNoRoute
	}

	at, best := -1, -1
	for i, m := range pathMarkers {
		if j := strings.LastIndex(rest, m.marker); j > at {
			at, best = j, i
		}
	}
	if best < 0 {
		return routeMatch{}, errNoRoute
	}

	m := pathMarkers[best]
	out := routeMatch{route: m.route, name: rest[:at], param: rest[at+len(m.marker):]}
	switch {
	case m.route == routeUploads:
		if out.param != "" {
			out.route = routeUpload
		}
	case m.route == routeTags:
		if out.param != "" {
			return routeMatch{}, errNoRoute
		}
	case out.param == "":
		return routeMatch{}, errNoRoute
	}
	if strings.Contains(out.param, "/") {
		return routeMatch{}, errNoRoute
	}
	return out, nil
}

// maxUploadIDLength bounds an upload id from a path.
const maxUploadIDLength = 256

// validate checks the repository name and the path's last part.
func (m routeMatch) validate() error {
	if m.route == routeBase || m.route == routeCatalog {
		return nil
	}
	if err := reference.ValidateName(m.name); err != nil {
		return err
	}
	switch m.route {
	case routeBlob, routeReferrers:
		_, err := reference.ParseDigest(m.param)
		return err
	case routeManifest:
		return validateReference(m.param)
	case routeUpload:
		if len(m.param) > maxUploadIDLength {
			return ocierr.New(ocierr.BlobUploadUnknown, "upload id too long")
		}
	}
	return nil
}

// validateReference checks a manifest reference: a tag or a digest.
func validateReference(ref string) error {
	if reference.IsDigest(ref) {
		_, err := reference.ParseDigest(ref)
		return err
	}
	return reference.ValidateTag(ref)
}
