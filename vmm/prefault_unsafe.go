package vmm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// mincore fills vec with one byte per page of b; bit 0 is set for a page
// resident in memory (mincore(2), which x/sys/unix does not wrap).
func mincore(b, vec []byte) error {
	_, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if e != 0 {
		return e
	}
	return nil
}
