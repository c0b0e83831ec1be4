package eventloop

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestLoop(t *testing.T) {
	for _, mode := range []Mode{Thread, Poller} {
		t.Run(map[Mode]string{Thread: "thread", Poller: "poller"}[mode], func(t *testing.T) { testLoop(t, mode) })
	}
}

func testLoop(t *testing.T, mode Mode) {
	fds := openFDs(t)
	l, err := New("iothread-test-long-name", mode)
	if err != nil {
		t.Fatal(err)
	}
	if l.Mode() != mode {
		t.Errorf("Mode %v, want %v", l.Mode(), mode)
	}
	// onLoop is what a handler or a Call sees of where it runs: the
	// thread for a Thread loop; for a Poller loop, any thread (0).
	onLoop := func() int {
		if mode == Thread {
			return unix.Gettid()
		}
		return 0
	}
	if mode == Thread {
		comm, err := os.ReadFile(fmt.Sprintf("/proc/self/task/%d/comm", l.ThreadID()))
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(string(comm)); got != "iothread-test-l" {
			t.Errorf("thread name %q, want %q", got, "iothread-test-l")
		}
	} else if l.ThreadID() != 0 {
		t.Errorf("Poller loop has thread %d", l.ThreadID())
	}
	efd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)
	got := make(chan int, 10)
	var running atomic.Int32 // handlers and calls never overlap
	if err := l.Add(efd, func() {
		if running.Add(1) != 1 {
			t.Error("handler overlaps another")
		}
		defer running.Add(-1)
		var b [8]byte
		unix.Read(efd, b[:])
		got <- onLoop()
	}); err != nil {
		t.Fatal(err)
	}
	if err := l.Add(efd, func() {}); err == nil {
		t.Error("double Add accepted")
	}
	// Many events, with calls among them.
	for i := range 100 {
		unix.Write(efd, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		select {
		case where := <-got:
			if where != l.ThreadID() {
				t.Fatalf("handler ran on thread %d, loop is %d", where, l.ThreadID())
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("handler not called for event %d", i)
		}
		if i%10 == 0 {
			l.Call(func() {
				if running.Add(1) != 1 {
					t.Error("call overlaps a handler")
				}
				running.Add(-1)
			})
		}
	}
	ran := -1
	l.Call(func() { ran = onLoop(); l.Remove(efd) })
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
	if n := openFDs(t); n != fds+1 { // efd is still open
		t.Errorf("%d descriptors open after Close, want %d", n, fds+1)
	}
}

// TestProcs checks that each running loop holds one extra P and gives it
// back when it is closed.
func TestProcs(t *testing.T) {
	base := runtime.GOMAXPROCS(0)
	var loops []*Loop
	for i := 1; i <= 3; i++ {
		l, err := New(fmt.Sprintf("procs-%d", i), Mode(i%2))
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
