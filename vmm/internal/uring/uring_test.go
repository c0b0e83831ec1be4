package uring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

type completion struct {
	user uint64
	res  int32
}

func newRing(t *testing.T, entries uint32) (*Ring, *os.File, int) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(t.TempDir(), "disk"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	done, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(done) })
	r, err := New(entries, int(f.Fd()), done)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("no io_uring here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r, f, done
}

func iov(bufs ...[]byte) []unix.Iovec {
	var v []unix.Iovec
	for _, b := range bufs {
		x := unix.Iovec{Base: &b[0]}
		x.SetLen(len(b))
		v = append(v, x)
	}
	return v
}

func (r *Ring) waitAll(t *testing.T) []completion {
	t.Helper()
	var got []completion
	if err := r.Wait(func(u uint64, res int32) { got = append(got, completion{u, res}) }); err != nil {
		t.Fatal(err)
	}
	return got
}

func TestReadWriteSync(t *testing.T) {
	r, f, done := newRing(t, 8)
	a, b := bytes.Repeat([]byte{0xa5}, 4096), bytes.Repeat([]byte{0x5a}, 512)
	if err := r.Writev(iov(a, b), 512, 7); err != nil {
		t.Fatal(err)
	}
	if err := r.Fdatasync(8); err != nil {
		t.Fatal(err)
	}
	if r.Inflight() != 2 {
		t.Fatalf("inflight %d, want 2", r.Inflight())
	}
	got := r.waitAll(t)
	want := map[uint64]int32{7: 4608, 8: 0}
	if len(got) != 2 {
		t.Fatalf("completions %v, want 2", got)
	}
	for _, c := range got {
		if want[c.user] != c.res {
			t.Errorf("completion %d: res %d, want %d", c.user, c.res, want[c.user])
		}
	}
	// The file has what was written.
	back := make([]byte, 4608)
	if _, err := f.ReadAt(back, 512); err != nil || !bytes.Equal(back, append(a, b...)) {
		t.Fatalf("file content differs (err %v)", err)
	}
	// A vectored read brings it back, and past the end reads short.
	x, y := make([]byte, 512), make([]byte, 4096)
	if err := r.Readv(iov(x, y), 512, 9); err != nil {
		t.Fatal(err)
	}
	if got := r.waitAll(t); len(got) != 1 || got[0] != (completion{9, 4608}) {
		t.Fatalf("read completions %v", got)
	}
	if !bytes.Equal(append(x, y...), append(a, b...)) {
		t.Error("read data differs")
	}
	if err := r.Readv(iov(y), 4096, 10); err != nil {
		t.Fatal(err)
	}
	if got := r.waitAll(t); len(got) != 1 || got[0] != (completion{10, 1024}) {
		t.Fatalf("read at the end: %v, want 1024 bytes", got)
	}
	// Completions signalled the eventfd.
	var cnt [8]byte
	if n, err := unix.Read(done, cnt[:]); err != nil || n != 8 || cnt == [8]byte{} {
		t.Errorf("eventfd not signalled: %d %v", n, err)
	}
	if r.Inflight() != 0 {
		t.Errorf("inflight %d after reaping all", r.Inflight())
	}
}

// TestEventfd: every completion Submit did not finish inline is announced
// on the eventfd (drained before reaping, as the disks do).
func TestEventfd(t *testing.T) {
	r, _, done := newRing(t, 8)
	buf := make([]byte, 4096)
	for i := range 4 {
		if err := r.Writev(iov(buf), uint64(i)*4096, uint64(i)); err != nil {
			t.Fatal(err)
		}
	}
	var got []completion
	f := func(u uint64, res int32) { got = append(got, completion{u, res}) }
	if err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	var cnt [8]byte
	unix.Read(done, cnt[:])
	r.Reap(f)
	for len(got) < 4 {
		fds := []unix.PollFd{{Fd: int32(done), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, 5000); err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		if fds[0].Revents == 0 {
			t.Fatalf("eventfd silent with %d of 4 completions reaped", len(got))
		}
		unix.Read(done, cnt[:])
		r.Reap(f)
	}
	for _, c := range got {
		if c.res != 4096 {
			t.Errorf("completion %v, want 4096 bytes", c)
		}
	}
}

func TestFull(t *testing.T) {
	r, _, _ := newRing(t, 4)
	buf := make([]byte, 512)
	n := int(r.Entries())
	for i := range n {
		if err := r.Readv(iov(buf), 0, uint64(i)); err != nil {
			t.Fatalf("entry %d of %d: %v", i, n, err)
		}
	}
	if err := r.Readv(iov(buf), 0, 99); !errors.Is(err, ErrFull) {
		t.Fatalf("entry %d: %v, want ErrFull", n, err)
	}
	if got := r.waitAll(t); len(got) != n {
		t.Fatalf("%d completions, want %d", len(got), n)
	}
	if err := r.Readv(iov(buf), 0, 99); err != nil {
		t.Fatalf("after reaping: %v", err)
	}
	r.waitAll(t)
}

// TestRestricted: the ring refuses any other operation, and any use of a
// descriptor number instead of the registered file.
func TestRestricted(t *testing.T) {
	r, f, _ := newRing(t, 4)
	buf := make([]byte, 512)
	cases := []struct {
		name  string
		op    uint8
		flags uint8
		fd    int32
	}{
		{"nop", 0, sqeFixedFile, 0},
		{"read into a fixed buffer", 4, sqeFixedFile, 0},
		{"openat", 18, sqeFixedFile, 0},
		{"readv by descriptor", opReadv, 0, int32(f.Fd())},
		{"readv draining", opReadv, sqeFixedFile | 1<<1, 0},
	}
	for i, tc := range cases {
		slot := r.tail & *r.sqMask
		v := iov(buf)
		writeSQE(r.sqes[slot*sqeSize:(slot+1)*sqeSize], sqe{opcode: tc.op, flags: tc.flags, fd: tc.fd,
			addr: uint64(uintptr(unsafe.Pointer(&v[0]))), len: 1, user: uint64(i)})
		r.tail++
		store(r.sqTail, r.tail)
		r.inflight++
		got := r.waitAll(t)
		if len(got) != 1 || got[0].res != -int32(unix.EACCES) {
			t.Errorf("%s: %v, want -EACCES", tc.name, got)
		}
	}
}

// TestClose: no descriptor or mapping is left behind.
func TestClose(t *testing.T) {
	before := openFDs(t)
	for range 3 {
		r, _, _ := newRing(t, 16)
		if err := r.Close(); err != nil {
			t.Fatal(err)
		}
		if err := r.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	// newRing's files and eventfds go at cleanup; only rings count here.
	if after := openFDs(t); after > before+6 {
		t.Errorf("%d descriptors open, %d before", after, before)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	d, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	return len(d)
}
