package auth

import (
	"sync"
	"time"
)

// DefaultFailureLimit is how many failed logins a client address may make
// per minute before it is refused.
const DefaultFailureLimit = 10

// maxLimiterEntries bounds the addresses the limiter tracks.
const maxLimiterEntries = 100_000

// failureLimiter is a token bucket per client address: each failed login
// takes a token, tokens come back at limit per minute up to limit, and an
// address without tokens is refused before its credential is checked.
//
// The buckets live in one auth replica's memory. With several replicas
// behind round-robin gateways an address gets the limit once per replica,
// and a restart forgets every count; sharing the counts (in the object
// store or elsewhere) is not done.
type failureLimiter struct {
	limit float64
	// refill is the tokens regained per second.
	refill float64

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newFailureLimiter(perMinute int) *failureLimiter {
	return &failureLimiter{
		limit:   float64(perMinute),
		refill:  float64(perMinute) / 60,
		buckets: map[string]*bucket{},
	}
}

// tokens returns addr's bucket level at now; the caller holds mu.
func (l *failureLimiter) tokens(addr string, now time.Time) float64 {
	b, ok := l.buckets[addr]
	if !ok {
		return l.limit
	}
	return min(l.limit, b.tokens+now.Sub(b.at).Seconds()*l.refill)
}

// allow reports whether addr may try a credential at now.
func (l *failureLimiter) allow(addr string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tokens(addr, now) >= 1
}

// wait returns how long addr must wait at now before it may try again.
func (l *failureLimiter) wait(addr string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	missing := 1 - l.tokens(addr, now)
	if missing <= 0 {
		return 0
	}
	return time.Duration(missing / l.refill * float64(time.Second))
}

// fail records a failed login from addr at now.
func (l *failureLimiter) fail(addr string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()

	level := l.tokens(addr, now) - 1
	if _, ok := l.buckets[addr]; !ok && len(l.buckets) >= maxLimiterEntries {
		l.evict(now)
	}
	l.buckets[addr] = &bucket{tokens: max(level, 0), at: now}
}

// evict drops the buckets that have refilled, and then arbitrary ones
// until there is room. Dropping a bucket that has not refilled forgets that
// address's failures: an attacker spreading failures over more than
// maxLimiterEntries addresses can reset the count of some of them.
func (l *failureLimiter) evict(now time.Time) {
	for addr := range l.buckets {
		if l.tokens(addr, now) >= l.limit {
			delete(l.buckets, addr)
		}
	}
	for addr := range l.buckets {
		if len(l.buckets) < maxLimiterEntries {
			return
		}
		delete(l.buckets, addr)
	}
}
