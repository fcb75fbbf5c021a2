package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
)

// logBuffer collects the JSON log lines a server writes.
type logBuffer struct{ telemetrytest.LogBuffer }

// callRecords returns the "rpc" records logged for method.
func (b *logBuffer) callRecords(t *testing.T, method string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, rec := range b.Records(t) {
		if rec["msg"] == "rpc" && rec["method"] == method {
			out = append(out, rec)
		}
	}
	return out
}

// authStub answers Authorize with a configurable result.
type authStub struct {
	authv1.UnimplementedAuthServiceServer
	name  string
	calls atomic.Int64
	fn    func(req *authv1.AuthorizeRequest) (*authv1.AuthorizeResponse, error)
}

func (a *authStub) Authorize(
	_ context.Context, req *authv1.AuthorizeRequest,
) (*authv1.AuthorizeResponse, error) {
	a.calls.Add(1)
	if a.fn != nil {
		return a.fn(req)
	}
	return &authv1.AuthorizeResponse{Subject: a.name}, nil
}

// uploadStub fails every ReadBlob stream with a configurable error.
type uploadStub struct {
	uploadv1.UnimplementedUploadServiceServer
	err error
}

func (u *uploadStub) ReadBlob(
	_ *uploadv1.ReadBlobRequest, stream grpc.ServerStreamingServer[uploadv1.ReadBlobResponse],
) error {
	if err := stream.Send(&uploadv1.ReadBlobResponse{Offset: 0}); err != nil {
		return err
	}
	return u.err
}

// serve starts srv on a loopback port and returns its address.
func serve(t *testing.T, srv *grpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// dial connects to target and closes the connection when the test ends.
func dial(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	conn, err := Dial(target)
	if err != nil {
		t.Fatalf("Dial(%q) = %v", target, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestUnaryErrorTranslation(t *testing.T) {
	const method = "/keel.auth.v1.AuthService/Authorize"
	tests := []struct {
		name      string
		err       error
		panicWith any
		wantCode  codes.Code
		wantOCI   ocierr.Code // "" when the status carries none
		wantLevel string
		// hidden must not appear in the client's message; it must appear in
		// the log line.
		hidden string
	}{
		{
			name:      "plain error becomes internal",
			err:       errors.New("put blobs/abc: dial tcp 10.0.0.7: refused"),
			wantCode:  codes.Internal,
			wantLevel: "ERROR",
			hidden:    "10.0.0.7",
		},
		{
			name:      "OCI error is sent as itself",
			err:       ocierr.New(ocierr.BlobUnknown, "blob unknown to registry"),
			wantCode:  codes.NotFound,
			wantOCI:   ocierr.BlobUnknown,
			wantLevel: "INFO",
		},
		{
			name: "wrapped OCI error loses the wrapping message",
			err: fmt.Errorf("stat key repos/secret-layout: %w",
				ocierr.New(ocierr.ManifestBlobUnknown, "layer missing")),
			wantCode:  codes.FailedPrecondition,
			wantOCI:   ocierr.ManifestBlobUnknown,
			wantLevel: "INFO",
			hidden:    "secret-layout",
		},
		{
			name:      "gRPC status passes through",
			err:       status.Error(codes.PermissionDenied, "no"),
			wantCode:  codes.PermissionDenied,
			wantLevel: "INFO",
		},
		{
			name:      "downstream unavailable is a server fault",
			err:       fmt.Errorf("call upload: %w", status.Error(codes.Unavailable, "down")),
			wantCode:  codes.Unavailable,
			wantLevel: "ERROR",
		},
		{
			name:      "deadline keeps its code",
			err:       fmt.Errorf("list: %w", context.DeadlineExceeded),
			wantCode:  codes.DeadlineExceeded,
			wantLevel: "INFO",
		},
		{
			name:      "panic becomes internal",
			panicWith: "boom at secret-place",
			wantCode:  codes.Internal,
			wantLevel: "ERROR",
			hidden:    "secret-place",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			logs := &logBuffer{}
			srv := NewServer(slog.New(slog.NewJSONHandler(logs, nil)))
			authv1.RegisterAuthServiceServer(srv, &authStub{
				fn: func(*authv1.AuthorizeRequest) (*authv1.AuthorizeResponse, error) {
					if tc.panicWith != nil {
						panic(tc.panicWith)
					}
					return nil, tc.err
				},
			})
			client := authv1.NewAuthServiceClient(dial(t, serve(t, srv)))

			_, err := client.Authorize(testContext(t), &authv1.AuthorizeRequest{})

			st := status.Convert(err)
			if st.Code() != tc.wantCode {
				t.Fatalf("Authorize() code = %v, want %v (err %v)", st.Code(), tc.wantCode, err)
			}
			if tc.wantCode == codes.Internal && st.Message() != "internal error" {
				t.Errorf("Authorize() message = %q, want %q", st.Message(), "internal error")
			}
			if tc.hidden != "" && strings.Contains(st.Message(), tc.hidden) {
				t.Errorf("Authorize() message = %q, leaks %q", st.Message(), tc.hidden)
			}
			if tc.wantOCI != "" {
				if got := ocierr.FromError(err).Code; got != tc.wantOCI {
					t.Errorf("ocierr.FromError(err).Code = %v, want %v", got, tc.wantOCI)
				}
			}

			recs := logs.callRecords(t, method)
			if len(recs) != 1 {
				t.Fatalf("log records for %s = %d, want 1: %v", method, len(recs), recs)
			}
			rec := recs[0]
			if rec["code"] != tc.wantCode.String() {
				t.Errorf("log code = %v, want %v", rec["code"], tc.wantCode)
			}
			if rec["level"] != tc.wantLevel {
				t.Errorf("log level = %v, want %v", rec["level"], tc.wantLevel)
			}
			if got, _ := rec["oci_code"].(string); got != string(tc.wantOCI) {
				t.Errorf("log oci_code = %q, want %q", got, tc.wantOCI)
			}
			if _, ok := rec["duration"]; !ok {
				t.Errorf("log record %v has no duration", rec)
			}
			msg, _ := rec["error"].(string)
			if tc.hidden != "" && !strings.Contains(msg, tc.hidden) {
				t.Errorf("log error = %q, want the cause %q", msg, tc.hidden)
			}
		})
	}
}

func TestUnarySuccessIsLoggedOnce(t *testing.T) {
	logs := &logBuffer{}
	srv := NewServer(slog.New(slog.NewJSONHandler(logs, nil)))
	authv1.RegisterAuthServiceServer(srv, &authStub{name: "alice"})
	client := authv1.NewAuthServiceClient(dial(t, serve(t, srv)))

	resp, err := client.Authorize(testContext(t), &authv1.AuthorizeRequest{})
	if err != nil {
		t.Fatalf("Authorize() = %v, want nil", err)
	}
	if resp.GetSubject() != "alice" {
		t.Errorf("Authorize().Subject = %q, want %q", resp.GetSubject(), "alice")
	}

	recs := logs.callRecords(t, "/keel.auth.v1.AuthService/Authorize")
	if len(recs) != 1 || recs[0]["code"] != "OK" || recs[0]["level"] != "INFO" {
		t.Errorf("log records = %v, want one INFO record with code OK", recs)
	}
}

func TestStreamErrorTranslation(t *testing.T) {
	const method = "/keel.upload.v1.UploadService/ReadBlob"
	logs := &logBuffer{}
	srv := NewServer(slog.New(slog.NewJSONHandler(logs, nil)))
	uploadv1.RegisterUploadServiceServer(srv, &uploadStub{
		err: errors.New("get object: secret-bucket timeout"),
	})
	client := uploadv1.NewUploadServiceClient(dial(t, serve(t, srv)))

	stream, err := client.ReadBlob(testContext(t), &uploadv1.ReadBlobRequest{})
	if err != nil {
		t.Fatalf("ReadBlob() = %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("first Recv() = %v, want the first message", err)
	}
	_, err = stream.Recv()

	st := status.Convert(err)
	if st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Errorf("second Recv() = %v, want Internal \"internal error\"", err)
	}
	recs := logs.callRecords(t, method)
	if len(recs) != 1 {
		t.Fatalf("log records for %s = %d, want 1", method, len(recs))
	}
	if msg, _ := recs[0]["error"].(string); !strings.Contains(msg, "secret-bucket") {
		t.Errorf("log error = %q, want the cause", msg)
	}
}

func TestHealthAndReflection(t *testing.T) {
	srv := NewServer(slog.New(slog.DiscardHandler))
	conn := dial(t, serve(t, srv))

	health := healthpb.NewHealthClient(conn)
	resp, err := health.Check(testContext(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Health.Check() = %v", err)
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Health.Check() = %v, want SERVING", resp.GetStatus())
	}

	info := srv.GetServiceInfo()
	for _, name := range []string{"grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if _, ok := info[name]; !ok {
			t.Errorf("service %s not registered; have %v", name, info)
		}
	}
}

func TestMessagesUpToLimit(t *testing.T) {
	// 10 MiB each way: over gRPC's default 4 MiB, under MaxMessageSize.
	big := strings.Repeat("x", 10<<20)
	srv := NewServer(slog.New(slog.DiscardHandler))
	authv1.RegisterAuthServiceServer(srv, &authStub{
		fn: func(req *authv1.AuthorizeRequest) (*authv1.AuthorizeResponse, error) {
			return &authv1.AuthorizeResponse{Subject: req.GetClientAddress()}, nil
		},
	})
	client := authv1.NewAuthServiceClient(dial(t, serve(t, srv)))

	resp, err := client.Authorize(testContext(t), &authv1.AuthorizeRequest{ClientAddress: big})
	if err != nil {
		t.Fatalf("Authorize(10 MiB) = %v, want nil", err)
	}
	if len(resp.GetSubject()) != len(big) {
		t.Errorf("Authorize(10 MiB).Subject has %d bytes, want %d",
			len(resp.GetSubject()), len(big))
	}

	over := strings.Repeat("x", MaxMessageSize+1)
	_, err = client.Authorize(testContext(t), &authv1.AuthorizeRequest{ClientAddress: over})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Authorize(over the limit) = %v, want ResourceExhausted", err)
	}
}

func TestDialBalancesRoundRobin(t *testing.T) {
	stubs := []*authStub{{name: "a"}, {name: "b"}}
	var addrs []string
	for _, s := range stubs {
		srv := NewServer(slog.New(slog.DiscardHandler))
		authv1.RegisterAuthServiceServer(srv, s)
		addrs = append(addrs, serve(t, srv))
	}
	// A static target lists both replicas' addresses, as DNS returns one
	// record per replica.
	client := authv1.NewAuthServiceClient(dial(t, "static:///"+strings.Join(addrs, ",")))

	ctx := testContext(t)
	call := func() {
		t.Helper()
		_, err := client.Authorize(ctx, &authv1.AuthorizeRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("Authorize() = %v", err)
		}
	}
	// Calls go only to replicas already connected: wait until both are.
	deadline := time.Now().Add(10 * time.Second)
	for stubs[0].calls.Load() == 0 || stubs[1].calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("replica calls = %d and %d after 10s, want both used (round robin)",
				stubs[0].calls.Load(), stubs[1].calls.Load())
		}
		call()
		time.Sleep(time.Millisecond)
	}

	before := []int64{stubs[0].calls.Load(), stubs[1].calls.Load()}
	for i := 0; i < 20; i++ {
		call()
	}
	for i, s := range stubs {
		if n := s.calls.Load() - before[i]; n != 10 {
			t.Errorf("replica %s served %d of 20 calls, want 10 (round robin)", s.name, n)
		}
	}
}
