package pmem

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// TestReadOnlyMappingPopulated: a read-only image's pages are mapped into
// the process when the device is made, before anything reads them (KVM
// then resolves the guest's first access without a host page fault).
func TestReadOnlyMappingPopulated(t *testing.T) {
	const size = 64 << 10
	r := newRig(t, Config{ID: "p0", Path: writeFile(t, bytes.Repeat([]byte{7}, size)), ReadOnly: true})
	rss, err := rssKiB(uintptr(unsafe.Pointer(unsafe.SliceData(r.dev.Mapping()))))
	if err != nil {
		t.Fatal(err)
	}
	if rss < size>>10 {
		t.Errorf("the file mapping has %d KiB resident before any access, want %d", rss, size>>10)
	}
}

// rssKiB returns the Rss of the mapping that starts at addr, from
// /proc/self/smaps.
func rssKiB(addr uintptr) (int, error) {
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		return 0, err
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
		if in && strings.HasPrefix(line, "Rss:") {
			var kb int
			_, err := fmt.Sscanf(line, "Rss: %d kB", &kb)
			return kb, err
		}
	}
	return 0, fmt.Errorf("no mapping at %#x in /proc/self/smaps", addr)
}
