package rootfs

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func tree(t *testing.T) string {
	dir := filepath.Join(t.TempDir(), "rootfs")
	for _, d := range []string{"bin", "etc", "tmp"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, "etc/hello"), []byte("hello from the image\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bin/big"), make([]byte, 3<<20), 0o755)
	os.Symlink("big", filepath.Join(dir, "bin/link"))
	return dir
}

func need(t *testing.T, tool string) {
	if _, err := exec.LookPath(tool); err != nil {
		t.Skipf("needs %s", tool)
	}
}

func magic(t *testing.T, img string, off int64, n int) uint32 {
	f, err := os.Open(img)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 4)
	if _, err := f.ReadAt(b[:n], off); err != nil {
		t.Fatal(err)
	}
	if n == 2 {
		return uint32(binary.LittleEndian.Uint16(b))
	}
	return binary.LittleEndian.Uint32(b)
}

func TestPrepareDirectoryExt4(t *testing.T) {
	need(t, "mkfs.ext4")
	dir := tree(t)
	imgs := t.TempDir()
	d, err := Prepare(context.Background(), nil, Options{Target: dir, ImageDir: imgs, Name: "c1", Format: Ext4})
	if err != nil {
		t.Fatal(err)
	}
	if !d.Owned || d.FSType != "ext4" || d.ReadOnly || d.Path != filepath.Join(imgs, "c1.ext4") || d.Bytes < 3<<20+64<<20 {
		t.Fatalf("disk %+v", d)
	}
	if m := magic(t, d.Path, 1024+56, 2); m != 0xef53 {
		t.Fatalf("ext4 magic %#x", m)
	}
	if _, err := exec.LookPath("debugfs"); err == nil {
		out, err := exec.Command("debugfs", "-R", "cat /etc/hello", d.Path).Output()
		if err != nil || string(out) != "hello from the image\n" {
			t.Fatalf("debugfs: %q %v", out, err)
		}
	}
	t.Logf("ext4 image of %s: %v", dir, d.Cost)
	if err := d.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(d.Path); !os.IsNotExist(err) {
		t.Fatal("image not removed")
	}
	// An existing image is never overwritten.
	os.WriteFile(filepath.Join(imgs, "c2.ext4"), nil, 0o600)
	if _, err := Prepare(context.Background(), nil, Options{Target: dir, ImageDir: imgs, Name: "c2", Format: Ext4}); err == nil {
		t.Fatal("overwrote an existing image")
	}
}

func TestPrepareDirectoryErofs(t *testing.T) {
	need(t, "mkfs.erofs")
	dir := tree(t)
	if _, err := Prepare(context.Background(), nil, Options{Target: dir, ImageDir: t.TempDir(), Name: "c", Format: Erofs}); err == nil ||
		!strings.Contains(err.Error(), "read-only") {
		t.Fatalf("erofs for a writable root: %v", err)
	}
	d, err := Prepare(context.Background(), nil, Options{Target: dir, ImageDir: t.TempDir(), Name: "c", Format: Erofs, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if m := magic(t, d.Path, 1024, 4); m != 0xe0f5e1e2 || !d.ReadOnly || d.FSType != "erofs" {
		t.Fatalf("erofs magic %#x disk %+v", m, d)
	}
	t.Logf("erofs image of %s: %v", dir, d.Cost)
}

func TestPrepareDirect(t *testing.T) {
	img := filepath.Join(t.TempDir(), "layer.img")
	os.WriteFile(img, make([]byte, 4096), 0o600)
	d, err := Prepare(context.Background(), []Mount{{Type: "ext4", Source: img, Options: []string{"loop", "ro"}}}, Options{})
	if err != nil || d.Path != img || d.Owned || !d.ReadOnly || d.How != "image file" || d.Direct {
		t.Fatalf("image file: %+v %v", d, err)
	}
	if _, err := Prepare(context.Background(), []Mount{{Type: "ext4", Source: "/nonexistent/dev"}}, Options{}); err == nil {
		t.Fatal("missing source accepted")
	}
	if _, err := Prepare(context.Background(), []Mount{{Type: "ext4", Source: "/dev/null"}}, Options{}); err == nil {
		t.Fatal("character device accepted")
	}
	if _, err := Prepare(context.Background(), nil, Options{Format: "xfs"}); err == nil {
		t.Fatal("unknown format accepted")
	}
	if err := (*Disk)(nil).Remove(); err != nil {
		t.Fatal(err)
	}
	if err := (&Disk{Path: img}).Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(img); err != nil {
		t.Fatal("Remove deleted a disk it does not own")
	}
	if err := Unmount(filepath.Join(t.TempDir(), "none")); err != nil {
		t.Fatal(err)
	}
}

func TestCreateMountPoint(t *testing.T) {
	root := t.TempDir()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "etc"), 0o755))
	must(os.WriteFile(filepath.Join(root, "etc/hostname"), []byte("image\n"), 0o644))
	must(os.Symlink("/etc", filepath.Join(root, "link")))
	must(os.WriteFile(filepath.Join(root, "file"), nil, 0o644))
	tests := []struct {
		mp      MountPoint
		bad     bool
		dir     bool   // expect a directory (else a file)
		content string // for an existing file: kept
	}{
		{mp: MountPoint{Path: "/etc/hosts", File: true}},
		{mp: MountPoint{Path: "/etc/hostname", File: true}, content: "image\n"},
		{mp: MountPoint{Path: "/dev/shm"}, dir: true},
		{mp: MountPoint{Path: "/a/b/c", File: true}},
		{mp: MountPoint{Path: "/../../escape"}, dir: true}, // cleaned to /escape
		{mp: MountPoint{Path: "/link/x", File: true}, bad: true},
		{mp: MountPoint{Path: "/file/x"}, bad: true},
	}
	for _, tc := range tests {
		err := CreateMountPoint(root, tc.mp)
		if tc.bad {
			if err == nil {
				t.Errorf("%s: created", tc.mp.Path)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.mp.Path, err)
			continue
		}
		p := filepath.Join(root, filepath.Clean("/"+tc.mp.Path))
		st, err := os.Lstat(p)
		if err != nil || st.IsDir() != tc.dir {
			t.Errorf("%s: %v %v", tc.mp.Path, st, err)
			continue
		}
		if !tc.dir {
			if b, _ := os.ReadFile(p); string(b) != tc.content {
				t.Errorf("%s: content %q", tc.mp.Path, b)
			}
		}
	}
	if _, err := os.Lstat(filepath.Join(filepath.Dir(root), "escape")); err == nil {
		t.Error("escaped the root")
	}
}
