// Package gateway is the registry's only HTTP edge. It speaks the OCI
// Distribution Specification v1.1 and Docker's Registry API v2 to clients and
// turns every request into gRPC calls to the auth, upload and manifest
// services. It holds no registry state and no storage credentials.
package gateway

import (
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/telemetry"
)

// Defaults for the zero values of Options.
const (
	DefaultAuthCacheTTL    = 5 * time.Second
	DefaultRealm           = "keel"
	DefaultMaxManifestSize = 4 << 20
)

// Options configures a gateway.
type Options struct {
	// Auth decides who a caller is and what it may do.
	Auth authv1.AuthServiceClient
	// Uploads owns blobs and upload sessions.
	Uploads uploadv1.UploadServiceClient
	// Manifests owns manifests, tags, referrers and the catalog. Its server
	// must accept messages of MaxManifestSize plus a little framing; the
	// gateway raises its own receive limit for GetManifest per call.
	Manifests manifestv1.ManifestServiceClient
	// Query answers the query API, served as JSON under /api/v1/; nil
	// leaves that path unrouted.
	Query manifestv1.QueryServiceClient
	// Logger gets one line per request, logged with the request's context
	// (which holds its span); nil means slog.Default().
	Logger *slog.Logger
	// TracerProvider makes a server span for every request, named after the
	// method and route template ("PATCH /v2/{name}/blobs/uploads/{uuid}"),
	// that continues a trace the client sent (W3C traceparent). The gRPC
	// calls a request makes are its children when the clients above trace
	// too. nil means no spans.
	TracerProvider trace.TracerProvider
	// Metrics is where the gateway registers its Prometheus metrics
	// (keel_http_*, keel_upload_*); nil means none.
	Metrics prometheus.Registerer
	// AuthCacheTTL is how long an Authorize answer is reused; 0 means
	// DefaultAuthCacheTTL.
	AuthCacheTTL time.Duration
	// Realm is the basic-auth realm; "" means DefaultRealm.
	Realm string
	// BlobRedirect answers blob GETs with a 307 to a presigned URL when the
	// upload service gives one.
	BlobRedirect bool
	// MaxManifestSize is the largest manifest accepted; 0 means
	// DefaultMaxManifestSize.
	MaxManifestSize int64

	// TokenAuth answers 401s with a Bearer challenge that sends clients to
	// the token endpoint (/token) for a registry token, Docker's token flow;
	// false asks for basic auth. Both basic credentials and registry tokens
	// are accepted either way.
	TokenAuth bool
	// TokenRealm is the token endpoint's URL in Bearer challenges; "" means
	// the request's own scheme and host plus /token.
	TokenRealm string
	// TokenService names the registry in Bearer challenges and is the
	// audience of its tokens; "" means DefaultTokenService.
	TokenService string
	// KeyRefresh is how often the auth service's token keys are fetched
	// again; 0 means DefaultKeyRefresh.
	KeyRefresh time.Duration
	// TrustedProxies are the networks of reverse proxies whose
	// X-Forwarded-For, -Proto and -Host headers are believed; none means
	// they are ignored.
	TrustedProxies []netip.Prefix
}

// gateway is the HTTP handler New returns.
type gateway struct {
	uploads   uploadv1.UploadServiceClient
	manifests manifestv1.ManifestServiceClient
	log       *slog.Logger
	// tracer is nil without Options.TracerProvider.
	tracer trace.Tracer
	// propagator reads the trace context clients send.
	propagator propagation.TextMapPropagator
	// metrics is nil without Options.Metrics.
	metrics *metrics

	access          *authorizer
	tokens          tokenFlow
	realm           string
	blobRedirect    bool
	maxManifestSize int64
	routes          router
	// api serves the query API; nil without Options.Query.
	api *queryAPI
}

// New returns the registry's HTTP handler.
func New(opts Options) http.Handler {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.AuthCacheTTL <= 0 {
		opts.AuthCacheTTL = DefaultAuthCacheTTL
	}
	if opts.Realm == "" {
		opts.Realm = DefaultRealm
	}
	if opts.MaxManifestSize <= 0 {
		opts.MaxManifestSize = DefaultMaxManifestSize
	}
	if opts.TokenService == "" {
		opts.TokenService = DefaultTokenService
	}
	if opts.KeyRefresh <= 0 {
		opts.KeyRefresh = DefaultKeyRefresh
	}
	trusted := proxies(opts.TrustedProxies)
	keys := newKeySet(opts.Auth, opts.TokenService, opts.KeyRefresh)
	access := newAuthorizer(opts.Auth, keys, opts.AuthCacheTTL, maxAuthCacheEntries, trusted)
	tokens := tokenFlow{
		challenge: opts.TokenAuth,
		realm:     opts.TokenRealm,
		service:   opts.TokenService,
		proxies:   trusted,
	}

	g := &gateway{
		uploads:         opts.Uploads,
		manifests:       opts.Manifests,
		log:             opts.Logger,
		tracer:          newTracer(opts.TracerProvider),
		propagator:      telemetry.Propagator(),
		metrics:         newMetrics(opts.Metrics),
		access:          access,
		tokens:          tokens,
		realm:           opts.Realm,
		blobRedirect:    opts.BlobRedirect,
		maxManifestSize: opts.MaxManifestSize,
	}
	g.routes = g.newRouter()
	g.api = g.newAPI(opts.Query)
	return g
}

// newRouter maps each route and method to its handler.
func (g *gateway) newRouter() router {
	rt := router{}
	rt.handle(routeBase, g.base, http.MethodGet, http.MethodHead)
	rt.handle(routeCatalog, g.catalog, http.MethodGet)
	rt.handle(routeToken, g.issueToken, http.MethodGet, http.MethodPost)
	rt.handle(routeTags, g.listTags, http.MethodGet)
	rt.handle(routeReferrers, g.listReferrers, http.MethodGet)
	rt.handle(routeAPI, g.serveAPI, http.MethodGet)

	rt.handle(routeManifest, g.getManifest, http.MethodGet, http.MethodHead)
	rt.handle(routeManifest, g.putManifest, http.MethodPut)
	rt.handle(routeManifest, g.deleteManifest, http.MethodDelete)

	rt.handle(routeBlob, g.getBlob, http.MethodGet)
	rt.handle(routeBlob, g.headBlob, http.MethodHead)
	rt.handle(routeBlob, g.deleteBlob, http.MethodDelete)

	rt.handle(routeUploads, g.startUpload, http.MethodPost)
	rt.handle(routeUpload, g.writeUpload, http.MethodPatch)
	rt.handle(routeUpload, g.commitUpload, http.MethodPut)
	rt.handle(routeUpload, g.getUpload, http.MethodGet)
	rt.handle(routeUpload, g.cancelUpload, http.MethodDelete)
	return rt
}

// request is one HTTP request with its route resolved and checked.
type request struct {
	*http.Request
	route route
	// name is the repository, "" for routes without one.
	name string
	// param is the path's last part: a digest, reference or upload id.
	param string
	// digest and upload are logged when set; handlers fill them in as they
	// learn them.
	digest string
	upload string
	// cleanupErr is a failure while cleaning up after an error, logged
	// with the request.
	cleanupErr error
}

// ServeHTTP routes, authorizes and answers one request inside its span,
// then counts and logs it.
func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	r, span := g.startSpan(r)
	defer span.End()
	rec := &recorder{ResponseWriter: w}
	if r.Body == nil {
		r.Body = http.NoBody
	}
	body := &countingReader{r: r.Body}
	r.Body = body
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")

	req, h, err := g.prepare(r)
	nameSpan(span, req)
	if err == nil {
		err = g.handle(h, rec, req)
	}
	if err != nil {
		g.fail(rec, req, err)
	}

	elapsed := time.Since(start)
	endSpan(span, rec, body.n)
	g.metrics.observe(req, rec.statusCode(), body.n, rec.n, elapsed)
	g.logRequest(req, rec, body.n, elapsed, err)
}

// handle runs the request's handler, counting it while it streams an
// upload.
func (g *gateway) handle(h handlerFunc, w *recorder, req *request) error {
	done := g.metrics.streaming(req)
	defer done()
	return h(w, req)
}

// newTracer returns the gateway's tracer from tp, or nil for a nil tp.
func newTracer(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		return nil
	}
	return tp.Tracer(telemetry.ScopeName)
}

// startSpan starts the request's server span, continuing the client's trace
// if it sent one, and returns the request with the span in its context.
//
// Any client's traceparent is believed: with the default parent-based
// sampler a client can have its requests sampled (or not) and choose their
// trace ids. A sampler that ignores the parent (OTEL_TRACES_SAMPLER=
// traceidratio) takes that choice away from clients.
// The span is named after the method until the route is known. Without a
// tracer it is a no-op span that costs nothing.
func (g *gateway) startSpan(r *http.Request) (*http.Request, trace.Span) {
	if g.tracer == nil {
		return r, noop.Span{}
	}

	ctx := g.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	method := methodLabel(r.Method)
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(method),
		semconv.URLPath(truncate(r.URL.Path, maxLoggedLength)),
	}
	if method != r.Method {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(
			truncate(r.Method, maxLoggedLength)))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(truncate(ua, maxLoggedLength)))
	}
	ctx, span := g.tracer.Start(ctx, spanName(method, ""),
		trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	return r.WithContext(ctx), span
}

// nameSpan names the span after the request's route template, once
// prepare has found it.
func nameSpan(span trace.Span, req *request) {
	if req.route == "" || !span.IsRecording() {
		return
	}
	span.SetName(spanName(methodLabel(req.Method), req.route))
	span.SetAttributes(semconv.HTTPRoute(string(req.route)))
}

// spanName is OpenTelemetry's HTTP server span name: "{method} {route}",
// or the method alone when the path matched no route.
func spanName(method string, ro route) string {
	if method == "_OTHER" {
		method = "HTTP"
	}
	if ro == "" {
		return method
	}
	return method + " " + string(ro)
}

// endSpan records the answer on the span. A 5xx is the server's fault and
// marks the span as failed; a 4xx is the client's and does not.
func endSpan(span trace.Span, w *recorder, in int64) {
	if !span.IsRecording() {
		return
	}
	status := w.statusCode()
	span.SetAttributes(
		semconv.HTTPResponseStatusCode(status),
		semconv.HTTPRequestBodySize(int(in)),
		semconv.HTTPResponseBodySize(int(w.n)),
	)
	if status >= 500 {
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(status)))
		span.SetStatus(otelcodes.Error, http.StatusText(status))
	}
}

// prepare resolves the route, checks the names in the path and authorizes
// the request. The request it returns is usable for logging even on error.
func (g *gateway) prepare(r *http.Request) (*request, handlerFunc, error) {
	req := &request{Request: r}
	if r.URL.Path == string(routeToken) {
		// The token endpoint checks the credentials it is given itself.
		req.route = routeToken
		h, err := g.routes.lookup(routeToken, r.Method)
		return req, h, err
	}
	if strings.HasPrefix(r.URL.Path, string(routeAPI)) {
		// The query API authorizes each call itself (api.go).
		req.route = routeAPI
		h, err := g.routes.lookup(routeAPI, r.Method)
		return req, h, err
	}
	m, err := match(r.URL.Path)
	if err != nil {
		return req, nil, err
	}
	req.route, req.name, req.param = m.route, m.name, m.param
	switch m.route {
	case routeBlob, routeReferrers:
		req.digest = m.param
	case routeUpload:
		req.upload = m.param
	}

	if err := m.validate(); err != nil {
		return req, nil, err
	}
	h, err := g.routes.lookup(m.route, r.Method)
	if err != nil {
		return req, nil, err
	}

	if err := g.authorize(req, requiredAccess(req)...); err != nil {
		return req, nil, err
	}
	return req, h, nil
}

// fail answers a request with err. It is the one place errors become HTTP
// responses: the client sees only what ocierr lets through, and the cause
// goes to the request's log line. When the response has already started,
// nothing more can be said to the client.
func (g *gateway) fail(w *recorder, req *request, err error) {
	if w.status != 0 || writeTokenError(w, err) {
		return
	}
	e := ocierr.FromError(err)
	if e.HTTPStatus() == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", g.challenge(req, err))
	}
	var me *methodError
	if errors.As(err, &me) {
		w.Header().Set("Allow", strings.Join(me.allowed, ", "))
	}
	if wait := e.Detail[ocierr.RetryAfterKey]; wait != "" {
		w.Header().Set("Retry-After", wait)
	}
	ocierr.Write(w, e)
}

// logRequest writes the request's one log line.
func (g *gateway) logRequest(req *request, w *recorder, in int64, d time.Duration, err error) {
	level := slog.LevelInfo
	var e *ocierr.Error
	if err != nil {
		e = ocierr.FromError(err)
		if e.HTTPStatus() >= 500 {
			level = slog.LevelError
		}
	}
	if !g.log.Enabled(req.Context(), level) {
		return
	}

	attrs := []slog.Attr{
		slog.String("method", req.Method),
		slog.String("route", string(req.route)),
		slog.Int("status", w.statusCode()),
		slog.Int64("bytes_in", in),
		slog.Int64("bytes_out", w.n),
		slog.Duration("duration", d),
	}
	if req.route == "" {
		attrs[1] = slog.String("path", truncate(req.URL.Path, maxLoggedLength))
	}
	if req.name != "" {
		attrs = append(attrs, slog.String("repository", truncate(req.name, maxLoggedLength)))
	}
	if req.digest != "" {
		attrs = append(attrs, slog.String("digest", truncate(req.digest, maxLoggedLength)))
	}
	if req.upload != "" {
		attrs = append(attrs, slog.String("upload", truncate(req.upload, maxLoggedLength)))
	}
	if req.cleanupErr != nil {
		attrs = append(attrs, slog.String("cleanup_error", req.cleanupErr.Error()))
	}
	if err != nil {
		attrs = append(attrs, slog.String("code", string(e.Code)), slog.String("error", err.Error()))
	}
	g.log.LogAttrs(req.Context(), level, "request", attrs...)
}

// maxLoggedLength bounds each value from the request path in a log line.
const maxLoggedLength = 256

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// recorder is the response writer handlers get: it remembers the status and
// counts the body bytes for the log.
type recorder struct {
	http.ResponseWriter
	status int
	n      int64
}

// WriteHeader records the status.
func (w *recorder) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
	w.ResponseWriter.WriteHeader(status)
}

// Write records an implicit 200 and counts the bytes.
func (w *recorder) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *recorder) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *recorder) statusCode() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// countingReader counts the request body bytes read, for the log.
type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }
