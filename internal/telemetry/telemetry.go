// Package telemetry is what every keel process shares to be observed:
// tracing configured by the standard OTEL_* environment variables, a log
// handler that stamps each line with the trace it belongs to, the
// Prometheus registry a process serves its metrics from, and the spans and
// metrics of S3 calls.
//
// Nothing here is global: a process builds one Tracing and one Metrics and
// hands them to the servers, clients and stores it makes.
package telemetry

import (
	"go.opentelemetry.io/otel/propagation"
)

// ScopeName is the instrumentation scope of the spans keel makes itself
// (the gateway's HTTP spans and the S3 spans).
const ScopeName = "github.com/keel-registry/keel"

// Propagator returns how trace context crosses process boundaries: W3C
// tracecontext (the traceparent and tracestate headers or gRPC metadata)
// plus W3C baggage.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(
		propagation.TraceContext{}, propagation.Baggage{})
}
