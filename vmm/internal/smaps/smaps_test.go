package smaps

import (
	"strings"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"
)

func TestField(t *testing.T) {
	const size = 64 << 10
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(b)
	// A flag of its own keeps the kernel from merging the mapping with a
	// neighbour.
	if err := unix.Madvise(b, unix.MADV_DONTDUMP); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < size; i += 4096 {
		b[i] = 1
	}
	addr := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	if rss, err := Field(addr, "Rss"); err != nil || rss != "64 kB" {
		t.Errorf("Rss %q, %v; want 64 kB", rss, err)
	}
	if fl, err := Field(addr, "VmFlags"); err != nil || !strings.HasPrefix(fl, "rd wr") || !strings.Contains(fl, " dd") {
		t.Errorf("VmFlags %q, %v; want rd wr … dd", fl, err)
	}
	if _, err := Field(addr+4096, "Rss"); err == nil {
		t.Error("found a mapping that starts inside another")
	}
	if !isHeader("7f0000000000-7f0000010000 rw-p 00000000 00:00 0") || isHeader("Rss:                  64 kB") || isHeader("VmFlags: rd wr mr") {
		t.Error("isHeader")
	}
}
