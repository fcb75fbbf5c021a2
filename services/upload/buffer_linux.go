package upload

import "syscall"

// allocBuffer returns size bytes of anonymous memory mapped outside the Go
// heap, or heap memory if the mapping fails.
func allocBuffer(size int) []byte {
	b, err := syscall.Mmap(-1, 0, size, syscall.PROT_READ|syscall.PROT_WRITE,
		syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		return make([]byte, size)
	}
	return b
}

// releaseBuffer gives an idle buffer's pages back to the system; the
// mapping stays valid and reads as zeros until it is written again.
func releaseBuffer(b []byte) {
	syscall.Madvise(b, syscall.MADV_DONTNEED)
}
