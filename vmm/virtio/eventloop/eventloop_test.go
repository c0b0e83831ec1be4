package eventloop

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLoop(t *testing.T) {
	l, err := New("iothread-test-long-name")
	if err != nil {
		t.Fatal(err)
	}
	comm, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", l.ThreadID()))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(comm)); got != "iothread-test-l" {
		t.Errorf("thread name %q, want %q", got, "iothread-test-l")
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	got := make(chan int, 10)
	if err := l.Add(efd, func() {
		var b [8]byte
		unix.Read(efd, b[:])
		got <- unix.Gettid()
	}); err != nil {
		t.Fatal(err)
	}
	if err := l.Add(efd, func() {}); err == nil {
		t.Error("double Add accepted")
	}
	unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	select {
	case tid := <-got:
		if tid != l.ThreadID() {
			t.Errorf("handler ran on thread %d, loop is %d", tid, l.ThreadID())
		}
	case <-time.After(5 * time.Second):
		t.Fatal("handler not called")
	}
	var ran int
	l.Call(func() { ran = unix.Gettid(); l.Remove(efd) })
	if ran != l.ThreadID() {
		t.Errorf("Call ran on %d", ran)
	}
	unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
	select {
	case <-got:
		t.Error("handler called after Remove")
	case <-time.After(50 * time.Millisecond):
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	called := false
	l.Call(func() { called = true })
	if !called {
		t.Error("Call after Close did not run")
	}
	if err := l.Add(efd, func() {}); err == nil {
		t.Error("Add after Close accepted")
	}
}

// TestProcs checks that each running loop holds one extra P and gives it
// back when it is closed.
func TestProcs(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	var loops []*Loop
	for i := 1; i <= 3; i++ {
		l, err := New(fmt.Sprintf("procs-%d", i))
		if err != nil {
			t.Fatal(err)
		}
		loops = append(loops, l)
		if got := runtime.GOMAXPROCS(0); got != base+i {
			t.Errorf("%d loops: GOMAXPROCS %d, want %d", i, got, base+i)
		}
	}
	for i, l := range loops {
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		l.Close() // a second Close gives nothing back twice
		if got, want := runtime.GOMAXPROCS(0), base+len(loops)-i-1; got != want {
			t.Errorf("after closing %d: GOMAXPROCS %d, want %d", i+1, got, want)
		}
	}
}
