package guestmem

import (
	"bytes"
	"os"
	"testing"
	"unsafe"
)

// TestHugeAligned checks that every region's host mapping starts on a
// 2 MiB boundary (so KVM can use 2 MiB guest mappings), that the whole
// region is usable, and that Close leaves no mapping of it behind.
func TestHugeAligned(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ranges []Range
		opts   Options
	}{
		{"one page", []Range{{0, 4096}}, Options{}},
		{"odd size", []Range{{0, 2<<20 + 4096}}, Options{}},
		{"two regions", []Range{{0, 6 << 20}, {1 << 32, 4 << 20}}, Options{HugePages: true}},
		{"shared", []Range{{0, 4 << 20}}, Options{Shared: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.ranges, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			// A marker at each region's first and last bytes tells a leaked
			// mapping from one that another thread of this process (a new
			// thread's stack, the race detector's shadow) made at the same
			// address after Close.
			marker := []byte("guestmem-leak-probe")
			var ends []uintptr
			for _, r := range m.Regions() {
				p := uintptr(unsafe.Pointer(unsafe.SliceData(r.Host)))
				if p%HugeAlign != 0 {
					t.Errorf("region %#x: host address %#x is not 2 MiB aligned", r.GPA, p)
				}
				copy(r.Host, marker)
				copy(r.Host[len(r.Host)-len(marker):], marker)
				ends = append(ends, p, p+uintptr(len(r.Host)-len(marker)))
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			mem, err := os.Open("/proc/self/mem")
			if err != nil {
				t.Skip(err)
			}
			defer mem.Close()
			got := make([]byte, len(marker))
			for _, p := range ends {
				// An unmapped address reads as EIO.
				if _, err := mem.ReadAt(got, int64(p)); err == nil && bytes.Equal(got, marker) {
					t.Errorf("after Close, %#x is still mapped and holds the region's bytes", p)
				}
			}
		})
	}
}
