package uring

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

func setup(entries uint32, p *params) (int, error) {
	fd, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

func register(fd int, op uint32, arg unsafe.Pointer, nr uint32) error {
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(fd), uintptr(op), uintptr(arg), uintptr(nr), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// enter is io_uring_enter without the runtime's system-call bookkeeping
// (see package rawsys): only for calls that do not wait (min 0).
func enter(fd int, toSubmit, minComplete, flags uint32) (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit), uintptr(minComplete), uintptr(flags), 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// waitCQE blocks until at least one completion is posted (bookkept: it
// may wait on the disk).
func waitCQE(fd int) error {
	_, _, e := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), 0, 1, enterGetEvents, 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

// word points at the 32-bit field at off in a shared ring mapping.
func word(m []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&m[off])) }

func load(p *uint32) uint32     { return atomic.LoadUint32(p) }
func store(p *uint32, v uint32) { atomic.StoreUint32(p, v) }

// sqe is the part of struct io_uring_sqe this package fills.
type sqe struct {
	opcode  uint8
	flags   uint8
	fd      int32
	off     uint64
	addr    uint64
	len     uint32
	opFlags uint32
	user    uint64
}

// writeSQE fills one 64-byte submission entry, zeroing what s leaves out.
func writeSQE(b []byte, s sqe) {
	_ = b[sqeSize-1]
	clear(b)
	b[0], b[1] = s.opcode, s.flags
	*(*int32)(unsafe.Pointer(&b[4])) = s.fd
	*(*uint64)(unsafe.Pointer(&b[8])) = s.off
	*(*uint64)(unsafe.Pointer(&b[16])) = s.addr
	*(*uint32)(unsafe.Pointer(&b[24])) = s.len
	*(*uint32)(unsafe.Pointer(&b[28])) = s.opFlags
	*(*uint64)(unsafe.Pointer(&b[32])) = s.user
}

// readCQE returns completion i's user data and result.
func readCQE(cqes unsafe.Pointer, i uint32) (uint64, int32) {
	p := unsafe.Add(cqes, uintptr(i)*cqeSize)
	return *(*uint64)(p), *(*int32)(unsafe.Add(p, 8))
}
