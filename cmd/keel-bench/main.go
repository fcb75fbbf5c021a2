// Command keel-bench compares keel with CNCF Distribution on one machine
// and one S3 server: it starts both (keel with each concern in its own
// process), runs the workloads of package bench against each in turn, and
// prints a Markdown report.
//
//	keel-bench [-scenarios a,b,c,d,s,t] [-reps 3] [-out report.md] [-pprof]
//
// Every address it uses is on 127.0.0.1.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/keel-registry/keel/bench"
	"github.com/keel-registry/keel/internal/stack"
)

type config struct {
	scenarios   string
	reps        int
	out         string
	keel        string
	registry    string
	partSize    string
	streamSizes string
	closeSizes  string
	loadFor     time.Duration
	conns       int
	procLog     string
	pprof       bool
}

func main() {
	var c config
	flag.StringVar(&c.scenarios, "scenarios", "a,b,c,d,s,t", "scenarios to run, comma-separated")
	flag.IntVar(&c.reps, "reps", 3, "runs of each image scenario per registry")
	flag.StringVar(&c.out, "out", "", "also write the report to this file")
	flag.StringVar(&c.keel, "keel", "", "keel binary (default: build ./cmd/keel)")
	flag.StringVar(&c.registry, "registry", ".bin/registry", "CNCF Distribution binary")
	flag.StringVar(&c.partSize, "part-size", "16MiB", "keel's part size and Distribution's chunk size")
	flag.StringVar(&c.streamSizes, "stream-sizes", "512MiB,5GiB", "blob sizes of scenario s")
	flag.StringVar(&c.closeSizes, "close-sizes", "16MiB,2GiB", "blob sizes of scenario t")
	flag.DurationVar(&c.loadFor, "load-duration", 10*time.Second, "length of each request loop")
	flag.IntVar(&c.conns, "conns", 16, "connections of the request loops")
	flag.StringVar(&c.procLog, "process-log", "", "file for the processes' output (default: discard)")
	flag.BoolVar(&c.pprof, "pprof", false,
		"serve pprof on every process (addresses printed at start)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "keel-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	part, err := stack.ParseSize(c.partSize)
	if err != nil {
		return fmt.Errorf("-part-size: %w", err)
	}
	streams, err := sizes(c.streamSizes)
	if err != nil {
		return fmt.Errorf("-stream-sizes: %w", err)
	}
	closes, err := sizes(c.closeSizes)
	if err != nil {
		return fmt.Errorf("-close-sizes: %w", err)
	}

	keel := c.keel
	if keel == "" {
		dir, err := os.MkdirTemp("", "keel-bench-bin-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		keel = filepath.Join(dir, "keel")
		fmt.Fprintln(os.Stderr, "building ./cmd/keel")
		build := exec.CommandContext(ctx, "go", "build", "-o", keel, "./cmd/keel")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build keel: %w", err)
		}
	}
	registry, err := filepath.Abs(c.registry)
	if err != nil {
		return err
	}
	procLog, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if c.procLog != "" {
		procLog, err = os.Create(c.procLog)
	}
	if err != nil {
		return err
	}
	defer procLog.Close()

	fmt.Fprintln(os.Stderr, "starting the S3 server, keel and distribution on 127.0.0.1")
	stacks, err := bench.StartStacks(ctx, bench.StackOptions{Keel: keel, Registry: registry,
		PartSize: c.partSize, PartBytes: part, Log: procLog, Pprof: c.pprof,
		Progress: os.Stderr})
	if err != nil {
		return err
	}
	defer stacks.Stop()

	all := bench.Scenarios(bench.Options{Reps: c.reps, LoadDuration: c.loadFor,
		LoadConns: c.conns, StreamSizes: streams, CloseSizes: closes})
	var chosen []bench.Scenario
	for _, sc := range all {
		if strings.Contains(","+c.scenarios+",", ","+sc.Key+",") {
			chosen = append(chosen, sc)
		}
	}
	targets := []bench.Target{stacks.Keel, stacks.Distribution}
	results, err := bench.Run(ctx, targets, chosen, os.Stderr)
	if err != nil {
		return err
	}

	report := &strings.Builder{}
	fmt.Fprintf(report, "Measured %s on %s (%s, %s).\n\n", time.Now().UTC().Format("2006-01-02"),
		bench.Machine(), runtime.Version(), "CNCF Distribution v3.1.2")
	bench.Report(report, results, targets)
	fmt.Print(report.String())
	if c.out != "" {
		return os.WriteFile(c.out, []byte(report.String()), 0o644)
	}
	return nil
}

func sizes(list string) ([]int64, error) {
	var out []int64
	for _, s := range strings.Split(list, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		n, err := stack.ParseSize(s)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, nil
}
