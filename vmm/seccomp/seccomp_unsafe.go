package seccomp

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// install calls seccomp(SECCOMP_SET_MODE_FILTER, flags, &prog). With
// TSYNC a positive return value is the id of a thread that could not be
// synchronized.
func install(prog []unix.SockFilter, flags uintptr) (uintptr, error) {
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	r, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, flags, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(prog)
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}
