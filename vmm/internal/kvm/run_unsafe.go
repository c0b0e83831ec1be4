package kvm

import (
	"sync/atomic"
	"unsafe"
)

// runHeaderSize is the part of struct kvm_run this package reads: the
// 32-byte fixed header and the 256-byte exit union.
const runHeaderSize = 32 + 256

// runHeader overlays the fixed header of struct kvm_run. Only this header
// is overlaid; the exit union is read through bounds-checked byte slices.
type runHeader struct {
	// word0 holds request_interrupt_window (byte 0) and immediate_exit
	// (byte 1), accessed atomically as one little-endian u32.
	word0                      uint32
	_                          uint32
	ExitReason                 uint32
	ReadyForInterruptInjection uint8
	IfFlag                     uint8
	Flags                      uint16
	CR8                        uint64
	APICBase                   uint64
}

// Compile-time check that runHeader is exactly 32 bytes.
var (
	_ [32 - unsafe.Sizeof(runHeader{})]byte
	_ [unsafe.Sizeof(runHeader{}) - 32]byte
)

func overlayRun(run []byte) *runHeader {
	return (*runHeader)(unsafe.Pointer(&run[0]))
}

// immediateExitBit is immediate_exit (byte 1) inside word0.
const immediateExitBit = 1 << 8

func (h *runHeader) setImmediateExit(on bool) {
	if on {
		atomic.OrUint32(&h.word0, immediateExitBit)
	} else {
		atomic.AndUint32(&h.word0, ^uint32(immediateExitBit))
	}
}

func (h *runHeader) immediateExit() bool {
	return atomic.LoadUint32(&h.word0)&immediateExitBit != 0
}
