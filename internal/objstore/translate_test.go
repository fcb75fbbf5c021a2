package objstore

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// sdkError builds an error shaped like the ones the S3 client returns:
// an OperationError around an HTTP response error around an API error.
func sdkError(op string, status int, code string) error {
	var inner error = &smithy.GenericAPIError{Code: code, Message: "test"}
	if code == "" {
		inner = errors.New("no api error")
	}
	return &smithy.OperationError{
		ServiceID:     "S3",
		OperationName: op,
		Err: &awshttp.ResponseError{
			ResponseError: &smithyhttp.ResponseError{
				Response: &smithyhttp.Response{Response: &http.Response{StatusCode: status}},
				Err:      inner,
			},
			RequestID: "req",
		},
	}
}

func TestTranslate(t *testing.T) {
	tests := []struct {
		name     string
		err      error
		notFound bool
		precond  bool
		noBucket bool
	}{
		{"NoSuchKey", sdkError("GetObject", 404, "NoSuchKey"), true, false, false},
		{"HeadNotFound", sdkError("HeadObject", 404, "NotFound"), true, false, false},
		{"bare 404", sdkError("HeadObject", 404, ""), true, false, false},
		{"NoSuchUpload", sdkError("ListParts", 404, "NoSuchUpload"), true, false, false},
		{"NoSuchBucket", sdkError("PutObject", 404, "NoSuchBucket"), true, false, true},
		{"412", sdkError("PutObject", 412, "PreconditionFailed"), false, true, false},
		{"bare 412", sdkError("PutObject", 412, ""), false, true, false},
		{"409 conflict", sdkError("PutObject", 409, "ConditionalRequestConflict"),
			false, true, false},
		{"409 other", sdkError("CreateBucket", 409, "BucketAlreadyExists"), false, false, false},
		{"500", sdkError("GetObject", 500, "InternalError"), false, false, false},
		{"403", sdkError("GetObject", 403, "AccessDenied"), false, false, false},
		{"plain", errors.New("boom"), false, false, false},
		{"canceled", &smithy.OperationError{OperationName: "GetObject", Err: context.Canceled},
			false, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := translate(tt.err)
			if got == nil {
				t.Fatal("translate returned nil")
			}
			if errors.Is(got, ErrNotFound) != tt.notFound {
				t.Errorf("errors.Is(%v, ErrNotFound) = %v, want %v", got, !tt.notFound, tt.notFound)
			}
			if errors.Is(got, ErrPreconditionFailed) != tt.precond {
				t.Errorf("errors.Is(%v, ErrPreconditionFailed) = %v, want %v",
					got, !tt.precond, tt.precond)
			}
			if errors.Is(got, errNoBucket) != tt.noBucket {
				t.Errorf("errors.Is(%v, errNoBucket) = %v, want %v", got, !tt.noBucket, tt.noBucket)
			}
			if !errors.Is(got, tt.err) {
				t.Errorf("translated error %v does not wrap the original", got)
			}
			var op *smithy.OperationError
			if errors.As(tt.err, &op) && !strings.Contains(got.Error(), op.OperationName) {
				t.Errorf("error %q does not name the operation %q", got, op.OperationName)
			}
		})
	}
	if translate(nil) != nil {
		t.Error("translate(nil) != nil")
	}
	if !errors.Is(translate(tests[len(tests)-1].err), context.Canceled) {
		t.Error("context.Canceled lost in translation")
	}
}

func TestContentRangeTotal(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"bytes 0-9/100", 100, true},
		{"bytes 10-19/20", 20, true},
		{"bytes 0-9/*", 0, false},
		{"", 0, false},
		{"bytes 0-9/", 0, false},
		{"bytes 0-9/x", 0, false},
	}
	for _, tt := range tests {
		got, ok := contentRangeTotal(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("contentRangeTotal(%q) = %d, %v; want %d, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestDefaultHTTPClient(t *testing.T) {
	tr, ok := DefaultHTTPClient().Transport.(*http.Transport)
	if !ok {
		t.Fatal("default transport is not *http.Transport")
	}
	if tr.MaxIdleConnsPerHost < 64 {
		t.Errorf("MaxIdleConnsPerHost = %d, want >= 64", tr.MaxIdleConnsPerHost)
	}
	if tr.DisableKeepAlives {
		t.Error("keep-alives are disabled")
	}
	if tr.MaxIdleConns < tr.MaxIdleConnsPerHost {
		t.Errorf("MaxIdleConns %d < MaxIdleConnsPerHost %d", tr.MaxIdleConns, tr.MaxIdleConnsPerHost)
	}
}

func TestNewValidates(t *testing.T) {
	ctx := context.Background()
	if _, err := New(ctx, Config{AccessKeyID: "a", SecretAccessKey: "b"}); err == nil {
		t.Error("New without bucket succeeded")
	}
	if _, err := New(ctx, Config{Bucket: "b"}); err == nil {
		t.Error("New without credentials succeeded")
	}
	s, err := New(ctx, Config{Bucket: "b", AccessKeyID: "a", SecretAccessKey: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if s.region != "auto" {
		t.Errorf("default region = %q, want auto", s.region)
	}
}
