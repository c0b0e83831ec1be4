package amd64

import (
	"encoding/binary"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

func testMem(t testing.TB, size int) *guestmem.Memory {
	t.Helper()
	m, err := guestmem.FromBytes([]uint64{0}, [][]byte{make([]byte, size)})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestGDTEntry(t *testing.T) {
	tests := []struct {
		flags       uint16
		base, limit uint32
		want        uint64
	}{
		{GDTCode64, 0, 0xfffff, 0x00af9b000000ffff},
		{GDTData, 0, 0xfffff, 0x00cf93000000ffff},
		{GDTTSS64, 0, 0xfffff, 0x008f8b000000ffff},
		{GDTCode32, 0, 0xfffff, 0x00cf9b000000ffff},
		{GDTTSS32, 0, 0x67, 0x00008b0000000067},
		{GDTData, 0x12345678, 0xabcde, 0x12ca93345678bcde},
	}
	for _, tt := range tests {
		if got := GDTEntry(tt.flags, tt.base, tt.limit); got != tt.want {
			t.Errorf("GDTEntry(%#x, %#x, %#x) = %#016x, want %#016x", tt.flags, tt.base, tt.limit, got, tt.want)
		}
	}
}

func TestSegmentFromGDT(t *testing.T) {
	tests := []struct {
		name  string
		entry uint64
		index uint16
		want  kvm.Segment
	}{
		{"code64", GDTEntry(GDTCode64, 0, 0xfffff), 1, kvm.Segment{Limit: 0xffffffff, Selector: 8, Type: 0xb, Present: 1, S: 1, L: 1, G: 1}},
		{"data", GDTEntry(GDTData, 0, 0xfffff), 2, kvm.Segment{Limit: 0xffffffff, Selector: 0x10, Type: 3, Present: 1, S: 1, DB: 1, G: 1}},
		{"tss64", GDTEntry(GDTTSS64, 0, 0xfffff), 3, kvm.Segment{Limit: 0xffffffff, Selector: 0x18, Type: 0xb, Present: 1, G: 1}},
		{"code32", GDTEntry(GDTCode32, 0, 0xfffff), 1, kvm.Segment{Limit: 0xffffffff, Selector: 8, Type: 0xb, Present: 1, S: 1, DB: 1, G: 1}},
		{"tss32 byte granular", GDTEntry(GDTTSS32, 0, 0x67), 3, kvm.Segment{Limit: 0x67, Selector: 0x18, Type: 0xb, Present: 1}},
		{"base and small G limit", GDTEntry(GDTData, 0x12345678, 0x1), 5, kvm.Segment{Base: 0x12345678, Limit: 0x1fff, Selector: 0x28, Type: 3, Present: 1, S: 1, DB: 1, G: 1}},
		{"null", 0, 0, kvm.Segment{Unusable: 1}},
		{"dpl3 avl", GDTEntry(0x10f3, 0, 0xffff), 4, kvm.Segment{Limit: 0xffff, Selector: 0x20, Type: 3, Present: 1, S: 1, DPL: 3, AVL: 1}},
	}
	for _, tt := range tests {
		if got := SegmentFromGDT(tt.entry, tt.index); got != tt.want {
			t.Errorf("%s: got %+v, want %+v", tt.name, got, tt.want)
		}
	}
}

func TestPageTables(t *testing.T) {
	mem := testMem(t, 1*MiB)
	if err := WritePageTables(mem); err != nil {
		t.Fatal(err)
	}
	read := func(gpa uint64) uint64 {
		b := make([]byte, 8)
		if err := mem.ReadAt(b, gpa); err != nil {
			t.Fatal(err)
		}
		return binary.LittleEndian.Uint64(b)
	}
	tests := []struct {
		name string
		gpa  uint64
		want uint64
	}{
		{"pml4[0]", 0x9000, 0xa003},
		{"pml4[1]", 0x9008, 0},
		{"pdpt[0]", 0xa000, 0xb003},
		{"pdpt[1]", 0xa008, 0xc003},
		{"pdpt[3]", 0xa018, 0xe003},
		{"pdpt[4]", 0xa020, 0},
		{"pd0[0]", 0xb000, 0x83},
		{"pd0[1]", 0xb008, 0x200083},
		{"pd0[511]", 0xbff8, 0x3fe00083},
		{"pd1[0]", 0xc000, 0x40000083},
		{"pd3[511]", 0xeff8, 0xffe00083},
	}
	for _, tt := range tests {
		if got := read(tt.gpa); got != tt.want {
			t.Errorf("%s at %#x = %#x, want %#x", tt.name, tt.gpa, got, tt.want)
		}
	}
	// Walk: every 2 MiB below 4 GiB translates to itself.
	for va := uint64(0); va < 4*GiB; va += 2 * MiB {
		pml4e := read(PML4Addr + 8*((va>>39)&0x1ff))
		pdpte := read(pml4e&^0xfff + 8*((va>>30)&0x1ff))
		pde := read(pdpte&^0xfff + 8*((va>>21)&0x1ff))
		if pde&0x81 != 0x81 || pde&^0x1fffff != va {
			t.Fatalf("va %#x maps to pde %#x", va, pde)
		}
	}
	if err := WritePageTables(testMem(t, 0xc000)); err == nil {
		t.Error("WritePageTables into too little memory succeeded")
	}
}

func TestLongModeSregs(t *testing.T) {
	mem := testMem(t, 1*MiB)
	base := kvm.Sregs{CR0: 0x60000010, APICBase: 0xfee00900, CR4: 0x40}
	s, err := LongModeSregs(base, mem)
	if err != nil {
		t.Fatal(err)
	}
	if s.CR0 != CR0PE|CR0ET|CR0NE|CR0PG {
		t.Errorf("CR0 = %#x", s.CR0)
	}
	if s.CR4 != 0x40|CR4PAE || s.CR3 != 0x9000 || s.EFER != EFERLME|EFERLMA || s.APICBase != 0xfee00900 {
		t.Errorf("CR4 %#x CR3 %#x EFER %#x APICBase %#x", s.CR4, s.CR3, s.EFER, s.APICBase)
	}
	if s.GDT.Base != 0x500 || s.GDT.Limit != 31 || s.IDT.Base != 0x520 || s.IDT.Limit != 7 {
		t.Errorf("GDT %+v IDT %+v", s.GDT, s.IDT)
	}
	if s.CS.L != 1 || s.CS.Selector != 8 || s.DS.Selector != 0x10 || s.SS != s.DS || s.ES != s.DS || s.TR.Selector != 0x18 || s.TR.Type != 0xb {
		t.Errorf("segments CS %+v DS %+v TR %+v", s.CS, s.DS, s.TR)
	}
	gdt := make([]byte, 32)
	if err := mem.ReadAt(gdt, 0x500); err != nil {
		t.Fatal(err)
	}
	if binary.LittleEndian.Uint64(gdt[8:]) != 0x00af9b000000ffff || binary.LittleEndian.Uint64(gdt[16:]) != 0x00cf93000000ffff {
		t.Errorf("GDT in memory % x", gdt)
	}
	pml4 := make([]byte, 8)
	_ = mem.ReadAt(pml4, PML4Addr)
	if binary.LittleEndian.Uint64(pml4) != 0xa003 {
		t.Errorf("page tables not written")
	}
	if _, err := LongModeSregs(base, testMem(t, 0x400)); err == nil {
		t.Error("LongModeSregs without room for the GDT succeeded")
	}
}

func TestPVHSregs(t *testing.T) {
	mem := testMem(t, 1*MiB)
	s, err := PVHSregs(kvm.Sregs{CR0: 0x60000010, CR4: 0x20, EFER: EFERLME}, mem)
	if err != nil {
		t.Fatal(err)
	}
	if s.CR0 != CR0PE|CR0ET || s.CR4 != 0 || s.EFER != 0 || s.CR3 != 0 {
		t.Errorf("CR0 %#x CR4 %#x EFER %#x CR3 %#x", s.CR0, s.CR4, s.EFER, s.CR3)
	}
	want := kvm.Segment{Limit: 0xffffffff, Selector: 8, Type: 0xb, Present: 1, S: 1, DB: 1, G: 1}
	if s.CS != want {
		t.Errorf("CS = %+v, want %+v", s.CS, want)
	}
	if s.DS.Limit != 0xffffffff || s.DS.DB != 1 || s.DS.Type != 3 || s.TR.Limit != 0x67 || s.TR.G != 0 || s.TR.Type != 0xb {
		t.Errorf("DS %+v TR %+v", s.DS, s.TR)
	}
	gdt := make([]byte, 32)
	_ = mem.ReadAt(gdt, 0x500)
	if binary.LittleEndian.Uint64(gdt[8:]) != 0x00cf9b000000ffff || binary.LittleEndian.Uint64(gdt[24:]) != 0x00008b0000000067 {
		t.Errorf("PVH GDT in memory % x", gdt)
	}
}

func TestRegs(t *testing.T) {
	r := LinuxRegs(0x1000200)
	if r != (kvm.Regs{RFLAGS: 2, RIP: 0x1000200, RSP: 0x8ff0, RBP: 0x8ff0, RSI: 0x7000}) {
		t.Errorf("LinuxRegs = %+v", r)
	}
	p := PVHRegs(0x1000abc)
	if p != (kvm.Regs{RFLAGS: 2, RIP: 0x1000abc, RBX: 0x6000}) {
		t.Errorf("PVHRegs = %+v", p)
	}
}
