package runc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent/reaper"
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

// TestMoveRunc: the move leaves a sealed copy with the same bytes and no
// source file, for sizes around the chunk size.
func TestMoveRunc(t *testing.T) {
	bin := mustLook(t, "true")
	want, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, moveChunk - 1, moveChunk, moveChunk + 1, 3*moveChunk + 7, len(want)} {
		data := want
		if size != len(want) {
			data = make([]byte, size)
			for i := range data {
				data[i] = byte(i * 7)
			}
		}
		p := t.TempDir() + "/runc"
		if err := os.WriteFile(p, data, 0o755); err != nil {
			t.Fatal(err)
		}
		s, err := MoveRunc(p)
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("size %d: source still there: %v", size, err)
		}
		seals, err := unix.FcntlInt(s.f.Fd(), unix.F_GET_SEALS, 0)
		if err != nil || seals != runcSeals {
			t.Errorf("size %d: seals %#x, %v", size, seals, err)
		}
		got, err := os.ReadFile(s.Path())
		if err != nil || string(got) != string(data) {
			t.Errorf("size %d: copy differs (%d bytes, %v)", size, len(got), err)
		}
		if size == len(want) {
			if out, err := exec.Command(s.Path()).CombinedOutput(); err != nil {
				t.Errorf("run the moved copy: %v: %s", err, out)
			}
		}
		s.Close()
	}
	if _, err := MoveRunc("/nonexistent/runc"); !os.IsNotExist(err) {
		t.Fatalf("missing binary: %v", err)
	}
}

// TestSealInBackground: runc commands wait for the background seal and
// run the sealed copy, or Binary when sealing failed.
func TestSealInBackground(t *testing.T) {
	bin := mustLook(t, "true")
	release := make(chan struct{})
	r := &Runc{Binary: bin}
	r.SealInBackground(func() (*Sealed, error) {
		<-release
		return SealRunc(bin)
	})
	got := make(chan string, 1)
	go func() { got <- r.binary() }()
	select {
	case p := <-got:
		t.Fatalf("binary() = %q before the seal finished", p)
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	if p := <-got; !strings.HasPrefix(p, "/proc/") {
		t.Fatalf("binary() = %q, want the sealed copy", p)
	}
	r.Sealed.Close()

	failed := &Runc{Binary: bin}
	failed.SealInBackground(func() (*Sealed, error) { return nil, os.ErrNotExist })
	if p := failed.binary(); p != bin {
		t.Fatalf("binary() after a failed seal = %q, want %q", p, bin)
	}
}

// TestOnReadOnlyFS: a file on a read-only bind mount is found read-only;
// the same file through a writable path, or a missing one, is not.
func TestOnReadOnlyFS(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "runc")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if OnReadOnlyFS(bin) {
		t.Fatalf("%s is on a read-only filesystem", dir)
	}
	ro := readOnlyBind(t, dir)
	if !OnReadOnlyFS(filepath.Join(ro, "runc")) {
		t.Error("a file on a read-only bind mount is not found read-only")
	}
	if OnReadOnlyFS(filepath.Join(dir, "missing")) {
		t.Error("a missing file is found read-only")
	}
}

// readOnlyBind bind-mounts dir read-only on a new directory, where the
// test may mount, and returns that directory.
func readOnlyBind(t *testing.T, dir string) string {
	t.Helper()
	ro := filepath.Join(t.TempDir(), "ro")
	os.Mkdir(ro, 0o755)
	if err := unix.Mount(dir, ro, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(ro, unix.MNT_DETACH) })
	if err := unix.Mount("", ro, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Skipf("remount read-only: %v", err)
	}
	return ro
}

// TestReadOnlyRuncInPlace checks what the agent counts on when it leaves
// runc on the read-only runc image instead of sealing a copy: Debian's
// runc, run from a read-only filesystem, has its container's init run
// from that same file, not from a copy in memory (which would put 8.7 MB
// into guest RAM at every create). A runc that copies itself fails it.
func TestReadOnlyRuncInPlace(t *testing.T) {
	const system = "/usr/sbin/runc"
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat(system); err != nil {
		t.Skip("needs " + system + " (apt-get install runc)")
	}
	busybox := mustLook(t, "busybox")
	dir := t.TempDir()
	data, err := os.ReadFile(system)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "runc"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(readOnlyBind(t, dir), "runc")
	if !OnReadOnlyFS(bin) {
		t.Fatalf("%s is not on a read-only filesystem", bin)
	}

	bundle := t.TempDir()
	rootfs := filepath.Join(bundle, "rootfs")
	os.MkdirAll(filepath.Join(rootfs, "bin"), 0o755)
	if data, err = os.ReadFile(busybox); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "bin/busybox"), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(bin, "spec", "--bundle", bundle).CombinedOutput(); err != nil {
		t.Fatalf("runc spec: %v: %s", err, out)
	}
	cfg := filepath.Join(bundle, "config.json")
	spec, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	spec = []byte(strings.Replace(strings.Replace(string(spec), `"terminal": true`, `"terminal": false`, 1),
		`"sh"`, `"/bin/busybox", "sleep", "60"`, 1))
	if err := os.WriteFile(cfg, spec, 0o644); err != nil {
		t.Fatal(err)
	}

	rp, err := reaper.New()
	if err != nil {
		t.Fatal(err)
	}
	defer rp.Close()
	r := &Runc{Binary: bin, Root: t.TempDir(), Reaper: rp}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := fmt.Sprintf("ro-runc-%d", os.Getpid())
	pidFile := filepath.Join(bundle, "pid")
	// Stdio: the init gets /dev/null, never runc's stderr pipe.
	if err := r.Create(ctx, id, bundle, CreateOpts{PidFile: pidFile, Stdio: &Stdio{}}); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Delete(context.Background(), id, true); err != nil {
			t.Errorf("delete: %v", err)
		}
	}()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	// The init waits for start: it is still runc's image.
	var exe, want unix.Stat_t
	if err := unix.Stat("/proc/"+strings.TrimSpace(string(b))+"/exe", &exe); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(bin, &want); err != nil {
		t.Fatal(err)
	}
	if exe.Dev != want.Dev || exe.Ino != want.Ino {
		t.Fatalf("runc init runs from device %d inode %d, not from %s (device %d inode %d): runc copied itself",
			exe.Dev, exe.Ino, bin, want.Dev, want.Ino)
	}
}
