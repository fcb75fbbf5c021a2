// Package chunkwire reads blob chunks straight out of the frames gRPC
// received them in, and frames chunks to send without copying them. Keel streams blobs as messages that carry nothing but
// one bytes field of about 1 MiB; the proto codec joins a message's frames
// into one buffer and then copies the field out of it, while a codec built
// on this package copies the field's bytes once, from the frames to where
// they are needed.
package chunkwire

import (
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// Locate reports whether the message in data is made of field alone, a
// bytes field, and where its bytes start and how many there are.
func Locate(data mem.BufferSlice, field protowire.Number) (start, n int, ok bool) {
	// A tag and a length take at most 1+10 bytes.
	var head [11]byte
	h := head[:Copy(head[:], data, 0)]
	num, typ, k := protowire.ConsumeTag(h)
	if k < 0 || num != field || typ != protowire.BytesType {
		return 0, 0, false
	}
	size, l := protowire.ConsumeVarint(h[k:])
	if l < 0 || size != uint64(data.Len()-k-l) {
		return 0, 0, false
	}
	return k + l, int(size), true
}

// Head returns the tag and length that precede n bytes of field in a
// message made of that field alone; the bytes themselves may follow in a
// buffer of their own.
func Head(field protowire.Number, n int) []byte {
	head := protowire.AppendTag(make([]byte, 0, 11), field, protowire.BytesType)
	return protowire.AppendVarint(head, uint64(n))
}

// Copy copies the bytes of data from offset off into dst and returns how
// many it copied.
func Copy(dst []byte, data mem.BufferSlice, off int) int {
	n := 0
	for _, buf := range data {
		b := buf.ReadOnlyData()
		if off >= len(b) {
			off -= len(b)
			continue
		}
		n += copy(dst[n:], b[off:])
		off = 0
		if n == len(dst) {
			break
		}
	}
	return n
}

// Split cuts b into pieces of at most n bytes, the shape in which gRPC
// hands over a message that arrived in several frames.
func Split(b []byte, n int) mem.BufferSlice {
	var s mem.BufferSlice
	for len(b) > 0 {
		k := min(n, len(b))
		s = append(s, mem.SliceBuffer(b[:k]))
		b = b[k:]
	}
	return s
}
