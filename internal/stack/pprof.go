package stack

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// servePprof serves Go's profiling endpoints under /debug/pprof/ on
// PprofAddr, if it is set. They are opt-in: a profile shows the process's
// code paths and can cost CPU while it is taken, so the address should be
// one only an operator reaches (such as 127.0.0.1).
func (p *process) servePprof() error {
	if p.cfg.PprofAddr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", p.cfg.PprofAddr)
	if err != nil {
		return fmt.Errorf("pprof: listen on %s: %w", p.cfg.PprofAddr, err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// No write timeout: a CPU profile or trace streams for as long as asked.
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	p.serveHTTP("pprof", srv, ln)
	p.log.Info("pprof listening", "addr", ln.Addr().String(), "path", "/debug/pprof/")
	return nil
}
