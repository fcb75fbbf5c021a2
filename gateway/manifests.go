package gateway

import (
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc"

	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	"github.com/keel-registry/keel/internal/ocierr"
)

// manifestFraming is what a GetManifest answer may add to the manifest's
// bytes: its descriptor and the message framing.
const manifestFraming = 64 << 10

// putManifest answers PUT /v2/<name>/manifests/<reference>. A manifest over
// the size limit is refused before its body is read, or as soon as the
// limit is passed for a body of unknown length.
func (g *gateway) putManifest(w http.ResponseWriter, req *request) error {
	if req.ContentLength > g.maxManifestSize {
		return g.manifestTooBig()
	}
	content, err := io.ReadAll(io.LimitReader(req.Body, g.maxManifestSize+1))
	if err != nil {
		return &bodyError{code: ocierr.ManifestInvalid, err: err}
	}
	if int64(len(content)) > g.maxManifestSize {
		return g.manifestTooBig()
	}

	resp, err := g.manifests.PutManifest(req.Context(), &manifestv1.PutManifestRequest{
		Repository: req.name,
		Reference:  req.param,
		MediaType:  req.Header.Get("Content-Type"),
		Content:    content,
		Tags:       req.URL.Query()["tag"],
	})
	if err != nil {
		return err
	}

	req.digest = resp.GetDigest()
	h := w.Header()
	h.Set("Location", "/v2/"+req.name+"/manifests/"+resp.GetDigest())
	h.Set("Docker-Content-Digest", resp.GetDigest())
	if resp.GetSubject() != "" {
		h.Set("OCI-Subject", resp.GetSubject())
	}
	for _, tag := range resp.GetTags() {
		h.Add("OCI-Tag", tag)
	}
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

func (g *gateway) manifestTooBig() error {
	return ocierr.New(ocierr.ManifestTooBig, "manifest exceeds %d bytes", g.maxManifestSize)
}

// getManifest answers GET and HEAD /v2/<name>/manifests/<reference>.
func (g *gateway) getManifest(w http.ResponseWriter, req *request) error {
	head := req.Method == http.MethodHead
	resp, err := g.manifests.GetManifest(req.Context(),
		&manifestv1.GetManifestRequest{
			Repository: req.name,
			Reference:  req.param,
			Accept:     acceptedTypes(req.Header.Values("Accept")),
			Head:       head,
		},
		grpc.MaxCallRecvMsgSize(int(g.maxManifestSize)+manifestFraming))
	if err != nil {
		return err
	}

	desc := resp.GetDescriptor_()
	req.digest = desc.GetDigest()
	size := int64(len(resp.GetContent()))
	if head {
		size = desc.GetSize()
	}
	h := w.Header()
	h.Set("Content-Type", desc.GetMediaType())
	h.Set("Docker-Content-Digest", desc.GetDigest())
	h.Set("Content-Length", strconv.FormatInt(size, 10))
	w.WriteHeader(http.StatusOK)
	if head {
		return nil
	}
	_, err = w.Write(resp.GetContent())
	return err
}

// acceptedTypes lists the media types of every Accept header, in order and
// without parameters or repeats.
func acceptedTypes(headers []string) []string {
	var out []string
	for _, h := range headers {
		for _, part := range strings.Split(h, ",") {
			mt, _, _ := strings.Cut(part, ";")
			mt = strings.TrimSpace(mt)
			if mt != "" && !slices.Contains(out, mt) {
				out = append(out, mt)
			}
		}
	}
	return out
}

// deleteManifest answers DELETE /v2/<name>/manifests/<reference>: a digest
// deletes the manifest, a tag only the tag.
func (g *gateway) deleteManifest(w http.ResponseWriter, req *request) error {
	_, err := g.manifests.DeleteManifest(req.Context(), &manifestv1.DeleteManifestRequest{
		Repository: req.name,
		Reference:  req.param,
	})
	if err != nil {
		return err
	}

	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}
