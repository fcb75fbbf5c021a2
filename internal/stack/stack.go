// Package stack wires keel's concerns into one process: the embedded S3
// server, the auth, upload and manifest services, and the HTTP gateway. A
// process runs all of them (the default, for a laptop, a test or a small
// site) or any subset, and the concerns always talk through their gRPC
// contracts, over loopback sockets when they share a process.
package stack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"google.golang.org/grpc"

	"github.com/keel-registry/keel/gateway"
	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
	manifestv1 "github.com/keel-registry/keel/gen/keel/manifest/v1"
	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/objstore"
	"github.com/keel-registry/keel/internal/s3embed"
	"github.com/keel-registry/keel/internal/telemetry"
	"github.com/keel-registry/keel/internal/transport"
	"github.com/keel-registry/keel/services/auth"
	"github.com/keel-registry/keel/services/manifest"
	"github.com/keel-registry/keel/services/upload"
)

// startTimeout bounds the start-up work that talks to the object store
// (creating the bucket).
const startTimeout = 30 * time.Second

// Run starts the concerns cfg names and blocks until ctx ends or one of
// them fails. Then it stops them in reverse start order, each step bounded
// by cfg.StopTimeout. It returns nil when ctx ended and the stop went
// through, and the cause otherwise.
func Run(ctx context.Context, cfg Config, logger *slog.Logger) (err error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return fmt.Errorf("stack: %w", err)
	}

	// Every line logged with a request's context names its trace.
	logger = slog.New(telemetry.NewLogHandler(logger.Handler()))
	// One slot per server that may fail: a target's, the metrics listener
	// and the pprof listener.
	p := &process{cfg: cfg, log: logger, failed: make(chan error, len(targets)+2)}
	defer func() {
		if stopErr := p.stop(); err == nil {
			err = stopErr
		}
	}()

	if err := p.start(ctx); err != nil {
		return err
	}
	logger.Info("keel started", "targets", p.targetNames())

	select {
	case <-ctx.Done():
		logger.Info("keel stopping", "cause", context.Cause(ctx))
		return nil
	case err := <-p.failed:
		logger.Error("keel stopping after a failure", "error", err)
		return err
	}
}

// process is one running keel process: what it started, in order.
type process struct {
	cfg Config
	log *slog.Logger

	// failed receives the error of a server that stopped serving on its
	// own.
	failed chan error
	// steps stop what was started, in start order; stop runs them backward.
	steps []step

	// storage is how this process's services reach the object store.
	storage objstore.Config
	// tracing makes the process's spans (a no-op provider when off).
	tracing *telemetry.Tracing
	// metrics is the process's registry; nil without a MetricsAddr.
	metrics *telemetry.Metrics
	// Listen addresses of the services this process runs, as bound.
	authAddr, uploadAddr, manifestAddr string
}

// step stops one started thing. It must return by the time ctx ends.
type step struct {
	name string
	stop func(ctx context.Context) error
}

// onStop records how to stop what was just started.
func (p *process) onStop(name string, stop func(ctx context.Context) error) {
	p.steps = append(p.steps, step{name: name, stop: stop})
}

// targetNames lists the targets this process runs, in start order.
func (p *process) targetNames() []string {
	var out []string
	for _, t := range targets {
		if p.cfg.runs(t) {
			out = append(out, string(t))
		}
	}
	return out
}

// start starts every concern the configuration names, in dependency order.
func (p *process) start(ctx context.Context) error {
	if err := p.startTelemetry(ctx); err != nil {
		return err
	}
	p.storage = objstore.Config{
		Endpoint:        p.cfg.S3Endpoint,
		Region:          p.cfg.S3Region,
		Bucket:          p.cfg.S3Bucket,
		AccessKeyID:     p.cfg.S3AccessKeyID,
		SecretAccessKey: p.cfg.S3SecretAccessKey,
		PathStyle:       p.cfg.S3PathStyle,
		Prefix:          p.cfg.S3Prefix,
	}
	if p.cfg.embedsS3() {
		if err := p.startS3(ctx); err != nil {
			return err
		}
	}
	if p.cfg.runs(TargetAuth) {
		if err := p.startAuth(ctx); err != nil {
			return err
		}
	}
	if p.cfg.runs(TargetUpload) {
		if err := p.startUpload(ctx); err != nil {
			return err
		}
	}
	if p.cfg.runs(TargetManifest) {
		if err := p.startManifest(ctx); err != nil {
			return err
		}
	}
	if p.cfg.runs(TargetGateway) {
		if err := p.startGateway(); err != nil {
			return err
		}
	}
	return nil
}

// stop runs the stop steps in reverse start order, each bounded by
// StopTimeout, and returns every error they reported.
func (p *process) stop() error {
	var errs []error
	for i := len(p.steps) - 1; i >= 0; i-- {
		s := p.steps[i]
		ctx, cancel := context.WithTimeout(context.Background(), p.cfg.StopTimeout)
		start := time.Now()
		err := s.stop(ctx)
		cancel()
		if err != nil {
			p.log.Warn("stop step failed", "step", s.name, "error", err,
				"duration", time.Since(start))
			errs = append(errs, fmt.Errorf("stop %s: %w", s.name, err))
			continue
		}
		p.log.Debug("stopped", "step", s.name, "duration", time.Since(start))
	}
	p.steps = nil
	return errors.Join(errs...)
}

// startS3 starts the embedded S3 server and points storage at it.
func (p *process) startS3(ctx context.Context) error {
	srv, err := s3embed.Start(ctx, s3embed.Options{
		Dir:       p.cfg.DataDir,
		Addr:      p.cfg.S3Addr,
		AccessKey: p.cfg.S3AccessKeyID,
		SecretKey: p.cfg.S3SecretAccessKey,
		Region:    p.cfg.S3Region,
	})
	if err != nil {
		return fmt.Errorf("start embedded S3: %w", err)
	}
	p.onStop("embedded S3", func(ctx context.Context) error {
		return waitBounded(ctx, srv.Close)
	})

	if p.cfg.S3Endpoint == "" {
		p.storage.Endpoint = srv.Endpoint()
		p.storage.Region = srv.Region()
		p.storage.AccessKeyID = srv.AccessKey()
		p.storage.SecretAccessKey = srv.SecretKey()
		p.storage.PathStyle = true
	}
	p.log.Info("embedded S3 listening", "endpoint", srv.Endpoint(), "dir", srv.Dir())
	return nil
}

// startAuth starts the auth service (see auth.go for its configuration and
// signing keys).
func (p *process) startAuth(ctx context.Context) error {
	cfg, err := p.authConfig()
	if err != nil {
		return fmt.Errorf("auth service: %w", err)
	}
	if cfg.Keys, err = p.authKeyring(ctx); err != nil {
		return err
	}
	svc, err := auth.NewServer(cfg)
	if err != nil {
		return fmt.Errorf("auth service: %w", err)
	}
	if len(p.cfg.Users) == 0 && !p.cfg.AnonymousPull && len(cfg.Policy.Rules) == 0 {
		p.log.Warn("NO USERS, NO POLICY AND NO ANONYMOUS PULL: EVERY REQUEST WILL BE " +
			"REFUSED (deny by default). Set KEEL_USER=name:password, KEEL_READONLY_USER, " +
			"KEEL_AUTH_POLICY or KEEL_ANONYMOUS_PULL=true.")
	}

	// The auth service answers from the keys it holds, so an unreachable
	// store does not make it unhealthy.
	srv, health := p.newServer("auth")
	authv1.RegisterAuthServiceServer(srv, svc)
	addr, err := p.serveGRPC("auth", srv, health, p.cfg.AuthAddr)
	p.authAddr = addr
	return err
}

// startUpload starts the upload service and its janitor.
func (p *process) startUpload(ctx context.Context) error {
	store, err := p.openStore(ctx, "upload")
	if err != nil {
		return err
	}
	svc := upload.NewServer(store, upload.Options{
		PartSize:      p.cfg.PartSize,
		SessionMaxAge: p.cfg.UploadMaxAge,
	})
	// Steps stop in reverse order, so this runs once the server below has
	// stopped taking calls.
	p.onStop("upload session removals", func(ctx context.Context) error {
		select {
		case <-finished(svc.Wait):
			return nil
		case <-ctx.Done():
			return fmt.Errorf("left to the janitor: %w", ctx.Err())
		}
	})

	srv, health := p.newServer("upload", transport.WithCodec(upload.NewCodec()))
	uploadv1.RegisterUploadServiceServer(srv, svc)
	addr, err := p.serveGRPC("upload", srv, health, p.cfg.UploadAddr)
	p.uploadAddr = addr
	if err != nil {
		return err
	}
	p.watchStore("upload", store, health)

	p.startJanitor(svc)
	return nil
}

// startManifest starts the manifest service, which calls the upload service
// to check that the blobs a manifest names exist.
func (p *process) startManifest(ctx context.Context) error {
	store, err := p.openStore(ctx, "manifest")
	if err != nil {
		return err
	}
	uploads, err := p.dial("manifest's upload client", p.cfg.UploadTarget, p.uploadAddr)
	if err != nil {
		return err
	}
	svc := manifest.NewServer(store, uploadv1.NewUploadServiceClient(uploads),
		manifest.Options{})

	query := manifest.NewQueryServer(svc, manifest.QueryOptions{})

	srv, health := p.newServer("manifest")
	manifestv1.RegisterManifestServiceServer(srv, svc)
	manifestv1.RegisterQueryServiceServer(srv, query)
	addr, err := p.serveGRPC("manifest", srv, health, p.cfg.ManifestAddr)
	p.manifestAddr = addr
	if err != nil {
		return err
	}
	p.watchStore("manifest", store, health)

	p.startChangeLog(query)
	return nil
}

// startGateway starts the HTTP gateway with clients of the three services.
func (p *process) startGateway() error {
	authConn, err := p.dial("gateway's auth client", p.cfg.AuthTarget, p.authAddr)
	if err != nil {
		return err
	}
	uploadConn, err := p.dial("gateway's upload client", p.cfg.UploadTarget, p.uploadAddr)
	if err != nil {
		return err
	}
	manifestConn, err := p.dial("gateway's manifest client",
		p.cfg.ManifestTarget, p.manifestAddr)
	if err != nil {
		return err
	}
	handler := gateway.New(gateway.Options{
		Auth:         authv1.NewAuthServiceClient(authConn),
		Uploads:      uploadv1.NewUploadServiceClient(uploadConn),
		Manifests:    manifestv1.NewManifestServiceClient(manifestConn),
		Query:        manifestv1.NewQueryServiceClient(manifestConn),
		Logger:       p.log.With("service", "gateway"),
		AuthCacheTTL: p.cfg.AuthCacheTTL,
		BlobRedirect: p.cfg.BlobRedirect,

		TokenAuth:      p.cfg.TokenAuth,
		TokenRealm:     p.cfg.TokenRealm,
		TokenService:   p.cfg.TokenService,
		TrustedProxies: p.cfg.TrustedProxies,

		TracerProvider: p.tracer(),
		Metrics:        p.metrics.Registerer(),
	})

	ln, err := net.Listen("tcp", p.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("gateway: listen on %s: %w", p.cfg.HTTPAddr, err)
	}
	// No read or write timeout: a blob upload or download may rightly take
	// hours. Slow clients are bounded only while sending headers.
	srv := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	if s, ok := handler.(gateway.StreamEnder); ok {
		// Watch streams never end on their own: end them as the stop begins.
		srv.RegisterOnShutdown(s.EndStreams)
	}
	p.serveHTTP("gateway", srv, ln)
	p.log.Info("gateway listening", "addr", ln.Addr().String())
	return nil
}

// openStore returns a new object-store client for one service, with the
// bucket created if it was missing. Each service gets its own client.
func (p *process) openStore(ctx context.Context, service string) (*objstore.Store, error) {
	cfg := p.storage
	cfg.HTTPClient = objstore.DefaultHTTPClient()
	p.observeStore(service, &cfg)
	store, err := objstore.New(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s service: %w", service, err)
	}
	// Runs after the service's gRPC server has stopped. Closing the idle
	// connections lets an embedded S3 server in this process stop at once:
	// it waits for every open connection, and counts one that never
	// carried a request as busy for its first seconds.
	p.onStop(service+"'s S3 connections", func(context.Context) error {
		cfg.HTTPClient.CloseIdleConnections()
		return nil
	})

	ctx, cancel := context.WithTimeout(ctx, startTimeout)
	defer cancel()
	if err := store.EnsureBucket(ctx); err != nil {
		return nil, fmt.Errorf("%s service: ensure bucket %q at %s: %w",
			service, p.storage.Bucket, p.storage.Endpoint, err)
	}
	return store, nil
}

// dial connects to target, or to local (the address of a service in this
// process) when target is "". The connection is closed on stop.
func (p *process) dial(name, target, local string) (*grpc.ClientConn, error) {
	if target == "" {
		target = local
	}
	conn, err := transport.Dial(target, transport.WithTracing(p.tracer()))
	if err != nil {
		return nil, fmt.Errorf("%s: dial %q: %w", name, target, err)
	}
	p.onStop(name, func(context.Context) error { return conn.Close() })
	return conn, nil
}

// serveGRPC serves srv, whose health service reports health, on addr and
// returns the address bound. On stop the health turns NOT_SERVING before
// the server drains, so that balancers and probes drop it first.
//
// There is no pause between the two: clients made by transport.Dial and
// other watchers learn at once, but a probe that polls (Kubernetes) sees
// NOT_SERVING only if it polls while the server drains, so it may first
// learn of the stop when connections are refused.
func (p *process) serveGRPC(
	name string, srv *grpc.Server, health *transport.Health, addr string,
) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("%s service: listen on %s: %w", name, addr, err)
	}
	// Every service is registered by now: give each a health status.
	health.SetServing(true)
	go func() {
		if err := srv.Serve(ln); err != nil {
			p.failed <- fmt.Errorf("%s service: serve: %w", name, err)
		}
	}()
	p.onStop(name+" gRPC server", func(ctx context.Context) error {
		health.Shutdown()
		return stopGRPC(ctx, srv)
	})

	bound := ln.Addr().String()
	p.log.Info("gRPC service listening", "service", name, "addr", bound)
	return bound, nil
}

// serveHTTP serves srv on ln until the process stops; its stop step, name
// and " HTTP server", lets running requests finish and cuts them when the
// step's time runs out.
func (p *process) serveHTTP(name string, srv *http.Server, ln net.Listener) {
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			p.failed <- fmt.Errorf("%s: serve: %w", name, err)
		}
	}()
	p.onStop(name+" HTTP server", func(ctx context.Context) error {
		if err := srv.Shutdown(ctx); err != nil {
			srv.Close()
			return fmt.Errorf("requests still running were cut: %w", err)
		}
		return nil
	})
}

// stopGRPC stops srv gracefully, letting running calls finish, and stops it
// hard when ctx ends first.
func stopGRPC(ctx context.Context, srv *grpc.Server) error {
	done := finished(srv.GracefulStop)
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		srv.Stop()
		<-done
		return fmt.Errorf("calls still running were cut: %w", ctx.Err())
	}
}

// waitBounded runs stop and waits for it until ctx ends. A stop that
// overruns keeps going in the background.
func waitBounded(ctx context.Context, stop func() error) error {
	done := make(chan error, 1)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("not stopped in time: %w", ctx.Err())
	}
}

// finished runs fn on a goroutine of its own and returns a channel that is
// closed when fn returns.
func finished(fn func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn()
	}()
	return done
}
