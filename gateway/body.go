package gateway

import (
	"context"
	"errors"
	"io"
	"sync"

	"google.golang.org/grpc"

	"github.com/keel-registry/keel/internal/ocierr"
)

// chunkSize is the data each WriteUpload and CommitUpload message carries:
// 1 MiB less 64 bytes, so that a message and its framing fit one 1 MiB
// buffer of gRPC's pool. Every message but the last is exactly this size;
// smaller ones would make the upload service handle many more, smaller
// buffers for the same bytes.
const chunkSize = 1<<20 - 64

var chunkPool = sync.Pool{New: func() any {
	b := make([]byte, chunkSize)
	return &b
}}

// bodyError is a failure to read the client's request body.
type bodyError struct {
	// code is what the client is told.
	code ocierr.Code
	err  error
}

func (e *bodyError) Error() string { return "read request body: " + e.err.Error() }

// Unwrap gives the client the error's code and keeps the cause for the log.
func (e *bodyError) Unwrap() []error {
	return []error{ocierr.New(e.code, "request body could not be read"), e.err}
}

// upstream sends header and then body, in chunkSize pieces wrapped by data,
// on a client stream opened with sender as its codec, and returns the
// service's answer. The body is never held in memory beyond the chunks
// gRPC has yet to write.
//
// When the body cannot be read, upstream cancels the stream through cancel
// instead of closing it, so that the service keeps only what it had already
// committed rather than a truncated chunk.
func upstream[Req, Resp any](
	cancel context.CancelFunc,
	stream grpc.ClientStreamingClient[Req, Resp],
	sender *chunkSender,
	header *Req,
	body io.Reader,
	data func([]byte) *Req,
) (*Resp, error) {
	sendErr := stream.Send(header)
	if sendErr == nil {
		sendErr = copyChunks(body, sender, func(p []byte) error { return stream.Send(data(p)) })
	}
	var be *bodyError
	if errors.As(sendErr, &be) {
		cancel()
		return nil, sendErr
	}

	// A failed Send means the service has ended the stream; its status
	// comes from CloseAndRecv.
	resp, err := stream.CloseAndRecv()
	if err != nil {
		return nil, err
	}
	if sendErr != nil {
		return nil, sendErr
	}
	return resp, nil
}

// copyChunks reads body in chunkSize pieces and passes each to send. A read
// failure comes back as a *bodyError; a send failure as it is.
//
// Each piece is read into a buffer of its own from chunkPool and handed to
// sender, which has gRPC put it back once written: Send returns before the
// bytes are on the wire, so a buffer is never refilled while gRPC may
// still read it.
func copyChunks(body io.Reader, sender *chunkSender, send func([]byte) error) error {
	for {
		bufp := chunkPool.Get().(*[]byte)
		n, eof, err := fill(body, *bufp)
		if err != nil {
			putChunk(bufp)
			return &bodyError{code: ocierr.BlobUploadInvalid, err: err}
		}
		if n == 0 {
			putChunk(bufp)
		} else {
			sender.give(bufp)
			err := send((*bufp)[:n])
			sender.reclaim()
			if err != nil {
				return err
			}
		}
		if eof {
			return nil
		}
	}
}

// fill reads from r until buf is full or r ends. Unlike io.ReadFull it
// tells a clean end (eof) from a body cut short, which http reports as
// io.ErrUnexpectedEOF.
func fill(r io.Reader, buf []byte) (n int, eof bool, err error) {
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if errors.Is(err, io.EOF) {
			return n, true, nil
		}
		if err != nil {
			return n, false, err
		}
	}
	return n, false, nil
}
