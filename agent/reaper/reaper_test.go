package reaper

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestStatusOf(t *testing.T) {
	for _, tc := range []struct {
		ws   unix.WaitStatus
		want int
	}{
		{0, 0},
		{1 << 8, 1},
		{143 << 8, 143},
		{unix.WaitStatus(unix.SIGKILL), 137},
		{unix.WaitStatus(unix.SIGTERM), 143},
	} {
		if got := StatusOf(tc.ws); got != tc.want {
			t.Errorf("StatusOf(%#x) = %d, want %d", uint32(tc.ws), got, tc.want)
		}
	}
}

// One test: the reaper makes the test binary a subreaper for good.
func TestReaper(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Skip("cannot become a subreaper:", err)
	}
	defer r.Close()
	for _, tc := range []struct {
		script string
		want   int
	}{
		{"exit 0", 0},
		{"exit 3", 3},
		{"kill -TERM $$", 143},
		{"kill -KILL $$", 137},
	} {
		e, err := r.Run(exec.Command("/bin/sh", "-c", tc.script))
		if err != nil {
			t.Fatal(err)
		}
		if e.Status != tc.want {
			t.Errorf("%q: status %d, want %d", tc.script, e.Status, tc.want)
		}
	}

	// An orphan: sh prints the pid of a background child and exits; the
	// child is reparented to us and its exit is reaped without a waiter,
	// then claimed late with Watch.
	// (exec.Cmd.Wait would race with the reaper: read through a pipe.)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	// The child waits for a line on fd 3, which the test writes only after
	// the shell has been reaped: the child is then surely our orphan (had
	// it exited first, the shell could have reaped it itself).
	gr, gw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/bin/sh", "-c", "sh -c 'read x <&3; exit 7' </dev/null >/dev/null & echo $!")
	cmd.Stdout = pw
	cmd.ExtraFiles = []*os.File{gr}
	if e, err := r.Run(cmd); err != nil || e.Status != 0 {
		t.Fatal(e, err)
	}
	pw.Close()
	gr.Close()
	out, err := io.ReadAll(pr)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gw.Write([]byte("go\n")); err != nil {
		t.Fatal(err)
	}
	gw.Close()
	select {
	case e := <-r.Watch(pid):
		if e.Status != 7 || e.Pid != pid {
			t.Errorf("orphan exit %+v, want pid %d status 7", e, pid)
		}
	case <-time.After(10 * time.Second):
		st, _ := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		t.Fatalf("orphan exit not delivered; /proc/%d/status:\n%s", pid, st)
	}
}

// TestOnePerProcess: a second Reaper would steal the first one's children,
// so New refuses it until the first is closed; Close may be called twice.
func TestOnePerProcess(t *testing.T) {
	r, err := New()
	if err != nil {
		t.Skip("cannot become a subreaper:", err)
	}
	if r2, err := New(); !errors.Is(err, ErrRunning) {
		if r2 != nil {
			r2.Close()
		}
		r.Close()
		t.Fatalf("second New: %v, want ErrRunning", err)
	}
	r.Close()
	r.Close()
	r3, err := New()
	if err != nil {
		t.Fatalf("New after Close: %v", err)
	}
	defer r3.Close()
	if e, err := r3.Run(exec.Command("/bin/true")); err != nil || e.Status != 0 {
		t.Fatalf("run under the new reaper: %+v, %v", e, err)
	}
}
