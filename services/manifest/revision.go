package manifest

import (
	"bytes"
	"errors"
	"fmt"
)

// maxMediaTypeLen bounds a stored media type. RFC 6838 allows 127
// characters on each side of the '/', so no real media type is longer.
// statRevision relies on it to read only a revision's first line.
const maxMediaTypeLen = 255

// errCorruptRevision marks a revision object that does not have the layout
// encodeRevision writes.
var errCorruptRevision = errors.New("corrupt revision object")

// encodeRevision lays out a revision object: the manifest's media type, a
// newline, then the manifest's bytes exactly as pushed. The media type must
// not contain a newline (parse guarantees it).
func encodeRevision(mediaType string, content []byte) []byte {
	b := make([]byte, 0, len(mediaType)+1+len(content))
	b = append(b, mediaType...)
	b = append(b, '\n')
	return append(b, content...)
}

// decodeRevision splits a revision object into its media type and content.
// The content aliases b.
func decodeRevision(b []byte) (mediaType string, content []byte, err error) {
	i := bytes.IndexByte(b, '\n')
	if i <= 0 || i > maxMediaTypeLen {
		return "", nil, fmt.Errorf("%w: no media type line", errCorruptRevision)
	}
	return string(b[:i]), b[i+1:], nil
}
