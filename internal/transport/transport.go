// Package transport is the gRPC plumbing every keel process shares: the
// server every service is registered on, and the client connection the
// gateway and the services use to reach each other.
//
// Both ends agree on one message size limit, MaxMessageSize, which leaves
// room for the 1 MiB blob chunks streamed between the gateway and the upload
// service plus framing.
package transport

import (
	"log/slog"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// MaxMessageSize is the largest gRPC message a keel server accepts and a
// keel client sends or receives: 16 MiB.
const MaxMessageSize = 16 << 20

// serviceConfig spreads calls over every address the resolver returns, so
// that a DNS name with one record per replica ("dns:///upload:9002")
// balances across all replicas instead of pinning the first one. Its
// health check config makes the client watch each replica's health service
// and send calls only to replicas reporting SERVING (a replica without a
// health service counts as serving).
const serviceConfig = `{
	"loadBalancingConfig": [{"round_robin": {}}],
	"healthCheckConfig": {"serviceName": ""}
}`

// MaxConnectionAge is how long a server keeps a client connection before
// asking the client to reconnect (and so to re-resolve its target).
const MaxConnectionAge = 30 * time.Second

// maxConnectionAge is MaxConnectionAge, shortened by tests.
var maxConnectionAge = MaxConnectionAge

// NewServer returns a gRPC server with keel's limits and interceptors, the
// standard health service and server reflection. Register the services on
// it, then call Serve.
//
// Every call is logged once to logger when it ends, with the call's
// context (so a handler that wraps it with telemetry.NewLogHandler adds the
// trace id). A handler error that is not a gRPC status (an *ocierr.Error is
// one) reaches the client as codes.Internal "internal error"; its cause is
// only logged. A panic in a handler fails that call the same way.
//
// The health service reports the Health given with WithHealth, or SERVING
// for as long as the server runs without one. WithTracing and WithMetrics
// add a server span and metrics for every call.
func NewServer(logger *slog.Logger, opts ...Option) *grpc.Server {
	o := collect(opts)
	serverOpts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		// Closing each connection after a while makes clients re-resolve
		// the service's DNS name, so replicas added by scaling up start
		// receiving calls within about MaxConnectionAge. The long grace
		// lets a big upload stream finish on its old connection.
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      maxConnectionAge,
			MaxConnectionAgeGrace: time.Hour,
		}),
		grpc.ChainUnaryInterceptor(unaryInterceptor(logger, o.metrics)),
		grpc.ChainStreamInterceptor(streamInterceptor(logger, o.metrics)),
	}
	if h := o.statsHandler(otelgrpc.NewServerHandler); h != nil {
		serverOpts = append(serverOpts, grpc.StatsHandler(h))
	}
	if o.codec != nil {
		serverOpts = append(serverOpts, grpc.ForceServerCodecV2(o.codec))
	}
	srv := grpc.NewServer(serverOpts...)

	health := o.health
	if health == nil {
		health = NewHealth()
	}
	health.register(srv)
	reflection.Register(srv)
	return srv
}

// Dial returns a client connection to target, a gRPC target string such as
// "127.0.0.1:9002" or "dns:///upload:9002". It does not connect until the
// first call. Calls are balanced round-robin over every address target
// resolves to whose health service reports SERVING. WithTracing adds a
// client span for every call and sends the trace along.
//
// The connection is plaintext: keel does not yet secure traffic between its
// own processes with TLS, so the network between them must be trusted.
// gRPC re-resolves a DNS target when a connection closes (at most every 30
// seconds); servers made by NewServer close each connection after
// MaxConnectionAge, so replicas added by scaling up receive calls within
// about a minute.
func Dial(target string, opts ...Option) (*grpc.ClientConn, error) {
	o := collect(opts)
	dialOpts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageSize),
			grpc.MaxCallSendMsgSize(MaxMessageSize),
		),
	}
	if h := o.statsHandler(otelgrpc.NewClientHandler); h != nil {
		dialOpts = append(dialOpts, grpc.WithStatsHandler(h))
	}
	return grpc.NewClient(target, dialOpts...)
}
