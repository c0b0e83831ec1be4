package eventloop

import (
	"fmt"
	"os"
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
