// Package rawsys makes the event loops' hot-path system calls (reads and
// writes on eventfds, taps and sockets; zero-timeout epoll_wait and
// epoll_ctl) without the Go runtime's system-call bookkeeping
// (entersyscall/exitsyscall).
//
// Why: in Go 1.26 the first bookkept system call after every P went idle
// wakes the runtime's sysmon thread, which then polls every 20 µs until
// the Ps are idle again; a loop parked in the runtime's poller between
// events (eventloop.Poller) that made its calls this way would wake it on
// every event. Measured on a small program (docs/performance.md, fifteenth
// session): 3 context switches per event with bookkept calls in the
// handler, 1 without.
//
// Only for calls that cannot block for long: descriptors in non-blocking
// mode, files that live in memory (Preadv, Pwritev, Fdatasync; the caller
// checks, virtio-blk with fstatfs), and reads that ask not to wait for a
// device (PreadvNowait). The calling thread keeps its P
// for the whole call, so a call that blocked would hold up every
// stop-the-world (garbage collection) of the process until it returned:
// I/O on a file that a device backs (a disk, a network file system) stays
// an ordinary system call.
package rawsys

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// maxIov is how many buffers readv and writev take (UIO_MAXIOV).
const maxIov = 1024

// Read is read(2) on a non-blocking descriptor.
func Read(fd int, p []byte) (int, error) { return transfer(unix.SYS_READ, fd, p) }

// Write is write(2) on a non-blocking descriptor.
func Write(fd int, p []byte) (int, error) { return transfer(unix.SYS_WRITE, fd, p) }

func transfer(trap uintptr, fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	return result(n, e)
}

// one is the value an eventfd write adds.
var one = [8]byte{1}

// Signal adds one to eventfd fd. A full counter (EAGAIN) already wakes
// its reader, so it is not an error.
func Signal(fd int) error {
	if _, err := Write(fd, one[:]); err != nil && err != unix.EAGAIN {
		return err
	}
	return nil
}

// Drain resets eventfd fd (or reads a timerfd's expirations); nothing to
// read is not an error.
func Drain(fd int) error {
	var b [8]byte
	if _, err := Read(fd, b[:]); err != nil && err != unix.EAGAIN {
		return err
	}
	return nil
}

// Readv is readv(2) on a non-blocking descriptor; more than 1024 buffers
// (UIO_MAXIOV) fail with EINVAL, as the kernel's call does.
func Readv(fd int, bufs [][]byte) (int, error) {
	return vectored(unix.SYS_READV, fd, bufs)
}

// Writev is writev(2) on a non-blocking descriptor; more than 1024
// buffers fail with EINVAL.
func Writev(fd int, bufs [][]byte) (int, error) {
	return vectored(unix.SYS_WRITEV, fd, bufs)
}

// Preadv is preadv(2) on a file in memory (tmpfs, ramfs); more than 1024
// buffers fail with EINVAL.
func Preadv(fd int, bufs [][]byte, off int64) (int, error) {
	return positioned(unix.SYS_PREADV, fd, bufs, off)
}

// Pwritev is pwritev(2) on a file in memory; more than 1024 buffers fail
// with EINVAL.
func Pwritev(fd int, bufs [][]byte, off int64) (int, error) {
	return positioned(unix.SYS_PWRITEV, fd, bufs, off)
}

// PreadvNowait is preadv2(2) with RWF_NOWAIT on any file: it copies what
// the page cache holds and fails with EAGAIN (or returns a short count)
// rather than wait for a device. It is the attempt io_uring makes inline
// before it hands a read to a worker thread. A file system without
// non-blocking reads fails it with EOPNOTSUPP.
func PreadvNowait(fd int, bufs [][]byte, off int64) (int, error) {
	return positioned2(unix.SYS_PREADV2, fd, bufs, off, unix.RWF_NOWAIT)
}

// Fdatasync is fdatasync(2) on a file in memory (next to nothing to do).
func Fdatasync(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_FDATASYNC, uintptr(fd), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}

func vectored(trap uintptr, fd int, bufs [][]byte) (int, error) {
	var stack [16]unix.Iovec
	iov, err := iovecs(stack[:0], bufs)
	if err != nil || len(iov) == 0 {
		return 0, err
	}
	n, _, e := unix.RawSyscall(trap, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	return result(n, e)
}

func positioned(trap uintptr, fd int, bufs [][]byte, off int64) (int, error) {
	return positioned2(trap, fd, bufs, off, 0)
}

// positioned2 makes the preadv/pwritev family's calls; flags is the
// preadv2 flags argument (ignored by preadv and pwritev).
func positioned2(trap uintptr, fd int, bufs [][]byte, off int64, flags int) (int, error) {
	if off < 0 {
		return 0, unix.EINVAL
	}
	var stack [16]unix.Iovec
	iov, err := iovecs(stack[:0], bufs)
	if err != nil || len(iov) == 0 {
		return 0, err
	}
	// The offset is split in two words (pos_l, pos_h) as the kernel's
	// preadv takes it; on 64-bit the high word is 0.
	n, _, e := unix.RawSyscall6(trap, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)), uintptr(off), 0, uintptr(flags))
	return result(n, e)
}

// iovecs appends bufs' non-empty buffers to iov. Up to 16 buffers (every
// hot path here) need no allocation.
func iovecs(iov []unix.Iovec, bufs [][]byte) ([]unix.Iovec, error) {
	if len(bufs) > maxIov {
		return nil, unix.EINVAL
	}
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	return iov, nil
}

func result(n uintptr, e unix.Errno) (int, error) {
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// EpollWaitNow is epoll_wait(2) with a zero timeout: the events ready on
// epfd now, without blocking.
func EpollWaitNow(epfd int, events []unix.EpollEvent) (int, error) {
	if len(events) == 0 {
		return 0, nil
	}
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])), uintptr(len(events)), 0, 0, 0)
	return result(n, e)
}

// EpollCtl is epoll_ctl(2); it never blocks. ev may be nil for
// EPOLL_CTL_DEL.
func EpollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd), uintptr(unsafe.Pointer(ev)), 0, 0)
	if e != 0 {
		return e
	}
	return nil
}
