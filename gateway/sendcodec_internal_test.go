package gateway

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
)

// TestChunkSenderWireFormat checks that a data message sent from a given
// buffer encodes exactly as the proto codec would, without copying the
// chunk, and that other messages go to the proto codec.
func TestChunkSenderWireFormat(t *testing.T) {
	for _, n := range []int{1, 127, 128, 5000, chunkSize} {
		c := newChunkSender()
		bufp := chunkPool.Get().(*[]byte)
		chunk := (*bufp)[:n]
		for i := range chunk {
			chunk[i] = byte(i * 7)
		}
		msgs := []proto.Message{
			&uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Data{Data: chunk}},
			&uploadv1.CommitUploadRequest{Kind: &uploadv1.CommitUploadRequest_Data{Data: chunk}},
		}
		for _, m := range msgs {
			want, err := proto.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			c.give(bufp)
			got, err := c.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if c.given != nil {
				t.Errorf("%d bytes: Marshal did not take the given buffer", n)
			}
			if !bytes.Equal(got.Materialize(), want) {
				t.Fatalf("%d bytes: %T encodes differently from the proto codec", n, m)
			}
			if &got[1].ReadOnlyData()[0] != &chunk[0] {
				t.Errorf("%d bytes: the chunk was copied", n)
			}
			got.Free()
			*bufp = (*bufp)[:cap(*bufp)]
		}
	}

	c := newChunkSender()
	start := int64(3)
	hdr := &uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Header{
		Header: &uploadv1.WriteHeader{Repository: "a/b", UploadId: "u", Start: &start}}}
	bufp := chunkPool.Get().(*[]byte)
	c.give(bufp)
	got, err := c.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := proto.Marshal(hdr)
	if !bytes.Equal(got.Materialize(), want) || c.given != bufp {
		t.Errorf("a header took the given buffer or encoded differently")
	}
	c.reclaim()
	if c.given != nil || len(*bufp) != chunkSize {
		t.Errorf("reclaim left the buffer given or short (%d bytes)", len(*bufp))
	}

	// A chunk that is not in the given buffer is copied by the proto codec.
	other := []byte("elsewhere")
	c.give(chunkPool.Get().(*[]byte))
	m := &uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Data{Data: other}}
	got, err = c.Marshal(m)
	want, _ = proto.Marshal(m)
	if err != nil || !bytes.Equal(got.Materialize(), want) || c.given == nil {
		t.Errorf("a chunk outside the given buffer: %v, took the buffer: %v", err, c.given == nil)
	}
	c.reclaim()
}
