package telemetry

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/s3embed/s3test"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
)

func TestMain(m *testing.M) { s3test.Main(m) }

// attr returns the value of key on span, or an empty value.
func attr(span tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, kv := range span.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// spansNamed returns the spans called name.
func spansNamed(spans tracetest.SpanStubs, name string) []tracetest.SpanStub {
	var out []tracetest.SpanStub
	for _, s := range spans {
		if s.Name == name {
			out = append(out, s)
		}
	}
	return out
}

func TestS3TracesAndCountsOperations(t *testing.T) {
	cfg := s3test.Start(t)
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	m := NewMetrics()
	cfg.APIOptions = S3("upload", tp, m)
	ctx := testContext(t)
	store, err := objstore.New(ctx, cfg)
	if err != nil {
		t.Fatalf("objstore.New() = %v", err)
	}

	// Inside a request's span: a write and a read of a missing key.
	reqCtx, parent := tp.Tracer("t").Start(ctx, "CommitUpload",
		trace.WithSpanKind(trace.SpanKindServer))
	if _, err := store.Put(reqCtx, "blobs/a", []byte("abc"), objstore.Condition{}); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	if _, _, err := store.Get(reqCtx, "blobs/missing"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Get(missing) = %v, want ErrNotFound", err)
	}
	parent.End()
	// Outside any span, as a health ping or a sweep: counted, not traced.
	if err := store.Ping(ctx); err != nil {
		t.Fatalf("Ping() = %v", err)
	}
	// A presigned URL sends nothing: neither traced nor counted.
	if _, err := store.PresignGet(reqCtx, "blobs/a", time.Minute); err != nil {
		t.Fatalf("PresignGet() = %v", err)
	}

	spans := exp.GetSpans()
	puts, gets := spansNamed(spans, "S3.PutObject"), spansNamed(spans, "S3.GetObject")
	if len(puts) != 1 || len(gets) != 1 || len(spans) != 3 {
		t.Fatalf("spans = %v, want CommitUpload, one S3.PutObject and one S3.GetObject",
			names(spans))
	}
	for _, s := range []tracetest.SpanStub{puts[0], gets[0]} {
		if s.Parent.SpanID() != parent.SpanContext().SpanID() ||
			s.SpanContext.TraceID() != parent.SpanContext().TraceID() {
			t.Errorf("%s parent = %s, want the request span %s", s.Name,
				s.Parent.SpanID(), parent.SpanContext().SpanID())
		}
		if s.SpanKind != trace.SpanKindClient {
			t.Errorf("%s kind = %v, want client", s.Name, s.SpanKind)
		}
		if got := attr(s, "keel.service").AsString(); got != "upload" {
			t.Errorf("%s keel.service = %q, want upload", s.Name, got)
		}
	}
	if got := attr(puts[0], "http.response.status_code").AsInt64(); got != 200 {
		t.Errorf("S3.PutObject status code = %d, want 200", got)
	}
	if puts[0].Status.Code != otelcodes.Unset {
		t.Errorf("S3.PutObject status = %v, want unset", puts[0].Status)
	}
	get := gets[0]
	if got := attr(get, "http.response.status_code").AsInt64(); got != 404 {
		t.Errorf("S3.GetObject(missing) status code = %d, want 404", got)
	}
	if got := attr(get, "error.type").AsString(); got != "NoSuchKey" {
		t.Errorf("S3.GetObject(missing) error.type = %q, want NoSuchKey", got)
	}
	if get.Status.Code == otelcodes.Error {
		t.Errorf("S3.GetObject(missing) status = Error, want a 404 not marked as a fault")
	}

	fams := telemetrytest.Gather(t, m.registry)
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"keel_s3_requests_total", map[string]string{"service": "upload",
			"operation": "PutObject"}, 1},
		{"keel_s3_requests_total", map[string]string{"operation": "GetObject"}, 1},
		{"keel_s3_requests_total", map[string]string{"operation": "HeadBucket"}, 1},
		{"keel_s3_errors_total", map[string]string{"operation": "GetObject",
			"code": "NoSuchKey"}, 1},
		{"keel_s3_errors_total", map[string]string{"operation": "PutObject"}, 0},
		{"keel_s3_request_duration_seconds", map[string]string{"service": "upload"}, 3},
	} {
		if got := fams.Sum(tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v; series %v", tc.name, tc.labels, got, tc.want,
				fams.Series(tc.name))
		}
	}
}

func TestS3ErrorCode(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{context.DeadlineExceeded, "timeout"},
		{errors.Join(errors.New("op"), context.Canceled), "canceled"},
		{errors.New("dial tcp 127.0.0.1:1: connection refused"), "network"},
	}
	for _, tc := range tests {
		if got := s3ErrorCode(tc.err); got != tc.want {
			t.Errorf("s3ErrorCode(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func names(spans tracetest.SpanStubs) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.Name)
	}
	return out
}
