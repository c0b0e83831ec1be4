package guestmem

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
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
				flags, err := vmFlags(uintptr(unsafe.Pointer(unsafe.SliceData(r.Host))))
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

// vmFlags returns the VmFlags of the mapping that starts at addr, from
// /proc/self/smaps.
func vmFlags(addr uintptr) (string, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return "", err
	}
	defer f.Close()
	start := fmt.Sprintf("%x-", addr)
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, ":") || strings.HasPrefix(line, start) {
			in = strings.HasPrefix(line, start)
			continue
		}
		if in && strings.HasPrefix(line, "VmFlags:") {
			return strings.TrimSpace(strings.TrimPrefix(line, "VmFlags:")), nil
		}
	}
	return "", fmt.Errorf("no mapping at %#x in /proc/self/smaps", addr)
}
