package gateway_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/keel-registry/keel/gateway"
	"github.com/keel-registry/keel/internal/telemetry"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
)

// observed is a harness whose gateway traces into spans and counts into
// reg, logging through telemetry's handler.
func observed(t *testing.T) (*harness, *tracetest.InMemoryExporter, *prometheus.Registry) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	reg := prometheus.NewRegistry()
	h := newHarness(t, harnessConfig{options: func(o *gateway.Options) {
		o.TracerProvider = tp
		o.Metrics = reg
		o.Logger = slog.New(telemetry.NewLogHandler(o.Logger.Handler()))
	}})
	return h, exp, reg
}

// spanAttr returns the value of key on s.
func spanAttr(s tracetest.SpanStub, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func TestRequestSpansNamedByRoute(t *testing.T) {
	h, exp, _ := observed(t)
	blob := randomBytes(t, 1000)

	resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	resp, body = h.do(t, http.MethodPatch, loc, blob)
	wantStatus(t, resp, body, http.StatusAccepted)
	resp, body = h.do(t, http.MethodGet, "/v2/team/app/nothing/here", nil)
	wantStatus(t, resp, body, http.StatusNotFound)

	spans := exp.GetSpans()
	want := []struct {
		name, route string
		status      int64
	}{
		{"POST /v2/{name}/blobs/uploads/", "/v2/{name}/blobs/uploads/", 202},
		{"PATCH /v2/{name}/blobs/uploads/{uuid}", "/v2/{name}/blobs/uploads/{uuid}", 202},
		{"GET", "", 404},
	}
	if len(spans) != len(want) {
		t.Fatalf("spans = %d, want %d", len(spans), len(want))
	}
	for i, w := range want {
		s := spans[i]
		if s.Name != w.name || s.SpanKind != trace.SpanKindServer {
			t.Errorf("span %d = %q (%v), want %q (server)", i, s.Name, s.SpanKind, w.name)
		}
		if got := spanAttr(s, "http.route").AsString(); got != w.route {
			t.Errorf("span %q http.route = %q, want %q", s.Name, got, w.route)
		}
		if got := spanAttr(s, "http.response.status_code").AsInt64(); got != w.status {
			t.Errorf("span %q status code = %d, want %d", s.Name, got, w.status)
		}
		if s.Status.Code == otelcodes.Error {
			t.Errorf("span %q status = Error for a %d, want unset", s.Name, w.status)
		}
	}
	if got := spanAttr(spans[1], "http.request.body.size").AsInt64(); got != int64(len(blob)) {
		t.Errorf("PATCH span request body size = %d, want %d", got, len(blob))
	}
}

func TestRequestSpanContinuesClientTrace(t *testing.T) {
	h, exp, _ := observed(t)
	const traceHex, parentHex = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"

	req := h.newRequest(t, http.MethodGet, "/v2/", nil)
	req.Header.Set("Traceparent", "00-"+traceHex+"-"+parentHex+"-01")
	resp, body := send(t, req)
	wantStatus(t, resp, body, http.StatusOK)

	spans := exp.GetSpans()
	if len(spans) != 1 {
		t.Fatalf("spans = %d, want 1", len(spans))
	}
	s := spans[0]
	if s.SpanContext.TraceID().String() != traceHex || s.Parent.SpanID().String() != parentHex {
		t.Errorf("span trace %s parent %s, want the client's %s and %s",
			s.SpanContext.TraceID(), s.Parent.SpanID(), traceHex, parentHex)
	}
	var logged bool
	for _, rec := range h.logs.Records(t) {
		if rec["msg"] != "request" {
			continue
		}
		logged = true
		if rec["trace_id"] != traceHex || rec["span_id"] != s.SpanContext.SpanID().String() {
			t.Errorf("request log line trace_id, span_id = %v, %v; want %s, %s",
				rec["trace_id"], rec["span_id"], traceHex, s.SpanContext.SpanID())
		}
	}
	if !logged {
		t.Errorf("no request log line")
	}
}

func TestMetricsCountRequestsAndSessions(t *testing.T) {
	h, _, reg := observed(t)
	blob := randomBytes(t, 1500)
	d := sha256Digest(blob)

	resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	resp, body = h.do(t, http.MethodPatch, loc, blob)
	wantStatus(t, resp, body, http.StatusAccepted)
	resp, body = h.do(t, http.MethodPut, resp.Header.Get("Location")+"?digest="+d, nil)
	wantStatus(t, resp, body, http.StatusCreated)
	h.pushBlob(t, "team/app", []byte("monolithic"))
	resp, body = h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	resp, body = h.do(t, http.MethodDelete, resp.Header.Get("Location"), nil)
	wantStatus(t, resp, body, http.StatusNoContent)
	resp, body = h.do(t, http.MethodGet, "/v2/team/app/blobs/"+d, nil)
	wantStatus(t, resp, body, http.StatusOK)
	resp, body = h.do(t, http.MethodGet, "/v2/team/app/nothing/here", nil)
	wantStatus(t, resp, body, http.StatusNotFound)

	fams := telemetrytest.Gather(t, reg)
	type labels = map[string]string
	const upload = "/v2/{name}/blobs/uploads/{uuid}"
	for _, tc := range []struct {
		name   string
		labels labels
		want   float64
	}{
		{"keel_http_requests_total", labels{"method": "PATCH", "route": upload,
			"status": "202"}, 1},
		{"keel_http_requests_total", labels{"method": "PUT", "route": upload,
			"status": "201"}, 1},
		{"keel_http_requests_total", labels{"method": "GET", "route": "unmatched",
			"status": "404"}, 1},
		{"keel_http_request_duration_seconds", labels{"method": "DELETE", "route": upload}, 1},
		{"keel_http_request_bytes_total", labels{"method": "PATCH", "route": upload},
			float64(len(blob))},
		{"keel_http_response_bytes_total", labels{"method": "GET",
			"route": "/v2/{name}/blobs/{digest}"}, float64(len(blob))},
		{"keel_upload_sessions_total", labels{"event": "started"}, 3},
		{"keel_upload_sessions_total", labels{"event": "committed"}, 2},
		{"keel_upload_sessions_total", labels{"event": "cancelled"}, 1},
		{"keel_upload_streams_in_flight", nil, 0},
	} {
		if got := fams.Sum(tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v; series %v", tc.name, tc.labels, got, tc.want,
				fams.Series(tc.name))
		}
	}
	for _, s := range fams.Series("keel_http_requests_total") {
		if strings.Contains(s, "team/app") || strings.Contains(s, "nothing") {
			t.Errorf("series %s holds a raw path", s)
		}
	}
}

func TestUploadStreamsInFlight(t *testing.T) {
	h, _, reg := observed(t)
	resp, body := h.do(t, http.MethodPost, "/v2/team/app/blobs/uploads/", nil)
	wantStatus(t, resp, body, http.StatusAccepted)
	loc := resp.Header.Get("Location")
	inFlight := func() float64 {
		return telemetrytest.Gather(t, reg).Sum("keel_upload_streams_in_flight", nil)
	}

	// A PATCH whose body is still arriving.
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, _ := noRedirects.Do(h.newRequest(t, http.MethodPatch, loc, pr))
		if resp != nil {
			resp.Body.Close()
		}
	}()
	if _, err := pw.Write(randomBytes(t, 100)); err != nil {
		t.Fatalf("write PATCH body: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for inFlight() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("keel_upload_streams_in_flight = %v during a PATCH, want 1", inFlight())
		}
		time.Sleep(10 * time.Millisecond)
	}

	pw.Close()
	<-done
	if got := inFlight(); got != 0 {
		t.Errorf("keel_upload_streams_in_flight = %v after the PATCH, want 0", got)
	}
}

func TestGatewaysShareARegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	gateway.New(gateway.Options{Metrics: reg})

	// A second gateway on the same registry reuses the metrics instead of
	// failing to register them again.
	gateway.New(gateway.Options{Metrics: reg})

	if _, ok := telemetrytest.Gather(t, reg)["keel_upload_sessions_total"]; !ok {
		t.Errorf("registry lacks keel_upload_sessions_total after two gateways")
	}
}
