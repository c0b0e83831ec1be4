package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"

	"golang.org/x/sys/unix"
)

// crashToLog sends the Go runtime's fatal output (a panic, a fatal
// error) of the serving shim to the bundle's log FIFO, which containerd
// copies into its own log; without it a crashed shim leaves containerd
// with only "ttrpc: closed". A missing or unread FIFO is not an error:
// the output then goes to stderr as before.
func crashToLog(bundle string) error {
	p := filepath.Join(bundle, "log")
	// O_NONBLOCK: never wait for a reader here (opening a FIFO without one
	// fails with ENXIO instead); writes are made blocking again below so
	// that a long trace is not cut short by a full pipe.
	fd, err := unix.Open(p, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", p, err)
	}
	if err := unix.SetNonblock(fd, false); err != nil {
		unix.Close(fd)
		return fmt.Errorf("%s: %w", p, err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close() // SetCrashOutput keeps its own duplicate
	return debug.SetCrashOutput(f, debug.CrashOptions{})
}
