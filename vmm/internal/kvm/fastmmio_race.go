//go:build race

package kvm

import "golang.org/x/sys/unix"

// runServing under the race detector is a plain KVM_RUN: its
// instrumentation needs a P, which code between the runtime's system call
// entry and exit may not have. FastMMIO registers then reach Go code as
// ordinary exits.
func runServing(fd uintptr, _ *runHeader, _ *fastTable, _ *uint64) unix.Errno {
	_, _, e := unix.Syscall(unix.SYS_IOCTL, fd, kvmRun, 0)
	return e
}

// ServesFastMMIO reports whether Run serves FastMMIO registers itself;
// false only in race-detector builds.
const ServesFastMMIO = false
