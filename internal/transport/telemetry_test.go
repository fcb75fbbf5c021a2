package transport

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	"github.com/keel-registry/keel/internal/telemetry"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
)

// tracer returns a provider that keeps every ended span in memory.
func tracer(t *testing.T) (*sdktrace.TracerProvider, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	return tp, exp
}

// findSpan returns the one span called name of kind, failing the test when
// there is not exactly one.
func findSpan(
	t *testing.T, spans tracetest.SpanStubs, name string, kind trace.SpanKind,
) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	var all []string
	for _, s := range spans {
		all = append(all, s.Name+" ("+s.SpanKind.String()+")")
		if s.Name == name && s.SpanKind == kind {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("spans named %s of kind %v = %d, want 1; have %v", name, kind, len(found), all)
	}
	return found[0]
}

func TestTracingAcrossACall(t *testing.T) {
	const method = "/keel.auth.v1.AuthService/Authorize"
	tp, exp := tracer(t)
	logs := &logBuffer{}
	metrics := telemetry.NewMetrics()
	logger := slog.New(telemetry.NewLogHandler(slog.NewJSONHandler(logs, nil)))
	srv := NewServer(logger, WithTracing(tp), WithMetrics(metrics))
	authv1.RegisterAuthServiceServer(srv, &authStub{name: "alice"})
	addr := serve(t, srv)
	conn, err := Dial(addr, WithTracing(tp))
	if err != nil {
		t.Fatalf("Dial() = %v", err)
	}
	t.Cleanup(func() { conn.Close() })

	ctx, parent := tp.Tracer("test").Start(testContext(t), "GET /v2/")
	if _, err := authv1.NewAuthServiceClient(conn).Authorize(ctx,
		&authv1.AuthorizeRequest{}); err != nil {
		t.Fatalf("Authorize() = %v", err)
	}
	parent.End()
	health := healthpb.NewHealthClient(conn)
	if _, err := health.Check(testContext(t), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("Health.Check() = %v", err)
	}

	spans := exp.GetSpans()
	name := strings.TrimPrefix(method, "/")
	client := findSpan(t, spans, name, trace.SpanKindClient)
	server := findSpan(t, spans, name, trace.SpanKindServer)
	traceID := parent.SpanContext().TraceID()
	if client.Parent.SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("client span parent = %s, want the caller's span %s",
			client.Parent.SpanID(), parent.SpanContext().SpanID())
	}
	if server.Parent.SpanID() != client.SpanContext.SpanID() || !server.Parent.IsRemote() {
		t.Errorf("server span parent = %s (remote %v), want the client span %s, remote",
			server.Parent.SpanID(), server.Parent.IsRemote(), client.SpanContext.SpanID())
	}
	if client.SpanContext.TraceID() != traceID || server.SpanContext.TraceID() != traceID {
		t.Errorf("trace ids = %s and %s, want the caller's %s",
			client.SpanContext.TraceID(), server.SpanContext.TraceID(), traceID)
	}
	if len(spans) != 3 {
		t.Errorf("spans = %d, want 3 (the health check makes none)", len(spans))
	}

	recs := logs.callRecords(t, method)
	if len(recs) != 1 {
		t.Fatalf("log records for %s = %d, want 1", method, len(recs))
	}
	if recs[0]["trace_id"] != traceID.String() ||
		recs[0]["span_id"] != server.SpanContext.SpanID().String() {
		t.Errorf("log record trace_id, span_id = %v, %v; want %s, %s", recs[0]["trace_id"],
			recs[0]["span_id"], traceID, server.SpanContext.SpanID())
	}

	web := httptest.NewServer(metrics.Handler())
	t.Cleanup(web.Close)
	fams := telemetrytest.Scrape(t, web.URL)
	if got := fams.Sum("keel_grpc_server_handled_total",
		map[string]string{"method": method, "code": "OK"}); got != 1 {
		t.Errorf("keel_grpc_server_handled_total{%s,OK} = %v, want 1", method, got)
	}
	if got := fams.Sum("keel_grpc_server_handled_total", map[string]string{
		"method": "/grpc.health.v1.Health/Check", "code": "OK"}); got != 1 {
		t.Errorf("keel_grpc_server_handled_total{Health/Check,OK} = %v, want 1", got)
	}
}

// check asks conn's health service about service.
func check(
	t *testing.T, health healthpb.HealthClient, service string,
) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	resp, err := health.Check(testContext(t), &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("Health.Check(%q) = %v", service, err)
	}
	return resp.GetStatus()
}

func TestHealthReportsWhatIsSet(t *testing.T) {
	const (
		serving    = healthpb.HealthCheckResponse_SERVING
		notServing = healthpb.HealthCheckResponse_NOT_SERVING
	)
	h := NewHealth()
	srv := NewServer(slog.New(slog.DiscardHandler), WithHealth(h))
	authv1.RegisterAuthServiceServer(srv, &authStub{})
	h.SetServing(true)
	// A plain connection, as a probe makes: one made by Dial would refuse
	// to call a server that is NOT_SERVING at all.
	conn, err := grpc.NewClient(serve(t, srv),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { conn.Close() })
	health := healthpb.NewHealthClient(conn)

	steps := []struct {
		name string
		do   func()
		want healthpb.HealthCheckResponse_ServingStatus
	}{
		{"start", func() {}, serving},
		{"SetServing(false)", func() { h.SetServing(false) }, notServing},
		{"SetServing(true)", func() { h.SetServing(true) }, serving},
		{"Shutdown", h.Shutdown, notServing},
		{"SetServing(true) after Shutdown", func() { h.SetServing(true) }, notServing},
	}
	for _, st := range steps {
		st.do()
		for _, service := range []string{"", "keel.auth.v1.AuthService"} {
			if got := check(t, health, service); got != st.want {
				t.Errorf("after %s: Check(%q) = %v, want %v", st.name, service, got, st.want)
			}
		}
		if got := h.Serving(); got != (st.want == serving) {
			t.Errorf("after %s: Serving() = %v, want %v", st.name, got, st.want == serving)
		}
	}
}

func TestDialSkipsReplicasNotServing(t *testing.T) {
	stubs := []*authStub{{name: "a"}, {name: "b"}}
	var healths []*Health
	var addrs []string
	for _, s := range stubs {
		h := NewHealth()
		srv := NewServer(slog.New(slog.DiscardHandler), WithHealth(h))
		authv1.RegisterAuthServiceServer(srv, s)
		healths = append(healths, h)
		addrs = append(addrs, serve(t, srv))
	}
	client := authv1.NewAuthServiceClient(dial(t, "static:///"+strings.Join(addrs, ",")))
	ctx := testContext(t)

	// callsTo makes n calls and returns how many each replica served.
	callsTo := func(n int) []int64 {
		t.Helper()
		before := []int64{stubs[0].calls.Load(), stubs[1].calls.Load()}
		for range n {
			// Waiting for a ready replica: in the moment after a health
			// change, the one serving may still be connecting.
			_, err := client.Authorize(ctx, &authv1.AuthorizeRequest{}, grpc.WaitForReady(true))
			if err != nil {
				t.Fatalf("Authorize() = %v", err)
			}
		}
		return []int64{stubs[0].calls.Load() - before[0], stubs[1].calls.Load() - before[1]}
	}
	// waitFor calls until only replica only serves calls, as the client
	// learns of health changes by a watch.
	waitFor := func(only int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			got := callsTo(10)
			if got[only] == 10 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("calls per replica = %v, want all 10 on replica %d", got, only)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// Both replicas connected and serving first.
	deadline := time.Now().Add(10 * time.Second)
	for stubs[0].calls.Load() == 0 || stubs[1].calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("replica calls = %d and %d after 10s, want both used",
				stubs[0].calls.Load(), stubs[1].calls.Load())
		}
		callsTo(1)
	}

	healths[0].SetServing(false)
	waitFor(1)
	if got := callsTo(20); got[0] != 0 {
		t.Errorf("replica a (NOT_SERVING) served %d of 20 calls, want 0", got[0])
	}

	healths[0].SetServing(true)
	healths[1].SetServing(false)
	waitFor(0)

	// With no replica serving, calls fail at once rather than reach one.
	healths[0].SetServing(false)
	deadline = time.Now().Add(10 * time.Second)
	for {
		_, err := client.Authorize(ctx, &authv1.AuthorizeRequest{})
		if status.Code(err) == codes.Unavailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Authorize() with no replica serving = %v, want Unavailable", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestGracefulStopEndsHealthWatches(t *testing.T) {
	h := NewHealth()
	srv := NewServer(slog.New(slog.DiscardHandler), WithHealth(h))
	authv1.RegisterAuthServiceServer(srv, &authStub{})
	client := authv1.NewAuthServiceClient(dial(t, serve(t, srv)))
	// The connection now watches the server's health for as long as it is
	// open.
	if _, err := client.Authorize(testContext(t), &authv1.AuthorizeRequest{}); err != nil {
		t.Fatalf("Authorize() = %v", err)
	}

	h.Shutdown()
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()

	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("GracefulStop() still waiting after 5s with a health-watching client " +
			"connected, want it to end the watch and return")
	}
}
