package transport

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc/filters"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/stats"

	"github.com/keel-registry/keel/internal/telemetry"
)

// Option adds telemetry or health reporting to a server made by NewServer
// or a connection made by Dial. Each option says which of the two it
// applies to; the other ignores it.
type Option func(*options)

// options is what the Options set.
type options struct {
	tracer  trace.TracerProvider
	metrics *telemetry.Metrics
	health  *Health
	codec   encoding.CodecV2
}

// collect applies opts.
func collect(opts []Option) options {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithTracing makes a span for every call through tp (a server span on a
// server, a client span on a connection) and carries the trace across the
// call in W3C tracecontext metadata. Health checks, which probes make every
// few seconds, make no spans. A nil tp means no spans. For servers and
// connections.
func WithTracing(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp }
}

// WithMetrics counts the calls a server finishes in m
// (keel_grpc_server_handled_total and keel_grpc_server_handling_seconds).
// A nil m counts nothing. For servers.
func WithMetrics(m *telemetry.Metrics) Option {
	return func(o *options) { o.metrics = m }
}

// WithHealth makes the server's health service report h's status instead of
// SERVING for good. For servers; one Health per server.
func WithHealth(h *Health) Option {
	return func(o *options) { o.health = h }
}

// WithCodec makes the server decode and encode every message with c
// instead of the proto codec; c must speak the proto wire format. For
// servers. It uses grpc.ForceServerCodecV2, which grpc-go marks as
// experimental.
func WithCodec(c encoding.CodecV2) Option {
	return func(o *options) { o.codec = c }
}

// statsHandler returns the OpenTelemetry stats handler tracing calls on
// one side, or nil without a tracer provider.
func (o options) statsHandler(newHandler func(...otelgrpc.Option) stats.Handler) stats.Handler {
	if o.tracer == nil {
		return nil
	}
	return newHandler(
		otelgrpc.WithTracerProvider(o.tracer),
		otelgrpc.WithPropagators(telemetry.Propagator()),
		// keel's metrics are Prometheus's (see WithMetrics); the
		// OpenTelemetry ones would only go to the global provider.
		otelgrpc.WithMeterProvider(metricnoop.NewMeterProvider()),
		otelgrpc.WithFilter(filters.Not(filters.HealthCheck())),
	)
}
