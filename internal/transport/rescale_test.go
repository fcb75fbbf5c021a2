package transport

import (
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	authv1 "github.com/keel-registry/keel/gen/keel/auth/v1"
)

// TestNewReplicaGetsCalls shows that a replica added behind a name while a
// client is connected starts receiving calls without any restart: servers
// close connections after maxConnectionAge, the client then asks its
// resolver again (as it asks DNS for dns:/// targets) and finds the new
// address. Without the connection age the client never re-resolves and the
// new replica stays idle.
func TestNewReplicaGetsCalls(t *testing.T) {
	maxConnectionAge = 500 * time.Millisecond
	t.Cleanup(func() { maxConnectionAge = MaxConnectionAge })

	first, second := &authStub{name: "first"}, &authStub{name: "second"}
	newServer := func(s *authStub) string {
		srv := NewServer(slog.New(slog.DiscardHandler))
		authv1.RegisterAuthServiceServer(srv, s)
		return serve(t, srv)
	}

	// A resolver that answers like DNS: whatever the name maps to now.
	var mu sync.Mutex
	addrs := []resolver.Address{{Addr: newServer(first)}}
	current := func() resolver.State {
		mu.Lock()
		defer mu.Unlock()
		return resolver.State{Addresses: append([]resolver.Address(nil), addrs...)}
	}
	r := manual.NewBuilderWithScheme("rescale")
	r.InitialState(current())
	r.ResolveNowCallback = func(resolver.ResolveNowOptions) { r.UpdateState(current()) }
	resolver.Register(r)
	client := authv1.NewAuthServiceClient(dial(t, "rescale:///auth"))

	ctx := testContext(t)
	if _, err := client.Authorize(ctx, &authv1.AuthorizeRequest{}); err != nil {
		t.Fatalf("Authorize() = %v", err)
	}

	mu.Lock()
	addrs = append(addrs, resolver.Address{Addr: newServer(second)})
	mu.Unlock()

	deadline := time.Now().Add(15 * time.Second)
	for second.calls.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the added replica got no call within 15s (first got %d)",
				first.calls.Load())
		}
		client.Authorize(ctx, &authv1.AuthorizeRequest{}, grpc.WaitForReady(true))
		time.Sleep(20 * time.Millisecond)
	}
}
