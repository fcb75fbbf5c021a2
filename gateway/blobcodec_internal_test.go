package gateway

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	uploadv1 "github.com/keel-registry/keel/gen/keel/upload/v1"
	"github.com/keel-registry/keel/internal/chunkwire"
)

func TestBlobCodecDecodesChunks(t *testing.T) {
	c := newBlobCodec()
	for _, size := range []int{1, 127, 128, 5000, 1<<20 - 64} {
		for _, piece := range []int{1, 3, 16 << 10, 2 << 20} {
			want := bytes.Repeat([]byte{byte(size), byte(piece), 7}, size)[:size]
			wire, err := proto.Marshal(&uploadv1.ReadBlobResponse{Data: want})
			if err != nil {
				t.Fatal(err)
			}
			var got uploadv1.ReadBlobResponse
			if err := c.Unmarshal(chunkwire.Split(wire, piece), &got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.GetData(), want) {
				t.Fatalf("%d bytes in pieces of %d: data differs", size, piece)
			}
		}
	}
}

func TestBlobCodecLeavesOtherMessagesToProto(t *testing.T) {
	c := newBlobCodec()
	msgs := []*uploadv1.ReadBlobResponse{
		{},
		{Blob: &uploadv1.BlobDescriptor{Digest: "sha256:abc", Size: 9}, Offset: 2, Length: 7},
		{RedirectUrl: "http://127.0.0.1/x"},
		{Data: []byte("chunk"), Length: 5},
	}
	for _, want := range msgs {
		wire, err := proto.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		var got uploadv1.ReadBlobResponse
		if err := c.Unmarshal(chunkwire.Split(wire, 3), &got); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(&got, want) {
			t.Fatalf("got %v, want %v", &got, want)
		}
	}

	wire, err := proto.Marshal(&uploadv1.StatBlobRequest{Repository: "a", Digest: "b"})
	if err != nil {
		t.Fatal(err)
	}
	var req uploadv1.StatBlobRequest
	if err := c.Unmarshal(chunkwire.Split(wire, 2), &req); err != nil {
		t.Fatal(err)
	}
	if req.GetRepository() != "a" || req.GetDigest() != "b" {
		t.Fatalf("got %v", &req)
	}
}

func TestBlobCodecRejectsTruncatedChunk(t *testing.T) {
	wire, err := proto.Marshal(&uploadv1.ReadBlobResponse{Data: make([]byte, 300)})
	if err != nil {
		t.Fatal(err)
	}
	var got uploadv1.ReadBlobResponse
	if err := newBlobCodec().Unmarshal(chunkwire.Split(wire[:len(wire)-1], 64), &got); err == nil {
		t.Fatal("a truncated message decoded without error")
	}
}
