package main

import (
	"bytes"
	"encoding/binary"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestResolveDeps(t *testing.T) {
	dep := `kernel/a/virtio_blk.ko: kernel/v/virtio.ko kernel/v/virtio_ring.ko
kernel/v/virtio.ko: kernel/v/virtio_ring.ko
kernel/v/virtio_ring.ko:
kernel/n/vmw_vsock_virtio_transport.ko: kernel/n/vmw_vsock_virtio_transport_common.ko kernel/n/vsock.ko kernel/v/virtio.ko kernel/v/virtio_ring.ko
kernel/n/vmw_vsock_virtio_transport_common.ko: kernel/n/vsock.ko
kernel/n/vsock.ko:
kernel/f/loop-x.ko:
`
	got, err := resolveDeps(dep, "kernel/fs/ext4/ext4.ko\n", []string{"virtio_blk", "vmw_vsock_virtio_transport", "ext4", "loop_x"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"kernel/v/virtio_ring.ko", "kernel/v/virtio.ko", "kernel/a/virtio_blk.ko",
		"kernel/n/vsock.ko", "kernel/n/vmw_vsock_virtio_transport_common.ko", "kernel/n/vmw_vsock_virtio_transport.ko", "kernel/f/loop-x.ko"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if _, err := resolveDeps(dep, "", []string{"nope"}); err == nil {
		t.Fatal("unknown module accepted")
	}
	// A kernel without loadable modules has its drivers built in.
	got, err = resolveDeps("", "", []string{"virtio_blk", "overlay"})
	if err != nil || len(got) != 0 {
		t.Fatalf("kernel without modules: got %q, %v; want nothing to load", got, err)
	}
}

func TestImageReproducible(t *testing.T) {
	mk := func(order []string) []byte {
		im := newImage()
		for _, n := range order {
			im.file(n, 0o644, []byte(n))
		}
		b, err := im.write()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a := mk([]string{"init", "usr/bin/runc", "lib/modules/v/x.ko"})
	b := mk([]string{"lib/modules/v/x.ko", "init", "usr/bin/runc"})
	if string(a) != string(b) {
		t.Fatal("archive depends on insertion order")
	}
}

func TestAddHostFileKeepsLinks(t *testing.T) {
	dir := t.TempDir()
	lib := filepath.Join(dir, "lib")
	if err := os.MkdirAll(lib, 0o755); err != nil {
		t.Fatal(err)
	}
	real := filepath.Join(lib, "libx.so.2.5")
	if err := os.WriteFile(real, []byte("elf"), 0o644); err != nil {
		t.Fatal(err)
	}
	// interp -> (absolute) lib/libx.so.2 -> (relative) libx.so.2.5
	if err := os.Symlink("libx.so.2.5", filepath.Join(lib, "libx.so.2")); err != nil {
		t.Fatal(err)
	}
	interp := filepath.Join(dir, "interp")
	if err := os.Symlink(filepath.Join(lib, "libx.so.2"), interp); err != nil {
		t.Fatal(err)
	}
	im := newImage()
	for _, p := range []string{interp, filepath.Join(lib, "libx.so.2")} {
		b, err := addHostFile(im, p)
		if err != nil || string(b) != "elf" {
			t.Fatalf("addHostFile(%s) = %q, %v", p, b, err)
		}
	}
	key := func(p string) string { return strings.TrimPrefix(p, "/") }
	if len(im.files) != 1 || string(im.files[key(real)]) != "elf" {
		t.Fatalf("files %v, want only %s", im.files, real)
	}
	if im.symlinks[key(interp)] != filepath.Join(lib, "libx.so.2") || im.symlinks[key(filepath.Join(lib, "libx.so.2"))] != "libx.so.2.5" {
		t.Fatalf("symlinks %v", im.symlinks)
	}
	if _, err := addHostFile(newImage(), filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing file accepted")
	}
}

func TestRuncImage(t *testing.T) {
	runc, err := exec.LookPath("runc")
	if err != nil {
		t.Skip("no runc on this host")
	}
	if _, err := exec.LookPath("mkfs.erofs"); err != nil {
		t.Skip("no mkfs.erofs (erofs-utils)")
	}
	initrd := newImage()
	tree, err := runcTree(runc, initrd)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := tree.files["bin/runc"]; !ok {
		t.Fatalf("no bin/runc in the tree: %v", tree.files)
	}
	for n := range tree.files {
		if strings.HasPrefix(n, "usr/") {
			t.Errorf("%s: the tree's root is /usr", n)
		}
	}
	// Every file is reachable at its host path: under /usr, or through a
	// link from the initramfs into /usr.
	for n := range tree.files {
		if strings.HasPrefix(n, "bin/") {
			continue
		}
		d := path.Dir(n)
		if initrd.symlinks[d] != "/usr/"+d {
			t.Errorf("%s: initramfs link %s -> %q, want /usr/%s", n, d, initrd.symlinks[d], d)
		}
	}
	img, err := writeErofs(tree)
	if err != nil {
		t.Fatal(err)
	}
	if len(img) == 0 || len(img)%erofsAlign != 0 {
		t.Fatalf("image of %d bytes, want a multiple of %d", len(img), erofsAlign)
	}
	if magic := binary.LittleEndian.Uint32(img[1024:]); magic != 0xe0f5e1e2 {
		t.Fatalf("erofs magic %#x", magic)
	}
	again, err := writeErofs(tree)
	if err != nil || !bytes.Equal(img, again) {
		t.Fatalf("the image is not reproducible (%v)", err)
	}
}

// TestRootTree: the root image holds the initramfs's entries, runc's tree
// under usr/, the mount points the agent uses, and resolv.conf as a link
// into the writable /run.
func TestRootTree(t *testing.T) {
	initrd, usr := newImage(), newImage()
	initrd.file("init", 0o755, []byte("agent"))
	initrd.file("etc/stratovirt/runc-version", 0o644, []byte("runc version 1\n"))
	initrd.symlink("lib64", "/usr/lib64")
	usr.file("bin/runc", 0o755, []byte("runc"))
	usr.symlink("lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
	root := rootTree(initrd, usr)
	for n, mode := range map[string]uint32{"init": 0o755, "etc/stratovirt/runc-version": 0o644, "usr/bin/runc": 0o755} {
		if _, ok := root.files[n]; !ok || root.modes[n] != mode {
			t.Errorf("%s: present %v, mode %o; want mode %o", n, ok, root.modes[n], mode)
		}
	}
	for n, target := range map[string]string{"lib64": "/usr/lib64", "usr/lib64/ld-linux-x86-64.so.2": "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "etc/resolv.conf": "/run/resolv.conf"} {
		if root.symlinks[n] != target {
			t.Errorf("link %s -> %q, want %q", n, root.symlinks[n], target)
		}
	}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp"} {
		if !root.dirs[d] {
			t.Errorf("no mount point /%s", d)
		}
	}
	dir := t.TempDir()
	if err := root.writeTree(dir); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "proc")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o755 {
		t.Errorf("written mount point /proc: %v %v", fi, err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "usr/bin/runc")); err != nil || string(b) != "runc" {
		t.Errorf("written usr/bin/runc: %q %v", b, err)
	}
}
