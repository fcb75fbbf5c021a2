package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// logged returns the one JSON record in buf.
func logged(t *testing.T, buf *bytes.Buffer) map[string]any {
	t.Helper()
	rec := map[string]any{}
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("log output %q is not one JSON record: %v", buf.String(), err)
	}
	buf.Reset()
	return rec
}

func TestLogHandlerAddsTraceIDs(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil))).With("service", "upload")
	tp := sdktrace.NewTracerProvider()
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	ctx, span := tp.Tracer("t").Start(testContext(t), "op")
	defer span.End()

	logger.InfoContext(ctx, "rpc", "code", "OK")

	rec := logged(t, &buf)
	sc := span.SpanContext()
	if rec[TraceIDKey] != sc.TraceID().String() || rec[SpanIDKey] != sc.SpanID().String() {
		t.Errorf("record %v: trace_id, span_id = %v, %v; want %s, %s",
			rec, rec[TraceIDKey], rec[SpanIDKey], sc.TraceID(), sc.SpanID())
	}
	if rec["service"] != "upload" || rec["code"] != "OK" {
		t.Errorf("record %v lost the logger's or the call's attributes", rec)
	}
}

func TestLogHandlerWithoutSpan(t *testing.T) {
	var buf bytes.Buffer
	logger := slog.New(NewLogHandler(slog.NewJSONHandler(&buf, nil)))

	logger.InfoContext(testContext(t), "started")

	rec := logged(t, &buf)
	if _, ok := rec[TraceIDKey]; ok {
		t.Errorf("record %v has a trace_id without a span, want none", rec)
	}
}

func TestLogHandlerWrapsOnce(t *testing.T) {
	var buf bytes.Buffer
	h := NewLogHandler(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn}))

	if again := NewLogHandler(h); again != h {
		t.Errorf("NewLogHandler(a handler it made) wrapped it again, want it as it is")
	}
	if h.Enabled(context.Background(), slog.LevelInfo) {
		t.Errorf("Enabled(info) = true under a warn-level handler, want false")
	}
}
