package blk

import "unsafe"

// addrOf is the host address of s's first byte (for O_DIRECT alignment).
func addrOf(s []byte) uint64 {
	if len(s) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&s[0])))
}
