package main

import (
	"reflect"
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
