package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/telemetry"
)

// healthPrefix marks the health service's methods, which probes call often
// enough that they are logged at debug level only.
const healthPrefix = "/grpc.health.v1.Health/"

// unaryInterceptor logs each unary call once and translates its error.
func unaryInterceptor(logger *slog.Logger, m *telemetry.Metrics) grpc.UnaryServerInterceptor {
	return func(
		ctx context.Context,
		req any,
		info *grpc.UnaryServerInfo,
		handler grpc.UnaryHandler,
	) (any, error) {
		start := time.Now()

		var resp any
		err := recovered(func() error {
			var err error
			resp, err = handler(ctx, req)
			return err
		})

		err = finish(ctx, logger, m, info.FullMethod, time.Since(start), err)
		if err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// streamInterceptor logs each streaming call once and translates its error.
func streamInterceptor(logger *slog.Logger, m *telemetry.Metrics) grpc.StreamServerInterceptor {
	return func(
		srv any,
		ss grpc.ServerStream,
		info *grpc.StreamServerInfo,
		handler grpc.StreamHandler,
	) error {
		start := time.Now()

		err := recovered(func() error { return handler(srv, ss) })

		return finish(ss.Context(), logger, m, info.FullMethod, time.Since(start), err)
	}
}

// recovered runs a handler and turns a panic in it into an error, so that
// one bad request costs one failed call rather than the whole process.
func recovered(run func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v\n%s", p, debug.Stack())
		}
	}()
	return run()
}

// finish logs and counts a finished call and returns the error to send to
// the client: nil, or a gRPC status error that carries no internal cause.
// The log line carries ctx, the call's context, so that a handler that
// wants the call's trace id finds it there.
func finish(
	ctx context.Context,
	logger *slog.Logger,
	m *telemetry.Metrics,
	method string,
	elapsed time.Duration,
	err error,
) error {
	st, internal := toStatus(err)
	m.ObserveRPC(method, st.Code(), elapsed)

	level := slog.LevelInfo
	if internal || serverFault(st.Code()) {
		level = slog.LevelError
	} else if strings.HasPrefix(method, healthPrefix) {
		level = slog.LevelDebug
	}
	if !logger.Enabled(ctx, level) {
		return st.Err()
	}

	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", st.Code().String()),
		slog.Duration("duration", elapsed),
	}
	if code := ociCode(st); code != "" {
		attrs = append(attrs, slog.String("oci_code", code))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	logger.LogAttrs(ctx, level, "rpc", attrs...)

	return st.Err()
}

// toStatus returns the status a handler's error is sent as. An
// *ocierr.Error or a gRPC status anywhere in err's chain is sent as itself
// (without the messages of the errors wrapping it, which may name internal
// details); a context error keeps its code; anything else becomes
// codes.Internal "internal error", and internal reports that.
func toStatus(err error) (st *status.Status, internal bool) {
	if err == nil {
		return status.New(codes.OK, ""), false
	}

	var oe *ocierr.Error
	if errors.As(err, &oe) {
		return oe.GRPCStatus(), false
	}

	var se interface{ GRPCStatus() *status.Status }
	if errors.As(err, &se) && se.GRPCStatus() != nil {
		return se.GRPCStatus(), false
	}

	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "call canceled"), false
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded"), false
	}
	return status.New(codes.Internal, "internal error"), true
}

// ociCode returns the OCI error code a status carries, or "".
func ociCode(st *status.Status) string {
	for _, d := range st.Details() {
		info, ok := d.(*errdetails.ErrorInfo)
		if ok && info.GetDomain() == ocierr.Domain {
			return info.GetReason()
		}
	}
	return ""
}

// serverFault reports whether a code means the server, not the caller, is
// at fault, so that the call is logged as an error.
func serverFault(c codes.Code) bool {
	switch c {
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable:
		return true
	}
	return false
}
