// Package healthcheck is the probe a keel container runs against its own
// process. keel images are built FROM scratch, with no shell and no curl, so
// the keel binary carries its own check ("keel health ..."), which Docker
// Compose health checks and Kubernetes exec probes call.
//
// A check is one of:
//
//	-grpc addr  a grpc.health.v1 Check; healthy when the answer is SERVING.
//	-http url   a GET; healthy when the status is one that -status accepts
//	            (by default any 2xx, and 401, which a registry that wants
//	            credentials rightly answers to an anonymous probe).
package healthcheck

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DefaultTimeout bounds one check when -timeout is not given.
const DefaultTimeout = 5 * time.Second

// DefaultStatus is the set of HTTP statuses an -http check accepts when
// -status is not given.
const DefaultStatus = "2xx,401"

// ErrUnhealthy is returned, wrapped, when the target answered but is not
// healthy. Other errors mean it could not be asked (or the arguments were
// wrong).
var ErrUnhealthy = errors.New("unhealthy")

// Run parses args (the flags after "keel health"), runs the check they
// describe and writes one line saying what it saw to stdout. It returns nil
// when the target is healthy.
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	flags := flag.NewFlagSet("keel health", flag.ContinueOnError)
	flags.SetOutput(stdout)
	grpcAddr := flags.String("grpc", "",
		"check the grpc.health.v1 service at this address (host:port)")
	service := flags.String("service", "",
		"with -grpc: the service name to ask about; \"\" is the whole server")
	url := flags.String("http", "", "GET this URL")
	statuses := flags.String("status", DefaultStatus,
		"with -http: accepted statuses, comma-separated codes or classes (2xx)")
	timeout := flags.Duration("timeout", DefaultTimeout, "give up after this long")
	if err := flags.Parse(args); err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flags.Args())
	}
	if (*grpcAddr == "") == (*url == "") {
		return errors.New("give exactly one of -grpc and -http")
	}
	accept, err := parseStatuses(*statuses)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()

	var seen string
	if *grpcAddr != "" {
		seen, err = checkGRPC(ctx, *grpcAddr, *service)
	} else {
		seen, err = checkHTTP(ctx, *url, accept)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, seen)
	return err
}

// checkGRPC asks the health service at addr about service and returns the
// status it reported.
func checkGRPC(ctx context.Context, addr, service string) (string, error) {
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", fmt.Errorf("grpc %s: %w", addr, err)
	}
	defer conn.Close()

	resp, err := healthpb.NewHealthClient(conn).Check(ctx,
		&healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return "", fmt.Errorf("grpc %s: health check: %w", addr, err)
	}

	got := resp.GetStatus()
	if got != healthpb.HealthCheckResponse_SERVING {
		return "", fmt.Errorf("grpc %s: %w: status %s", addr, ErrUnhealthy, got)
	}
	return fmt.Sprintf("grpc %s: %s", addr, got), nil
}

// checkHTTP GETs url and returns the status line when accept takes it.
// Redirects are not followed and proxies are not used: the check is about
// the server at url, nothing behind or in front of it.
func checkHTTP(ctx context.Context, url string, accept statusSet) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", fmt.Errorf("http %s: %w", url, err)
	}
	client := &http.Client{
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}

	resp, err := client.Do(req)
	if err != nil {
		return "", fmt.Errorf("http %s: %w", url, err)
	}
	defer resp.Body.Close()
	// Drain a little so the server does not see a reset; the rest is
	// dropped with the connection.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))

	if !accept.has(resp.StatusCode) {
		return "", fmt.Errorf("http %s: %w: status %s", url, ErrUnhealthy, resp.Status)
	}
	return fmt.Sprintf("http %s: %s", url, resp.Status), nil
}

// statusSet is the HTTP statuses an -http check accepts.
type statusSet struct {
	codes   map[int]bool
	classes map[int]bool // 2 for 2xx, ...
}

func (s statusSet) has(code int) bool {
	return s.codes[code] || s.classes[code/100]
}

// parseStatuses reads a -status value such as "2xx,401".
func parseStatuses(v string) (statusSet, error) {
	s := statusSet{codes: map[int]bool{}, classes: map[int]bool{}}
	for _, f := range strings.Split(v, ",") {
		f = strings.ToLower(strings.TrimSpace(f))
		if len(f) == 3 && strings.HasSuffix(f, "xx") && f[0] >= '1' && f[0] <= '5' {
			s.classes[int(f[0]-'0')] = true
			continue
		}
		code, err := strconv.Atoi(f)
		if err != nil || code < 100 || code > 599 {
			return statusSet{}, fmt.Errorf("-status %q: %q is neither a status code "+
				"nor a class such as 2xx", v, f)
		}
		s.codes[code] = true
	}
	return s, nil
}
