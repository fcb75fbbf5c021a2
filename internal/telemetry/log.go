package telemetry

import (
	"context"
	"log/slog"

	"go.opentelemetry.io/otel/trace"
)

// The attributes NewLogHandler adds to a record logged inside a span.
const (
	TraceIDKey = "trace_id"
	SpanIDKey  = "span_id"
)

// NewLogHandler returns a handler that adds the trace_id and span_id of the
// span in a record's context (when there is one) to the record, then hands
// it to h. Log with a context (slog.Logger.InfoContext, LogAttrs, ...) for
// the ids to appear. Wrapping a handler NewLogHandler made returns it as
// it is.
//
// Under a group opened with WithGroup the ids land inside that group; keel
// opens none.
func NewLogHandler(h slog.Handler) slog.Handler {
	if _, ok := h.(*logHandler); ok {
		return h
	}
	return &logHandler{next: h}
}

// logHandler is the slog.Handler NewLogHandler returns.
type logHandler struct {
	next slog.Handler
}

// Enabled reports whether the wrapped handler takes records at level.
func (h *logHandler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.next.Enabled(ctx, level)
}

// Handle adds the span's ids to r and passes it on.
func (h *logHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if sc.IsValid() {
		// The caller may hand the same record to other handlers: add to a
		// copy that shares nothing with it.
		r = r.Clone()
		r.AddAttrs(
			slog.String(TraceIDKey, sc.TraceID().String()),
			slog.String(SpanIDKey, sc.SpanID().String()),
		)
	}
	return h.next.Handle(ctx, r)
}

// WithAttrs returns the handler with attrs added to every record.
func (h *logHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &logHandler{next: h.next.WithAttrs(attrs)}
}

// WithGroup returns the handler with later attributes under name.
func (h *logHandler) WithGroup(name string) slog.Handler {
	return &logHandler{next: h.next.WithGroup(name)}
}
