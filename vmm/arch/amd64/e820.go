package amd64

import (
	"encoding/binary"
	"fmt"
	"sort"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// E820 entry types.
const (
	E820RAM      = 1
	E820Reserved = 2
)

// E820MaxEntries is the capacity of boot_params.e820_table.
const E820MaxEntries = 128

// E820EntrySize is the packed size of struct boot_e820_entry.
const E820EntrySize = 20

// E820Entry is one BIOS memory-map entry.
type E820Entry struct {
	Addr uint64
	Size uint64
	Type uint32
}

// End returns the first address after the entry.
func (e E820Entry) End() uint64 { return e.Addr + e.Size }

// E820 builds the memory map for the given RAM ranges (as returned by
// MemoryRanges). The range starting at 0 is split into usable RAM below
// the EBDA, a reserved block [EBDAStart, HimemStart) covering the EBDA,
// MP table, ACPI tables and BIOS area, and RAM from 1 MiB to its end.
// Other ranges are RAM as they are. Entries are sorted by address.
func E820(ranges []guestmem.Range) ([]E820Entry, error) {
	rs := append([]guestmem.Range(nil), ranges...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].GPA < rs[j].GPA })
	var out []E820Entry
	for _, r := range rs {
		if r.Size == 0 || r.GPA+r.Size < r.GPA {
			return nil, fmt.Errorf("e820: invalid RAM range %#x+%#x", r.GPA, r.Size)
		}
		end := r.GPA + r.Size
		switch {
		case r.GPA == 0:
			if end <= HimemStart {
				return nil, fmt.Errorf("e820: low RAM range ends at %#x, below 1 MiB", end)
			}
			out = append(out,
				E820Entry{Addr: 0, Size: EBDAStart, Type: E820RAM},
				E820Entry{Addr: EBDAStart, Size: HimemStart - EBDAStart, Type: E820Reserved},
				E820Entry{Addr: HimemStart, Size: end - HimemStart, Type: E820RAM})
		case r.GPA < HimemStart:
			return nil, fmt.Errorf("e820: RAM range %#x+%#x starts inside the low megabyte", r.GPA, r.Size)
		default:
			out = append(out, E820Entry{Addr: r.GPA, Size: r.Size, Type: E820RAM})
		}
	}
	if len(out) > E820MaxEntries {
		return nil, fmt.Errorf("e820: %d entries exceed the maximum %d", len(out), E820MaxEntries)
	}
	return out, nil
}

// EncodeE820 encodes entries as packed 20-byte struct boot_e820_entry
// records (addr u64, size u64, type u32), little-endian.
func EncodeE820(entries []E820Entry) []byte {
	b := make([]byte, len(entries)*E820EntrySize)
	for i, e := range entries {
		p := b[i*E820EntrySize:]
		binary.LittleEndian.PutUint64(p[0:], e.Addr)
		binary.LittleEndian.PutUint64(p[8:], e.Size)
		binary.LittleEndian.PutUint32(p[16:], e.Type)
	}
	return b
}

// DecodeE820 is the inverse of EncodeE820; len(b) must be a multiple of
// E820EntrySize.
func DecodeE820(b []byte) ([]E820Entry, error) {
	if len(b)%E820EntrySize != 0 {
		return nil, fmt.Errorf("e820: %d bytes is not a whole number of entries", len(b))
	}
	out := make([]E820Entry, 0, len(b)/E820EntrySize)
	for p := b; len(p) > 0; p = p[E820EntrySize:] {
		out = append(out, E820Entry{
			Addr: binary.LittleEndian.Uint64(p[0:]),
			Size: binary.LittleEndian.Uint64(p[8:]),
			Type: binary.LittleEndian.Uint32(p[16:]),
		})
	}
	return out, nil
}
