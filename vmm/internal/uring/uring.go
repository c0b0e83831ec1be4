// Package uring is a minimal io_uring for the VMM's disk I/O: one ring
// per open disk, restricted to vectored reads and writes and fdatasync on
// the disk's one registered file, with completions announced on an
// eventfd that an event loop watches.
//
// Why io_uring: a disk served with preadv/pwritev on the event loop
// serves one request at a time, so a guest's queue depth buys nothing on
// a real disk with O_DIRECT; and each of those calls is a bookkept system
// call, which wakes the Go runtime's sysmon on an otherwise idle process
// (package rawsys). With the ring, the loop submits every request it
// popped in one io_uring_enter, which never waits for the disk (the
// kernel completes cached I/O inline and hands the rest to the block layer
// or its own workers), so it is made without the runtime's bookkeeping.
//
// The ring is locked down before it is enabled (IORING_SETUP_R_DISABLED,
// IORING_REGISTER_RESTRICTIONS): only READV, WRITEV and FSYNC, only on
// the registered file, and no further registrations. io_uring operations
// are not system calls, so the process's seccomp filter does not see
// them; the restriction is what limits them.
//
// A Ring is not safe for concurrent use: one event loop owns it.
package uring

import (
	"errors"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Opcodes and flags (include/uapi/linux/io_uring.h).
const (
	opReadv  = 1
	opWritev = 2
	opFsync  = 3

	sqeFixedFile  = 1 << 0
	fsyncDatasync = 1 << 0

	setupClamp     = 1 << 4
	setupRDisabled = 1 << 6

	enterGetEvents = 1 << 0

	registerFiles        = 2
	registerEventfd      = 4
	registerRestrictions = 11
	registerEnableRings  = 12

	restrictionSQEOp            = 1
	restrictionSQEFlagsAllowed  = 2
	restrictionSQEFlagsRequired = 3

	featSingleMmap = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	sqeSize = 64
	cqeSize = 16
)

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqOffsets
	cqOff                                                                  cqOffsets
}

type sqOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

// restriction is struct io_uring_restriction.
type restriction struct {
	opcode uint16
	arg    uint8 // sqe_op, sqe_flags or register_op
	resv   uint8
	resv2  [3]uint32
}

// Ring is one io_uring instance with its submission and completion queues
// mapped.
type Ring struct {
	fd      int
	entries uint32
	sqRing  []byte
	cqRing  []byte // aliases sqRing with IORING_FEAT_SINGLE_MMAP
	sqes    []byte

	sqHead, sqTail, sqMask *uint32
	cqHead, cqTail, cqMask *uint32
	cqes                   unsafe.Pointer

	tail     uint32 // our copy of the SQ tail (we are its only writer)
	inflight int    // submitted or queued, not yet reaped
}

// ErrFull is returned when every submission entry is taken.
var ErrFull = errors.New("io_uring submission queue full")

// New sets up a ring of at least entries submissions for file (the only
// descriptor the ring may use) that adds to eventfd done whenever it
// posts a completion.
func New(entries uint32, file, done int) (*Ring, error) {
	p := params{flags: setupClamp | setupRDisabled}
	fd, err := setup(entries, &p)
	if err != nil {
		return nil, fmt.Errorf("io_uring_setup: %w", err)
	}
	r := &Ring{fd: fd, entries: p.sqEntries}
	if err := r.mapRings(&p); err != nil {
		r.Close()
		return nil, err
	}
	files := []int32{int32(file)}
	if err := register(fd, registerFiles, unsafe.Pointer(&files[0]), 1); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring register file: %w", err)
	}
	efd := int32(done)
	if err := register(fd, registerEventfd, unsafe.Pointer(&efd), 1); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring register eventfd: %w", err)
	}
	res := []restriction{
		{opcode: restrictionSQEOp, arg: opReadv},
		{opcode: restrictionSQEOp, arg: opWritev},
		{opcode: restrictionSQEOp, arg: opFsync},
		{opcode: restrictionSQEFlagsAllowed, arg: sqeFixedFile},
		{opcode: restrictionSQEFlagsRequired, arg: sqeFixedFile},
	}
	if err := register(fd, registerRestrictions, unsafe.Pointer(&res[0]), uint32(len(res))); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring restrict: %w", err)
	}
	if err := register(fd, registerEnableRings, nil, 0); err != nil {
		r.Close()
		return nil, fmt.Errorf("io_uring enable: %w", err)
	}
	return r, nil
}

func (r *Ring) mapRings(p *params) error {
	sqSize := int(p.sqOff.array) + int(p.sqEntries)*4
	cqSize := int(p.cqOff.cqes) + int(p.cqEntries)*cqeSize
	single := p.features&featSingleMmap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	prot, flags := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE
	if r.sqRing, err = unix.Mmap(r.fd, offSQRing, sqSize, prot, flags); err != nil {
		return fmt.Errorf("io_uring map SQ ring: %w", err)
	}
	r.cqRing = r.sqRing
	if !single {
		if r.cqRing, err = unix.Mmap(r.fd, offCQRing, cqSize, prot, flags); err != nil {
			r.cqRing = nil
			return fmt.Errorf("io_uring map CQ ring: %w", err)
		}
	}
	if r.sqes, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*sqeSize, prot, flags); err != nil {
		return fmt.Errorf("io_uring map SQEs: %w", err)
	}
	r.sqHead, r.sqTail, r.sqMask = word(r.sqRing, p.sqOff.head), word(r.sqRing, p.sqOff.tail), word(r.sqRing, p.sqOff.ringMask)
	r.cqHead, r.cqTail, r.cqMask = word(r.cqRing, p.cqOff.head), word(r.cqRing, p.cqOff.tail), word(r.cqRing, p.cqOff.ringMask)
	r.cqes = unsafe.Pointer(&r.cqRing[p.cqOff.cqes])
	// The SQ array maps ring slots to SQEs one to one, once and for all.
	for i := range p.sqEntries {
		*word(r.sqRing, p.sqOff.array+4*i) = i
	}
	r.tail = load(r.sqTail)
	return nil
}

// Entries is the submission queue's size.
func (r *Ring) Entries() uint32 { return r.entries }

// Inflight is how many requests were queued and not yet reaped.
func (r *Ring) Inflight() int { return r.inflight }

// Readv queues a read of file into iov at off; iov (and the memory it
// points at) must stay untouched until its completion is reaped.
func (r *Ring) Readv(iov []unix.Iovec, off uint64, user uint64) error {
	return r.queue(opReadv, iov, off, 0, user)
}

// Writev queues a write of iov to file at off; iov must stay untouched
// until its completion is reaped.
func (r *Ring) Writev(iov []unix.Iovec, off uint64, user uint64) error {
	return r.queue(opWritev, iov, off, 0, user)
}

// Fdatasync queues an fdatasync of file.
func (r *Ring) Fdatasync(user uint64) error {
	return r.queue(opFsync, nil, 0, fsyncDatasync, user)
}

func (r *Ring) queue(op uint8, iov []unix.Iovec, off uint64, opFlags uint32, user uint64) error {
	if r.tail-load(r.sqHead) >= r.entries {
		return ErrFull
	}
	var addr unsafe.Pointer
	if len(iov) > 0 {
		addr = unsafe.Pointer(&iov[0])
	}
	i := r.tail & *r.sqMask
	writeSQE(r.sqes[i*sqeSize:(i+1)*sqeSize], sqe{
		opcode: op, flags: sqeFixedFile, fd: 0, off: off,
		addr: uint64(uintptr(addr)), len: uint32(len(iov)), opFlags: opFlags, user: user,
	})
	r.tail++
	store(r.sqTail, r.tail)
	r.inflight++
	return nil
}

// Submit hands the queued entries to the kernel. It does not wait for
// any of them to complete, and cached I/O may complete during the call.
func (r *Ring) Submit() error {
	for {
		n := r.tail - load(r.sqHead)
		if n == 0 {
			return nil
		}
		took, err := enter(r.fd, n, 0, 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("io_uring_enter: %w", err)
		}
		if took == 0 {
			return fmt.Errorf("io_uring_enter took none of %d entries", n)
		}
	}
}

// Reap calls f for each completion posted so far (user is the value
// given when queued; res is the result, a negative errno on failure) and
// returns how many there were.
func (r *Ring) Reap(f func(user uint64, res int32)) int {
	n := 0
	for {
		head, tail := *r.cqHead, load(r.cqTail)
		if head == tail {
			return n
		}
		for ; head != tail; head++ {
			user, res := readCQE(r.cqes, head&*r.cqMask)
			r.inflight--
			n++
			f(user, res)
		}
		store(r.cqHead, head)
	}
}

// Wait blocks until every queued request has completed, reaping each
// through f. It is for tearing down (device reset, unplug), so it is an
// ordinary, bookkept system call that may wait on the disk.
func (r *Ring) Wait(f func(user uint64, res int32)) error {
	if err := r.Submit(); err != nil {
		return err
	}
	for r.Reap(f); r.inflight > 0; r.Reap(f) {
		if err := waitCQE(r.fd); err != nil && err != unix.EINTR {
			return fmt.Errorf("io_uring_enter wait: %w", err)
		}
	}
	return nil
}

// Close unmaps and closes the ring. Requests still in flight are
// cancelled or completed by the kernel; call Wait first to see them.
func (r *Ring) Close() error {
	if r.sqes != nil {
		_ = unix.Munmap(r.sqes)
	}
	if r.cqRing != nil && unsafe.SliceData(r.cqRing) != unsafe.SliceData(r.sqRing) {
		_ = unix.Munmap(r.cqRing)
	}
	if r.sqRing != nil {
		_ = unix.Munmap(r.sqRing)
	}
	r.sqes, r.cqRing, r.sqRing = nil, nil, nil
	if r.fd < 0 {
		return nil
	}
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}
