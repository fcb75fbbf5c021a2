package upload

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/chunkwire"
)

// TestCodecDecodesChunks checks data messages of every size class against
// the proto codec, whatever frames they arrive in, and that a decoded
// chunk owns its bytes.
func TestCodecDecodesChunks(t *testing.T) {
	c := NewCodec()
	for _, size := range []int{0, 1, 127, 128, 16 << 10, chunkSize} {
		for _, piece := range []int{1, 7, 16 << 10, 2 << 20} {
			want := bytes.Repeat([]byte{byte(size), byte(piece), 3}, size+1)[:size]
			wire, err := proto.Marshal(&uploadv1.WriteUploadRequest{
				Kind: &uploadv1.WriteUploadRequest_Data{Data: want}})
			if err != nil {
				t.Fatal(err)
			}
			var w uploadv1.WriteUploadRequest
			if err := c.Unmarshal(chunkwire.Split(wire, piece), &w); err != nil {
				t.Fatalf("%d bytes in pieces of %d: %v", size, piece, err)
			}
			if !bytes.Equal(w.GetData(), want) {
				t.Fatalf("%d bytes in pieces of %d: decoded %d bytes that differ",
					size, piece, len(w.GetData()))
			}
			if size > 0 {
				wire[len(wire)-1]++
				if w.GetData()[size-1] != want[size-1] {
					t.Fatalf("the decoded chunk shares memory with the frames")
				}
			}
		}
	}

	wire, err := proto.Marshal(&uploadv1.CommitUploadRequest{
		Kind: &uploadv1.CommitUploadRequest_Data{Data: []byte("last bytes")}})
	if err != nil {
		t.Fatal(err)
	}
	var m uploadv1.CommitUploadRequest
	err = c.Unmarshal(chunkwire.Split(wire, 3), &m)
	if err != nil || string(m.GetData()) != "last bytes" {
		t.Fatalf("commit chunk = %q, %v", m.GetData(), err)
	}
}

// TestCodecOtherMessages checks that headers, other message types and
// broken input go to the proto codec.
func TestCodecOtherMessages(t *testing.T) {
	c := NewCodec()
	start := int64(5)
	hdr := &uploadv1.WriteUploadRequest{Kind: &uploadv1.WriteUploadRequest_Header{
		Header: &uploadv1.WriteHeader{Repository: "a/b", UploadId: "id", Start: &start}}}
	wire, err := proto.Marshal(hdr)
	if err != nil {
		t.Fatal(err)
	}
	var w uploadv1.WriteUploadRequest
	if err := c.Unmarshal(chunkwire.Split(wire, 4), &w); err != nil || !proto.Equal(&w, hdr) {
		t.Fatalf("header = %v, %v; want %v", &w, err, hdr)
	}

	req := &uploadv1.GetUploadRequest{Repository: "a/b", UploadId: "id"}
	wire, err = proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	var g uploadv1.GetUploadRequest
	if err := c.Unmarshal(chunkwire.Split(wire, 2), &g); err != nil || !proto.Equal(&g, req) {
		t.Fatalf("other message = %v, %v; want %v", &g, err, req)
	}

	wire, err = proto.Marshal(&uploadv1.WriteUploadRequest{
		Kind: &uploadv1.WriteUploadRequest_Data{Data: make([]byte, 300)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Unmarshal(chunkwire.Split(wire[:len(wire)-10], 64), &w); err == nil {
		t.Errorf("a truncated chunk decoded without an error")
	}
}
