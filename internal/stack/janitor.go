package stack

import (
	"context"
	"time"

	"github.com/keel-registry/keel/services/upload"
)

// janitorInterval returns how often abandoned upload sessions are swept: a
// quarter of their maximum age, and at least once a minute.
func janitorInterval(maxAge time.Duration) time.Duration {
	return max(min(maxAge/4, time.Minute), time.Second)
}

// startJanitor sweeps abandoned upload sessions every janitorInterval until
// the process stops. Every upload replica sweeps; the service makes two
// sweeps at once harmless.
func (p *process) startJanitor(svc *upload.Server) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	interval := janitorInterval(p.cfg.UploadMaxAge)
	log := p.log.With("service", "upload", "task", "janitor")

	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				n, err := svc.RemoveAbandoned(ctx, now)
				switch {
				case err != nil && ctx.Err() == nil:
					log.Warn("sweep of abandoned uploads failed", "error", err, "removed", n)
				case n > 0:
					log.Info("removed abandoned uploads", "removed", n)
				}
			}
		}
	}()

	p.onStop("upload janitor", func(stopCtx context.Context) error {
		cancel()
		select {
		case <-done:
			return nil
		case <-stopCtx.Done():
			return stopCtx.Err()
		}
	})
	log.Debug("janitor started", "interval", interval)
}
