package manifest

import (
	"context"
	"sync"
)

// maxParallel bounds the requests one RPC sends at once to the store or the
// upload service.
const maxParallel = 8

// parallel calls fn(ctx, i) for i in [0, n), at most maxParallel at a time.
// It returns the first error any call returns, after cancelling the context
// of the calls still running, or ctx's error if ctx ends before every call
// has started.
func parallel(ctx context.Context, n int, fn func(ctx context.Context, i int) error) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()

	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	sem := make(chan struct{}, maxParallel)
	started := 0
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-runCtx.Done():
		}
		if runCtx.Err() != nil {
			break
		}
		started++
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := fn(runCtx, i); err != nil {
				once.Do(func() {
					first = err
					cancel()
				})
			}
		}()
	}
	wg.Wait()

	if first != nil {
		return first
	}
	if started < n {
		return ctx.Err()
	}
	return nil
}
