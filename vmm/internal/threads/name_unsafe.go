package threads

import (
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// MaxNameLen is the longest thread name Linux keeps (TASK_COMM_LEN - 1).
const MaxNameLen = 15

// SetName names the calling OS thread (PR_SET_NAME), cut to MaxNameLen
// bytes. The caller must be locked to its thread.
func SetName(name string) error {
	if len(name) > MaxNameLen {
		name = name[:MaxNameLen]
	}
	b, err := unix.BytePtrFromString(name)
	if err != nil {
		return err
	}
	err = unix.Prctl(unix.PR_SET_NAME, uintptr(unsafe.Pointer(b)), 0, 0, 0)
	runtime.KeepAlive(b)
	return err
}
