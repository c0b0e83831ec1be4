package amd64

import (
	"encoding/binary"
	"fmt"
)

// PVH boot structures (xen/include/public/arch-x86/hvm/start_info.h).
const (
	PVHStartInfoMagic   = 0x336ec578
	PVHStartInfoVersion = 1
	PVHStartInfoSize    = 56
	PVHModlistEntrySize = 32
	PVHMemmapEntrySize  = 24
	// PVHMemmapMaxEntries bounds the memmap: it must stay inside the page
	// at PVHMemmapAddr.
	PVHMemmapMaxEntries = E820MaxEntries
)

// PVHStartInfo describes struct hvm_start_info and what it points to.
type PVHStartInfo struct {
	CmdlineAddr uint64 // 0: no command line
	RSDPAddr    uint64 // 0: none
	InitrdAddr  uint64
	InitrdSize  uint64 // 0: no module
	Memmap      []E820Entry
}

// PVHBlobs is the encoded start info, module list and memory map, each to
// be written at its address (StartInfoAddr, ModlistAddr, MemmapAddr).
type PVHBlobs struct {
	StartInfo []byte
	Modlist   []byte // empty when there is no initrd
	Memmap    []byte
}

// Encode lays out hvm_start_info at PVHStartInfoAddr with its module list
// at PVHModlistAddr and memory map at PVHMemmapAddr.
func (s *PVHStartInfo) Encode() (*PVHBlobs, error) {
	if len(s.Memmap) == 0 || len(s.Memmap) > PVHMemmapMaxEntries {
		return nil, fmt.Errorf("pvh start info: %d memmap entries, want 1..%d", len(s.Memmap), PVHMemmapMaxEntries)
	}
	le := binary.LittleEndian
	si := make([]byte, PVHStartInfoSize)
	le.PutUint32(si[0:], PVHStartInfoMagic)
	le.PutUint32(si[4:], PVHStartInfoVersion)
	le.PutUint32(si[8:], 0) // flags
	var mods []byte
	if s.InitrdSize != 0 {
		le.PutUint32(si[12:], 1)
		le.PutUint64(si[16:], PVHModlistAddr)
		mods = make([]byte, PVHModlistEntrySize)
		le.PutUint64(mods[0:], s.InitrdAddr)
		le.PutUint64(mods[8:], s.InitrdSize)
		// cmdline_paddr and reserved stay 0.
	}
	le.PutUint64(si[24:], s.CmdlineAddr)
	le.PutUint64(si[32:], s.RSDPAddr)
	le.PutUint64(si[40:], PVHMemmapAddr)
	le.PutUint32(si[48:], uint32(len(s.Memmap)))
	mm := make([]byte, len(s.Memmap)*PVHMemmapEntrySize)
	for i, e := range s.Memmap {
		p := mm[i*PVHMemmapEntrySize:]
		le.PutUint64(p[0:], e.Addr)
		le.PutUint64(p[8:], e.Size)
		le.PutUint32(p[16:], e.Type)
	}
	return &PVHBlobs{StartInfo: si, Modlist: mods, Memmap: mm}, nil
}

// ParsePVHStartInfo decodes an hvm_start_info and, given the bytes of the
// module list and memory map it points at, those too. For tests.
func ParsePVHStartInfo(si, modlist, memmap []byte) (*PVHStartInfo, error) {
	if len(si) < PVHStartInfoSize {
		return nil, fmt.Errorf("pvh start info truncated: %d bytes", len(si))
	}
	le := binary.LittleEndian
	if m := le.Uint32(si[0:]); m != PVHStartInfoMagic {
		return nil, fmt.Errorf("pvh start info: bad magic %#x", m)
	}
	out := &PVHStartInfo{CmdlineAddr: le.Uint64(si[24:]), RSDPAddr: le.Uint64(si[32:])}
	if n := le.Uint32(si[12:]); n > 0 {
		if len(modlist) < PVHModlistEntrySize {
			return nil, fmt.Errorf("pvh modlist truncated: %d bytes", len(modlist))
		}
		out.InitrdAddr = le.Uint64(modlist[0:])
		out.InitrdSize = le.Uint64(modlist[8:])
	}
	n := int(le.Uint32(si[48:]))
	if n > PVHMemmapMaxEntries || len(memmap) < n*PVHMemmapEntrySize {
		return nil, fmt.Errorf("pvh memmap: %d entries, %d bytes", n, len(memmap))
	}
	for i := 0; i < n; i++ {
		p := memmap[i*PVHMemmapEntrySize:]
		out.Memmap = append(out.Memmap, E820Entry{Addr: le.Uint64(p[0:]), Size: le.Uint64(p[8:]), Type: le.Uint32(p[16:])})
	}
	return out, nil
}
