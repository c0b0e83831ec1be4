// Package kvmtest builds tiny guests for tests of the KVM plumbing: a VM
// with RAM at guest-physical 0, and vCPU state for real mode or for 64-bit
// long mode with identity-mapped page tables and a GDT written into guest
// RAM. It is test support only; nothing in the VMM imports it.
package kvmtest

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// Open opens /dev/kvm, skipping the test when it cannot be opened.
func Open(t testing.TB) *kvm.System {
	t.Helper()
	sys, err := kvm.Open("")
	if err != nil {
		t.Skipf("no usable /dev/kvm: %v", err)
	}
	t.Cleanup(func() { sys.Close() })
	return sys
}

// VM is a test VM with RAM at guest-physical 0.
type VM struct {
	Sys *kvm.System
	VM  *kvm.VM
	Mem *guestmem.Memory
}

// NewVM creates a VM with memSize bytes of RAM at 0 (a whole number of
// pages). With irqchip it also creates the in-kernel irqchip and PIT, as
// the VMM does. Everything is closed at test cleanup (vCPUs must be closed
// by then).
func NewVM(t testing.TB, memSize uint64, irqchip bool) *VM {
	t.Helper()
	sys := Open(t)
	vm, err := sys.CreateVM()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { vm.Close() })
	if err := vm.SetTSSAddr(0xfffbd000); err != nil {
		t.Fatal(err)
	}
	if err := vm.SetIdentityMapAddr(0xfffbc000); err != nil {
		t.Fatal(err)
	}
	if irqchip {
		if err := vm.CreateIRQChip(); err != nil {
			t.Fatal(err)
		}
		if err := vm.CreatePIT2(); err != nil {
			t.Fatal(err)
		}
	}
	mem, err := guestmem.New([]guestmem.Range{{GPA: 0, Size: memSize}}, guestmem.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mem.Close() })
	if _, err := vm.RegisterMemory(mem, 0); err != nil {
		t.Fatal(err)
	}
	return &VM{Sys: sys, VM: vm, Mem: mem}
}

// Load copies code into guest RAM at gpa.
func (v *VM) Load(t testing.TB, gpa uint64, code []byte) {
	t.Helper()
	if err := v.Mem.WriteAt(code, gpa); err != nil {
		t.Fatal(err)
	}
}

// SetupRealMode puts cpu in real mode with CS=DS=ES=SS=0, RIP=rip and the
// given extra general-purpose registers (RAX..RDI; zero when unset).
func SetupRealMode(cpu *kvm.VCPU, rip uint64, regs kvm.Regs) error {
	s, err := cpu.GetSregs()
	if err != nil {
		return err
	}
	for _, seg := range []*kvm.Segment{&s.CS, &s.DS, &s.ES, &s.FS, &s.GS, &s.SS} {
		seg.Base = 0
		seg.Selector = 0
	}
	if err := cpu.SetSregs(s); err != nil {
		return err
	}
	regs.RIP = rip
	regs.RFLAGS = 2
	if regs.RSP == 0 {
		regs.RSP = 0x7000
	}
	return cpu.SetRegs(regs)
}

// Long-mode layout written by WriteLongModeTables.
const (
	GDTAddr  = 0x500
	PML4Addr = 0x1000
	PDPTAddr = 0x2000
	PDAddr   = 0x3000

	CodeSelector = 0x08
	DataSelector = 0x10
	TSSSelector  = 0x18
)

// gdtEntry encodes a segment descriptor.
func gdtEntry(flags uint16, base, limit uint32) uint64 {
	return uint64(base&0xff000000)<<32 | uint64(flags&0xf0ff)<<40 | uint64(limit&0x000f0000)<<32 |
		uint64(base&0x00ffffff)<<16 | uint64(limit&0x0000ffff)
}

func segFromGDT(sel uint16, e uint64) kvm.Segment {
	limit := uint32(e&0xffff) | uint32((e>>48)&0xf)<<16
	g := uint8((e >> 55) & 1)
	if g == 1 {
		limit = limit<<12 | 0xfff
	}
	return kvm.Segment{
		Base:     (e>>16)&0xffffff | ((e>>56)&0xff)<<24,
		Limit:    limit,
		Selector: sel,
		Type:     uint8((e >> 40) & 0xf),
		S:        uint8((e >> 44) & 1),
		DPL:      uint8((e >> 45) & 3),
		Present:  uint8((e >> 47) & 1),
		AVL:      uint8((e >> 52) & 1),
		L:        uint8((e >> 53) & 1),
		DB:       uint8((e >> 54) & 1),
		G:        g,
	}
}

// WriteLongModeTables writes a GDT (null, 64-bit code, data, TSS) and page
// tables identity-mapping the first mapGiB GiB (1..512) with 2 MiB pages,
// and returns the matching special registers. Addresses above the mapped
// range fault.
func WriteLongModeTables(mem *guestmem.Memory, mapGiB int) (kvm.Sregs, error) {
	if mapGiB < 1 || mapGiB > 512 {
		return kvm.Sregs{}, fmt.Errorf("mapGiB %d out of range", mapGiB)
	}
	gdt := []uint64{
		0,
		gdtEntry(0xa09b, 0, 0xfffff), // code: P, DPL0, S, exec/read/accessed, L, G
		gdtEntry(0xc093, 0, 0xfffff), // data: P, S, read/write/accessed, DB, G
		gdtEntry(0x008b, 0, 0x67),    // TSS: P, busy 64-bit TSS
	}
	buf := make([]byte, 8*len(gdt))
	for i, e := range gdt {
		binary.LittleEndian.PutUint64(buf[8*i:], e)
	}
	if err := mem.WriteAt(buf, GDTAddr); err != nil {
		return kvm.Sregs{}, err
	}
	page := make([]byte, 4096)
	binary.LittleEndian.PutUint64(page, PDPTAddr|3)
	if err := mem.WriteAt(page, PML4Addr); err != nil {
		return kvm.Sregs{}, err
	}
	clear(page)
	for i := 0; i < mapGiB; i++ {
		binary.LittleEndian.PutUint64(page[8*i:], uint64(PDAddr+4096*i)|3)
	}
	if err := mem.WriteAt(page, PDPTAddr); err != nil {
		return kvm.Sregs{}, err
	}
	for g := 0; g < mapGiB; g++ {
		clear(page)
		for i := 0; i < 512; i++ {
			addr := uint64(g)<<30 | uint64(i)<<21
			binary.LittleEndian.PutUint64(page[8*i:], addr|0x83) // P, RW, PS
		}
		if err := mem.WriteAt(page, uint64(PDAddr+4096*g)); err != nil {
			return kvm.Sregs{}, err
		}
	}
	var s kvm.Sregs
	s.GDT = kvm.DTable{Base: GDTAddr, Limit: uint16(8*len(gdt) - 1)}
	s.CS = segFromGDT(CodeSelector, gdt[1])
	data := segFromGDT(DataSelector, gdt[2])
	s.DS, s.ES, s.FS, s.GS, s.SS = data, data, data, data, data
	s.TR = segFromGDT(TSSSelector, gdt[3])
	s.LDT = kvm.Segment{Type: 2, Present: 1, Unusable: 1}
	s.CR3 = PML4Addr
	s.CR4 = 1 << 5                            // PAE
	s.CR0 = 1<<0 | 1<<1 | 1<<4 | 1<<5 | 1<<31 // PE, MP, ET, NE, PG
	s.EFER = 1<<8 | 1<<10                     // LME, LMA
	return s, nil
}

// SetupLongMode loads tables (from WriteLongModeTables) into cpu, keeping
// its APIC base and other kernel-owned fields, and starts it at rip.
func SetupLongMode(cpu *kvm.VCPU, tables kvm.Sregs, rip uint64, regs kvm.Regs) error {
	s, err := cpu.GetSregs()
	if err != nil {
		return err
	}
	s.CS, s.DS, s.ES, s.FS, s.GS, s.SS = tables.CS, tables.DS, tables.ES, tables.FS, tables.GS, tables.SS
	s.TR, s.LDT, s.GDT, s.IDT = tables.TR, tables.LDT, tables.GDT, tables.IDT
	s.CR0, s.CR3, s.CR4, s.EFER = tables.CR0, tables.CR3, tables.CR4, tables.EFER
	if err := cpu.SetSregs(s); err != nil {
		return err
	}
	regs.RIP = rip
	regs.RFLAGS = 2
	if regs.RSP == 0 {
		regs.RSP = 0x7000
	}
	return cpu.SetRegs(regs)
}
