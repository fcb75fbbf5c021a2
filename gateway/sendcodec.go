package gateway

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/chunkwire"
)

// uploadDataField is the field number of the data chunk in
// WriteUploadRequest and CommitUploadRequest.
const uploadDataField = 2

// chunkSender is the codec of one WriteUpload or CommitUpload call. It
// sends the data message whose buffer the gateway handed over with give
// without copying the chunk: the message goes out as a few header bytes
// followed by the buffer itself, and gRPC puts the buffer back in
// chunkPool once it has written it. The proto codec would copy the chunk
// into a buffer of gRPC's pool, which it clears first. Every other message
// goes to the proto codec.
//
// give and Marshal run on the goroutine that sends; the codec is not safe
// for concurrent use, which a stream's SendMsg never needs.
type chunkSender struct {
	proto encoding.CodecV2
	given *[]byte
}

// newChunkSender returns a codec for one upload call.
func newChunkSender() *chunkSender {
	return &chunkSender{proto: encoding.GetCodecV2(proto.Name)}
}

// Name is the proto codec's: the wire format is the same.
func (c *chunkSender) Name() string { return proto.Name }

// give hands over the pooled buffer whose bytes the next data message
// carries. The sender must not touch the buffer again, and must call
// reclaim once the message is sent.
func (c *chunkSender) give(b *[]byte) { c.given = b }

// reclaim puts the given buffer back in chunkPool if Marshal did not take
// it, as when the send failed before the message was encoded.
func (c *chunkSender) reclaim() {
	if c.given != nil {
		putChunk(c.given)
		c.given = nil
	}
}

// Marshal encodes v, taking over the given buffer when v's chunk is in it.
func (c *chunkSender) Marshal(v any) (mem.BufferSlice, error) {
	var data []byte
	switch m := v.(type) {
	case *uploadv1.WriteUploadRequest:
		data = m.GetData()
	case *uploadv1.CommitUploadRequest:
		data = m.GetData()
	}
	b := c.given
	if b == nil || len(data) == 0 || &data[0] != &(*b)[0] {
		return c.proto.Marshal(v)
	}

	c.given = nil
	*b = data
	head := chunkwire.Head(uploadDataField, len(data))
	return mem.BufferSlice{mem.SliceBuffer(head), mem.NewBuffer(b, chunkBuffers{})}, nil
}

// Unmarshal decodes with the proto codec.
func (c *chunkSender) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

// chunkBuffers is chunkPool as gRPC's BufferPool, through which gRPC
// returns the buffers chunkSender gave it.
type chunkBuffers struct{}

// Get returns a pooled buffer of length n, which must be at most
// chunkSize.
func (chunkBuffers) Get(n int) *[]byte {
	b := chunkPool.Get().(*[]byte)
	*b = (*b)[:n]
	return b
}

// Put returns a buffer to the pool.
func (chunkBuffers) Put(b *[]byte) { putChunk(b) }

// putChunk returns a chunk buffer to chunkPool at its full length.
func putChunk(b *[]byte) {
	*b = (*b)[:cap(*b)]
	chunkPool.Put(b)
}
