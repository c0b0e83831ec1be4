//go:build !race

package kvm

import (
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The runtime's system call entry and exit, as syscall.Syscall uses them:
// runServing stays inside one "system call" across several KVM_RUNs.
// Both are exported to linkname by the runtime (go.dev/issue/67401).

//go:linkname entersyscall runtime.entersyscall
func entersyscall()

//go:linkname exitsyscall runtime.exitsyscall
func exitsyscall()

// runServing issues KVM_RUN, and while the exit is an access to a register
// of t (nil: none), serves it and issues KVM_RUN again, counting those in
// *served. It returns KVM_RUN's errno; on 0 kvm_run holds an exit
// for Go code to handle.
//
// Between entersyscall and exitsyscall the thread may have lost its P: the
// code must not grow the stack, allocate, take locks or call anything but
// other nosplit functions and atomic intrinsics (as syscall.Syscall).
//
//go:nosplit
func runServing(fd uintptr, run *runHeader, t *fastTable, served *uint64) unix.Errno {
	entersyscall()
	var e unix.Errno
	for {
		_, _, e = unix.RawSyscall(unix.SYS_IOCTL, fd, kvmRun, 0)
		if e != 0 || t == nil || !serveFast(run, t) {
			break
		}
		atomic.AddUint64(served, 1)
	}
	exitsyscall()
	return e
}

// serveFast completes the MMIO exit in kvm_run if it is a 4-byte access to
// a register of t, and reports whether it did. The exit union is read at
// the fixed offsets of struct kvm_run's mmio member, all inside the
// mapping (runHeaderSize).
//
//go:nosplit
func serveFast(run *runHeader, t *fastTable) bool {
	if run.ExitReason != ExitMMIO {
		return false
	}
	u := unsafe.Add(unsafe.Pointer(run), unionOff)
	if *(*uint32)(unsafe.Add(u, 16)) != 4 {
		return false
	}
	addr := *(*uint64)(u)
	write := *(*uint8)(unsafe.Add(u, 20)) != 0
	data := (*uint32)(unsafe.Add(u, 8)) // little-endian, as the guest's
	for i := range t.regs {
		r := &t.regs[i]
		if r.addr != addr || r.write != write {
			continue
		}
		if write {
			atomic.AndUint32(r.value, ^*data)
		} else {
			*data = atomic.LoadUint32(r.value) | atomic.LoadUint32(r.or)
		}
		return true
	}
	return false
}

// ServesFastMMIO reports whether Run serves FastMMIO registers itself;
// false only in race-detector builds.
const ServesFastMMIO = true
