package balloon

import (
	"encoding/binary"
	"fmt"
)

// PageShift is the balloon's page size (4 KiB regardless of the guest's
// page size; virtio spec 5.5.6).
const (
	PageShift = 12
	PageSize  = 1 << PageShift
)

// MaxPFNsPerChain bounds one inflate or deflate buffer (Linux sends at
// most 256 PFNs per request).
const MaxPFNsPerChain = 4096

// AppendPFNs decodes an array of le32 page frame numbers from b onto out.
// len(b) must be a multiple of 4 and the total is bounded by
// MaxPFNsPerChain.
func AppendPFNs(out []uint32, b []byte) ([]uint32, error) {
	if len(b)%4 != 0 {
		return out, fmt.Errorf("balloon: PFN buffer of %d bytes is not a multiple of 4", len(b))
	}
	if len(out)+len(b)/4 > MaxPFNsPerChain {
		return out, fmt.Errorf("balloon: more than %d PFNs in one buffer", MaxPFNsPerChain)
	}
	for i := 0; i+4 <= len(b); i += 4 {
		out = append(out, binary.LittleEndian.Uint32(b[i:]))
	}
	return out, nil
}

// Range is a run of contiguous guest pages.
type Range struct {
	GPA  uint64
	Size uint64
}

// Ranges merges consecutive PFNs (in the order given) into ranges.
func Ranges(pfns []uint32, out []Range) []Range {
	for _, p := range pfns {
		gpa := uint64(p) << PageShift
		if n := len(out); n > 0 && out[n-1].GPA+out[n-1].Size == gpa {
			out[n-1].Size += PageSize
			continue
		}
		out = append(out, Range{GPA: gpa, Size: PageSize})
	}
	return out
}

// Stat is one entry of the statistics buffer.
type Stat struct {
	Tag uint16
	Val uint64
}

// statSize is sizeof(struct virtio_balloon_stat): packed le16 + le64.
const statSize = 10

// Statistic tags (virtio spec 5.5.6.3 and Linux).
var statNames = map[uint16]string{
	0: "swap-in", 1: "swap-out", 2: "major-faults", 3: "minor-faults", 4: "free-memory",
	5: "total-memory", 6: "available-memory", 7: "disk-caches", 8: "hugetlb-allocations",
	9: "hugetlb-failures",
}

// StatName names a tag ("" when unknown).
func StatName(tag uint16) string { return statNames[tag] }

// ParseStats decodes a statistics buffer (a whole number of 10-byte
// entries, at most 64).
func ParseStats(b []byte) ([]Stat, error) {
	if len(b)%statSize != 0 || len(b)/statSize > 64 {
		return nil, fmt.Errorf("balloon: statistics buffer of %d bytes", len(b))
	}
	out := make([]Stat, 0, len(b)/statSize)
	for i := 0; i+statSize <= len(b); i += statSize {
		out = append(out, Stat{Tag: binary.LittleEndian.Uint16(b[i:]), Val: binary.LittleEndian.Uint64(b[i+2:])})
	}
	return out, nil
}
