package main

import "unsafe"

// alignedBuf returns n bytes aligned to 4096 (for O_DIRECT).
func alignedBuf(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	return b[off : off+n]
}
