package kvm_test

import (
	"encoding/binary"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm/kvmtest"
)

func TestFastMMIOAdd(t *testing.T) {
	var a, b uint32
	var f kvm.FastMMIO
	if err := f.Add(kvm.FastReg{Addr: 0x60, Value: &a, Or: &b}, kvm.FastReg{Addr: 0x60, Write: true, Value: &a}); err != nil {
		t.Fatal(err)
	}
	many := make([]kvm.FastReg, 127)
	for i := range many {
		many[i] = kvm.FastReg{Addr: 0x1000 + uint64(i)*4, Value: &a}
	}
	for _, tc := range []struct {
		name string
		regs []kvm.FastReg
		want string
	}{
		{"no value word", []kvm.FastReg{{Addr: 0x70}}, "no value word"},
		{"same address and direction", []kvm.FastReg{{Addr: 0x60, Value: &b}}, "already served"},
		{"repeated in one call", []kvm.FastReg{{Addr: 0x80, Value: &b}, {Addr: 0x80, Value: &a}}, "already served"},
		{"table full", many, "at most 128"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := f.Add(tc.regs...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Add: %v, want an error with %q", err, tc.want)
			}
			if f.Len() != 2 {
				t.Fatalf("a failed Add changed the table: %d registers", f.Len())
			}
		})
	}
	f.Remove(0x60)
	if f.Len() != 0 {
		t.Fatalf("Remove left %d registers", f.Len())
	}
}

// TestFastMMIO runs a payload that reads a status register, acknowledges
// a bit through a write-one-to-clear register, reads the status again and
// then reads an address no register covers. With the registers served
// the first three never reach Go code; removed, all four do.
func TestFastMMIO(t *testing.T) {
	for _, tc := range []struct {
		name   string
		remove bool
	}{
		{"served", false},
		{"removed", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			vm := kvmtest.NewVM(t, 1<<16, false) // RAM ends at 0x10000; MMIO above
			vm.Load(t, 0x1000, []byte{
				0xb8, 0x00, 0x10, // mov ax, 0x1000
				0x8e, 0xd8, // mov ds, ax
				0xba, 0x10, 0x00, // mov dx, 0x10
				0x66, 0xa1, 0x60, 0x00, // mov eax, [0x60]      -> status 0x10060
				0x66, 0xef, // out dx, eax
				0x66, 0xc7, 0x06, 0x64, 0x00, 0x01, 0x00, 0x00, 0x00, // mov dword [0x64], 1 -> ack 0x10064
				0x66, 0xa1, 0x60, 0x00, // mov eax, [0x60]
				0x66, 0xef, // out dx, eax
				0x66, 0xa1, 0x04, 0x00, // mov eax, [4]         -> 0x10004, not served
				0x66, 0xef, // out dx, eax
				0xf4, // hlt
			})
			cpu := newCPU(t, vm, 0)
			if err := kvmtest.SetupRealMode(cpu, 0x1000, kvm.Regs{}); err != nil {
				t.Fatal(err)
			}
			status, latched := uint32(0x3), uint32(0x4)
			var f kvm.FastMMIO
			if err := f.Add(kvm.FastReg{Addr: 0x10060, Value: &status, Or: &latched},
				kvm.FastReg{Addr: 0x10064, Write: true, Value: &status}); err != nil {
				t.Fatal(err)
			}
			if tc.remove {
				f.Remove(0x10060, 0x10064)
			}
			cpu.ServeFast(&f)
			var reads []uint64
			ex := exits{mmioRead: func(addr uint64, data []byte) {
				reads = append(reads, addr)
				binary.LittleEndian.PutUint32(data, 0x11)
			}}
			runToHLT(t, cpu, &ex, time.Second)

			var got []uint32
			for i := 0; i+4 <= len(ex.out); i += 4 {
				got = append(got, binary.LittleEndian.Uint32(ex.out[i:]))
			}
			served := kvm.ServesFastMMIO && !tc.remove
			want, wantReads, wantServed := []uint32{0x7, 0x6, 0x11}, []uint64{0x10004}, uint64(3)
			if !served {
				want, wantReads, wantServed = []uint32{0x11, 0x11, 0x11}, []uint64{0x10060, 0x10060, 0x10004}, 0
			}
			if !slices.Equal(got, want) {
				t.Errorf("payload read %#x, want %#x", got, want)
			}
			if !slices.Equal(reads, wantReads) {
				t.Errorf("reads that reached Go %#x, want %#x", reads, wantReads)
			}
			if n := cpu.FastServed(); n != wantServed {
				t.Errorf("FastServed %d, want %d", n, wantServed)
			}
			if w, ok := ex.mmioW[0x10064]; ok == served {
				t.Errorf("ack write reached Go: %v (%x), want %v", ok, w, !served)
			}
			if served && status != 0x2 {
				t.Errorf("status after ack %#x, want 0x2", status)
			}
		})
	}
}
