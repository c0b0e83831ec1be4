package guestmem

import (
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/stratovirt-go/stratovirt/vmm/internal/smaps"
)

// TestMergeable: Mergeable marks every region's mapping mergeable for KSM
// (the "mg" flag in /proc/self/smaps), the default marks none, and shared
// memory, which KSM never merges, is refused.
func TestMergeable(t *testing.T) {
	if _, err := os.Stat("/sys/kernel/mm/ksm"); err != nil {
		t.Skip("host kernel without KSM")
	}
	ranges := []Range{{0, 4 << 20}, {1 << 32, 2 << 20}}
	for _, tc := range []struct {
		name string
		opts Options
		want bool
	}{
		{"default", Options{HugePages: true}, false},
		{"mergeable", Options{HugePages: true, Mergeable: true}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(ranges, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			for _, r := range m.Regions() {
				flags, err := smaps.Field(uintptr(unsafe.Pointer(unsafe.SliceData(r.Host))), "VmFlags")
				if err != nil {
					t.Fatal(err)
				}
				if got := strings.Contains(" "+flags+" ", " mg "); got != tc.want {
					t.Errorf("region %#x: VmFlags %q, mergeable %v, want %v", r.GPA, flags, got, tc.want)
				}
			}
		})
	}
	if m, err := New(ranges, Options{Shared: true, Mergeable: true}); err == nil {
		m.Close()
		t.Error("shared memory was accepted as mergeable")
	}
}
