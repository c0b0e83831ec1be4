package kvm

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// ioctlVal issues an ioctl whose argument is a plain integer, retrying on
// EINTR. It returns the ioctl's non-negative result.
func ioctlVal(fd int, req, arg uintptr) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, arg)
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return r, nil
	}
}

// ioctlPtr issues an ioctl whose argument points at a kernel ABI struct,
// retrying on EINTR. The pointer stays an unsafe.Pointer until the call
// expression so the object is kept alive and cannot move under the kernel.
func ioctlPtr(fd int, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	for {
		r, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), req, uintptr(arg))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return r, nil
	}
}

// ioctlStruct issues an ioctl on a typed kernel ABI struct.
func ioctlStruct[T any](fd int, req uintptr, p *T) (uintptr, error) {
	return ioctlPtr(fd, req, unsafe.Pointer(p))
}

// hostAddr returns the host virtual address of b's first byte, or 0 for an
// empty slice.
func hostAddr(b []byte) uint64 {
	if len(b) == 0 {
		return 0
	}
	return uint64(uintptr(unsafe.Pointer(&b[0])))
}
