package telemetry

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc/codes"
)

// DurationBuckets are the upper bounds, in seconds, of keel's latency
// histograms: from a cached answer (5 ms) to a multi-gigabyte blob
// streamed for minutes (10 min).
var DurationBuckets = []float64{
	.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 600,
}

// Metrics is one process's Prometheus registry with the metrics every
// keel process shares: the Go runtime's and the process's own, gRPC calls
// served, and S3 calls made. The gateway registers its HTTP metrics on
// Registerer.
//
// A nil *Metrics is valid and records nothing, so code that takes one does
// not need to check.
type Metrics struct {
	registry *prometheus.Registry

	rpcs        *prometheus.CounterVec
	rpcDuration *prometheus.HistogramVec

	s3Requests *prometheus.CounterVec
	s3Errors   *prometheus.CounterVec
	s3Duration *prometheus.HistogramVec
}

// NewMetrics returns a fresh registry holding the shared metrics.
func NewMetrics() *Metrics {
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		rpcs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_grpc_server_handled_total",
			Help: "gRPC calls finished by a keel service, by full method and status code.",
		}, []string{"method", "code"}),
		rpcDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "keel_grpc_server_handling_seconds",
			Help: "Time a keel service took to finish a gRPC call, by full method.",

			Buckets: DurationBuckets,
		}, []string{"method"}),
		s3Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_s3_requests_total",
			Help: "S3 operations a keel service made (each counted once, " +
				"retries included), by service and operation.",
		}, []string{"service", "operation"}),
		s3Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keel_s3_errors_total",
			Help: "S3 operations that failed, by service, operation and error " +
				"code (the S3 code such as NoSuchKey, or timeout, canceled, network).",
		}, []string{"service", "operation", "code"}),
		s3Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "keel_s3_request_duration_seconds",
			Help:    "Time an S3 operation took, retries included, by service and operation.",
			Buckets: DurationBuckets,
		}, []string{"service", "operation"}),
	}
	m.registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.rpcs, m.rpcDuration,
		m.s3Requests, m.s3Errors, m.s3Duration,
	)
	return m
}

// Registerer is where other packages register their own metrics, to be
// served with these; nil for a nil *Metrics.
func (m *Metrics) Registerer() prometheus.Registerer {
	if m == nil {
		return nil
	}
	return m.registry
}

// Handler serves the registry in Prometheus's text format (or OpenMetrics,
// when the scraper asks for it).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		Registry:          m.registry,
		EnableOpenMetrics: true,
	})
}

// ObserveRPC records one finished gRPC call a server handled. method is
// the full method ("/keel.upload.v1.UploadService/CommitUpload").
func (m *Metrics) ObserveRPC(method string, code codes.Code, d time.Duration) {
	if m == nil {
		return
	}
	m.rpcs.WithLabelValues(method, code.String()).Inc()
	m.rpcDuration.WithLabelValues(method).Observe(d.Seconds())
}

// observeS3 records one finished S3 operation; errCode is "" when it
// succeeded.
func (m *Metrics) observeS3(service, operation, errCode string, d time.Duration) {
	if m == nil {
		return
	}
	m.s3Requests.WithLabelValues(service, operation).Inc()
	m.s3Duration.WithLabelValues(service, operation).Observe(d.Seconds())
	if errCode != "" {
		m.s3Errors.WithLabelValues(service, operation, errCode).Inc()
	}
}
