package eventloop

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// setThreadName names the calling OS thread (PR_SET_NAME).
func setThreadName(name string) error {
	b, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	err = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(b)), 0, 0, 0)
	runtime.KeepAlive(b)
	return err
}
