package upload

import (
	"errors"
	"slices"
	"sync"
)

// recentStates holds the state of each session this replica wrote last,
// with its ETag, so that the next request on the session can start from it
// instead of reading the state from the store: a round trip saved on most
// PATCH and PUT requests, since a client usually sends them to the replica
// that served its last one.
//
// An entry is a guess. Another replica may have changed the session since,
// but every state write is conditional on the ETag, so a stale entry can
// only make the attempt's first state write fail. Until that first write
// succeeds an attempt started from an entry writes nothing the session
// depends on and takes no decision that destroys anything; when the write
// fails it stops with errStale and runs again from the stored state (see
// Server.run).
type recentStates struct {
	mu      sync.Mutex
	entries map[string]recentState
}

type recentState struct {
	sess session
	etag string
}

// maxRecent bounds the number of entries. A full table forgets an
// arbitrary entry, which costs its session one read.
const maxRecent = 4096

// get returns a copy of the session's entry.
func (r *recentStates) get(id string) (*session, string, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.entries[id]
	if !ok {
		return nil, "", false
	}
	s := e.sess.clone()
	return &s, e.etag, true
}

// put records s as the state stored under etag. A committed session takes
// no more writes, so it is dropped instead.
func (r *recentStates) put(id string, s *session, etag string) {
	if s.Committed != "" {
		r.drop(id)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.entries == nil {
		r.entries = make(map[string]recentState)
	}
	if _, ok := r.entries[id]; !ok && len(r.entries) >= maxRecent {
		for k := range r.entries {
			delete(r.entries, k)
			break
		}
	}
	r.entries[id] = recentState{sess: s.clone(), etag: etag}
}

// drop forgets a session.
func (r *recentStates) drop(id string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.entries, id)
}

// clone returns a copy of s that shares no memory with it.
func (s *session) clone() session {
	c := *s
	c.Parts = slices.Clone(s.Parts)
	c.Hash = slices.Clone(s.Hash)
	return c
}

// errStale stops an attempt that started from a recent state which turned
// out not to be the stored one.
var errStale = errors.New("upload session changed since this replica last wrote it")

// recorder passes on a request's chunks and keeps them until stop, so that
// an attempt stopped by errStale can be run again on the same bytes. It
// keeps at most what an attempt receives before its first state write: a
// part, or the whole request when that is smaller. The chunks are kept
// after rewind until they have been passed on again, stop or no stop.
type recorder struct {
	src     func() ([]byte, error)
	kept    [][]byte
	pos     int
	end     error
	stopped bool
}

// next returns the next kept chunk when replaying, else the next chunk of
// the request, keeping it.
func (r *recorder) next() ([]byte, error) {
	if r.pos < len(r.kept) {
		b := r.kept[r.pos]
		r.pos++
		if r.stopped && r.pos == len(r.kept) {
			r.kept, r.pos = nil, 0
		}
		return b, nil
	}
	if r.end != nil {
		return nil, r.end
	}
	b, err := r.src()
	if !r.stopped && len(b) > 0 {
		r.kept = append(r.kept, b)
		r.pos++
	}
	if err != nil {
		r.end = err
	}
	return b, err
}

// rewind starts the replay from the first kept chunk.
func (r *recorder) rewind() { r.pos = 0 }

// stop ends the keeping: it drops the chunks already passed on, which no
// attempt will need again, and keeps only those a replay has yet to pass on.
func (r *recorder) stop() {
	r.stopped = true
	r.kept = slices.Delete(r.kept, 0, r.pos)
	r.pos = 0
}
