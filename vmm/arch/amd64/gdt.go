package amd64

import (
	"encoding/binary"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// Control register and EFER bits used for boot.
const (
	CR0PE   = 1 << 0  // protected mode
	CR0ET   = 1 << 4  // extension type (always 1 on modern CPUs)
	CR0NE   = 1 << 5  // native x87 error reporting
	CR0NW   = 1 << 29 // not write-through
	CR0CD   = 1 << 30 // cache disable
	CR0PG   = 1 << 31 // paging
	CR4PAE  = 1 << 5
	EFERLME = 1 << 8
	EFERLMA = 1 << 10
)

// Descriptor flags in the compact form used by GDTEntry: access byte in
// bits 0-7, the flags nibble (AVL, L, D/B, G) in bits 12-15.
const (
	GDTCode64 = 0xa09b // present, DPL0, code exec/read accessed, L=1, G=1
	GDTCode32 = 0xc09b // same, D=1 instead of L=1
	GDTData   = 0xc093 // present, DPL0, data read/write accessed, D/B=1, G=1
	GDTTSS64  = 0x808b // present, busy TSS, G=1 (64-bit boot)
	GDTTSS32  = 0x008b // present, busy 32-bit TSS, byte granular (PVH)
)

// Selectors of the boot GDT: index 1 code, 2 data, 3 TSS.
const (
	BootCodeSelector = 1 << 3
	BootDataSelector = 2 << 3
	BootTSSSelector  = 3 << 3
	bootGDTEntries   = 4
)

// GDTEntry encodes a segment descriptor from compact flags, a 32-bit base
// and a 20-bit limit (in pages when G=1).
func GDTEntry(flags uint16, base, limit uint32) uint64 {
	return (uint64(base)&0xff000000)<<(56-24) |
		(uint64(flags)&0xf0ff)<<40 |
		(uint64(limit)&0x000f0000)<<(48-16) |
		(uint64(base)&0x00ffffff)<<16 |
		uint64(limit)&0xffff
}

// SegmentFromGDT converts a descriptor at GDT index into the kvm_segment
// KVM expects. KVM takes the limit as a raw byte count, so with G=1 it is
// expanded to limit<<12 | 0xfff.
func SegmentFromGDT(entry uint64, index uint16) kvm.Segment {
	limit := uint32(entry&0xffff) | uint32((entry>>48)&0xf)<<16
	g := uint8(entry>>55) & 1
	if g == 1 {
		limit = limit<<12 | 0xfff
	}
	present := uint8(entry>>47) & 1
	var unusable uint8
	if present == 0 {
		unusable = 1
	}
	return kvm.Segment{
		Base:     (entry>>16)&0xffffff | (entry>>56)<<24,
		Limit:    limit,
		Selector: index * 8,
		Type:     uint8(entry>>40) & 0xf,
		S:        uint8(entry>>44) & 1,
		DPL:      uint8(entry>>45) & 3,
		Present:  present,
		AVL:      uint8(entry>>52) & 1,
		L:        uint8(entry>>53) & 1,
		DB:       uint8(entry>>54) & 1,
		G:        g,
		Unusable: unusable,
	}
}

// LinuxGDT is the boot GDT for the 64-bit Linux entry.
func LinuxGDT() [bootGDTEntries]uint64 {
	return [bootGDTEntries]uint64{
		0,
		GDTEntry(GDTCode64, 0, 0xfffff),
		GDTEntry(GDTData, 0, 0xfffff),
		GDTEntry(GDTTSS64, 0, 0xfffff),
	}
}

// PVHGDT is the boot GDT for the 32-bit PVH entry: flat 4 GiB segments
// and a 104-byte 32-bit TSS.
func PVHGDT() [bootGDTEntries]uint64 {
	return [bootGDTEntries]uint64{
		0,
		GDTEntry(GDTCode32, 0, 0xfffff),
		GDTEntry(GDTData, 0, 0xfffff),
		GDTEntry(GDTTSS32, 0, 0x67),
	}
}

// writeGDTIDT stores gdt at GDTAddr and a zero IDT entry at IDTAddr and
// points sregs at them, loading CS, the data segments and TR.
func writeGDTIDT(s *kvm.Sregs, mem *guestmem.Memory, gdt [bootGDTEntries]uint64) error {
	buf := make([]byte, 8*len(gdt))
	for i, e := range gdt {
		binary.LittleEndian.PutUint64(buf[8*i:], e)
	}
	if err := mem.WriteAt(buf, GDTAddr); err != nil {
		return fmt.Errorf("write boot GDT: %w", err)
	}
	if err := mem.WriteAt(make([]byte, 8), IDTAddr); err != nil {
		return fmt.Errorf("write boot IDT: %w", err)
	}
	s.GDT = kvm.DTable{Base: GDTAddr, Limit: uint16(len(buf) - 1)}
	s.IDT = kvm.DTable{Base: IDTAddr, Limit: 7}
	code := SegmentFromGDT(gdt[1], 1)
	data := SegmentFromGDT(gdt[2], 2)
	s.CS = code
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = SegmentFromGDT(gdt[3], 3)
	return nil
}

// LongModeSregs writes the boot GDT, IDT and identity page tables into mem
// and returns base (as read with KVM_GET_SREGS) set up for the 64-bit
// Linux entry: CR0 PE|PG|ET|NE with caching enabled, CR4 PAE, EFER
// LME|LMA, CR3 = PML4Addr, CS 0x08 (64-bit), data 0x10, TR 0x18.
func LongModeSregs(base kvm.Sregs, mem *guestmem.Memory) (kvm.Sregs, error) {
	s := base
	if err := writeGDTIDT(&s, mem, LinuxGDT()); err != nil {
		return kvm.Sregs{}, err
	}
	if err := WritePageTables(mem); err != nil {
		return kvm.Sregs{}, err
	}
	s.CR3 = PML4Addr
	s.CR4 |= CR4PAE
	s.CR0 = (s.CR0 &^ (CR0CD | CR0NW)) | CR0PE | CR0PG | CR0ET | CR0NE
	s.EFER |= EFERLME | EFERLMA
	return s, nil
}

// PVHSregs writes the PVH boot GDT and IDT into mem and returns base set
// up for the 32-bit PVH entry: flat 32-bit CS 0x08 and data 0x10, TR 0x18
// (32-bit TSS, limit 0x67), CR0 PE|ET, CR4 0, paging off.
func PVHSregs(base kvm.Sregs, mem *guestmem.Memory) (kvm.Sregs, error) {
	s := base
	if err := writeGDTIDT(&s, mem, PVHGDT()); err != nil {
		return kvm.Sregs{}, err
	}
	s.CR0 = CR0PE | CR0ET
	s.CR4 = 0
	s.EFER &^= EFERLME | EFERLMA
	return s, nil
}

// LinuxRegs returns the general registers for the 64-bit Linux entry:
// RFLAGS 2 (reserved bit, interrupts off), RIP entry, RSP = RBP = the boot
// stack, RSI = the zero page.
func LinuxRegs(entry uint64) kvm.Regs {
	return kvm.Regs{
		RFLAGS: 2,
		RIP:    entry,
		RSP:    BootStackAddr,
		RBP:    BootStackAddr,
		RSI:    ZeroPageAddr,
	}
}

// PVHRegs returns the general registers for the PVH entry: RFLAGS 2, RIP
// entry, RBX = the hvm_start_info address.
func PVHRegs(entry uint64) kvm.Regs {
	return kvm.Regs{
		RFLAGS: 2,
		RIP:    entry,
		RBX:    PVHStartInfoAddr,
	}
}
