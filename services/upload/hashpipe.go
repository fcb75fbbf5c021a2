package upload

import (
	"encoding"
	"hash"
	"sync"
)

// hashPipe runs a session's hash on a goroutine of its own, so that hashing
// runs alongside the receiving of the next bytes, rather than after it on
// the receiving goroutine. It costs the same CPU; it takes the hashing off
// the write's critical path when a core is free.
//
// The bytes given to write are read later: the caller must not change them
// until a snapshot taken after the write has been waited for, or stop has
// returned. A part buffer satisfies this, since it is only appended to
// until it is recycled, and it is recycled after its part's snapshot.
type hashPipe struct {
	h    hash.Hash
	jobs chan hashJob
	done chan struct{}
	once sync.Once
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

// pipeDepth is how many writes the pipe queues before write blocks: enough
// to absorb a part's worth of messages without bounding memory any looser
// than the part buffers already do.
const pipeDepth = 64

// startHashPipe starts feeding h.
func startHashPipe(h hash.Hash) *hashPipe {
	p := &hashPipe{h: h, jobs: make(chan hashJob, pipeDepth), done: make(chan struct{})}
	go p.run()
	return p
}

func (p *hashPipe) run() {
	defer close(p.done)
	for j := range p.jobs {
		switch {
		case j.reply == nil:
			p.h.Write(j.data)
		case j.sum:
			j.reply <- hashReply{b: p.h.Sum(nil)}
		default:
			b, err := p.h.(encoding.BinaryMarshaler).MarshalBinary()
			j.reply <- hashReply{b: b, err: err}
		}
	}
}

// write queues b for hashing.
func (p *hashPipe) write(b []byte) {
	p.jobs <- hashJob{data: b}
}

// hashSnapshot is the pending state of the hash at one point.
type hashSnapshot chan hashReply

// snapshot asks for the hash state after every byte written so far,
// without waiting for it.
func (p *hashPipe) snapshot() hashSnapshot {
	s := make(hashSnapshot, 1)
	p.jobs <- hashJob{reply: s}
	return s
}

// wait returns the serialized state the snapshot asked for.
func (s hashSnapshot) wait() ([]byte, error) {
	r := <-s
	return r.b, r.err
}

// sum returns the hash of everything written so far.
func (p *hashPipe) sum() []byte {
	reply := make(chan hashReply, 1)
	p.jobs <- hashJob{sum: true, reply: reply}
	return (<-reply).b
}

// stop ends the goroutine once it has hashed everything written, so that
// the written bytes may be reused. It may be called more than once.
func (p *hashPipe) stop() {
	p.once.Do(func() {
		close(p.jobs)
		<-p.done
	})
}
