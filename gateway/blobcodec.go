package gateway

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/chunkwire"
)

// blobDataField is the field number of ReadBlobResponse.data.
const blobDataField = 4

// blobCodec is the codec of one ReadBlob call. It decodes the messages
// that carry only a chunk of the blob (all but the first) by copying the
// chunk once into a buffer it reuses for the whole call, and leaves every
// other message to the proto codec. The proto codec copies each chunk
// twice, first into one contiguous buffer and then into a newly allocated
// slice that the garbage collector then has to reclaim.
//
// The Data of a message it decoded is only valid until the next message is
// received: the caller must be done with one chunk before it asks for the
// next. The codec is not safe for concurrent use, which a stream's
// RecvMsg never needs.
type blobCodec struct {
	proto encoding.CodecV2
	buf   []byte
}

// newBlobCodec returns a codec for one ReadBlob call.
func newBlobCodec() *blobCodec {
	return &blobCodec{proto: encoding.GetCodecV2(proto.Name)}
}

// Name is the proto codec's: the wire format is the same.
func (c *blobCodec) Name() string { return proto.Name }

// Marshal encodes v with the proto codec.
func (c *blobCodec) Marshal(v any) (mem.BufferSlice, error) {
	return c.proto.Marshal(v)
}

// Unmarshal decodes data into v, a chunk-only ReadBlobResponse into the
// codec's buffer and anything else with the proto codec.
func (c *blobCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(*uploadv1.ReadBlobResponse)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	start, n, ok := chunkwire.Locate(data, blobDataField)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	if cap(c.buf) < n {
		c.buf = make([]byte, n)
	}
	b := c.buf[:n]
	chunkwire.Copy(b, data, start)
	m.Reset()
	m.Data = b
	return nil
}
