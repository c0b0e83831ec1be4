package mount

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
)

func TestParseOptions(t *testing.T) {
	for _, tc := range []struct {
		in    []string
		flags uintptr
		data  string
	}{
		{nil, 0, ""},
		{[]string{"ro", "noatime", "data=ordered"}, unix.MS_RDONLY | unix.MS_NOATIME, "data=ordered"},
		{[]string{"ro", "rw", "nodev", "size=64m", "mode=755"}, unix.MS_NODEV, "size=64m,mode=755"},
		{[]string{"rbind", "defaults"}, unix.MS_BIND | unix.MS_REC, ""},
	} {
		f, d := ParseOptions(tc.in)
		if f != tc.flags || d != tc.data {
			t.Errorf("ParseOptions(%q) = %#x, %q; want %#x, %q", tc.in, f, d, tc.flags, tc.data)
		}
	}
}

func TestFindBySerial(t *testing.T) {
	sys := t.TempDir()
	for name, serial := range map[string]string{"vda": "rootfs-1\n", "vdb": "vol-2", "loop0": ""} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		if serial != "" {
			os.WriteFile(filepath.Join(sys, name, "serial"), []byte(serial), 0o644)
		}
	}
	ctx := context.Background()
	if d, err := FindBySerial(ctx, sys, "rootfs-1"); err != nil || d != "/dev/vda" {
		t.Fatalf("rootfs-1: %q, %v", d, err)
	}
	if d, err := FindBySerial(ctx, sys, "vol-2"); err != nil || d != "/dev/vdb" {
		t.Fatalf("vol-2: %q, %v", d, err)
	}
	// A hot-plugged disk that appears while waiting.
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.MkdirAll(filepath.Join(sys, "vdc"), 0o755)
		os.WriteFile(filepath.Join(sys, "vdc", "serial"), []byte("late"), 0o644)
	}()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if d, err := FindBySerial(wctx, sys, "late"); err != nil || d != "/dev/vdc" {
		t.Fatalf("late: %q, %v", d, err)
	}
	// A plugged slot whose serial is visible before its capacity: not
	// ready until size is non-zero.
	os.MkdirAll(filepath.Join(sys, "vdd"), 0o755)
	os.WriteFile(filepath.Join(sys, "vdd", "serial"), []byte("slot"), 0o644)
	os.WriteFile(filepath.Join(sys, "vdd", "size"), []byte("0\n"), 0o644)
	zctx, cancel3 := context.WithTimeout(ctx, 150*time.Millisecond)
	defer cancel3()
	if d, err := FindBySerial(zctx, sys, "slot"); err == nil {
		t.Fatalf("size-0 device found: %q", d)
	}
	go func() {
		time.Sleep(100 * time.Millisecond)
		os.WriteFile(filepath.Join(sys, "vdd", "size"), []byte("131072\n"), 0o644)
	}()
	sctx2, cancel4 := context.WithTimeout(ctx, 5*time.Second)
	defer cancel4()
	if d, err := FindBySerial(sctx2, sys, "slot"); err != nil || d != "/dev/vdd" {
		t.Fatalf("slot after sizing: %q, %v", d, err)
	}
	sctx, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel2()
	if _, err := FindBySerial(sctx, sys, "missing"); err == nil {
		t.Fatal("found a missing serial")
	}
}

func TestBindMountReadOnly(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "mnt")
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	s := &agentv1.Storage{Name: "v", Source: src, Fstype: "bind", Options: []string{"ro"}}
	if err := Mount(context.Background(), SysBlock, s, dst); err != nil {
		t.Skip("bind mount not permitted here:", err)
	}
	defer Unmount(dst)
	if b, err := os.ReadFile(filepath.Join(dst, "f")); err != nil || string(b) != "x" {
		t.Fatalf("read through bind mount: %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(dst, "g"), nil, 0o644); err == nil {
		t.Fatal("write to a read-only bind mount succeeded")
	}
	if err := Unmount(dst); err != nil {
		t.Fatal(err)
	}
	if err := Unmount(dst); err != nil {
		t.Fatal("second unmount:", err)
	}
}
