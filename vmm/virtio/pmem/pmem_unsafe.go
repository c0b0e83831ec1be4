package pmem

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mmapFixed maps length bytes of fd from offset 0 over the start of m,
// which must be at least length long.
func mmapFixed(m []byte, fd int, length uint64, prot, flags int) error {
	if length > uint64(len(m)) {
		return fmt.Errorf("map %d bytes over a %d-byte reservation", length, len(m))
	}
	if _, err := unix.MmapPtr(fd, 0, unsafe.Pointer(unsafe.SliceData(m)), uintptr(length), prot, flags|unix.MAP_FIXED); err != nil {
		return fmt.Errorf("mmap %d bytes of the file: %w", length, err)
	}
	return nil
}
