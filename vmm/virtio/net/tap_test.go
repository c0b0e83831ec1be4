package net

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

// canTap skips unless this process may create taps.
func canTap(t *testing.T) {
	t.Helper()
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Skipf("no /dev/net/tun: %v", err)
	}
	unix.Close(fd)
	if os.Geteuid() != 0 {
		t.Skip("creating taps needs CAP_NET_ADMIN")
	}
}

func TestOpenTapAndFromFD(t *testing.T) {
	canTap(t)
	name := fmt.Sprintf("svt%d", os.Getpid()%100000)
	tap, err := OpenTap(name)
	if err != nil {
		t.Skipf("cannot create a tap here: %v", err)
	}
	defer tap.Close()
	if tap.Name() != name {
		t.Errorf("name %q, want %q", tap.Name(), name)
	}
	if err := tap.SetOffload(TunFCsum | TunFTSO4 | TunFTSO6 | TunFUFO); err != nil {
		t.Errorf("SetOffload: %v", err)
	}
	fl, err := unix.FcntlInt(uintptr(tap.Fd()), unix.F_GETFL, 0)
	if err != nil || fl&unix.O_NONBLOCK == 0 {
		t.Errorf("tap fd flags %#x (%v): want O_NONBLOCK", fl, err)
	}
	// The shim path: an attached descriptor is duplicated and checked.
	dup, err := TapFromFD(tap.Fd())
	if err != nil {
		t.Fatal(err)
	}
	if dup.Name() != name || dup.Fd() == tap.Fd() {
		t.Errorf("TapFromFD: name %q fd %d (original fd %d)", dup.Name(), dup.Fd(), tap.Fd())
	}
	dup.Close()
	// The original stays usable.
	if err := tap.SetOffload(0); err != nil {
		t.Errorf("original after closing the copy: %v", err)
	}
	// Not a tap.
	f, _ := os.Open(os.DevNull)
	defer f.Close()
	if _, err := TapFromFD(int(f.Fd())); err == nil {
		t.Error("TapFromFD accepted /dev/null")
	}
	if _, err := OpenTap("a-name-longer-than-15"); err == nil {
		t.Error("OpenTap accepted a 21-character name")
	}
}

// TestOpenTapInNetNS creates a network namespace on a parked thread and
// opens a tap inside it: the tap exists there and not here.
func TestOpenTapInNetNS(t *testing.T) {
	canTap(t)
	type ns struct {
		path string
		err  error
	}
	ready := make(chan ns)
	release := make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- ns{err: err}
			return
		}
		ready <- ns{path: fmt.Sprintf("/proc/%d/task/%d/ns/net", os.Getpid(), unix.Gettid())}
		<-release
	}()
	n := <-ready
	defer close(release)
	if n.err != nil {
		t.Skipf("unshare(CLONE_NEWNET): %v", n.err)
	}
	f, err := OpenTapInNetNS(n.path, "svtns0")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tap, err := TapFromFD(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	if tap.Name() != "svtns0" {
		t.Errorf("name %q", tap.Name())
	}
	if _, err := os.Stat("/sys/class/net/svtns0"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the tap is visible in the test's own namespace (stat: %v)", err)
	}
	if _, err := OpenTapInNetNS("/nonexistent/ns", "x"); err == nil {
		t.Error("OpenTapInNetNS accepted a missing namespace")
	}
}
