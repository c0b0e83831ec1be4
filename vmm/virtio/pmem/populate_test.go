package pmem

import (
	"bytes"
	"fmt"
	"testing"
	"unsafe"

	"github.com/stratovirt-go/stratovirt/vmm/internal/smaps"
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

// rssKiB returns the Rss of the mapping that starts at addr.
func rssKiB(addr uintptr) (int, error) {
	v, err := smaps.Field(addr, "Rss")
	if err != nil {
		return 0, err
	}
	var kb int
	_, err = fmt.Sscanf(v, "%d kB", &kb)
	return kb, err
}
