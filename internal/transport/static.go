package transport

import (
	"fmt"
	"strings"

	"google.golang.org/grpc/resolver"
)

// staticScheme names targets that list their addresses outright:
// "static:///127.0.0.1:9002,127.0.0.1:9012". Calls are balanced over all of
// them, as over the records of a DNS name. It serves setups without a DNS
// name per service, such as several replicas on one machine.
const staticScheme = "static"

func init() {
	resolver.Register(staticBuilder{})
}

type staticBuilder struct{}

// Build resolves a static target once; its addresses never change.
func (staticBuilder) Build(
	target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions,
) (resolver.Resolver, error) {
	var addrs []resolver.Address
	for _, a := range strings.Split(target.Endpoint(), ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, resolver.Address{Addr: a})
		}
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("static target %q lists no address", target.URL.String())
	}
	if err := cc.UpdateState(resolver.State{Addresses: addrs}); err != nil {
		return nil, err
	}
	return staticResolver{}, nil
}

// Scheme returns "static".
func (staticBuilder) Scheme() string { return staticScheme }

type staticResolver struct{}

func (staticResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (staticResolver) Close()                                {}
