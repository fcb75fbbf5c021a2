package gateway

import (
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/keel-registry/keel/internal/telemetry"
)

// The events of keel_upload_sessions_total.
const (
	sessionStarted   = "started"
	sessionCommitted = "committed"
	sessionCancelled = "cancelled"
)

// routeUnmatched labels requests whose path is no route of the API, so
// that raw paths never become label values.
const routeUnmatched = "unmatched"

// metrics are the gateway's Prometheus metrics. A nil *metrics records
// nothing.
type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	received *prometheus.CounterVec
	sent     *prometheus.CounterVec
	sessions *prometheus.CounterVec
	streams  prometheus.Gauge
}

// newMetrics registers the gateway's metrics on reg, or returns nil when
// reg is nil. Metrics already registered there (by another gateway on the
// same registry) are shared.
func newMetrics(reg prometheus.Registerer) *metrics {
	if reg == nil {
		return nil
	}
	routeLabels := []string{"method", "route"}
	m := &metrics{
		requests: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_http_requests_total",
			Help: "HTTP requests the gateway answered, by method, route template and status.",
		}, []string{"method", "route", "status"})),
		duration: register(reg, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keel_http_request_duration_seconds",
			Help:    "Time from a request's arrival to its answer's end, by method and route.",
			Buckets: telemetry.DurationBuckets,
		}, routeLabels)),
		received: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_http_request_bytes_total",
			Help: "Request body bytes the gateway read, by method and route.",
		}, routeLabels)),
		sent: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_http_response_bytes_total",
			Help: "Response body bytes the gateway wrote, by method and route.",
		}, routeLabels)),
		sessions: register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_upload_sessions_total",
			Help: "Blob upload sessions by event: started (POST answered 202, or a " +
				"monolithic POST ?digest= answered 201), committed (PUT answered 201, " +
				"or a monolithic POST answered 201), cancelled (DELETE answered 204).",
		}, []string{"event"})),
		streams: register(reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keel_upload_streams_in_flight",
			Help: "Requests streaming a blob body to the upload service right now " +
				"(PATCH and PUT of a session, monolithic POST ?digest=).",
		})),
	}
	// Zero rather than absent until the first event, so that rates work
	// from the start.
	for _, e := range []string{sessionStarted, sessionCommitted, sessionCancelled} {
		m.sessions.WithLabelValues(e)
	}
	return m
}

// register registers c on reg and returns it, or the equal collector
// registered before. Any other failure is a programming error.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	if err != nil {
		panic("gateway: register metrics: " + err.Error())
	}
	return c
}

// observe records one answered request.
func (m *metrics) observe(req *request, status int, in, out int64, d time.Duration) {
	if m == nil {
		return
	}
	method, route := methodLabel(req.Method), routeLabel(req.route)
	m.requests.WithLabelValues(method, route, strconv.Itoa(status)).Inc()
	m.duration.WithLabelValues(method, route).Observe(d.Seconds())
	m.received.WithLabelValues(method, route).Add(float64(in))
	m.sent.WithLabelValues(method, route).Add(float64(out))

	for _, e := range sessionEvents(req, status) {
		m.sessions.WithLabelValues(e).Inc()
	}
}

// streaming counts req as an upload stream in flight, when it is one,
// until the returned function is called.
func (m *metrics) streaming(req *request) (done func()) {
	if m == nil || !isUploadStream(req) {
		return func() {}
	}
	m.streams.Inc()
	return m.streams.Dec
}

// isUploadStream reports whether req streams a blob body to the upload
// service.
func isUploadStream(req *request) bool {
	switch {
	case req.route == routeUpload:
		return req.Method == http.MethodPatch || req.Method == http.MethodPut
	case req.route == routeUploads && req.Method == http.MethodPost:
		return isMonolithic(req)
	}
	return false
}

// isMonolithic reports whether a POST to the uploads route is a monolithic
// upload (?digest= without ?mount=).
func isMonolithic(req *request) bool {
	q := req.URL.Query()
	return q.Has("digest") && !q.Has("mount")
}

// sessionEvents returns the upload session events an answered request
// stands for.
func sessionEvents(req *request, status int) []string {
	switch {
	case req.route == routeUploads && req.Method == http.MethodPost:
		if status == http.StatusAccepted {
			return []string{sessionStarted}
		}
		if status == http.StatusCreated && isMonolithic(req) {
			return []string{sessionStarted, sessionCommitted}
		}
	case req.route == routeUpload && req.Method == http.MethodPut:
		if status == http.StatusCreated {
			return []string{sessionCommitted}
		}
	case req.route == routeUpload && req.Method == http.MethodDelete:
		if status == http.StatusNoContent {
			return []string{sessionCancelled}
		}
	}
	return nil
}

// methodLabel returns the method as a label value: one of the standard
// methods, or "_OTHER" (OpenTelemetry's spelling) for anything a client
// made up.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "_OTHER"
}

// routeLabel returns the route template as a label value.
func routeLabel(ro route) string {
	if ro == "" {
		return routeUnmatched
	}
	return string(ro)
}
