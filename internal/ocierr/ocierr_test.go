package ocierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestThroughGRPC checks that an Error survives the trip through a gRPC
// status with its code, message, detail and overridden HTTP status.
func TestThroughGRPC(t *testing.T) {
	orig := New(BlobUploadInvalid, "chunk starts at %d", 7).With("offset", "42").WithStatus(416)
	st := orig.GRPCStatus()
	if st.Code() != codes.OutOfRange {
		t.Errorf("GRPCStatus().Code() = %v, want OutOfRange", st.Code())
	}

	got := FromError(st.Err())
	if got.Code != BlobUploadInvalid || got.Message != "chunk starts at 7" ||
		got.Detail["offset"] != "42" || got.HTTPStatus() != 416 {
		t.Errorf("FromError(status) = %+v (HTTP %d), want the original back", got, got.HTTPStatus())
	}
	if _, leaked := got.Detail[statusKey]; leaked {
		t.Errorf("FromError(status).Detail = %v, want no transport key", got.Detail)
	}
}

func TestFromError(t *testing.T) {
	wrapped := fmt.Errorf("stat: %w", New(BlobUnknown, "gone"))
	if e := FromError(wrapped); e.Code != BlobUnknown {
		t.Errorf("FromError(wrapped) = %v, want BLOB_UNKNOWN", e)
	}
	cases := []struct {
		err  error
		want Code
	}{
		{errors.New("disk on fire"), Unknown},
		{status.Error(codes.Internal, "secret cause"), Unknown},
		{status.Error(codes.Unavailable, "no backend"), Unavailable},
		{status.Error(codes.DeadlineExceeded, "slow"), Unavailable},
	}
	for _, c := range cases {
		e := FromError(c.err)
		if e.Code != c.want {
			t.Errorf("FromError(%v) = %v, want %s", c.err, e, c.want)
		}
		if e.Message != "" && e.Code == Unknown && e.Message != "request canceled" {
			t.Errorf("FromError(%v) message = %q, want no internal cause", c.err, e.Message)
		}
	}
	if !Is(New(NameInvalid, "x"), NameInvalid) || Is(nil, NameInvalid) {
		t.Errorf("Is does not match codes as it should")
	}
}

// TestWrite checks the OCI JSON body and status of an error response.
func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, New(ManifestUnknown, "no such manifest").With("tag", "v1"))
	if rec.Code != http.StatusNotFound {
		t.Errorf("status = %d, want 404", rec.Code)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Errors []struct {
			Code    string            `json:"code"`
			Message string            `json:"message"`
			Detail  map[string]string `json:"detail"`
		} `json:"errors"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) != 1 {
		t.Fatalf("body = %s (%v), want one OCI error", rec.Body.String(), err)
	}
	e := body.Errors[0]
	if e.Code != "MANIFEST_UNKNOWN" || e.Message != "no such manifest" || e.Detail["tag"] != "v1" {
		t.Errorf("error = %+v, want MANIFEST_UNKNOWN with its message and detail", e)
	}
}

// TestTable checks every code has a status a client can act on.
func TestTable(t *testing.T) {
	for code, ent := range table {
		if ent.http < 400 || ent.http > 599 {
			t.Errorf("%s answers HTTP %d, want a 4xx or 5xx", code, ent.http)
		}
		if ent.message == "" {
			t.Errorf("%s has no default message", code)
		}
	}
	if got := Code("NOT_A_CODE").HTTPStatus(); got != 500 {
		t.Errorf("unknown code status = %d, want 500", got)
	}
}
