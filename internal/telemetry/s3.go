package telemetry

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/smithy-go"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// s3MiddlewareID names keel's middleware on the SDK's stack.
const s3MiddlewareID = "KeelTelemetry"

// maxErrorCodeLength bounds an S3 error code used as a metric label, so
// that a misbehaving server cannot fill the registry with long ones.
const maxErrorCodeLength = 64

// S3 returns the API options (for objstore.Config.APIOptions) that make an
// S3 client record each operation it sends: a client span named
// "S3.<Operation>" (for example "S3.PutObject") covering every attempt,
// and the keel_s3_* metrics labelled with service.
//
// A span is made only when ctx already carries one, so that the work of a
// traced request shows up under it, while background work (health pings,
// sweeps) makes no stray root spans; every operation is counted either way.
// Presigning sends nothing and is neither traced nor counted.
//
// A nil tp means no spans; a nil m means no metrics.
func S3(service string, tp trace.TracerProvider, m *Metrics) []func(*middleware.Stack) error {
	var tracer trace.Tracer
	if tp != nil {
		tracer = tp.Tracer(ScopeName)
	}
	mw := &s3Middleware{service: service, tracer: tracer, metrics: m}
	return []func(*middleware.Stack) error{mw.register}
}

// s3Middleware traces and counts S3 operations.
type s3Middleware struct {
	service string
	tracer  trace.Tracer
	metrics *Metrics
}

// register adds the middleware to one operation's stack.
func (mw *s3Middleware) register(stack *middleware.Stack) error {
	if len(stack.Deserialize.List()) == 0 {
		// A presigning stack has no deserialize step: it sends no request.
		return nil
	}
	// After the operation's own initialize middlewares, which put its
	// name in the context.
	return stack.Initialize.Add(
		middleware.InitializeMiddlewareFunc(s3MiddlewareID, mw.handle), middleware.After)
}

// handle runs one operation inside a span and records its outcome.
func (mw *s3Middleware) handle(
	ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler,
) (middleware.InitializeOutput, middleware.Metadata, error) {
	op := awsmiddleware.GetOperationName(ctx)
	start := time.Now()

	var span trace.Span
	if mw.tracer != nil && trace.SpanContextFromContext(ctx).IsValid() {
		ctx, span = mw.tracer.Start(ctx, "S3."+op,
			trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(
				attribute.String("rpc.system", "aws-api"),
				attribute.String("rpc.service", "S3"),
				semconv.RPCMethod(op),
				attribute.String("keel.service", mw.service),
			))
	}

	out, md, err := next.HandleInitialize(ctx, in)

	code := s3ErrorCode(err)
	mw.metrics.observeS3(mw.service, op, code, time.Since(start))
	if span != nil {
		endS3Span(span, md, err, code)
	}
	return out, md, err
}

// endS3Span records an operation's outcome on its span and ends it. A 404
// or 412 is an answer (the key is missing, the condition failed), not a
// fault, so only the error type is recorded for those.
func endS3Span(span trace.Span, md middleware.Metadata, err error, code string) {
	status := 0
	if resp, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok {
		status = resp.StatusCode
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}
	if status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(status))
	}
	if id, ok := awsmiddleware.GetRequestIDMetadata(md); ok {
		span.SetAttributes(semconv.AWSRequestID(id))
	}
	if err != nil {
		span.SetAttributes(semconv.ErrorTypeKey.String(code))
		if status != http.StatusNotFound && status != http.StatusPreconditionFailed {
			span.SetStatus(otelcodes.Error, err.Error())
		}
	}
	span.End()
}

// s3ErrorCode classifies a failed operation for the keel_s3_errors_total
// code label: the S3 error code when the server sent one, timeout or
// canceled when the context ended, http_<status> for an answer without a
// code, network for no answer at all. It is "" for nil.
func s3ErrorCode(err error) string {
	if err == nil {
		return ""
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	var api smithy.APIError
	if errors.As(err, &api) && api.ErrorCode() != "" {
		if c := api.ErrorCode(); len(c) <= maxErrorCodeLength {
			return c
		}
	}
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		return "http_" + strconv.Itoa(re.HTTPStatusCode())
	}
	return "network"
}
