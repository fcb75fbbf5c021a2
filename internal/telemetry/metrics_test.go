package telemetry

import (
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
)

func TestMetricsServesRPCs(t *testing.T) {
	m := NewMetrics()
	const method = "/keel.upload.v1.UploadService/CommitUpload"
	m.ObserveRPC(method, codes.OK, 20*time.Millisecond)
	m.ObserveRPC(method, codes.OK, 30*time.Millisecond)
	m.ObserveRPC(method, codes.NotFound, time.Millisecond)
	srv := httptest.NewServer(m.Handler())
	t.Cleanup(srv.Close)

	fams := telemetrytest.Scrape(t, srv.URL)

	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"keel_grpc_server_handled_total", map[string]string{"method": method, "code": "OK"}, 2},
		{"keel_grpc_server_handled_total",
			map[string]string{"method": method, "code": "NotFound"}, 1},
		{"keel_grpc_server_handling_seconds", map[string]string{"method": method}, 3},
	} {
		if got := fams.Sum(tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v; series %v", tc.name, tc.labels, got, tc.want,
				fams.Series(tc.name))
		}
	}
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if _, ok := fams[name]; !ok {
			t.Errorf("scrape lacks %s, want the runtime and process metrics", name)
		}
	}
}

func TestNilMetricsRecordNothing(t *testing.T) {
	var m *Metrics

	m.ObserveRPC("/x.Y/Z", codes.OK, time.Second)
	m.observeS3("upload", "PutObject", "", time.Second)

	if m.Registerer() != nil {
		t.Errorf("(*Metrics)(nil).Registerer() = %v, want nil", m.Registerer())
	}
}
