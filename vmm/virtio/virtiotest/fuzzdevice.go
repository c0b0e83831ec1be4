package virtiotest

// The pieces of a device-level fuzz target that do not depend on the
// device: running each input with a leak check, composing seed programs,
// waiting on the device's goroutines and dialing its socket.

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// FuzzDevice seeds f with seeds and runs run on every input, failing an
// input that leaves file descriptors or goroutines behind. With sock not
// empty each input gets a socket path of its own that does not exist yet
// (<tempdir>/<sock><n>.sock); else path is empty.
func FuzzDevice(f *testing.F, seeds [][]byte, sock string, run func(t *testing.T, path string, prog []byte)) {
	for _, s := range seeds {
		f.Add(s)
	}
	WarmUp(f)
	var dir string
	if sock != "" {
		dir = f.TempDir()
	}
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, prog []byte) {
		var path string
		if sock != "" {
			path = filepath.Join(dir, fmt.Sprintf("%s%d.sock", sock, n.Add(1)))
		}
		fds, gs := CountFds(t), runtime.NumGoroutine()
		run(t, path, prog)
		NoLeaks(t, fds, gs)
	})
}

// Prog concatenates a program's encoded operations.
func Prog(ops ...[]byte) []byte {
	var b []byte
	for _, o := range ops {
		b = append(b, o...)
	}
	return b
}

// Pause yields between polls of other goroutines' progress (i counts
// the polls), briefly sleeping once yielding has not been enough.
func Pause(i int) {
	if i < 4 {
		runtime.Gosched()
	} else {
		time.Sleep(50 * time.Microsecond)
	}
}

// DialUnix connects a non-blocking stream socket to path, retrying for
// up to wait while the listener's backlog is full (until the device
// accepts), and returns it.
func DialUnix(t *testing.T, path string, wait time.Duration) int {
	t.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(wait)
	for i := 0; ; i++ {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if !errors.Is(err, unix.EAGAIN) || time.Now().After(deadline) {
			break
		}
		Pause(i)
	}
	if err != nil {
		unix.Close(fd)
		t.Fatalf("connect to %s: %v", path, err)
	}
	return fd
}

// LastFd lowers the process's descriptor limit so that the next
// descriptor opened is the last one allowed: a device's accept after it
// fails with EMFILE. It returns the function that restores the limit,
// which also runs when the test ends.
func LastFd(t *testing.T) (restore func()) {
	t.Helper()
	var saved unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	lowest, err := unix.Dup(0)
	if err != nil {
		t.Fatal(err)
	}
	unix.Close(lowest)
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: uint64(lowest) + 1, Max: saved.Max}); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore = func() {
		if !restored {
			restored = true
			if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &saved); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(restore)
	return restore
}
