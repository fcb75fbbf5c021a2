package upload

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/chunkwire"
)

// dataField is the field number of the data chunk in WriteUploadRequest
// and CommitUploadRequest.
const dataField = 2

// Codec is the gRPC codec of the upload service's server. It decodes the
// data messages of write and commit streams, which carry the blob's bytes,
// with one copy straight out of the received frames into a new slice; the
// proto codec first joins the frames into a cleared pooled buffer and then
// copies the chunk out of it. Every other message goes to the proto codec.
// The wire format is the proto codec's.
//
// A decoded chunk is a slice of its own, so a write attempt may keep it
// after the next message arrives (see recorder).
type Codec struct {
	proto encoding.CodecV2
}

// NewCodec returns the upload service's server codec.
func NewCodec() *Codec {
	return &Codec{proto: encoding.GetCodecV2(proto.Name)}
}

// Name is the proto codec's name.
func (c *Codec) Name() string { return proto.Name }

// Marshal encodes v with the proto codec.
func (c *Codec) Marshal(v any) (mem.BufferSlice, error) {
	return c.proto.Marshal(v)
}

// Unmarshal decodes data into v.
func (c *Codec) Unmarshal(data mem.BufferSlice, v any) error {
	switch m := v.(type) {
	case *uploadv1.WriteUploadRequest:
		if b, ok := chunk(data); ok {
			m.Reset()
			m.Kind = &uploadv1.WriteUploadRequest_Data{Data: b}
			return nil
		}
	case *uploadv1.CommitUploadRequest:
		if b, ok := chunk(data); ok {
			m.Reset()
			m.Kind = &uploadv1.CommitUploadRequest_Data{Data: b}
			return nil
		}
	}
	return c.proto.Unmarshal(data, v)
}

// chunk returns a copy of the chunk of a message made of the data field
// alone, or false for any other message.
func chunk(data mem.BufferSlice) ([]byte, bool) {
	start, n, ok := chunkwire.Locate(data, dataField)
	if !ok {
		return nil, false
	}
	b := make([]byte, n)
	chunkwire.Copy(b, data, start)
	return b, true
}
