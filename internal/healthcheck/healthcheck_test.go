package healthcheck

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// startHealth serves the standard health service on a free loopback port and
// returns its address and the server behind it, to change the status.
func startHealth(t *testing.T) (string, *health.Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String(), hs
}

// run calls Run with a bounded context and returns its error and output.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out bytes.Buffer
	err := Run(ctx, args, &out)
	return out.String(), err
}

func TestGRPCServing(t *testing.T) {
	addr, _ := startHealth(t)

	out, err := run(t, "-grpc", addr)
	if err != nil {
		t.Fatalf("Run(-grpc %s) = %v, want nil", addr, err)
	}
	if !strings.Contains(out, "SERVING") {
		t.Errorf("Run(-grpc %s) wrote %q, want it to say SERVING", addr, out)
	}
}

func TestGRPCNotServing(t *testing.T) {
	addr, hs := startHealth(t)
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)

	_, err := run(t, "-grpc", addr)
	if !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("Run(-grpc %s) on NOT_SERVING = %v, want ErrUnhealthy", addr, err)
	}
}

func TestGRPCNamedService(t *testing.T) {
	addr, hs := startHealth(t)
	hs.SetServingStatus("keel.upload.v1.UploadService", healthpb.HealthCheckResponse_SERVING)

	if _, err := run(t, "-grpc", addr, "-service", "keel.upload.v1.UploadService"); err != nil {
		t.Errorf("Run(-service known) = %v, want nil", err)
	}
	if _, err := run(t, "-grpc", addr, "-service", "no.such.Service"); err == nil {
		t.Error("Run(-service unknown) = nil, want an error")
	}
}

func TestGRPCUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	start := time.Now()
	_, err = run(t, "-grpc", addr, "-timeout", "3s")
	if err == nil {
		t.Fatalf("Run(-grpc %s) with nothing listening = nil, want an error", addr)
	}
	if errors.Is(err, ErrUnhealthy) {
		t.Errorf("Run(-grpc %s) = %v, want an error that is not ErrUnhealthy", addr, err)
	}
	if d := time.Since(start); d > 4*time.Second {
		t.Errorf("Run(-grpc %s) took %v, want it bounded by -timeout 3s", addr, d)
	}
}

func TestHTTPStatuses(t *testing.T) {
	for _, tc := range []struct {
		status int
		args   []string
		ok     bool
	}{
		{http.StatusOK, nil, true},
		{http.StatusNoContent, nil, true},
		{http.StatusUnauthorized, nil, true},
		{http.StatusForbidden, nil, false},
		{http.StatusNotFound, nil, false},
		{http.StatusInternalServerError, nil, false},
		{http.StatusServiceUnavailable, nil, false},
		{http.StatusFound, nil, false},
		{http.StatusForbidden, []string{"-status", "2xx,403"}, true},
		{http.StatusOK, []string{"-status", "403"}, false},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			if tc.status == http.StatusFound {
				w.Header().Set("Location", "/elsewhere")
			}
			w.WriteHeader(tc.status)
		}))
		args := append([]string{"-http", srv.URL + "/v2/"}, tc.args...)
		out, err := run(t, args...)
		srv.Close()

		if tc.ok && err != nil {
			t.Errorf("Run(%q) against %d = %v, want nil", args, tc.status, err)
		}
		if tc.ok && !strings.Contains(out, http.StatusText(tc.status)) {
			t.Errorf("Run(%q) wrote %q, want the status %d", args, out, tc.status)
		}
		if !tc.ok && !errors.Is(err, ErrUnhealthy) {
			t.Errorf("Run(%q) against %d = %v, want ErrUnhealthy", args, tc.status, err)
		}
	}
}

func TestHTTPIgnoresProxy(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	t.Setenv("HTTP_PROXY", "http://127.0.0.1:1")
	t.Setenv("http_proxy", "http://127.0.0.1:1")

	if _, err := run(t, "-http", srv.URL); err != nil {
		t.Errorf("Run(-http %s) with a dead proxy set = %v, want nil", srv.URL, err)
	}
}

func TestHTTPTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)

	start := time.Now()
	_, err := run(t, "-http", srv.URL, "-timeout", "200ms")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run(-http hanging server) = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Run(-http hanging server) took %v, want about 200ms", d)
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"-grpc", "127.0.0.1:1", "-http", "http://127.0.0.1:1/"},
		{"-http", "http://127.0.0.1:1/", "-status", "abc"},
		{"-http", "http://127.0.0.1:1/", "-status", "7xx"},
		{"-http", "http://127.0.0.1:1/", "extra"},
		{"-nosuchflag"},
	} {
		if _, err := run(t, args...); err == nil {
			t.Errorf("Run(%q) = nil, want an error", args)
		}
	}
}
