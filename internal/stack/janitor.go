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
	interval := janitorInterval(p.cfg.UploadMaxAge)
	log := p.log.With("service", "upload", "task", "janitor")
	p.periodic("upload janitor", interval, nil, func(ctx context.Context, now time.Time) {
		n, err := svc.RemoveAbandoned(ctx, now)
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("sweep of abandoned uploads failed", "error", err, "removed", n)
		case n > 0:
			log.Info("removed abandoned uploads", "removed", n)
		}
	})
	log.Debug("janitor started", "interval", interval)
}

// periodic runs task every interval on its own goroutine until the process
// stops. Its stop step, called name, first runs beforeStop when given, then
// waits for a task under way to return.
func (p *process) periodic(
	name string, interval time.Duration, beforeStop func(),
	task func(ctx context.Context, now time.Time),
) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				task(ctx, now)
			}
		}
	}()

	p.onStop(name, func(stopCtx context.Context) error {
		if beforeStop != nil {
			beforeStop()
		}
		cancel()
		select {
		case <-done:
			return nil
		case <-stopCtx.Done():
			return stopCtx.Err()
		}
	})
}
