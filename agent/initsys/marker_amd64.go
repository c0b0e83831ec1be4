package initsys

import (
	"fmt"
	"runtime"

	"golang.org/x/sys/unix"
)

// Mark writes value to the I/O port port: how the agent reaches the
// VMM's boot-marker device (agent-proto/stream.MarkerPort). The write
// needs the port's permission (ioperm: CAP_SYS_RAWIO and a kernel with
// X86_IOPL_IOPERM), which only the thread that asks for it gets: a
// thread locked for the write and never unlocked, so that it ends with
// its goroutine and no other code ever runs with the permission.
func Mark(port uint16, value byte) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Ioperm(int(port), 1, 1); err != nil {
			errc <- fmt.Errorf("boot marker: ioperm %#x: %w", port, err)
			return
		}
		outb(port, value)
		errc <- nil
	}()
	return <-errc
}

// outb is the x86 OUT instruction: value to port (outb_amd64.s).
//
//go:noescape
func outb(port uint16, value byte)
