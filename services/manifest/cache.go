package manifest

import (
	"container/list"
	"sync"
	"time"

	"github.com/keel-registry/keel/internal/reference"
)

// DefaultCacheBytes is the revision cache's size when Options leaves it at
// zero.
const DefaultCacheBytes = 64 << 20

// DefaultStaleness is how long a replica may answer from its caches when
// Options leaves it at zero: a tag moved, or a manifest deleted, through
// another replica is seen by this one at most this long after the change
// (plus one store round trip).
const DefaultStaleness = time.Second

// maxTags bounds the tag cache's entries. A tag entry is small (a name and
// a digest), so the bound is on the count.
const maxTags = 1 << 16

// revision is a cached manifest. Its content must not be modified.
type revision struct {
	mediaType string
	content   []byte
}

// lru is a map with a least-recently-used bound on the summed cost of its
// entries. Each entry remembers when it was last confirmed against the
// store, so that a caller can tell whether it is within the staleness bound.
// It is safe for concurrent use.
type lru[V any] struct {
	mu      sync.Mutex
	max     int64
	used    int64
	order   *list.List // of *lruEntry[V], most recent first
	entries map[string]*list.Element
}

type lruEntry[V any] struct {
	key     string
	value   V
	cost    int64
	checked time.Time
}

func newLRU[V any](max int64) *lru[V] {
	return &lru[V]{max: max, order: list.New(), entries: map[string]*list.Element{}}
}

// get returns the value under key and when it was last confirmed.
func (c *lru[V]) get(key string) (v V, checked time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[key]
	if !ok {
		return v, time.Time{}, false
	}
	c.order.MoveToFront(el)
	e := el.Value.(*lruEntry[V])
	return e.value, e.checked, true
}

// put stores value under key as confirmed at checked, unless the entry
// there was confirmed later (a slower reader must not overwrite a newer
// write). A value that costs more than the whole cache is not stored.
func (c *lru[V]) put(key string, value V, cost int64, checked time.Time) {
	if cost > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		e := el.Value.(*lruEntry[V])
		if e.checked.After(checked) {
			return
		}
		c.used += cost - e.cost
		e.value, e.cost, e.checked = value, cost, checked
		c.order.MoveToFront(el)
	} else {
		e := &lruEntry[V]{key: key, value: value, cost: cost, checked: checked}
		c.entries[key] = c.order.PushFront(e)
		c.used += cost
	}
	for c.used > c.max {
		oldest := c.order.Back()
		e := oldest.Value.(*lruEntry[V])
		c.order.Remove(oldest)
		delete(c.entries, e.key)
		c.used -= e.cost
	}
}

// touch records that the entry under key was confirmed at checked.
func (c *lru[V]) touch(key string, checked time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		if e := el.Value.(*lruEntry[V]); checked.After(e.checked) {
			e.checked = checked
		}
	}
}

// remove drops the entry under key.
func (c *lru[V]) remove(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.entries[key]; ok {
		c.order.Remove(el)
		delete(c.entries, key)
		c.used -= el.Value.(*lruEntry[V]).cost
	}
}

// caches are a replica's caches of what it reads from the store: the
// revisions by digest and the tags. A revision never changes, but it can be
// deleted; a tag can move. So every entry is trusted for at most staleness
// after it was last confirmed: then a tag is read again and a revision's
// existence is checked again (a HEAD, not a read).
type caches struct {
	staleness time.Duration
	revisions *lru[revision]
	tags      *lru[reference.Digest]
}

func newCaches(bytes int64, staleness time.Duration) *caches {
	return &caches{
		staleness: staleness,
		revisions: newLRU[revision](bytes),
		tags:      newLRU[reference.Digest](maxTags),
	}
}

// fresh reports whether an entry confirmed at checked is still within the
// staleness bound at now.
func (c *caches) fresh(checked, now time.Time) bool {
	return now.Sub(checked) < c.staleness
}

// revisionCost is what a cached revision counts against the cache's bytes:
// its content, media type and key, plus a fixed overhead for the entry.
func revisionCost(key string, r revision) int64 {
	return int64(len(key)+len(r.mediaType)+len(r.content)) + 128
}
