package guestmem

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// HugeAlign is the alignment of every RAM region's host mapping: 2 MiB,
// the x86 huge page, with region GPAs 2 MiB aligned too, so that KVM can
// map guest RAM with 2 MiB pages wherever the host backs it with huge pages
// (transparent or hugetlbfs). An unaligned mapping gets 4 KiB guest
// mappings even when the host memory is huge, and every first touch of a
// guest page is then an exit.
const HugeAlign = 2 << 20

// mapAligned maps size bytes (mmap's fd, offset, prot and flags) at a
// HugeAlign-aligned host address: it reserves size+HugeAlign of address
// space, maps over the aligned part and gives back the rest.
func mapAligned(fd int, off int64, size uint64, prot, flags int) ([]byte, error) {
	span := uintptr(size) + HugeAlign
	resv, err := unix.MmapPtr(-1, 0, nil, span, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, err
	}
	head := (HugeAlign - uintptr(resv)%HugeAlign) % HugeAlign
	at := unsafe.Add(resv, head)
	p, err := unix.MmapPtr(fd, off, at, uintptr(size), prot, flags|unix.MAP_FIXED)
	if err != nil {
		unix.MunmapPtr(resv, span)
		return nil, err
	}
	if head > 0 {
		unix.MunmapPtr(resv, head)
	}
	if tail := span - head - uintptr(size); tail > 0 {
		unix.MunmapPtr(unsafe.Add(at, uintptr(size)), tail)
	}
	return unsafe.Slice((*byte)(p), size), nil
}

// unmap unmaps a mapping made by mapAligned.
func unmap(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return unix.MunmapPtr(unsafe.Pointer(unsafe.SliceData(b)), uintptr(len(b)))
}

// word returns the aligned 32-bit word of guest memory that holds the
// aligned u16 at gpa, and the u16's bit shift within it. Regions start and
// end on page boundaries, so the word never leaves gpa's region.
func (m *Memory) word(gpa uint64) (*uint32, uint, error) {
	if gpa%2 != 0 {
		return nil, 0, fmt.Errorf("%w: unaligned u16 at %#x", ErrOutOfRange, gpa)
	}
	if !m.Contains(gpa, 2) {
		return nil, 0, fmt.Errorf("%w: %#x+2", ErrOutOfRange, gpa)
	}
	s, err := m.Slice(gpa&^3, 4)
	if err != nil {
		return nil, 0, err
	}
	p := unsafe.Pointer(&s[0])
	if uintptr(p)%4 != 0 {
		return nil, 0, fmt.Errorf("%w: host mapping of %#x not 4-byte aligned", ErrOutOfRange, gpa)
	}
	return (*uint32)(p), uint(gpa%4) * 8, nil
}

// LoadUint16 atomically reads the little-endian, 2-byte aligned u16 at gpa
// (virtqueue ring indices and flags). It has acquire semantics: guest
// memory read after it is at least as new as the index.
func (m *Memory) LoadUint16(gpa uint64) (uint16, error) {
	w, shift, err := m.word(gpa)
	if err != nil {
		return 0, err
	}
	return uint16(atomic.LoadUint32(w) >> shift), nil
}

// StoreUint16 atomically writes the aligned u16 at gpa, leaving the other
// half of its 32-bit word as the guest has it. The locked compare-and-swap
// is a full barrier: writes before it (used elements) are visible before
// the index, and loads after it (the avail event) are not hoisted above.
func (m *Memory) StoreUint16(gpa uint64, v uint16) error {
	w, shift, err := m.word(gpa)
	if err != nil {
		return err
	}
	mask := uint32(0xffff) << shift
	for {
		old := atomic.LoadUint32(w)
		if atomic.CompareAndSwapUint32(w, old, old&^mask|uint32(v)<<shift) {
			return nil
		}
	}
}
