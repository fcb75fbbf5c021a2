package stack

import (
	"context"
	"time"

	"github.com/keel-registry/keel/services/manifest"
)

// changeSweepInterval is how often the manifest service's change log is
// trimmed to its retention.
const changeSweepInterval = 10 * time.Minute

// startChangeLog looks after the manifest service's change log until the
// process stops: it removes expired changes every changeSweepInterval
// (every manifest replica sweeps; two sweeps at once only delete the same
// objects twice), and when the stop begins it ends the open WatchChanges
// streams, which would otherwise hold up the gRPC server's graceful stop.
// Call it after the gRPC server is serving, so that this stop step runs
// before the server's.
func (p *process) startChangeLog(query *manifest.QueryServer) {
	log := p.log.With("service", "manifest", "task", "change janitor")
	p.periodic("manifest change log", changeSweepInterval, query.EndWatches,
		func(ctx context.Context, now time.Time) {
			n, err := query.ExpireChanges(ctx, now)
			switch {
			case err != nil && ctx.Err() == nil:
				log.Warn("sweep of expired changes failed", "error", err, "removed", n)
			case n > 0:
				log.Debug("removed expired changes", "removed", n)
			}
		})
}
