package guestmem

import (
	"fmt"
	"sync/atomic"
	"unsafe"
)

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
