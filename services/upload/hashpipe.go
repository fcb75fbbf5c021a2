package upload

import (
	"encoding"
	"encoding/hex"
	"hash"
	"sync"

	"github.com/keel-registry/keel/internal/reference"
)

// hashPipe runs a session's two hashes on goroutines of their own, one
// each, so that SHA-256 and SHA-512 run at once and alongside the receiving
// of the next bytes, rather than one after the other on the receiving
// goroutine. It costs the same CPU; it takes the hashing off the write's
// critical path when a core is free.
//
// The bytes given to write are read later: the caller must not change them
// until a snapshot taken after the write has been waited for, or stop has
// returned. A part buffer satisfies this, since it is only appended to
// until it is recycled, and it is recycled after its part's snapshot.
type hashPipe struct {
	lanes [2]*hashLane // SHA-256, then SHA-512
	once  sync.Once
}

// hashLane is one hash and the goroutine that feeds it, in order.
type hashLane struct {
	h    hash.Hash
	jobs chan hashJob
	done chan struct{}
}

// hashJob is bytes to hash or, with reply set, a request for the state or
// the sum after every byte sent before it.
type hashJob struct {
	data  []byte
	sum   bool
	reply chan<- hashReply
}

type hashReply struct {
	b   []byte
	err error
}

// laneDepth is how many writes a lane queues before write blocks: enough
// to absorb a part's worth of messages without bounding memory any looser
// than the part buffers already do.
const laneDepth = 64

// startHashPipe starts feeding h's hashes.
func startHashPipe(h hashes) *hashPipe {
	p := &hashPipe{}
	for i, hh := range []hash.Hash{h.sha256, h.sha512} {
		l := &hashLane{h: hh, jobs: make(chan hashJob, laneDepth), done: make(chan struct{})}
		go l.run()
		p.lanes[i] = l
	}
	return p
}

func (l *hashLane) run() {
	defer close(l.done)
	for j := range l.jobs {
		switch {
		case j.reply == nil:
			l.h.Write(j.data)
		case j.sum:
			j.reply <- hashReply{b: l.h.Sum(nil)}
		default:
			b, err := l.h.(encoding.BinaryMarshaler).MarshalBinary()
			j.reply <- hashReply{b: b, err: err}
		}
	}
}

// write queues b for both hashes.
func (p *hashPipe) write(b []byte) {
	for _, l := range p.lanes {
		l.jobs <- hashJob{data: b}
	}
}

// hashSnapshot is the pending states of both hashes at one point.
type hashSnapshot [2]chan hashReply

// snapshot asks for both hash states after every byte written so far,
// without waiting for them.
func (p *hashPipe) snapshot() hashSnapshot {
	var s hashSnapshot
	for i, l := range p.lanes {
		s[i] = make(chan hashReply, 1)
		l.jobs <- hashJob{reply: s[i]}
	}
	return s
}

// wait returns the serialized states the snapshot asked for.
func (s hashSnapshot) wait() (s256, s512 []byte, err error) {
	r256, r512 := <-s[0], <-s[1]
	if r256.err != nil {
		return nil, nil, r256.err
	}
	return r256.b, r512.b, r512.err
}

// digest returns the digest of everything written so far, in algorithm alg.
func (p *hashPipe) digest(alg reference.Algorithm) reference.Digest {
	l := p.lanes[0]
	if alg == reference.SHA512 {
		l = p.lanes[1]
	}
	reply := make(chan hashReply, 1)
	l.jobs <- hashJob{sum: true, reply: reply}
	r := <-reply
	return reference.Digest(string(alg) + ":" + hex.EncodeToString(r.b))
}

// stop ends the goroutines once they have hashed everything written, so
// that the written bytes may be reused. It may be called more than once.
func (p *hashPipe) stop() {
	p.once.Do(func() {
		for _, l := range p.lanes {
			close(l.jobs)
		}
		for _, l := range p.lanes {
			<-l.done
		}
	})
}
