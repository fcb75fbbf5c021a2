// Package bench measures keel against a peer registry on the same machine
// and the same S3 server: push and pull times, request rates, and the
// memory and CPU of every process involved. Each scenario runs on both
// registries in the same run, interleaved, so the figures compare like with
// like.
package bench

import (
	"fmt"
	"net"
	"net/http"
	"time"
)

// Target is one registry under test.
type Target struct {
	// Name labels the registry in reports ("keel", "distribution").
	Name string
	// Host is the registry's "127.0.0.1:port"; only loopback is allowed.
	Host string
	// Username and Password log in with basic auth.
	Username, Password string
	// Procs are the processes whose memory and CPU are reported.
	Procs []Proc
}

// Proc is a process to watch.
type Proc struct {
	// Name labels the process ("gateway", "upload", ...).
	Name string
	// PID is its process id.
	PID int
}

// CheckLoopback refuses a target whose host is not a loopback address: the
// benchmark sends heavy traffic and must never aim at another machine.
func (t Target) CheckLoopback() error {
	host, _, err := net.SplitHostPort(t.Host)
	if err != nil {
		return fmt.Errorf("target %s: %w", t.Name, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("target %s: %s is not a loopback address", t.Name, host)
	}
	return nil
}

// URL returns the registry URL for path.
func (t Target) URL(path string) string {
	return "http://" + t.Host + path
}

// newClient returns an HTTP client with enough idle connections for the
// benchmark's concurrency and no overall timeout (pushes are long).
func newClient(conns int) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConns = conns * 2
	tr.MaxIdleConnsPerHost = conns * 2
	tr.IdleConnTimeout = time.Minute
	tr.DisableCompression = true
	return &http.Client{Transport: tr}
}
