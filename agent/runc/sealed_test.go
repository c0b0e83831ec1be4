package runc

import (
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSealRunc(t *testing.T) {
	bin, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to copy")
	}
	s, err := SealRunc(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seals, err := unix.FcntlInt(s.f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals != runcSeals {
		t.Fatalf("seals %#x, %v; want exactly %#x (what runc checks)", seals, err, runcSeals)
	}
	if _, err := s.f.WriteAt([]byte("x"), 0); err == nil {
		t.Fatal("wrote into the sealed copy")
	}
	// A child runs the copy by its /proc/self/fd path, and its
	// /proc/self/exe is the memfd.
	if out, err := exec.Command(s.Path()).CombinedOutput(); err != nil {
		t.Fatalf("run %s: %v: %s", s.Path(), err, out)
	}
	// A child whose extra files land on the copy's descriptor number
	// still runs the copy.
	var extra []*os.File
	for i := 0; i < 8; i++ {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		defer w.Close()
		extra = append(extra, r)
	}
	cmd := exec.Command(s.Path())
	cmd.ExtraFiles = extra
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("run %s with %d extra files: %v: %s", s.Path(), len(extra), err, out)
	}
	rl, err := SealRunc(mustLook(t, "readlink"))
	if err != nil {
		t.Fatal(err)
	}
	defer rl.Close()
	out, err := exec.Command(rl.Path(), "/proc/self/exe").Output()
	if err != nil || !strings.HasPrefix(string(out), "/memfd:runc") {
		t.Fatalf("/proc/self/exe of the copy: %q, %v", out, err)
	}
	if _, err := SealRunc("/nonexistent/runc"); !os.IsNotExist(err) {
		t.Fatalf("missing binary: %v", err)
	}
}

func mustLook(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skip(err)
	}
	return p
}

// TestSealedStaysOpen: a Runc keeps its sealed copy open across garbage
// collections (an unreachable os.File would be closed by its finalizer).
func TestSealedStaysOpen(t *testing.T) {
	s, err := SealRunc(mustLook(t, "true"))
	if err != nil {
		t.Fatal(err)
	}
	r := &Runc{Sealed: s}
	path := r.binary()
	s = nil
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	if out, err := exec.Command(path).CombinedOutput(); err != nil {
		t.Fatalf("run %s after GC: %v: %s", path, err, out)
	}
	runtime.KeepAlive(r)
}
