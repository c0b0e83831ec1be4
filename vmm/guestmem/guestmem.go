// Package guestmem owns guest physical memory: the host mappings that back
// guest RAM and bounds-checked accessors for every guest-physical read and
// write. Nothing outside this package indexes guest RAM by address without
// going through these checks.
//
// Memory is immutable after New (regions never move), so accessors need no
// lock; concurrent access to the same bytes is the guest's own business,
// ring indices are read with the atomic helpers.
package guestmem

import (
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"
)

// ErrOutOfRange is returned (wrapped) for any access that is not fully
// inside one RAM region.
var ErrOutOfRange = errors.New("guest address out of range")

// Region is one contiguous range of guest RAM backed by host memory.
type Region struct {
	GPA  uint64 // guest-physical start
	Size uint64
	Host []byte // len(Host) == Size
}

// End returns the first guest-physical address after the region.
func (r Region) End() uint64 { return r.GPA + r.Size }

// Range is a requested RAM range.
type Range struct {
	GPA  uint64
	Size uint64
}

// Options select how RAM is mapped.
type Options struct {
	// Shared maps RAM MAP_SHARED (mem-share=on) instead of private.
	Shared bool
	// DumpGuestCore false marks RAM MADV_DONTDUMP.
	DumpGuestCore bool
	// File, when non-nil, backs RAM (hugetlbfs or a memfd); offsets are
	// consecutive in range order.
	FD int
	// UseFD says FD is valid (0 is a valid descriptor).
	UseFD bool
	// HugePages asks for transparent huge pages on anonymous memory.
	HugePages bool
	// Mergeable offers private anonymous RAM to the host's kernel
	// same-page merging (MADV_MERGEABLE): where the host runs KSM, pages
	// that several VMs hold alike (the guest kernel's code) are kept
	// once. It needs private anonymous memory (KSM merges nothing else).
	Mergeable bool
}

// Memory is the set of guest RAM regions, sorted by address.
type Memory struct {
	regions []Region
	mapped  bool
}

// New maps host memory for each range. Ranges must not overlap.
func New(ranges []Range, opts Options) (*Memory, error) {
	// The kernel takes MADV_MERGEABLE on a shared mapping without
	// complaint and never merges it: refused before anything is mapped.
	if opts.Mergeable && (opts.Shared || opts.UseFD) {
		return nil, errors.New("guest memory merging needs private anonymous memory (no mem-share, no mem-path)")
	}
	rs := append([]Range(nil), ranges...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].GPA < rs[j].GPA })
	m := &Memory{mapped: true}
	var fileOff int64
	for i, r := range rs {
		if r.Size == 0 || r.Size%uint64(unix.Getpagesize()) != 0 {
			m.Close()
			return nil, fmt.Errorf("guest memory range %#x+%#x: size must be a non-zero multiple of the page size", r.GPA, r.Size)
		}
		if r.GPA+r.Size < r.GPA || (i > 0 && r.GPA < rs[i-1].GPA+rs[i-1].Size) {
			m.Close()
			return nil, fmt.Errorf("guest memory range %#x+%#x overlaps or wraps", r.GPA, r.Size)
		}
		flags := unix.MAP_NORESERVE
		prot := unix.PROT_READ | unix.PROT_WRITE
		fd := -1
		if opts.UseFD {
			fd = opts.FD
			flags |= unix.MAP_SHARED
		} else {
			flags |= unix.MAP_ANONYMOUS
			if opts.Shared {
				flags |= unix.MAP_SHARED
			} else {
				flags |= unix.MAP_PRIVATE
			}
		}
		host, err := mapAligned(fd, fileOff, r.Size, prot, flags)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("map guest memory %#x+%#x: %w", r.GPA, r.Size, err)
		}
		if opts.UseFD {
			fileOff += int64(r.Size)
		}
		if !opts.DumpGuestCore {
			if err := unix.Madvise(host, unix.MADV_DONTDUMP); err != nil {
				unmap(host)
				m.Close()
				return nil, fmt.Errorf("madvise(DONTDUMP) guest memory: %w", err)
			}
		}
		if opts.HugePages && !opts.UseFD {
			// Best effort: THP may be disabled on the host.
			_ = unix.Madvise(host, unix.MADV_HUGEPAGE)
		}
		if opts.Mergeable {
			// A host kernel without KSM refuses the advice.
			if err := unix.Madvise(host, unix.MADV_MERGEABLE); err != nil {
				unmap(host)
				m.Close()
				return nil, fmt.Errorf("madvise(MERGEABLE) guest memory (does the host kernel have CONFIG_KSM?): %w", err)
			}
		}
		m.regions = append(m.regions, Region{GPA: r.GPA, Size: r.Size, Host: host})
	}
	return m, nil
}

// FromBytes wraps existing host buffers as guest memory, for tests and
// fuzzers. Each buffer's GPA is given by the matching entry of gpas.
func FromBytes(gpas []uint64, bufs [][]byte) (*Memory, error) {
	if len(gpas) != len(bufs) {
		return nil, errors.New("guestmem: gpas and bufs differ in length")
	}
	m := &Memory{}
	for i := range gpas {
		m.regions = append(m.regions, Region{GPA: gpas[i], Size: uint64(len(bufs[i])), Host: bufs[i]})
	}
	sort.Slice(m.regions, func(i, j int) bool { return m.regions[i].GPA < m.regions[j].GPA })
	for i := 1; i < len(m.regions); i++ {
		if m.regions[i].GPA < m.regions[i-1].End() {
			return nil, errors.New("guestmem: regions overlap")
		}
	}
	return m, nil
}

// Close unmaps the memory. The Memory must not be used afterwards.
func (m *Memory) Close() error {
	var first error
	if m.mapped {
		for _, r := range m.regions {
			if err := unmap(r.Host); err != nil && first == nil {
				first = err
			}
		}
	}
	m.regions = nil
	return first
}

// Regions returns the RAM regions in address order. Callers must not
// modify the returned slice.
func (m *Memory) Regions() []Region { return m.regions }

// Size returns the total RAM size.
func (m *Memory) Size() uint64 {
	var n uint64
	for _, r := range m.regions {
		n += r.Size
	}
	return n
}

// Slice returns the host bytes for [gpa, gpa+n). The range must lie in a
// single region. The slice aliases guest memory.
func (m *Memory) Slice(gpa, n uint64) ([]byte, error) {
	for i := range m.regions {
		r := &m.regions[i]
		if gpa >= r.GPA && gpa < r.End() {
			off := gpa - r.GPA
			if n > r.Size-off {
				break
			}
			return r.Host[off : off+n : off+n], nil
		}
	}
	return nil, fmt.Errorf("%w: %#x+%#x", ErrOutOfRange, gpa, n)
}

// Contains reports whether [gpa, gpa+n) lies within one RAM region.
func (m *Memory) Contains(gpa, n uint64) bool {
	_, err := m.Slice(gpa, n)
	return err == nil
}

// ReadAt copies len(p) bytes at gpa into p.
func (m *Memory) ReadAt(p []byte, gpa uint64) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(p, s)
	return nil
}

// WriteAt copies p into guest memory at gpa.
func (m *Memory) WriteAt(p []byte, gpa uint64) error {
	s, err := m.Slice(gpa, uint64(len(p)))
	if err != nil {
		return err
	}
	copy(s, p)
	return nil
}
