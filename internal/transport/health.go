package transport

import (
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Health is what a server's standard health service (grpc.health.v1)
// reports, for the whole server ("") and for each service registered on
// it. It starts SERVING. Whoever watches the server's dependencies flips it
// with SetServing; Shutdown turns it to NOT_SERVING for good as the server
// begins to stop.
//
// Pass it to NewServer with WithHealth. It is safe for concurrent use.
type Health struct {
	server *health.Server

	mu sync.Mutex
	// grpc is the server Health reports for, set by NewServer.
	grpc *grpc.Server
	// serving is the status reported.
	serving bool
	// shut is set by Shutdown.
	shut bool
}

// NewHealth returns a Health reporting SERVING.
func NewHealth() *Health {
	return &Health{server: health.NewServer(), serving: true}
}

// SetServing sets the status of the whole server and of every service
// registered on it so far: SERVING when serving is true, else NOT_SERVING.
// After Shutdown it does nothing. Call it once after registering the
// services so that checks naming a service find it.
func (h *Health) SetServing(serving bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.shut {
		return
	}

	h.serving = serving
	st := healthpb.HealthCheckResponse_NOT_SERVING
	if serving {
		st = healthpb.HealthCheckResponse_SERVING
	}
	h.server.SetServingStatus("", st)
	if h.grpc == nil {
		return
	}
	for name := range h.grpc.GetServiceInfo() {
		h.server.SetServingStatus(name, st)
	}
}

// Serving reports whether the server is reported SERVING.
func (h *Health) Serving() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.serving
}

// Shutdown reports NOT_SERVING for the server and every service from now
// on, ignoring later SetServing calls. Call it before stopping the server,
// so that balancers and probes drop it while it drains.
func (h *Health) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.serving = false
	h.shut = true
	h.server.Shutdown()
}

// register serves h on srv.
func (h *Health) register(srv *grpc.Server) {
	h.mu.Lock()
	h.grpc = srv
	h.mu.Unlock()
	healthpb.RegisterHealthServer(srv, h.server)
}
