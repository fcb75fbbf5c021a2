// Package ocierr is the registry's one table of OCI error codes. Each code
// carries its HTTP status and the gRPC code a service returns it with; the
// services return *Error values as gRPC status errors, and the gateway turns
// them back into the OCI JSON error body exactly once.
package ocierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Code is an OCI distribution error code, such as "BLOB_UNKNOWN".
type Code string

// The error codes of the OCI distribution specification, plus the few that
// Docker's registry API adds.
const (
	BlobUnknown         Code = "BLOB_UNKNOWN"
	BlobUploadInvalid   Code = "BLOB_UPLOAD_INVALID"
	BlobUploadUnknown   Code = "BLOB_UPLOAD_UNKNOWN"
	DigestInvalid       Code = "DIGEST_INVALID"
	ManifestBlobUnknown Code = "MANIFEST_BLOB_UNKNOWN"
	ManifestInvalid     Code = "MANIFEST_INVALID"
	ManifestUnknown     Code = "MANIFEST_UNKNOWN"
	NameInvalid         Code = "NAME_INVALID"
	NameUnknown         Code = "NAME_UNKNOWN"
	SizeInvalid         Code = "SIZE_INVALID"
	Unauthorized        Code = "UNAUTHORIZED"
	Denied              Code = "DENIED"
	Unsupported         Code = "UNSUPPORTED"
	TooManyRequests     Code = "TOOMANYREQUESTS"
	// RangeInvalid is Docker's code for a Range that cannot be served.
	RangeInvalid Code = "RANGE_INVALID"
	// ManifestTooBig answers a manifest over the size limit.
	ManifestTooBig Code = "MANIFEST_TOO_BIG"
	// Unknown is every failure a client cannot act on; its cause is logged,
	// never sent.
	Unknown Code = "UNKNOWN"
	// Unavailable means a backend could not be reached; the client may retry.
	Unavailable Code = "UNAVAILABLE"
)

// RetryAfterKey is the Detail key of the seconds a client should wait
// before trying again; the gateway sends it as the Retry-After header.
const RetryAfterKey = "retry_after"

// Domain is the google.rpc.ErrorInfo domain that marks an OCI code.
const Domain = "oci.keel"

type entry struct {
	http    int
	grpc    codes.Code
	message string
}

var table = map[Code]entry{
	BlobUnknown:         {http.StatusNotFound, codes.NotFound, "blob unknown to registry"},
	BlobUploadInvalid:   {http.StatusBadRequest, codes.InvalidArgument, "blob upload invalid"},
	BlobUploadUnknown:   {http.StatusNotFound, codes.NotFound, "blob upload unknown to registry"},
	DigestInvalid:       {http.StatusBadRequest, codes.InvalidArgument, "provided digest did not match uploaded content"},
	ManifestBlobUnknown: {http.StatusNotFound, codes.FailedPrecondition, "manifest references a blob unknown to registry"},
	ManifestInvalid:     {http.StatusBadRequest, codes.InvalidArgument, "manifest invalid"},
	ManifestUnknown:     {http.StatusNotFound, codes.NotFound, "manifest unknown to registry"},
	NameInvalid:         {http.StatusBadRequest, codes.InvalidArgument, "invalid repository name"},
	NameUnknown:         {http.StatusNotFound, codes.NotFound, "repository name not known to registry"},
	SizeInvalid:         {http.StatusBadRequest, codes.InvalidArgument, "provided length did not match content length"},
	Unauthorized:        {http.StatusUnauthorized, codes.Unauthenticated, "authentication required"},
	Denied:              {http.StatusForbidden, codes.PermissionDenied, "requested access to the resource is denied"},
	Unsupported:         {http.StatusMethodNotAllowed, codes.Unimplemented, "the operation is unsupported"},
	TooManyRequests:     {http.StatusTooManyRequests, codes.ResourceExhausted, "too many requests"},
	RangeInvalid:        {http.StatusRequestedRangeNotSatisfiable, codes.OutOfRange, "requested range not satisfiable"},
	ManifestTooBig:      {http.StatusRequestEntityTooLarge, codes.InvalidArgument, "manifest too big"},
	Unknown:             {http.StatusInternalServerError, codes.Internal, "unknown error"},
	Unavailable:         {http.StatusServiceUnavailable, codes.Unavailable, "service unavailable"},
}

// HTTPStatus returns the HTTP status that answers c.
func (c Code) HTTPStatus() int {
	if e, ok := table[c]; ok {
		return e.http
	}
	return http.StatusInternalServerError
}

// Error is a registry error a client may see: an OCI code, a message fit for
// the client, and optional detail. Causes that a client should not see are
// never put in an Error; they go to the logs.
type Error struct {
	// Code is the OCI error code.
	Code Code
	// Message is the client-facing message; empty means the code's default.
	Message string
	// Detail is extra machine-readable context, such as a committed offset.
	Detail map[string]string
	// Status overrides the code's HTTP status when non-zero (for example 416
	// for an out-of-order upload chunk, which is still BLOB_UPLOAD_INVALID).
	Status int
}

// New returns an Error with code c and a formatted message.
func New(c Code, format string, args ...any) *Error {
	return &Error{Code: c, Message: fmt.Sprintf(format, args...)}
}

// Error implements error.
func (e *Error) Error() string {
	return string(e.Code) + ": " + e.message()
}

func (e *Error) message() string {
	if e.Message != "" {
		return e.Message
	}
	return table[e.Code].message
}

// With returns a copy of e with one more detail entry.
func (e *Error) With(key, value string) *Error {
	c := *e
	c.Detail = make(map[string]string, len(e.Detail)+1)
	for k, v := range e.Detail {
		c.Detail[k] = v
	}
	c.Detail[key] = value
	return &c
}

// WithStatus returns a copy of e answered with HTTP status s.
func (e *Error) WithStatus(s int) *Error {
	c := *e
	c.Status = s
	return &c
}

// HTTPStatus returns the HTTP status that answers e.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	return e.Code.HTTPStatus()
}

// statusKey carries an overridden HTTP status through gRPC metadata.
const statusKey = "http-status"

// GRPCStatus makes e a gRPC status error, so a gRPC server sends it with
// the right code and the OCI code in an ErrorInfo detail.
func (e *Error) GRPCStatus() *status.Status {
	code := codes.Internal
	if ent, ok := table[e.Code]; ok {
		code = ent.grpc
	}
	if e.Status == http.StatusRequestedRangeNotSatisfiable {
		code = codes.OutOfRange
	}
	meta := make(map[string]string, len(e.Detail)+1)
	for k, v := range e.Detail {
		meta[k] = v
	}
	if e.Status != 0 {
		meta[statusKey] = fmt.Sprint(e.Status)
	}
	st := status.New(code, e.message())
	info := &errdetails.ErrorInfo{Reason: string(e.Code), Domain: Domain, Metadata: meta}
	if withInfo, err := st.WithDetails(info); err == nil {
		return withInfo
	}
	return st
}

// FromError recovers the registry error in err: an *Error in its chain, or
// the OCI code carried by a gRPC status. Anything else becomes UNKNOWN (or
// UNAVAILABLE for a backend that cannot be reached), with a generic message.
func FromError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	st, ok := status.FromError(err)
	if !ok {
		return &Error{Code: Unknown}
	}
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if !ok || info.GetDomain() != Domain {
			continue
		}
		out := &Error{Code: Code(info.GetReason()), Message: st.Message()}
		for k, v := range info.GetMetadata() {
			if k == statusKey {
				fmt.Sscan(v, &out.Status)
				continue
			}
			if out.Detail == nil {
				out.Detail = map[string]string{}
			}
			out.Detail[k] = v
		}
		return out
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return &Error{Code: Unavailable}
	case codes.Canceled:
		return &Error{Code: Unknown, Message: "request canceled"}
	}
	return &Error{Code: Unknown}
}

// Is reports whether err carries OCI code c.
func Is(err error, c Code) bool {
	return err != nil && FromError(err).Code == c
}

type wireError struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Detail  any    `json:"detail,omitempty"`
}

// Body returns the OCI JSON error body for e.
func (e *Error) Body() []byte {
	var detail any
	if len(e.Detail) > 0 {
		detail = e.Detail
	}
	b, _ := json.Marshal(struct {
		Errors []wireError `json:"errors"`
	}{[]wireError{{Code: e.Code, Message: e.message(), Detail: detail}}})
	return b
}

// Write answers an HTTP request with e: its status and its JSON body.
func Write(w http.ResponseWriter, e *Error) {
	body := e.Body()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(e.HTTPStatus())
	w.Write(body)
}
