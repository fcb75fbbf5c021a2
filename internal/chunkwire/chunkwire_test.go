package chunkwire

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// message encodes a message made of one bytes field.
func message(field protowire.Number, b []byte) []byte {
	m := protowire.AppendTag(nil, field, protowire.BytesType)
	return protowire.AppendBytes(m, b)
}

// TestLocateAndCopy finds and copies the field of messages of every
// length class, whatever frames they arrive in.
func TestLocateAndCopy(t *testing.T) {
	for _, size := range []int{0, 1, 127, 128, 16 << 10, 1<<20 - 64} {
		want := bytes.Repeat([]byte{byte(size), 9, 4}, size+1)[:size]
		wire := message(4, want)
		for _, piece := range []int{1, 5, 16 << 10, 2 << 20} {
			data := Split(wire, piece)
			start, n, ok := Locate(data, 4)
			if !ok || n != size {
				t.Fatalf("%d bytes in pieces of %d: Locate = %d, %d, %v", size, piece, start, n, ok)
			}
			got := make([]byte, n)
			if Copy(got, data, start) != n || !bytes.Equal(got, want) {
				t.Fatalf("%d bytes in pieces of %d: copied bytes differ", size, piece)
			}
		}
	}
}

// TestLocateRefuses checks messages that are not one whole bytes field.
func TestLocateRefuses(t *testing.T) {
	chunk := message(4, make([]byte, 300))
	two := append(message(1, []byte("id")), message(4, []byte("x"))...)
	varint := protowire.AppendVarint(protowire.AppendTag(nil, 4, protowire.VarintType), 7)
	for name, wire := range map[string][]byte{
		"other field":   message(2, []byte("abc")),
		"two fields":    two,
		"varint field":  varint,
		"truncated":     chunk[:len(chunk)-10],
		"trailing byte": append(chunk, 0),
		"empty":         nil,
	} {
		if _, _, ok := Locate(Split(wire, 7), 4); ok {
			t.Errorf("%s: Locate accepted it", name)
		}
	}
}

// TestHead checks that Head followed by the bytes is the message.
func TestHead(t *testing.T) {
	for _, size := range []int{0, 1, 127, 128, 1<<20 - 64} {
		b := bytes.Repeat([]byte{7}, size)
		if got := append(Head(2, size), b...); !bytes.Equal(got, message(2, b)) {
			t.Errorf("%d bytes: Head and bytes differ from the encoded message", size)
		}
	}
}
