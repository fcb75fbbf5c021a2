package objstore_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/keel-registry/keel/internal/objstore"
)

// TestEmptyDirectoryRace creates and deletes objects in sibling folders
// from several goroutines at once. A store that keeps objects as files
// (versitygw's posix backend) removes a folder once its last object goes,
// which can pull the parent folder from under a write next to it; the
// store's client must retry such a write instead of failing it.
func TestEmptyDirectoryRace(t *testing.T) {
	st, _ := newStore(t)
	ctx := testCtx(t)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 150 {
				key := fmt.Sprintf("race/%d-%d/state", g, i)
				cond := objstore.Condition{IfNoneMatch: true}
				if _, err := st.Put(ctx, key, []byte("x"), cond); err != nil {
					errs <- fmt.Errorf("put %s: %w", key, err)
					return
				}
				if err := st.Delete(ctx, key); err != nil {
					errs <- fmt.Errorf("delete %s: %w", key, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
