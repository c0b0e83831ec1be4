package guestmem

import (
	"os"
	"strconv"
	"strings"
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
			var starts []uintptr
			for _, r := range m.Regions() {
				p := uintptr(unsafe.Pointer(unsafe.SliceData(r.Host)))
				if p%HugeAlign != 0 {
					t.Errorf("region %#x: host address %#x is not 2 MiB aligned", r.GPA, p)
				}
				r.Host[0], r.Host[len(r.Host)-1] = 1, 2
				starts = append(starts, p)
			}
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
			maps, err := os.ReadFile("/proc/self/maps")
			if err != nil {
				t.Skip(err)
			}
			for _, l := range strings.Split(string(maps), "\n") {
				lo, hi, ok := strings.Cut(strings.Fields(l + " x")[0], "-")
				if !ok {
					continue
				}
				a, _ := strconv.ParseUint(lo, 16, 64)
				b, _ := strconv.ParseUint(hi, 16, 64)
				for _, p := range starts {
					if uint64(p) >= a && uint64(p) < b {
						t.Errorf("after Close, %#x is still mapped: %s", p, l)
					}
				}
			}
		})
	}
}
