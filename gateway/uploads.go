package gateway

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// startUpload answers POST /v2/<name>/blobs/uploads/: a cross-repository
// mount, a monolithic upload, or a new session.
func (g *gateway) startUpload(w http.ResponseWriter, req *request) error {
	q := req.URL.Query()
	switch {
	case q.Has("mount"):
		return g.mountBlob(w, req, q.Get("mount"), q.Get("from"))
	case q.Has("digest"):
		return g.uploadWhole(w, req, q.Get("digest"))
	}
	return g.openSession(w, req)
}

// openSession starts an upload session and answers 202 with its URL.
func (g *gateway) openSession(w http.ResponseWriter, req *request) error {
	resp, err := g.uploads.StartUpload(req.Context(), &uploadv1.StartUploadRequest{
		Repository:      req.name,
		DigestAlgorithm: algorithmHint(req.URL.Query()),
	})
	if err != nil {
		return err
	}

	req.upload = resp.GetStatus().GetUploadId()
	setUploadHeaders(w.Header(), req.name, resp.GetStatus())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// algorithmHint returns the digest algorithm a POST says its session will
// be closed with, so that the upload service hashes in it from the first
// byte: the digest-algorithm parameter, else the algorithm of the digest
// in a mount or digest parameter; "" when the request does not say.
func algorithmHint(q url.Values) string {
	if a := q.Get("digest-algorithm"); a != "" {
		return a
	}
	for _, k := range []string{"mount", "digest"} {
		if d, err := reference.ParseDigest(q.Get(k)); err == nil {
			return string(d.Algorithm())
		}
	}
	return ""
}

// mountBlob links a blob from another repository. When that is not
// possible (no source, no pull access to it, or the blob is not there) it
// opens a session instead, as the specification asks.
func (g *gateway) mountBlob(w http.ResponseWriter, req *request, digest, from string) error {
	req.digest = digest
	if from == "" {
		return g.openSession(w, req)
	}
	if _, err := reference.ParseDigest(digest); err != nil {
		return err
	}
	if err := reference.ValidateName(from); err != nil {
		return err
	}
	ok, err := g.allowed(req, repositoryScope(from, actionPull))
	if err != nil {
		return err
	}
	if !ok {
		return g.openSession(w, req)
	}

	resp, err := g.uploads.MountBlob(req.Context(), &uploadv1.MountBlobRequest{
		Repository:     req.name,
		FromRepository: from,
		Digest:         digest,
	})
	if ocierr.Is(err, ocierr.BlobUnknown) || ocierr.Is(err, ocierr.NameUnknown) {
		return g.openSession(w, req)
	}
	if err != nil {
		return err
	}
	return blobCreated(w, req, resp.GetBlob())
}

// allowed reports whether the caller may take action s, for a check whose
// failure is not an error.
func (g *gateway) allowed(req *request, s scope) (bool, error) {
	d, err := g.access.decide(req.Context(), req.Request, []scope{s})
	if ocierr.Is(err, ocierr.Unauthorized) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return d.allows([]scope{s}), nil
}

// uploadWhole stores a blob sent in one POST ?digest= request: it opens a
// session and commits the body to it.
func (g *gateway) uploadWhole(w http.ResponseWriter, req *request, digest string) error {
	req.digest = digest
	if _, err := reference.ParseDigest(digest); err != nil {
		return err
	}
	start, err := g.uploads.StartUpload(req.Context(), &uploadv1.StartUploadRequest{
		Repository:      req.name,
		DigestAlgorithm: algorithmHint(req.URL.Query()),
	})
	if err != nil {
		return err
	}

	req.upload = start.GetStatus().GetUploadId()
	header := &uploadv1.CommitHeader{
		Repository: req.name,
		UploadId:   req.upload,
		Digest:     digest,
		Start:      ptr(int64(0)),
	}
	if req.ContentLength >= 0 {
		header.Length = ptr(req.ContentLength)
	}
	blob, err := g.commit(req, header)
	if err != nil {
		g.abandon(req)
		return err
	}
	return blobCreated(w, req, blob)
}

// abandon cancels the request's upload session after a failed monolithic
// upload, so that it does not linger. It is best effort: a session it
// cannot remove is left to the upload service's cleanup, and the failure
// goes to the request's log line.
func (g *gateway) abandon(req *request) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(req.Context()), 5*time.Second)
	defer cancel()
	_, err := g.uploads.CancelUpload(ctx, &uploadv1.CancelUploadRequest{
		Repository: req.name,
		UploadId:   req.upload,
	})
	if err != nil && !ocierr.Is(err, ocierr.BlobUploadUnknown) {
		req.cleanupErr = fmt.Errorf("cancel abandoned upload: %w", err)
	}
}

// writeUpload answers PATCH /v2/<name>/blobs/uploads/<id>: it appends the
// body to the session, at the offset Content-Range names or, without one,
// wherever the session stands.
func (g *gateway) writeUpload(w http.ResponseWriter, req *request) error {
	header := &uploadv1.WriteHeader{Repository: req.name, UploadId: req.param}
	start, length, err := chunkBounds(req)
	if err != nil {
		return err
	}
	header.Start, header.Length = start, length

	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	sender := newChunkSender()
	stream, err := g.uploads.WriteUpload(ctx, grpc.ForceCodecV2(sender))
	if err != nil {
		return err
	}
	resp, err := upstream(cancel, stream, sender,
		&uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Header{Header: header}},
		req.Body,
		func(p []byte) *uploadv1.WriteUploadRequest {
			return &uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Data{Data: p}}
		})
	if err != nil {
		return uploadError(w, req, err)
	}

	setUploadHeaders(w.Header(), req.name, resp.GetStatus())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusAccepted)
	return nil
}

// commitUpload answers PUT /v2/<name>/blobs/uploads/<id>?digest=: it sends
// the optional final chunk and closes the session into a blob.
func (g *gateway) commitUpload(w http.ResponseWriter, req *request) error {
	digest := req.URL.Query().Get("digest")
	req.digest = digest
	if digest == "" {
		return ocierr.New(ocierr.DigestInvalid, "digest parameter is required")
	}
	if _, err := reference.ParseDigest(digest); err != nil {
		return err
	}
	start, length, err := chunkBounds(req)
	if err != nil {
		return err
	}

	blob, err := g.commit(req, &uploadv1.CommitHeader{
		Repository: req.name,
		UploadId:   req.param,
		Digest:     digest,
		Start:      start,
		Length:     length,
	})
	if err != nil {
		return uploadError(w, req, err)
	}
	return blobCreated(w, req, blob)
}

// commit streams header and the request body to CommitUpload.
func (g *gateway) commit(
	req *request, header *uploadv1.CommitHeader,
) (*uploadv1.BlobDescriptor, error) {
	ctx, cancel := context.WithCancel(req.Context())
	defer cancel()
	sender := newChunkSender()
	stream, err := g.uploads.CommitUpload(ctx, grpc.ForceCodecV2(sender))
	if err != nil {
		return nil, err
	}
	resp, err := upstream(cancel, stream, sender,
		&uploadv1.CommitUploadRequest{Kind: &uploadv1.CommitUploadRequest_Header{Header: header}},
		req.Body,
		func(p []byte) *uploadv1.CommitUploadRequest {
			return &uploadv1.CommitUploadRequest{Kind: &uploadv1.CommitUploadRequest_Data{Data: p}}
		})
	if err != nil {
		return nil, err
	}
	return resp.GetBlob(), nil
}

// getUpload answers GET /v2/<name>/blobs/uploads/<id> with the session's
// progress.
func (g *gateway) getUpload(w http.ResponseWriter, req *request) error {
	resp, err := g.uploads.GetUpload(req.Context(), &uploadv1.GetUploadRequest{
		Repository: req.name,
		UploadId:   req.param,
	})
	if err != nil {
		return err
	}

	setUploadHeaders(w.Header(), req.name, resp.GetStatus())
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// cancelUpload answers DELETE /v2/<name>/blobs/uploads/<id>.
func (g *gateway) cancelUpload(w http.ResponseWriter, req *request) error {
	_, err := g.uploads.CancelUpload(req.Context(), &uploadv1.CancelUploadRequest{
		Repository: req.name,
		UploadId:   req.param,
	})
	if err != nil {
		return err
	}

	w.WriteHeader(http.StatusNoContent)
	return nil
}

// blobCreated answers 201 for a blob now in the repository.
func blobCreated(w http.ResponseWriter, req *request, blob *uploadv1.BlobDescriptor) error {
	req.digest = blob.GetDigest()
	h := w.Header()
	h.Set("Location", "/v2/"+req.name+"/blobs/"+blob.GetDigest())
	h.Set("Docker-Content-Digest", blob.GetDigest())
	h.Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return nil
}

// setUploadHeaders describes a session: its URL, id and received range.
func setUploadHeaders(h http.Header, name string, st *uploadv1.UploadStatus) {
	h.Set("Location", "/v2/"+name+"/blobs/uploads/"+url.PathEscape(st.GetUploadId()))
	h.Set("Docker-Upload-UUID", st.GetUploadId())
	h.Set("Range", receivedRange(st.GetOffset()))
}

// receivedRange is the Range header for a session holding offset bytes.
// An empty session reports "0-0", as Docker's registry does.
func receivedRange(offset int64) string {
	if offset <= 0 {
		return "0-0"
	}
	return fmt.Sprintf("0-%d", offset-1)
}

// uploadError adds what a client needs to resume to an error from a write
// or commit: when the service reports the session's committed offset, the
// answer is 416 with the session's Range and URL.
func uploadError(w http.ResponseWriter, req *request, err error) error {
	e := ocierr.FromError(err)
	off, hasOffset := e.Detail["offset"]
	outOfRange := status.Code(err) == codes.OutOfRange || e.Code == ocierr.BlobUploadInvalid
	if !hasOffset || !outOfRange {
		return err
	}
	offset, perr := strconv.ParseInt(off, 10, 64)
	if perr != nil {
		return err
	}

	setUploadHeaders(w.Header(), req.name, &uploadv1.UploadStatus{
		UploadId: req.param,
		Offset:   offset,
	})
	if e.Status == 0 {
		e = e.WithStatus(http.StatusRequestedRangeNotSatisfiable)
	}
	return e
}

// chunkBounds reads where the request's chunk starts and how long it is,
// from Content-Range and Content-Length. Both are nil when the client
// declared nothing: a streamed write.
func chunkBounds(req *request) (start, length *int64, err error) {
	h := req.Header.Get("Content-Range")
	if h == "" {
		if req.ContentLength >= 0 {
			length = ptr(req.ContentLength)
		}
		return nil, length, nil
	}

	first, last, ok := parseContentRange(h)
	if !ok {
		return nil, nil, ocierr.New(ocierr.BlobUploadInvalid,
			"malformed Content-Range %q", truncate(h, 64))
	}
	n := last - first + 1
	if req.ContentLength >= 0 && req.ContentLength != n {
		return nil, nil, ocierr.New(ocierr.SizeInvalid,
			"Content-Range covers %d bytes but Content-Length is %d", n, req.ContentLength)
	}
	return ptr(first), ptr(n), nil
}

// parseContentRange reads an upload chunk's Content-Range: "<first>-<last>"
// as the specification writes it, and leniently "bytes <first>-<last>/<total>"
// and "bytes=<first>-<last>" as some clients send it.
func parseContentRange(h string) (first, last int64, ok bool) {
	s := strings.TrimSpace(h)
	if rest, found := strings.CutPrefix(s, "bytes"); found {
		s = strings.TrimLeft(rest, " =")
	}
	s, _, _ = strings.Cut(s, "/")
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, false
	}
	first, err1 := strconv.ParseInt(strings.TrimSpace(a), 10, 64)
	last, err2 := strconv.ParseInt(strings.TrimSpace(b), 10, 64)
	if err1 != nil || err2 != nil || first < 0 || last < first {
		return 0, 0, false
	}
	return first, last, true
}

func ptr[T any](v T) *T { return &v }
