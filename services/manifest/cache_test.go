package manifest

import (
	"testing"
	"time"

	"github.com/keel-registry/keel/internal/layout"
	"github.com/keel-registry/keel/internal/ocierr"
	"github.com/keel-registry/keel/internal/reference"
)

// TestCachedReadsSkipTheStore checks that a manifest read by tag within the
// staleness bound is answered without the store: the objects are removed
// behind the server's back, and it still answers from its caches.
func TestCachedReadsSkipTheStore(t *testing.T) {
	e := newEnv(t, Options{Staleness: time.Hour})
	content := e.image("cache/app", "one")
	e.put("cache/app", "v1", mediaTypeOCIManifest, content)
	e.wantManifest("cache/app", "v1", mediaTypeOCIManifest, content)

	dgst := reference.Digest(sha256Of(content))
	for _, key := range []string{
		layout.Key(layout.Tag{Repo: "cache/app", Tag: "v1"}),
		layout.Key(layout.Revision{Repo: "cache/app", Digest: dgst}),
	} {
		if err := e.store.Delete(e.ctx, key); err != nil {
			t.Fatalf("Delete(%s): %v", key, err)
		}
	}

	e.wantManifest("cache/app", "v1", mediaTypeOCIManifest, content)
	resp, err := e.get("cache/app", "v1", true)
	if err != nil {
		t.Fatalf("GetManifest(head v1) error: %v", err)
	}
	if got := resp.GetDescriptor_().GetSize(); got != int64(len(content)) {
		t.Errorf("GetManifest(head v1) size = %d, want %d", got, len(content))
	}
}

// TestStalenessBound checks the promise between replicas: a tag moved and a
// manifest deleted through one replica are seen by another, which has both
// cached, no later than the staleness bound.
func TestStalenessBound(t *testing.T) {
	const bound = 300 * time.Millisecond
	a := newEnv(t, Options{Staleness: bound})
	b := &env{t: t, ctx: a.ctx, blobs: a.blobs, store: a.store,
		srv: NewServer(a.store, a.blobs, Options{Staleness: bound})}

	one := a.image("cache/app", "one")
	two := a.image("cache/app", "two")
	a.put("cache/app", "v1", mediaTypeOCIManifest, one)
	b.wantManifest("cache/app", "v1", mediaTypeOCIManifest, one)

	moved := time.Now()
	a.put("cache/app", "v1", mediaTypeOCIManifest, two)
	a.wantManifest("cache/app", "v1", mediaTypeOCIManifest, two) // at once on a
	waitFor(t, moved, bound, "b serves the moved tag", func() bool {
		resp, err := b.get("cache/app", "v1", false)
		return err == nil && resp.GetDescriptor_().GetDigest() == sha256Of(two)
	})

	deleted := time.Now()
	if err := a.del("cache/app", sha256Of(two)); err != nil {
		t.Fatalf("DeleteManifest(two) error: %v", err)
	}
	_, err := a.get("cache/app", sha256Of(two), false)
	wantCode(t, "GetManifest(two) on a", err, ocierr.ManifestUnknown)
	waitFor(t, deleted, bound, "b stops serving the deleted manifest", func() bool {
		_, err := b.get("cache/app", sha256Of(two), false)
		return ocierr.Is(err, ocierr.ManifestUnknown)
	})
}

// waitFor polls cond until it holds, failing the test if that takes longer
// than bound after since (with a margin for the store's round trips).
func waitFor(t *testing.T, since time.Time, bound time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := since.Add(bound + 200*time.Millisecond)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, bound)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLRUEvictsByCost(t *testing.T) {
	c := newLRU[int](10)
	now := time.Now()
	c.put("a", 1, 4, now)
	c.put("b", 2, 4, now)
	c.get("a") // b is now the least recently used
	c.put("c", 3, 4, now)

	if _, _, ok := c.get("b"); ok {
		t.Errorf("get(b) found it, want it evicted")
	}
	for _, k := range []string{"a", "c"} {
		if _, _, ok := c.get(k); !ok {
			t.Errorf("get(%s) missed, want it kept", k)
		}
	}

	c.put("d", 4, 11, now)
	if _, _, ok := c.get("d"); ok {
		t.Errorf("get(d) found an entry larger than the cache")
	}

	c.put("a", 9, 4, now.Add(-time.Second))
	if v, _, _ := c.get("a"); v != 1 {
		t.Errorf("get(a) = %d after an older put, want 1", v)
	}
}
