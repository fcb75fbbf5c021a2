// Command keelctl is the command-line client of keel's query API: it lists
// repositories and tags, inspects manifests, lists referrers and follows
// the registry's changes. Run "keelctl --help" for its commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/keel-registry/keel/internal/querycli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := querycli.Run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}
