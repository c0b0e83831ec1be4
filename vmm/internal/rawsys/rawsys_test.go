package rawsys

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func pipe(t *testing.T) (r, w int) {
	t.Helper()
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func TestReadWrite(t *testing.T) {
	r, w := pipe(t)
	if n, err := Write(w, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("Write: %d, %v", n, err)
	}
	b := make([]byte, 16)
	if n, err := Read(r, b); n != 5 || err != nil || string(b[:n]) != "hello" {
		t.Fatalf("Read: %d, %v, %q", n, err, b[:n])
	}
	if _, err := Read(r, b); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("Read of an empty pipe: %v, want EAGAIN", err)
	}
	if n, err := Write(w, nil); n != 0 || err != nil {
		t.Errorf("empty Write: %d, %v", n, err)
	}
	if _, err := Read(-1, b); !errors.Is(err, unix.EBADF) {
		t.Errorf("Read(-1): %v, want EBADF", err)
	}
}

func TestVectored(t *testing.T) {
	r, w := pipe(t)
	// More buffers than fit on the stack, empty ones among them.
	var out [][]byte
	var want []byte
	for i := range 40 {
		b := bytes.Repeat([]byte{byte(i)}, i%3)
		out = append(out, b)
		want = append(want, b...)
	}
	if n, err := Writev(w, out); n != len(want) || err != nil {
		t.Fatalf("Writev: %d, %v; want %d", n, err, len(want))
	}
	in := [][]byte{make([]byte, 7), {}, make([]byte, len(want))}
	n, err := Readv(r, in)
	if n != len(want) || err != nil {
		t.Fatalf("Readv: %d, %v; want %d", n, err, len(want))
	}
	got := append(append([]byte{}, in[0]...), in[2][:n-7]...)
	if !bytes.Equal(got, want) {
		t.Errorf("read %v, want %v", got, want)
	}
	if n, err := Readv(r, [][]byte{{}}); n != 0 || err != nil {
		t.Errorf("Readv into no room: %d, %v", n, err)
	}
	if _, err := Readv(r, in); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("Readv of an empty pipe: %v, want EAGAIN", err)
	}
}

func TestEventfd(t *testing.T) {
	fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := Drain(fd); err != nil {
		t.Errorf("Drain of an unsignalled eventfd: %v", err)
	}
	for range 3 {
		if err := Signal(fd); err != nil {
			t.Fatal(err)
		}
	}
	var b [8]byte
	if n, err := unix.Read(fd, b[:]); n != 8 || err != nil || b[0] != 3 {
		t.Fatalf("eventfd read %d, %v, %v; want the count 3", n, err, b)
	}
	if err := Signal(fd); err != nil {
		t.Fatal(err)
	}
	if err := Drain(fd); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Read(fd, b[:]); !errors.Is(err, unix.EAGAIN) {
		t.Errorf("after Drain: %v, want EAGAIN", err)
	}
	// A full counter wakes its reader already: not an error.
	max := [8]byte{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	if _, err := unix.Write(fd, max[:]); err != nil {
		t.Fatal(err)
	}
	if err := Signal(fd); err != nil {
		t.Errorf("Signal of a full eventfd: %v", err)
	}
	if err := Signal(-1); !errors.Is(err, unix.EBADF) {
		t.Errorf("Signal(-1): %v, want EBADF", err)
	}
}

func TestEpollWaitNow(t *testing.T) {
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	r, w := pipe(t)
	if err := EpollCtl(ep, unix.EPOLL_CTL_ADD, r, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(r)}); err != nil {
		t.Fatal(err)
	}
	if err := EpollCtl(ep, unix.EPOLL_CTL_ADD, r, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(r)}); !errors.Is(err, unix.EEXIST) {
		t.Errorf("second add: %v, want EEXIST", err)
	}
	evs := make([]unix.EpollEvent, 4)
	if n, err := EpollWaitNow(ep, evs); n != 0 || err != nil {
		t.Errorf("nothing ready: %d, %v", n, err)
	}
	if _, err := Write(w, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if n, err := EpollWaitNow(ep, evs); n != 1 || err != nil || evs[0].Fd != int32(r) {
		t.Errorf("one ready: %d, %v, fd %d", n, err, evs[0].Fd)
	}
	if n, err := EpollWaitNow(ep, nil); n != 0 || err != nil {
		t.Errorf("no room: %d, %v", n, err)
	}
	if err := EpollCtl(ep, unix.EPOLL_CTL_MOD, r, &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(r)}); err != nil {
		t.Fatal(err)
	}
	if n, err := EpollWaitNow(ep, evs); n != 0 || err != nil {
		t.Errorf("after MOD to EPOLLOUT on a read end: %d, %v", n, err)
	}
	if err := EpollCtl(ep, unix.EPOLL_CTL_DEL, r, nil); err != nil {
		t.Fatal(err)
	}
	if err := EpollCtl(ep, unix.EPOLL_CTL_DEL, r, nil); !errors.Is(err, unix.ENOENT) {
		t.Errorf("second delete: %v, want ENOENT", err)
	}
	if _, err := EpollWaitNow(-1, evs); !errors.Is(err, unix.EBADF) {
		t.Errorf("EpollWaitNow(-1): %v, want EBADF", err)
	}
}

// TestPositioned: preadv and pwritev at offsets, past 4 GiB too (the
// offset's two words), with more buffers than fit on the stack, and
// fdatasync; the results match what the file holds.
func TestPositioned(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "file"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd := int(f.Fd())
	var out [][]byte
	var want []byte
	for i := range 40 {
		b := bytes.Repeat([]byte{byte(i + 1)}, i%5)
		out = append(out, b)
		want = append(want, b...)
	}
	for _, off := range []int64{0, 4093, 5 << 30} {
		if n, err := Pwritev(fd, out, off); n != len(want) || err != nil {
			t.Fatalf("Pwritev at %d: %d, %v; want %d", off, n, err, len(want))
		}
		got := make([]byte, len(want))
		if _, err := f.ReadAt(got, off); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("file at %d after Pwritev: %v, equal %v", off, err, bytes.Equal(got, want))
		}
		in := [][]byte{make([]byte, 3), {}, make([]byte, len(want))}
		n, err := Preadv(fd, in, off)
		if n != len(want) || err != nil {
			t.Fatalf("Preadv at %d: %d, %v; want %d", off, n, err, len(want))
		}
		if got := append(append([]byte{}, in[0]...), in[2][:n-3]...); !bytes.Equal(got, want) {
			t.Fatalf("Preadv at %d read other bytes", off)
		}
	}
	// The page cache holds what was just written; a file system without
	// non-blocking reads (tmpfs) refuses the call.
	in := [][]byte{make([]byte, 7), make([]byte, len(want)-7)}
	switch n, err := PreadvNowait(fd, in, 4093); {
	case errors.Is(err, unix.EOPNOTSUPP):
		t.Log("no non-blocking reads on the temporary directory's file system")
	case err != nil || n != len(want) || !bytes.Equal(append(append([]byte{}, in[0]...), in[1]...), want):
		t.Errorf("PreadvNowait of cached data: %d, %v; want %d bytes as written", n, err, len(want))
	}
	if n, err := Preadv(fd, [][]byte{make([]byte, 8)}, 6<<30); n != 0 || err != nil {
		t.Errorf("Preadv past the end: %d, %v; want 0, nil", n, err)
	}
	if err := Fdatasync(fd); err != nil {
		t.Errorf("Fdatasync: %v", err)
	}
	for name, err := range map[string]error{
		"Fdatasync(-1)":        Fdatasync(-1),
		"Preadv(-1)":           second(Preadv(-1, [][]byte{make([]byte, 1)}, 0)),
		"PreadvNowait(-1)":     second(PreadvNowait(-1, [][]byte{make([]byte, 1)}, 0)),
		"PreadvNowait, off -1": second(PreadvNowait(fd, [][]byte{make([]byte, 1)}, -1)),
		"Pwritev, offset -1":   second(Pwritev(fd, out, -1)),
		"Pwritev, 1025 bufs":   second(Pwritev(fd, make([][]byte, 1025), 0)),
		"Preadv, no buffers":   second(Preadv(fd, nil, 0)),
		"Pwritev, empty bufs":  second(Pwritev(fd, [][]byte{{}, {}}, 0)),
	} {
		want := map[string]error{
			"Fdatasync(-1)": unix.EBADF, "Preadv(-1)": unix.EBADF, "PreadvNowait(-1)": unix.EBADF,
			"PreadvNowait, off -1": unix.EINVAL,
			"Pwritev, offset -1":   unix.EINVAL, "Pwritev, 1025 bufs": unix.EINVAL,
		}[name]
		if !errors.Is(err, want) && !(want == nil && err == nil) {
			t.Errorf("%s: %v, want %v", name, err, want)
		}
	}
}

func second(_ int, err error) error { return err }
