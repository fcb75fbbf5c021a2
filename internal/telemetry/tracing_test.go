package telemetry

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// otelVars are the variables NewTracing and the exporters read; every test
// here clears them first, so that the environment the tests run in does
// not leak in.
var otelVars = []string{
	"OTEL_SDK_DISABLED",
	"OTEL_TRACES_EXPORTER",
	"OTEL_EXPORTER_OTLP_ENDPOINT",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL",
	"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
	"OTEL_EXPORTER_OTLP_INSECURE",
	"OTEL_EXPORTER_OTLP_TRACES_INSECURE",
	"OTEL_EXPORTER_OTLP_HEADERS",
	"OTEL_SERVICE_NAME",
	"OTEL_RESOURCE_ATTRIBUTES",
	"OTEL_TRACES_SAMPLER",
	"OTEL_TRACES_SAMPLER_ARG",
}

// setEnv clears every OTEL variable, then sets vars, for this test only.
func setEnv(t *testing.T, vars map[string]string) {
	t.Helper()
	for _, k := range otelVars {
		t.Setenv(k, "")
	}
	for k, v := range vars {
		t.Setenv(k, v)
	}
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestExportersFromEnv(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    []string
		wantErr string
	}{
		{name: "nothing set is off", env: nil, want: nil},
		{name: "endpoint turns otlp on",
			env:  map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
			want: []string{"otlp"}},
		{name: "traces endpoint turns otlp on",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"},
			want: []string{"otlp"}},
		{name: "exporter list",
			env:  map[string]string{"OTEL_TRACES_EXPORTER": "OTLP, console,otlp"},
			want: []string{"otlp", "console"}},
		{name: "none wins over an endpoint", env: map[string]string{
			"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"},
			want: nil},
		{name: "sdk disabled wins", env: map[string]string{
			"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "console"},
			want: nil},
		{name: "unknown exporter", env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"},
			wantErr: `"zipkin"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := exportersFromEnv(func(k string) string { return tc.env[k] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("exportersFromEnv() error = %v, want one naming %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("exportersFromEnv() error = %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("exportersFromEnv() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOTLPProtocol(t *testing.T) {
	tests := []struct {
		env     map[string]string
		want    string
		wantErr bool
	}{
		{env: nil, want: ProtocolHTTPProtobuf},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, want: ProtocolGRPC},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, want: ProtocolHTTPProtobuf},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, wantErr: true},
	}
	for _, tc := range tests {
		got, err := otlpProtocol(func(k string) string { return tc.env[k] })
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("otlpProtocol(%v) = %q, %v; want %q (error %v)",
				tc.env, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestNewTracingOffByDefault(t *testing.T) {
	setEnv(t, nil)

	tr, err := NewTracing(testContext(t), "keel")
	if err != nil {
		t.Fatalf("NewTracing() error = %v", err)
	}

	if tr.Enabled() || len(tr.Exporters()) != 0 {
		t.Errorf("NewTracing() with no OTEL_* set: Enabled() = %v, Exporters() = %q; "+
			"want off", tr.Enabled(), tr.Exporters())
	}
	_, span := tr.Provider().Tracer("t").Start(testContext(t), "op")
	if span.SpanContext().IsValid() || span.IsRecording() {
		t.Errorf("span from the off provider is valid or recording; want a no-op span")
	}
	span.End()
	if err := tr.Shutdown(testContext(t)); err != nil {
		t.Errorf("Shutdown() = %v", err)
	}
}

func TestNewTracingRefusesBadSettings(t *testing.T) {
	for _, env := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "jaeger"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
	} {
		setEnv(t, env)
		if _, err := NewTracing(testContext(t), "keel"); err == nil {
			t.Errorf("NewTracing(%v) = nil error, want one", env)
		}
	}
}

// traceCollector is an OTLP/gRPC trace receiver on loopback.
type traceCollector struct {
	collectortrace.UnimplementedTraceServiceServer
	mu   sync.Mutex
	reqs []*collectortrace.ExportTraceServiceRequest
}

func (c *traceCollector) Export(
	_ context.Context, req *collectortrace.ExportTraceServiceRequest,
) (*collectortrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.reqs = append(c.reqs, req)
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (c *traceCollector) received() []*collectortrace.ExportTraceServiceRequest {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*collectortrace.ExportTraceServiceRequest(nil), c.reqs...)
}

// exported returns the span names and the service.name values of every
// span in reqs.
func exported(reqs []*collectortrace.ExportTraceServiceRequest) (spans, services []string) {
	for _, req := range reqs {
		for _, rs := range req.GetResourceSpans() {
			for _, kv := range rs.GetResource().GetAttributes() {
				if kv.GetKey() == "service.name" {
					services = append(services, kv.GetValue().GetStringValue())
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					spans = append(spans, s.GetName())
				}
			}
		}
	}
	return spans, services
}

// exportOneSpan makes one span with tr and shuts tr down, which flushes it.
func exportOneSpan(t *testing.T, tr *Tracing, name string) {
	t.Helper()
	if !tr.Enabled() {
		t.Fatalf("NewTracing() is off, want on")
	}
	_, span := tr.Provider().Tracer("t").Start(testContext(t), name)
	span.End()
	if err := tr.Shutdown(testContext(t)); err != nil {
		t.Fatalf("Shutdown() = %v", err)
	}
}

func TestNewTracingExportsOTLPOverGRPC(t *testing.T) {
	col := &traceCollector{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, col)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	setEnv(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": "http://" + ln.Addr().String(),
		"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
	})

	tr, err := NewTracing(testContext(t), "keel-upload")
	if err != nil {
		t.Fatalf("NewTracing() error = %v", err)
	}
	if got := tr.Exporters(); !reflect.DeepEqual(got, []string{"otlp (grpc)"}) {
		t.Errorf("Exporters() = %q, want [otlp (grpc)]", got)
	}
	exportOneSpan(t, tr, "grpc-span")

	spans, services := exported(col.received())
	if !reflect.DeepEqual(spans, []string{"grpc-span"}) ||
		!reflect.DeepEqual(services, []string{"keel-upload"}) {
		t.Errorf("collector received spans %q of services %q, want [grpc-span] of "+
			"[keel-upload]", spans, services)
	}
}

func TestNewTracingExportsOTLPOverHTTP(t *testing.T) {
	var mu sync.Mutex
	var paths []string
	col := &traceCollector{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req := &collectortrace.ExportTraceServiceRequest{}
		if err := proto.Unmarshal(body, req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		col.Export(r.Context(), req)
		w.Header().Set("Content-Type", "application/x-protobuf")
		out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
		w.Write(out)
	}))
	t.Cleanup(srv.Close)
	setEnv(t, map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL,
		// OTEL_SERVICE_NAME wins over the name keel gives.
		"OTEL_SERVICE_NAME": "registry-edge",
	})

	tr, err := NewTracing(testContext(t), "keel")
	if err != nil {
		t.Fatalf("NewTracing() error = %v", err)
	}
	exportOneSpan(t, tr, "http-span")

	spans, services := exported(col.received())
	if !reflect.DeepEqual(spans, []string{"http-span"}) ||
		!reflect.DeepEqual(services, []string{"registry-edge"}) {
		t.Errorf("collector received spans %q of services %q, want [http-span] of "+
			"[registry-edge]", spans, services)
	}
	mu.Lock()
	defer mu.Unlock()
	if !reflect.DeepEqual(paths, []string{"POST /v1/traces"}) {
		t.Errorf("collector requests = %q, want [POST /v1/traces]", paths)
	}
}
