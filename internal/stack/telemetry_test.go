package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/keel-registry/keel/internal/s3embed"
	"github.com/keel-registry/keel/internal/telemetry/telemetrytest"
	"github.com/keel-registry/keel/services/auth"
)

const (
	testUser = "admin"
	testPass = "secret"
	// The upload route's span name and the gRPC method its PUT calls.
	commitRoute  = "PUT /v2/{name}/blobs/uploads/{uuid}"
	commitMethod = "keel.upload.v1.UploadService/CommitUpload"
)

// running is a stack started by startStack.
type running struct {
	base   string
	cancel context.CancelFunc
	errc   <-chan error

	once    sync.Once
	stopErr error
}

// startStack runs cfg until the test ends (or stop) and waits until the
// gateway answers.
func startStack(t *testing.T, cfg Config, logger *slog.Logger) *running {
	t.Helper()
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = freeAddr(t)
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Users = []auth.User{{Name: testUser, Password: testPass, Access: auth.ReadWrite}}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, cfg, logger) }()
	r := &running{base: "http://" + cfg.HTTPAddr, cancel: cancel, errc: errc}
	t.Cleanup(func() {
		if err := r.stop(t); err != nil {
			t.Errorf("Run() = %v", err)
		}
	})
	waitReady(t, r.base, errc)
	return r
}

// stop stops the stack and returns Run's result, the same on every call.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.stopErr = <-r.errc:
		case <-time.After(60 * time.Second):
			r.stopErr = errors.New("Run() did not return within 60s of cancel")
		}
	})
	return r.stopErr
}

// pusher sends a registry client's requests, each with header set.
type pusher struct {
	t      *testing.T
	base   string
	header http.Header
}

// do sends one request and returns the response with its body read.
func (p pusher) do(method, path string, body []byte) (*http.Response, []byte) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	url := path
	if !strings.HasPrefix(path, "http") {
		url = p.base + path
	}
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		p.t.Fatalf("NewRequest(%s %s) = %v", method, path, err)
	}
	for k, v := range p.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.SetBasicAuth(testUser, testPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s = %v", method, path, err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		p.t.Fatalf("read %s %s: %v", method, path, err)
	}
	return resp, got
}

// want sends a request and fails the test unless it gets status.
func (p pusher) want(status int, method, path string, body []byte) *http.Response {
	p.t.Helper()
	resp, got := p.do(method, path, body)
	if resp.StatusCode != status {
		p.t.Fatalf("%s %s = %d %s, want %d", method, path, resp.StatusCode, got, status)
	}
	return resp
}

// pushSession uploads blob to repo in a session: POST, PATCH, PUT.
func (p pusher) pushSession(repo string, blob []byte) {
	p.t.Helper()
	resp := p.want(http.StatusAccepted, "POST", "/v2/"+repo+"/blobs/uploads/", nil)
	loc := p.absolute(resp.Header.Get("Location"))
	resp = p.want(http.StatusAccepted, "PATCH", loc, blob)
	loc = p.absolute(resp.Header.Get("Location"))
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	p.want(http.StatusCreated, "PUT", loc+sep+"digest="+sha256Digest(blob), nil)
}

// absolute resolves a Location header against the registry's base.
func (p pusher) absolute(loc string) string {
	if strings.HasPrefix(loc, "http") {
		return loc
	}
	return p.base + loc
}

// pushImage pushes an image of one layer (through a session) and an empty
// config (monolithic), then its manifest as tag v1.
func (p pusher) pushImage(repo string, layer []byte) {
	p.t.Helper()
	p.pushSession(repo, layer)
	config := []byte("{}")
	p.want(http.StatusCreated, "POST",
		"/v2/"+repo+"/blobs/uploads/?digest="+sha256Digest(config), config)
	manifest := fmt.Appendf(nil, `{"schemaVersion":2,`+
		`"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar",`+
		`"digest":%q,"size":%d}]}`, sha256Digest(config), sha256Digest(layer), len(layer))
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "PUT", p.base+"/v2/"+repo+"/manifests/v1",
		bytes.NewReader(manifest))
	if err != nil {
		p.t.Fatal(err)
	}
	for k, v := range p.header {
		req.Header[k] = v
	}
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	req.SetBasicAuth(testUser, testPass)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("PUT manifest = %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		p.t.Fatalf("PUT manifest = %d %s, want 201", resp.StatusCode, body)
	}
}

// spanIndex looks spans up by id.
type spanIndex map[trace.SpanID]tracetest.SpanStub

func indexSpans(spans tracetest.SpanStubs) spanIndex {
	idx := spanIndex{}
	for _, s := range spans {
		idx[s.SpanContext.SpanID()] = s
	}
	return idx
}

// descends reports whether s is below ancestor in its trace.
func (idx spanIndex) descends(s tracetest.SpanStub, ancestor trace.SpanID) bool {
	for i := 0; i < 100 && s.Parent.IsValid(); i++ {
		if s.Parent.SpanID() == ancestor {
			return true
		}
		parent, ok := idx[s.Parent.SpanID()]
		if !ok {
			return false
		}
		s = parent
	}
	return false
}

// only returns the one span matching keep, failing the test otherwise.
func only(t *testing.T, spans tracetest.SpanStubs, what string,
	keep func(tracetest.SpanStub) bool) tracetest.SpanStub {
	t.Helper()
	var found []tracetest.SpanStub
	for _, s := range spans {
		if keep(s) {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		var all []string
		for _, s := range spans {
			all = append(all, s.Name+" ("+s.SpanKind.String()+")")
		}
		t.Fatalf("spans that are %s = %d, want 1; have %v", what, len(found), all)
	}
	return found[0]
}

// findRecord returns the one log record that has every field in want,
// failing the test otherwise.
func findRecord(t *testing.T, recs []map[string]any, want map[string]string) map[string]any {
	t.Helper()
	var found []map[string]any
	for _, r := range recs {
		ok := true
		for k, v := range want {
			if r[k] != v {
				ok = false
			}
		}
		if ok {
			found = append(found, r)
		}
	}
	if len(found) != 1 {
		t.Fatalf("log records with %v = %d, want 1", want, len(found))
	}
	return found[0]
}

func TestPushIsOneTrace(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	t.Cleanup(func() { tp.Shutdown(context.Background()) })
	logs := &telemetrytest.LogBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, nil))
	st := startStack(t, Config{TracerProvider: tp}, logger)

	// The client's own span, sent as W3C traceparent with every request of
	// the push, as a traced client would.
	const traceHex, clientSpanHex = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	p := pusher{t: t, base: st.base, header: http.Header{
		"Traceparent": {"00-" + traceHex + "-" + clientSpanHex + "-01"}}}
	p.pushImage("team/app", []byte("one layer, traced from the gateway to S3"))
	if err := st.stop(t); err != nil {
		t.Fatalf("Run() after cancel = %v", err)
	}

	spans := exp.GetSpans()
	idx := indexSpans(spans)
	named := func(name string, kind trace.SpanKind) func(tracetest.SpanStub) bool {
		return func(s tracetest.SpanStub) bool { return s.Name == name && s.SpanKind == kind }
	}
	// Every request of the push is a server span named by its route,
	// continuing the client's trace.
	routes := map[string]int{}
	for _, s := range spans {
		if strings.Contains(s.Name, "team/app") {
			t.Errorf("span %q names the raw path, want route templates only", s.Name)
		}
		if s.SpanKind != trace.SpanKindServer || !strings.Contains(s.Name, " /v2/") ||
			s.Name == "GET /v2/" { // startStack's readiness poll, not the push
			continue
		}
		routes[s.Name]++
		if s.SpanContext.TraceID().String() != traceHex ||
			s.Parent.SpanID().String() != clientSpanHex {
			t.Errorf("%s: trace %s parent %s, want the client's trace %s and span %s",
				s.Name, s.SpanContext.TraceID(), s.Parent.SpanID(), traceHex, clientSpanHex)
		}
	}
	wantRoutes := map[string]int{
		"POST /v2/{name}/blobs/uploads/":        2, // a session, a monolithic upload
		"PATCH /v2/{name}/blobs/uploads/{uuid}": 1,
		commitRoute:                             1,
		"PUT /v2/{name}/manifests/{reference}":  1,
	}
	if !maps.Equal(routes, wantRoutes) {
		t.Errorf("gateway spans = %v, want %v", routes, wantRoutes)
	}

	// The commit: gateway route -> gateway's gRPC client -> upload
	// service's server -> S3.
	route := only(t, spans, commitRoute, named(commitRoute, trace.SpanKindServer))
	client := only(t, spans, commitMethod+" client under "+commitRoute,
		func(s tracetest.SpanStub) bool {
			return named(commitMethod, trace.SpanKindClient)(s) &&
				s.Parent.SpanID() == route.SpanContext.SpanID()
		})
	server := only(t, spans, commitMethod+" server under its client",
		func(s tracetest.SpanStub) bool {
			return named(commitMethod, trace.SpanKindServer)(s) &&
				s.Parent.SpanID() == client.SpanContext.SpanID()
		})
	var s3Ops []string
	for _, s := range spans {
		if strings.HasPrefix(s.Name, "S3.") && idx.descends(s, server.SpanContext.SpanID()) {
			s3Ops = append(s3Ops, s.Name)
			if s.SpanContext.TraceID().String() != traceHex {
				t.Errorf("%s trace = %s, want %s", s.Name, s.SpanContext.TraceID(), traceHex)
			}
		}
	}
	if len(s3Ops) == 0 {
		t.Errorf("no S3 span below the upload service's %s span", commitMethod)
	}

	// The manifest service checks the layer with the upload service: that
	// hop is traced too, down to S3.
	putManifest := only(t, spans, "manifest service's PutManifest", named(
		"keel.manifest.v1.ManifestService/PutManifest", trace.SpanKindServer))
	var uploadCalls int
	for _, s := range spans {
		if s.SpanKind == trace.SpanKindServer &&
			strings.HasPrefix(s.Name, "keel.upload.v1.UploadService/") &&
			idx.descends(s, putManifest.SpanContext.SpanID()) {
			uploadCalls++
		}
	}
	if uploadCalls == 0 {
		t.Errorf("no upload service span below the manifest service's PutManifest")
	}

	// The log lines of the commit carry its trace: the gateway's request
	// line and the upload service's call line.
	recs := logs.Records(t)
	findRecord(t, recs, map[string]string{
		"msg": "request", "method": "PUT", "route": "/v2/{name}/blobs/uploads/{uuid}",
		"trace_id": traceHex, "span_id": route.SpanContext.SpanID().String(),
	})
	findRecord(t, recs, map[string]string{
		"msg": "rpc", "service": "upload", "method": "/" + commitMethod,
		"trace_id": traceHex, "span_id": server.SpanContext.SpanID().String(),
	})
}

func TestMetricsCountPushes(t *testing.T) {
	metricsAddr := freeAddr(t)
	st := startStack(t, Config{MetricsAddr: metricsAddr}, slog.New(slog.DiscardHandler))
	p := pusher{t: t, base: st.base}
	layer := []byte("a layer of 34 bytes, counted once")
	p.pushImage("team/app", layer)
	resp := p.want(http.StatusAccepted, "POST", "/v2/team/app/blobs/uploads/", nil)
	p.want(http.StatusNoContent, "DELETE", p.absolute(resp.Header.Get("Location")), nil)
	p.want(http.StatusOK, "GET", "/v2/team/app/blobs/"+sha256Digest(layer), nil)

	fams := telemetrytest.Scrape(t, "http://"+metricsAddr+MetricsPath)

	const uploadRoute, uploadsRoute = "/v2/{name}/blobs/uploads/{uuid}", "/v2/{name}/blobs/uploads/"
	type labels = map[string]string
	for _, tc := range []struct {
		name   string
		labels labels
		want   float64
	}{
		{"keel_http_requests_total",
			labels{"method": "POST", "route": uploadsRoute, "status": "202"}, 2},
		{"keel_http_requests_total",
			labels{"method": "POST", "route": uploadsRoute, "status": "201"}, 1},
		{"keel_http_requests_total",
			labels{"method": "PATCH", "route": uploadRoute, "status": "202"}, 1},
		{"keel_http_requests_total",
			labels{"method": "PUT", "route": uploadRoute, "status": "201"}, 1},
		{"keel_http_requests_total",
			labels{"method": "DELETE", "route": uploadRoute, "status": "204"}, 1},
		{"keel_http_requests_total", labels{"method": "PUT",
			"route": "/v2/{name}/manifests/{reference}", "status": "201"}, 1},
		{"keel_http_request_duration_seconds", labels{"method": "PATCH",
			"route": uploadRoute}, 1},
		{"keel_http_request_bytes_total", labels{"method": "PATCH", "route": uploadRoute},
			float64(len(layer))},
		{"keel_http_response_bytes_total", labels{"method": "GET",
			"route": "/v2/{name}/blobs/{digest}"}, float64(len(layer))},
		{"keel_upload_sessions_total", labels{"event": "started"}, 3},
		{"keel_upload_sessions_total", labels{"event": "committed"}, 2},
		{"keel_upload_sessions_total", labels{"event": "cancelled"}, 1},
		{"keel_upload_streams_in_flight", nil, 0},
		{"keel_grpc_server_handled_total", labels{
			"method": "/" + commitMethod, "code": "OK"}, 2},
		{"keel_grpc_server_handled_total", labels{
			"method": "/keel.manifest.v1.ManifestService/PutManifest", "code": "OK"}, 1},
		{"keel_grpc_server_handled_total", labels{
			"method": "/keel.upload.v1.UploadService/CancelUpload", "code": "OK"}, 1},
	} {
		if got := fams.Sum(tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v; series %v", tc.name, tc.labels, got, tc.want,
				fams.Series(tc.name))
		}
	}
	for _, service := range []string{"upload", "manifest"} {
		if got := fams.Sum("keel_s3_requests_total", labels{"service": service}); got == 0 {
			t.Errorf("keel_s3_requests_total{service=%q} = 0, want its S3 calls counted",
				service)
		}
	}
	if !fams.Has("keel_s3_requests_total", labels{"service": "upload",
		"operation": "HeadBucket"}) {
		t.Errorf("keel_s3_requests_total has no upload HeadBucket (the start-up check); "+
			"series %v", fams.Series("keel_s3_requests_total"))
	}
	for _, s := range fams.Series("keel_http_requests_total") {
		if strings.Contains(s, "team/app") {
			t.Errorf("keel_http_requests_total series %s holds a raw path", s)
		}
	}
}

// tcpProxy forwards loopback connections to a target until it is set down,
// which cuts every connection and refuses new ones: an unreachable store.
type tcpProxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

// startProxy forwards a new loopback port to target until the test ends.
func startProxy(t *testing.T, target string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	p := &tcpProxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	go p.serve()
	t.Cleanup(func() {
		ln.Close()
		p.setDown(true)
	})
	return p
}

func (p *tcpProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(in)
	}
}

// forward copies in to a new connection to the target and back.
func (p *tcpProxy) forward(in net.Conn) {
	out, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		in.Close()
		return
	}
	if !p.track(in, out) {
		in.Close()
		out.Close()
		return
	}
	go func() {
		io.Copy(out, in)
		out.Close()
	}()
	io.Copy(in, out)
	in.Close()
}

// track records a forwarded pair; false when the proxy is down.
func (p *tcpProxy) track(conns ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	for _, c := range conns {
		p.conns[c] = true
	}
	return true
}

// setDown cuts every connection and refuses new ones, or forwards again.
func (p *tcpProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if !down {
		return
	}
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// healthOf asks the health service at addr about service, as a probe
// does: over a plain connection of its own.
func healthOf(t *testing.T, addr, service string) healthpb.HealthCheckResponse_ServingStatus {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient(%s) = %v", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx,
		&healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		t.Fatalf("Health.Check(%s, %q) = %v", addr, service, err)
	}
	return resp.GetStatus()
}

// waitHealth polls until the health service at addr reports want.
func waitHealth(
	t *testing.T, addr, service string, want healthpb.HealthCheckResponse_ServingStatus,
) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		got := healthOf(t, addr, service)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("Health.Check(%s, %q) = %v after 15s, want %v", addr, service, got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestHealthFollowsTheStore(t *testing.T) {
	const (
		serving    = healthpb.HealthCheckResponse_SERVING
		notServing = healthpb.HealthCheckResponse_NOT_SERVING
	)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s3, err := s3embed.Start(ctx, s3embed.Options{Dir: t.TempDir()})
	if err != nil {
		t.Fatalf("s3embed.Start() = %v", err)
	}
	t.Cleanup(func() { s3.Close() })
	proxy := startProxy(t, strings.TrimPrefix(s3.Endpoint(), "http://"))
	addrs := map[string]string{
		"auth": freeAddr(t), "upload": freeAddr(t), "manifest": freeAddr(t)}
	st := startStack(t, Config{
		S3Endpoint:        "http://" + proxy.ln.Addr().String(),
		S3Region:          s3.Region(),
		S3AccessKeyID:     s3.AccessKey(),
		S3SecretAccessKey: s3.SecretKey(),
		S3PathStyle:       true,
		AuthAddr:          addrs["auth"],
		UploadAddr:        addrs["upload"],
		ManifestAddr:      addrs["manifest"],
		HealthInterval:    100 * time.Millisecond,
	}, slog.New(slog.DiscardHandler))

	for name, addr := range addrs {
		if got := healthOf(t, addr, ""); got != serving {
			t.Errorf("%s health = %v, want SERVING", name, got)
		}
	}
	if got := healthOf(t, addrs["upload"], "keel.upload.v1.UploadService"); got != serving {
		t.Errorf("upload health of keel.upload.v1.UploadService = %v, want SERVING", got)
	}

	proxy.setDown(true)
	waitHealth(t, addrs["upload"], "", notServing)
	waitHealth(t, addrs["manifest"], "keel.manifest.v1.ManifestService", notServing)
	if got := healthOf(t, addrs["auth"], ""); got != serving {
		t.Errorf("auth health with the store down = %v, want SERVING (it signs "+
			"with the keys it holds)", got)
	}

	proxy.setDown(false)
	waitHealth(t, addrs["upload"], "", serving)
	waitHealth(t, addrs["manifest"], "", serving)

	// On stop, the upload service reports NOT_SERVING to a watcher while it
	// still serves, before it drains.
	conn, err := grpc.NewClient(addrs["upload"],
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	defer conn.Close()
	watchCtx, endWatch := context.WithCancel(ctx)
	defer endWatch()
	watch, err := healthpb.NewHealthClient(conn).Watch(watchCtx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Health.Watch() = %v", err)
	}
	if first, err := watch.Recv(); err != nil || first.GetStatus() != serving {
		t.Fatalf("first Watch answer = %v, %v; want SERVING", first, err)
	}
	stopped := make(chan error, 1)
	go func() { stopped <- st.stop(t) }()
	next, err := watch.Recv()
	if err != nil || next.GetStatus() != notServing {
		t.Fatalf("Watch answer during stop = %v, %v; want NOT_SERVING", next, err)
	}
	// The watch is a call still running: end it, so the drain can finish.
	endWatch()
	if err := <-stopped; err != nil {
		t.Errorf("Run() after cancel = %v, want a clean stop", err)
	}
}

func TestConfigFromEnvTelemetryVariables(t *testing.T) {
	cfg, err := ConfigFromEnv(env(map[string]string{
		"KEEL_METRICS_ADDR":    ":9100",
		"KEEL_HEALTH_INTERVAL": "2s",
	}))
	if err != nil {
		t.Fatalf("ConfigFromEnv() = %v", err)
	}
	if cfg.MetricsAddr != ":9100" || cfg.HealthInterval != 2*time.Second {
		t.Errorf("ConfigFromEnv() MetricsAddr, HealthInterval = %q, %v; want :9100, 2s",
			cfg.MetricsAddr, cfg.HealthInterval)
	}

	d := Config{}.withDefaults()
	if d.MetricsAddr != "" || d.HealthInterval != DefaultHealthInterval {
		t.Errorf("withDefaults() MetricsAddr, HealthInterval = %q, %v; want \"\" (off), %v",
			d.MetricsAddr, d.HealthInterval, DefaultHealthInterval)
	}

	_, err = ConfigFromEnv(env(map[string]string{"KEEL_HEALTH_INTERVAL": "-1s"}))
	if err == nil || !strings.Contains(err.Error(), "KEEL_HEALTH_INTERVAL") {
		t.Errorf("ConfigFromEnv(negative interval) = %v, want an error naming it", err)
	}
}
