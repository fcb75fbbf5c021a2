//go:build !linux

package upload

// allocBuffer returns size bytes of heap memory: only Linux gets buffers
// off the heap (buffer_linux.go).
func allocBuffer(size int) []byte { return make([]byte, size) }

// releaseBuffer does nothing here: a heap buffer cannot give its pages back
// while it is kept.
func releaseBuffer([]byte) {}
