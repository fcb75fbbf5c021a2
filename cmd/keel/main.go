// Command keel runs the keel registry: every concern in one process by
// default, or the ones KEEL_TARGET (or -target) names. It is configured by
// KEEL_* environment variables; see the README for the full table. The
// flags mirror the most used of them and win over them.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/keel-registry/keel/internal/healthcheck"
	"github.com/keel-registry/keel/internal/logintoken"
	"github.com/keel-registry/keel/internal/stack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	var err error
	if len(os.Args) > 1 && os.Args[1] == "health" {
		// "keel health ...": the container health check (scratch images
		// have no shell or curl).
		err = healthcheck.Run(ctx, os.Args[2:], os.Stdout)
	} else if len(os.Args) > 1 && os.Args[1] == "token" {
		// "keel token keygen|issue ...": JWT login keys and tokens.
		err = logintoken.Main(os.Args[2:], os.Stdout, os.Stderr)
	} else {
		err = run(ctx, os.Args[1:], os.Getenv, os.Stderr)
	}
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "keel:", err)
		os.Exit(1)
	}
}

// run parses flags and environment, then runs the stack until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	flags := flag.NewFlagSet("keel", flag.ContinueOnError)
	flags.SetOutput(stderr)
	overrides := map[string]*string{
		"KEEL_TARGET": flags.String("target", "",
			"comma-separated concerns to run: all, gateway, auth, upload, manifest, s3 "+
				"(KEEL_TARGET; default all)"),
		"KEEL_HTTP_ADDR": flags.String("http", "",
			"gateway listen address (KEEL_HTTP_ADDR; default :5000)"),
		"KEEL_DATA_DIR": flags.String("data", "",
			"embedded S3 data folder (KEEL_DATA_DIR; default ./data)"),
		"KEEL_LOG_LEVEL": flags.String("log-level", "",
			"debug, info, warn or error (KEEL_LOG_LEVEL; default info)"),
	}
	if err := flags.Parse(args); errors.Is(err, flag.ErrHelp) {
		return nil
	} else if err != nil {
		return err
	}
	if flags.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", flags.Args())
	}

	cfg, err := stack.ConfigFromEnv(func(name string) string {
		if v, ok := overrides[name]; ok && *v != "" {
			return *v
		}
		return getenv(name)
	})
	if err != nil {
		return err
	}

	return stack.Run(ctx, cfg, stack.NewLogger(stderr, cfg))
}
