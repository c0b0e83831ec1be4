package main

import (
	"testing"

	"github.com/stratovirt-go/stratovirt/tests/bench"
)

func TestParseGuestImage(t *testing.T) {
	for _, c := range []struct {
		in   string
		want bench.GuestImage
		ok   bool
	}{
		{"k100 initramfs=/k/vmlinux:/g/initramfs.cpio", bench.GuestImage{Name: "k100 initramfs", Kernel: "/k/vmlinux", Initrd: "/g/initramfs.cpio"}, true},
		{"k100 root image=/k/vmlinux:/g/root.erofs", bench.GuestImage{Name: "k100 root image", Kernel: "/k/vmlinux", Image: "/g/root.erofs"}, true},
		{"", bench.GuestImage{}, false},
		{"name=/k/vmlinux", bench.GuestImage{}, false},
		{"=/k/vmlinux:/g/i", bench.GuestImage{}, false},
		{"name=:/g/i", bench.GuestImage{}, false},
		{"name=/k/vmlinux:", bench.GuestImage{}, false},
	} {
		got, ok := parseGuestImage(c.in)
		if ok != c.ok || got != c.want {
			t.Errorf("%q: got %+v %v, want %+v %v", c.in, got, ok, c.want, c.ok)
		}
	}
}
