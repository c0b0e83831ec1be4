package amd64

import (
	"encoding/binary"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

func TestBootMSRs(t *testing.T) {
	want := map[uint32]uint64{
		0x174: 0, 0x175: 0, 0x176: 0, 0xc0000081: 0, 0xc0000083: 0, 0xc0000102: 0,
		0xc0000084: 0, 0xc0000082: 0, 0x10: 0, 0x1a0: 1, 0x2ff: 0x806,
	}
	got := BootMSRs()
	if len(got) != len(want) {
		t.Fatalf("%d MSRs, want %d", len(got), len(want))
	}
	for _, m := range got {
		v, ok := want[m.Index]
		if !ok || v != m.Data {
			t.Errorf("MSR %#x = %#x (expected %v, %#x)", m.Index, m.Data, ok, v)
		}
		delete(want, m.Index)
	}
	if len(want) != 0 {
		t.Errorf("missing MSRs %v", want)
	}
}

func TestFPUBoot(t *testing.T) {
	f := FPUBoot()
	if f.FCW != 0x37f || f.MXCSR != 0x1f80 || f.FSW != 0 {
		t.Errorf("FPUBoot = fcw %#x mxcsr %#x", f.FCW, f.MXCSR)
	}
}

func TestSetLINT(t *testing.T) {
	tests := []struct {
		lvt0, lvt1         uint32
		wantLVT0, wantLVT1 uint32
	}{
		{0x00010000, 0x00010000, 0x00010700, 0x00010400},
		{0xffffffff, 0xffffffff, 0xfffff8ff | 7<<8, 0xfffff8ff | 4<<8},
		{0, 0, 0x700, 0x400},
		{0x000000ef, 0x00000200, 0x000007ef, 0x00000400},
	}
	for _, tt := range tests {
		var s kvm.LAPICState
		for i := range s.Regs {
			s.Regs[i] = byte(i)
		}
		binary.LittleEndian.PutUint32(s.Regs[0x350:], tt.lvt0)
		binary.LittleEndian.PutUint32(s.Regs[0x360:], tt.lvt1)
		before := s
		SetLINT(&s)
		if got := binary.LittleEndian.Uint32(s.Regs[0x350:]); got != tt.wantLVT0 {
			t.Errorf("LVT0 %#x -> %#x, want %#x", tt.lvt0, got, tt.wantLVT0)
		}
		if got := binary.LittleEndian.Uint32(s.Regs[0x360:]); got != tt.wantLVT1 {
			t.Errorf("LVT1 %#x -> %#x, want %#x", tt.lvt1, got, tt.wantLVT1)
		}
		for i := range s.Regs {
			if (i < 0x350 || i >= 0x354) && (i < 0x360 || i >= 0x364) && s.Regs[i] != before.Regs[i] {
				t.Fatalf("byte %#x changed", i)
			}
		}
	}
}
