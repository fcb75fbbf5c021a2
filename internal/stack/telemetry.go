package stack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"

	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/telemetry"
	"github.com/keel-registry/keel/internal/transport"
)

// DefaultHealthInterval is how often the upload and manifest services check
// their bucket when Config.HealthInterval is 0.
const DefaultHealthInterval = 5 * time.Second

// healthTimeout bounds one check of the object store; a check interval
// shorter than it bounds it instead.
const healthTimeout = 2 * time.Second

// healthFailures is how many checks of the object store in a row must fail
// before a service reports NOT_SERVING. One slow answer does not take a
// service out: clients made by transport.Dial, like balancers, stop
// sending it calls while it is NOT_SERVING.
const healthFailures = 2

// MetricsPath is the path the metrics listener serves metrics on.
const MetricsPath = "/metrics"

// startTelemetry sets up tracing and, with a MetricsAddr, the metrics
// listener. It runs first, so that its stop steps run last: the spans of
// everything else's stop are exported, and metrics can be scraped until
// the end.
func (p *process) startTelemetry(ctx context.Context) error {
	if p.cfg.TracerProvider != nil {
		p.tracing = telemetry.NewTracingWith(p.cfg.TracerProvider)
	} else {
		tracing, err := telemetry.NewTracing(ctx, p.serviceName())
		if err != nil {
			return err
		}
		p.tracing = tracing
		p.onStop("tracing", tracing.Shutdown)
	}
	if p.tracing.Enabled() {
		p.log.Info("tracing on", "exporters", p.tracing.Exporters())
	}

	if err := p.servePprof(); err != nil {
		return err
	}

	if p.cfg.MetricsAddr == "" {
		return nil
	}
	p.metrics = telemetry.NewMetrics()
	return p.serveMetrics()
}

// serviceName is the service.name of the process's spans unless
// OTEL_SERVICE_NAME names another: "keel" for a process that runs
// everything, else "keel-" and its targets ("keel-upload").
func (p *process) serviceName() string {
	if p.cfg.allInOne() {
		return "keel"
	}
	return "keel-" + strings.Join(p.targetNames(), "-")
}

// serveMetrics serves the process's metrics on MetricsAddr.
func (p *process) serveMetrics() error {
	ln, err := net.Listen("tcp", p.cfg.MetricsAddr)
	if err != nil {
		return fmt.Errorf("metrics: listen on %s: %w", p.cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET "+MetricsPath, p.metrics.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	p.serveHTTP("metrics", srv, ln)
	p.log.Info("metrics listening", "addr", ln.Addr().String(), "path", MetricsPath)
	return nil
}

// tracer returns the provider that makes the process's spans, or nil when
// tracing is off, so that nothing spends time on spans no one keeps.
func (p *process) tracer() trace.TracerProvider {
	if !p.tracing.Enabled() {
		return nil
	}
	return p.tracing.Provider()
}

// newServer returns a gRPC server for one service with the process's
// tracing and metrics and any extra options, and the Health its health
// service reports.
func (p *process) newServer(
	service string, extra ...transport.Option,
) (*grpc.Server, *transport.Health) {
	health := transport.NewHealth()
	opts := append([]transport.Option{
		transport.WithTracing(p.tracer()),
		transport.WithMetrics(p.metrics),
		transport.WithHealth(health),
	}, extra...)
	return transport.NewServer(p.log.With("service", service), opts...), health
}

// observeStore adds to cfg the S3 middleware that traces and counts one
// service's object-store calls, when there is anything to record.
func (p *process) observeStore(service string, cfg *objstore.Config) {
	if p.tracer() == nil && p.metrics == nil {
		return
	}
	cfg.APIOptions = append(cfg.APIOptions, telemetry.S3(service, p.tracer(), p.metrics)...)
}

// watchStore checks every HealthInterval that store's bucket answers, and
// reports health NOT_SERVING once healthFailures checks in a row failed and
// SERVING again after the first that succeeds, until the process stops.
// Each change is logged.
func (p *process) watchStore(service string, store *objstore.Store, health *transport.Health) {
	interval := p.cfg.HealthInterval
	w := &storeWatch{
		store:   store,
		health:  health,
		log:     p.log.With("service", service, "task", "store health"),
		timeout: min(healthTimeout, interval),
	}
	p.periodic(service+"'s store health check", interval, nil,
		func(ctx context.Context, _ time.Time) { w.check(ctx) })
	w.log.Debug("store health check started", "interval", interval)
}

// storeWatch is the state of one service's store checks.
type storeWatch struct {
	store   *objstore.Store
	health  *transport.Health
	log     *slog.Logger
	timeout time.Duration
	// failures counts the checks in a row that failed.
	failures int
}

// check pings the store once and sets the health from the answers so far.
func (w *storeWatch) check(ctx context.Context) {
	pingCtx, cancel := context.WithTimeout(ctx, w.timeout)
	err := w.store.Ping(pingCtx)
	cancel()
	if ctx.Err() != nil {
		// The process is stopping; the answer means nothing.
		return
	}

	if err == nil {
		w.failures = 0
		if !w.health.Serving() {
			w.health.SetServing(true)
			w.log.Info("object store reachable again: health SERVING")
		}
		return
	}
	w.failures++
	if w.failures >= healthFailures && w.health.Serving() {
		w.health.SetServing(false)
		w.log.Warn("object store unreachable: health NOT_SERVING", "error", err,
			"failed_checks", w.failures)
	}
}
