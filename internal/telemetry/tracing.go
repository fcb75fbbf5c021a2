package telemetry

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// The exporters OTEL_TRACES_EXPORTER may name.
const (
	ExporterOTLP    = "otlp"
	ExporterConsole = "console"
	ExporterNone    = "none"
)

// The OTLP protocols OTEL_EXPORTER_OTLP_PROTOCOL may name.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// Tracing is a process's tracer provider: the one the OTEL_* environment
// variables ask for, or a no-op one when they ask for none.
type Tracing struct {
	provider trace.TracerProvider
	// sdk is the provider when it exports somewhere; nil when tracing is
	// off.
	sdk *sdktrace.TracerProvider
	// exporters describes where spans go, for the start-up log line.
	exporters []string
}

// NewTracing returns the tracing the standard OpenTelemetry environment
// variables describe, with service as the service.name unless
// OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names another.
//
// Tracing is off (a no-op provider: no exporter, no background goroutine)
// unless OTEL_TRACES_EXPORTER names an exporter or an OTLP endpoint is set
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT).
// OTEL_SDK_DISABLED=true turns it off whatever else is set.
//
// OTEL_TRACES_EXPORTER is a comma-separated list of "otlp", "console"
// (spans as JSON on stdout) and "none". OTLP speaks the protocol of
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL:
// "http/protobuf" (the default) or "grpc". The exporters read the rest of
// the OTEL_EXPORTER_OTLP_* variables (endpoint, headers, timeout, TLS)
// themselves, and the SDK reads OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG (default: parentbased_always_on) and the
// OTEL_BSP_* batch settings.
//
// Export failures (a collector that is down) are reported by the
// OpenTelemetry SDK's own global logger on stderr, not through keel's
// slog logger, so they lack keel's format and fields.
func NewTracing(ctx context.Context, service string) (*Tracing, error) {
	names, err := exportersFromEnv(os.Getenv)
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	if len(names) == 0 {
		return &Tracing{provider: noop.NewTracerProvider()}, nil
	}

	res, err := resource.New(ctx,
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(),
	)
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}

	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	var described []string
	for _, name := range names {
		exp, desc, err := newExporter(ctx, name, os.Getenv)
		if err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
		opts = append(opts, sdktrace.WithBatcher(exp))
		described = append(described, desc)
	}
	sdk := sdktrace.NewTracerProvider(opts...)
	return &Tracing{provider: sdk, sdk: sdk, exporters: described}, nil
}

// NewTracingWith returns tracing that uses tp and that Shutdown does not
// stop: the caller owns tp. Tests use it to collect spans in memory.
func NewTracingWith(tp trace.TracerProvider) *Tracing {
	return &Tracing{provider: tp, exporters: []string{"caller's provider"}}
}

// Provider returns the tracer provider to make spans with.
func (t *Tracing) Provider() trace.TracerProvider { return t.provider }

// Enabled reports whether spans go anywhere.
func (t *Tracing) Enabled() bool { return len(t.exporters) > 0 }

// Exporters describes where spans go, e.g. ["otlp (grpc)"]; none when
// tracing is off.
func (t *Tracing) Exporters() []string { return slices.Clone(t.exporters) }

// Shutdown exports the spans still buffered and stops the exporters. It
// returns when they are done or ctx ends.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}

// exportersFromEnv returns the exporters the environment asks for; none
// means tracing is off.
func exportersFromEnv(getenv func(string) string) ([]string, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return nil, nil
	}
	v := strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))
	if v == "" {
		if getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" ||
			getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" {
			return []string{ExporterOTLP}, nil
		}
		return nil, nil
	}

	var out []string
	for _, f := range strings.Split(v, ",") {
		name := strings.ToLower(strings.TrimSpace(f))
		switch name {
		case ExporterNone:
			return nil, nil
		case ExporterOTLP, ExporterConsole:
			if !slices.Contains(out, name) {
				out = append(out, name)
			}
		default:
			return nil, fmt.Errorf("OTEL_TRACES_EXPORTER=%q: unknown exporter %q "+
				"(want otlp, console or none)", v, name)
		}
	}
	return out, nil
}

// otlpProtocol returns the OTLP protocol the environment asks for.
func otlpProtocol(getenv func(string) string) (string, error) {
	name := "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	v := strings.TrimSpace(getenv(name))
	if v == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
		v = strings.TrimSpace(getenv(name))
	}
	switch strings.ToLower(v) {
	case "", ProtocolHTTPProtobuf:
		return ProtocolHTTPProtobuf, nil
	case ProtocolGRPC:
		return ProtocolGRPC, nil
	}
	return "", fmt.Errorf("%s=%q: unsupported protocol (want grpc or http/protobuf)", name, v)
}

// newExporter builds the exporter called name and describes it. It does
// not connect: OTLP exporters connect when they first export.
func newExporter(
	ctx context.Context, name string, getenv func(string) string,
) (sdktrace.SpanExporter, string, error) {
	if name == ExporterConsole {
		exp, err := stdouttrace.New(stdouttrace.WithWriter(os.Stdout))
		if err != nil {
			return nil, "", fmt.Errorf("console exporter: %w", err)
		}
		return exp, ExporterConsole, nil
	}

	proto, err := otlpProtocol(getenv)
	if err != nil {
		return nil, "", err
	}
	var exp sdktrace.SpanExporter
	if proto == ProtocolGRPC {
		exp, err = otlptracegrpc.New(ctx)
	} else {
		exp, err = otlptracehttp.New(ctx)
	}
	if err != nil {
		return nil, "", fmt.Errorf("otlp exporter (%s): %w", proto, err)
	}
	return exp, ExporterOTLP + " (" + proto + ")", nil
}
