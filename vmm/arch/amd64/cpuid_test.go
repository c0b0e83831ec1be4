package amd64

import (
	"reflect"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

const sigIdx = kvm.CPUIDFlagSignificantIndex

// intelSupported is a synthetic KVM_GET_SUPPORTED_CPUID result from an
// Intel host: vendor, leaf 1, two caches in leaf 4, PMU, 0xB subleaf 0
// only (as recent KVM returns), 0x1F subleafs 0 and 1, the KVM signature.
func intelSupported() []kvm.CPUIDEntry {
	return []kvm.CPUIDEntry{
		{Function: 0, EAX: 0x1f, EBX: 0x756e6547, EDX: 0x49656e69, ECX: 0x6c65746e},
		{Function: 1, EAX: 0x806f8, EBX: 0xff0100aa, ECX: 0x7ffafbff | 1<<15, EDX: 0x0fabfbff},
		{Function: 4, Index: 0, Flags: sigIdx, EAX: 0xfc004121, EBX: 0x2c0003f},
		{Function: 4, Index: 1, Flags: sigIdx, EAX: 0xfc01c163, EBX: 0x4c0003f},
		{Function: 4, Index: 2, Flags: sigIdx},
		{Function: 0xa, EAX: 0x8300805, EBX: 0xff, EDX: 0x603},
		{Function: 0xb, Index: 0, Flags: sigIdx, EAX: 1, EBX: 2, ECX: 0x100, EDX: 0x37},
		{Function: 0x1f, Index: 0, Flags: sigIdx, EAX: 1, EBX: 2, ECX: 0x100, EDX: 0x37},
		{Function: 0x1f, Index: 1, Flags: sigIdx, EAX: 7, EBX: 96, ECX: 0x201, EDX: 0x37},
		{Function: 0x40000000, EAX: 0x40000001, EBX: 0x4b4d564b, ECX: 0x564b4d56, EDX: 0x4d},
		{Function: 0x80000008, EAX: 0x3030, ECX: 0xff},
	}
}

func amdSupported() []kvm.CPUIDEntry {
	return []kvm.CPUIDEntry{
		{Function: 0, EAX: 0x10, EBX: 0x68747541, EDX: 0x69746e65, ECX: 0x444d4163},
		{Function: 1, EAX: 0xa20f10, EBX: 0x00020800, ECX: 0x7ed8320b, EDX: 0x178bfbff},
		{Function: 4, Index: 0, Flags: sigIdx, EAX: 0x121},
		{Function: 0xb, Index: 0, Flags: sigIdx, EAX: 1, EBX: 2, ECX: 0x100},
		{Function: 0xb, Index: 1, Flags: sigIdx, EAX: 7, EBX: 16, ECX: 0x201},
		{Function: 0x40000000, EAX: 0x40000001, EBX: 0x4b4d564b, ECX: 0x564b4d56, EDX: 0x4d},
		{Function: 0x80000008, EAX: 0x3030, ECX: 0x300f | 1<<16},
		{Function: 0x8000001e, EAX: 7, EBX: 0x0103, ECX: 0x0105, EDX: 9},
	}
}

func find(t *testing.T, es []kvm.CPUIDEntry, fn, idx uint32) kvm.CPUIDEntry {
	t.Helper()
	for _, e := range es {
		if e.Function == fn && e.Index == idx {
			return e
		}
	}
	t.Fatalf("leaf %#x.%d missing", fn, idx)
	return kvm.CPUIDEntry{}
}

func TestShapeCPUIDIntel(t *testing.T) {
	tests := []struct {
		count, index int
		logical      uint32 // leaf 1 EBX[23:16]
		shift        uint32 // 0xB.1 EAX
		htt          bool
	}{
		{1, 0, 1, 0, false},
		{2, 1, 2, 1, true},
		{4, 3, 4, 2, true},
		{3, 2, 4, 2, true},
		{254, 253, 255, 8, true},
		{254, 0, 255, 8, true},
	}
	for _, tt := range tests {
		in := intelSupported()
		orig := intelSupported()
		out := ShapeCPUID(in, tt.index, tt.count)
		if !reflect.DeepEqual(in, orig) {
			t.Fatalf("count %d: input modified", tt.count)
		}
		l1 := find(t, out, 1, 0)
		if got := l1.EBX >> 24; got != uint32(tt.index) {
			t.Errorf("count %d: APIC id %d, want %d", tt.count, got, tt.index)
		}
		if got := (l1.EBX >> 16) & 0xff; got != tt.logical {
			t.Errorf("count %d: logical %d, want %d", tt.count, got, tt.logical)
		}
		if got := (l1.EBX >> 8) & 0xff; got != 8 || l1.EBX&0xff != 0xaa {
			t.Errorf("count %d: CLFLUSH/brand EBX %#x", tt.count, l1.EBX)
		}
		if l1.ECX&(1<<31) == 0 || l1.ECX&(1<<24) == 0 || l1.ECX&(1<<15) != 0 {
			t.Errorf("count %d: leaf 1 ECX %#x", tt.count, l1.ECX)
		}
		if (l1.EDX&(1<<28) != 0) != tt.htt {
			t.Errorf("count %d: HTT %v, want %v", tt.count, l1.EDX&(1<<28) != 0, tt.htt)
		}
		if l1.EAX != 0x806f8 {
			t.Errorf("leaf 1 EAX changed")
		}
		for _, fn := range []uint32{0xb, 0x1f} {
			s0, s1 := find(t, out, fn, 0), find(t, out, fn, 1)
			if s0 != (kvm.CPUIDEntry{Function: fn, Index: 0, Flags: sigIdx, EAX: 0, EBX: 1, ECX: 0x100, EDX: uint32(tt.index)}) {
				t.Errorf("count %d: %#x.0 = %+v", tt.count, fn, s0)
			}
			if s1 != (kvm.CPUIDEntry{Function: fn, Index: 1, Flags: sigIdx, EAX: tt.shift, EBX: uint32(tt.count), ECX: 0x201, EDX: uint32(tt.index)}) {
				t.Errorf("count %d: %#x.1 = %+v", tt.count, fn, s1)
			}
			// Every APIC id < count fits below the package shift.
			if uint32(tt.count-1)>>tt.shift != 0 {
				t.Errorf("count %d: shift %d too small", tt.count, tt.shift)
			}
		}
		c0, c1 := find(t, out, 4, 0), find(t, out, 4, 1)
		cores := min(uint32(1)<<tt.shift, 64) - 1
		if c0.EAX>>26 != cores || (c0.EAX>>14)&0xfff != 0 || c0.EAX&0x3fff != 0x0121 {
			t.Errorf("count %d: leaf 4.0 EAX %#x", tt.count, c0.EAX)
		}
		if c1.EAX>>26 != cores || (c1.EAX>>14)&0xfff != min(uint32(1)<<tt.shift, 4096)-1 || c1.EAX&0x3fff != 0x0163 {
			t.Errorf("count %d: leaf 4.1 (L3) EAX %#x", tt.count, c1.EAX)
		}
		if c2 := find(t, out, 4, 2); c2.EAX != 0 {
			t.Errorf("leaf 4.2 terminator changed: %+v", c2)
		}
		if pmu := find(t, out, 0xa, 0); pmu.EAX|pmu.EBX|pmu.ECX|pmu.EDX != 0 {
			t.Errorf("PMU leaf not zeroed: %+v", pmu)
		}
		if find(t, out, 0x40000000, 0) != orig[9] || find(t, out, 0, 0) != orig[0] {
			t.Errorf("KVM signature or vendor changed")
		}
		if find(t, out, 0x80000008, 0) != orig[10] {
			t.Errorf("0x80000008 changed on Intel")
		}
		if len(out) != len(in)+1 {
			t.Errorf("got %d entries, want %d (0xB.1 added)", len(out), len(in)+1)
		}
	}
}

func TestShapeCPUIDAMD(t *testing.T) {
	for _, tt := range []struct{ count, index int }{{1, 0}, {2, 1}, {4, 2}, {254, 100}} {
		in := amdSupported()
		out := ShapeCPUID(in, tt.index, tt.count)
		if len(out) != len(in) {
			t.Errorf("count %d: %d entries, want %d", tt.count, len(out), len(in))
		}
		shift := ceilLog2(uint32(tt.count))
		a8 := find(t, out, 0x80000008, 0)
		if a8.ECX&0xff != uint32(tt.count-1) || (a8.ECX>>12)&0xf != shift || a8.ECX&(1<<16) == 0 || a8.EAX != 0x3030 {
			t.Errorf("count %d: 0x80000008 ECX %#x", tt.count, a8.ECX)
		}
		e := find(t, out, 0x8000001e, 0)
		if e.EAX != uint32(tt.index) || e.EBX != uint32(tt.index) || e.ECX != 0 || e.EDX != 0 {
			t.Errorf("count %d: 0x8000001e %+v", tt.count, e)
		}
		if c := find(t, out, 4, 0); c.EAX != 0x121 {
			t.Errorf("leaf 4 changed on AMD: %#x", c.EAX)
		}
		if s1 := find(t, out, 0xb, 1); s1.EBX != uint32(tt.count) || s1.EDX != uint32(tt.index) || s1.EAX != shift {
			t.Errorf("count %d: 0xb.1 %+v", tt.count, s1)
		}
		if l1 := find(t, out, 1, 0); l1.EBX>>24 != uint32(tt.index) {
			t.Errorf("count %d: leaf 1 EBX %#x", tt.count, l1.EBX)
		}
	}
}

func TestShapeCPUIDEdgeCases(t *testing.T) {
	// No topology leaves: nothing is added.
	in := []kvm.CPUIDEntry{{Function: 1}}
	out := ShapeCPUID(in, 0, 4)
	if len(out) != 1 || out[0].EBX>>24 != 0 || (out[0].EBX>>16)&0xff != 4 {
		t.Errorf("minimal input: %+v", out)
	}
	// Out-of-range arguments are clamped, not trusted.
	out = ShapeCPUID(in, 300, 1000)
	if out[0].EBX>>24 != MaxVCPUs-1 {
		t.Errorf("clamped APIC id %d", out[0].EBX>>24)
	}
	out = ShapeCPUID(in, -1, 0)
	if out[0].EBX>>24 != 0 || out[0].EDX&(1<<28) != 0 {
		t.Errorf("clamped to one vCPU: %+v", out[0])
	}
	if got := ShapeCPUID(nil, 0, 1); len(got) != 0 {
		t.Errorf("nil input: %+v", got)
	}
	if CPUIDVendor(intelSupported()) != VendorIntel || CPUIDVendor(amdSupported()) != VendorAMD || CPUIDVendor(nil) != VendorOther {
		t.Error("CPUIDVendor")
	}
}

func TestCeilLog2(t *testing.T) {
	for n, want := range map[uint32]uint32{1: 0, 2: 1, 3: 2, 4: 2, 5: 3, 128: 7, 129: 8, 254: 8, 256: 8} {
		if got := ceilLog2(n); got != want {
			t.Errorf("ceilLog2(%d) = %d, want %d", n, got, want)
		}
	}
}
