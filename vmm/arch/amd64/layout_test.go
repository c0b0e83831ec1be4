package amd64

import (
	"reflect"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

func TestMemoryRanges(t *testing.T) {
	tests := []struct {
		name    string
		size    uint64
		want    []guestmem.Range
		wantErr bool
	}{
		{"256MiB", 256 * MiB, []guestmem.Range{{GPA: 0, Size: 256 * MiB}}, false},
		{"3GiB", 3 * GiB, []guestmem.Range{{GPA: 0, Size: 3 * GiB}}, false},
		{"3GiB+2MiB", 3*GiB + 2*MiB, []guestmem.Range{{GPA: 0, Size: 3 * GiB}, {GPA: 4 * GiB, Size: 2 * MiB}}, false},
		{"4GiB", 4 * GiB, []guestmem.Range{{GPA: 0, Size: 3 * GiB}, {GPA: 4 * GiB, Size: 1 * GiB}}, false},
		{"5GiB", 5 * GiB, []guestmem.Range{{GPA: 0, Size: 3 * GiB}, {GPA: 4 * GiB, Size: 2 * GiB}}, false},
		{"512GiB", 512 * GiB, []guestmem.Range{{GPA: 0, Size: 3 * GiB}, {GPA: 4 * GiB, Size: 509 * GiB}}, false},
		{"too small", 254 * MiB, nil, true},
		{"zero", 0, nil, true},
		{"too big", 512*GiB + 2*MiB, nil, true},
		{"unaligned 4KiB", 256*MiB + 4*KiB, nil, true},
		{"unaligned 1MiB", 257 * MiB, nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := MemoryRanges(tt.size)
			if (err != nil) != tt.wantErr {
				t.Fatalf("MemoryRanges(%#x) error = %v, wantErr %v", tt.size, err, tt.wantErr)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("MemoryRanges(%#x) = %+v, want %+v", tt.size, got, tt.want)
			}
			var total uint64
			for _, r := range got {
				total += r.Size
				if r.GPA < MMIOHoleEnd && r.GPA+r.Size > MMIOHoleStart {
					t.Errorf("range %+v overlaps the MMIO hole", r)
				}
			}
			if !tt.wantErr && total != tt.size {
				t.Errorf("total %#x, want %#x", total, tt.size)
			}
		})
	}
}

func TestLayoutInvariants(t *testing.T) {
	// Boot structures must not overlap each other.
	type span struct {
		name       string
		start, end uint64
	}
	spans := []span{
		{"gdt", GDTAddr, GDTAddr + 8*bootGDTEntries},
		{"idt", IDTAddr, IDTAddr + 8},
		{"pvh start info", PVHStartInfoAddr, PVHStartInfoAddr + PVHStartInfoSize},
		{"pvh modlist", PVHModlistAddr, PVHModlistAddr + PVHModlistEntrySize},
		{"zero page", ZeroPageAddr, ZeroPageAddr + ZeroPageSize},
		{"page tables", PML4Addr, PageTablesEnd},
		{"cmdline", CmdlineAddr, CmdlineAddr + CmdlineMaxSize},
		{"mptable", MPTableAddr, MPTableEnd},
		{"acpi", RSDPAddr, ACPITablesEnd},
	}
	for i, a := range spans {
		for _, b := range spans[i+1:] {
			if a.start < b.end && b.start < a.end {
				t.Errorf("%s [%#x,%#x) overlaps %s [%#x,%#x)", a.name, a.start, a.end, b.name, b.start, b.end)
			}
		}
		if a.end > HimemStart {
			t.Errorf("%s ends above 1 MiB", a.name)
		}
	}
	if BootStackAddr <= ZeroPageAddr+ZeroPageSize || BootStackAddr >= PML4Addr {
		t.Errorf("boot stack %#x not between zero page and page tables", BootStackAddr)
	}
	if PVHMemmapAddr+PVHMemmapMaxEntries*PVHMemmapEntrySize > ZeroPageAddr+ZeroPageSize {
		t.Errorf("PVH memmap exceeds its page")
	}
	if VirtioMMIOBase < MMIOHoleStart || VirtioMMIOEnd > IOAPICAddr || VirtioMMIOMaxWindows < 16 {
		t.Errorf("virtio-mmio region [%#x,%#x) misplaced", VirtioMMIOBase, VirtioMMIOEnd)
	}
	if KVMTSSAddr+KVMTSSSize > MMIOHoleEnd || KVMIdentityMapAddr < LAPICAddr {
		t.Errorf("KVM TSS/identity map misplaced")
	}
	if LastDeviceGSI-FirstDeviceGSI+1 != 19 {
		t.Errorf("device GSIs %d..%d", FirstDeviceGSI, LastDeviceGSI)
	}
}

func TestVirtioMMIOWindow(t *testing.T) {
	tests := []struct {
		i       int
		want    uint64
		wantErr bool
	}{
		{0, 0xd0000000, false},
		{1, 0xd0001000, false},
		{15, 0xd000f000, false},
		{VirtioMMIOMaxWindows - 1, 0xd0000000 + (VirtioMMIOMaxWindows-1)*0x1000, false},
		{VirtioMMIOMaxWindows, 0, true},
		{-1, 0, true},
	}
	for _, tt := range tests {
		got, err := VirtioMMIOWindow(tt.i)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("VirtioMMIOWindow(%d) = %#x, %v; want %#x, err %v", tt.i, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestE820(t *testing.T) {
	ram := func(a, s uint64) E820Entry { return E820Entry{Addr: a, Size: s, Type: E820RAM} }
	res := E820Entry{Addr: 0x9fc00, Size: 0x100000 - 0x9fc00, Type: E820Reserved}
	tests := []struct {
		name    string
		size    uint64
		want    []E820Entry
		wantErr bool
	}{
		{"256MiB", 256 * MiB, []E820Entry{ram(0, 0x9fc00), res, ram(MiB, 255*MiB)}, false},
		{"3GiB", 3 * GiB, []E820Entry{ram(0, 0x9fc00), res, ram(MiB, 3*GiB-MiB)}, false},
		{"5GiB", 5 * GiB, []E820Entry{ram(0, 0x9fc00), res, ram(MiB, 3*GiB-MiB), ram(4*GiB, 2*GiB)}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs, err := MemoryRanges(tt.size)
			if err != nil {
				t.Fatal(err)
			}
			got, err := E820(rs)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("E820 = %+v\nwant %+v", got, tt.want)
			}
			dec, err := DecodeE820(EncodeE820(got))
			if err != nil || !reflect.DeepEqual(dec, got) {
				t.Fatalf("round trip = %+v, %v", dec, err)
			}
		})
	}
	bad := [][]guestmem.Range{
		{{GPA: 0, Size: 512 * KiB}},
		{{GPA: 0x1000, Size: 16 * MiB}},
		{{GPA: 0, Size: 0}},
		{{GPA: ^uint64(0) - 10, Size: 4096}},
	}
	for _, rs := range bad {
		if _, err := E820(rs); err == nil {
			t.Errorf("E820(%+v) accepted", rs)
		}
	}
}

func TestEncodeE820Bytes(t *testing.T) {
	b := EncodeE820([]E820Entry{{Addr: 0x0102030405060708, Size: 0x1112131415161718, Type: 2}})
	want := []byte{8, 7, 6, 5, 4, 3, 2, 1, 0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11, 2, 0, 0, 0}
	if !reflect.DeepEqual(b, want) {
		t.Fatalf("EncodeE820 = % x, want % x", b, want)
	}
	if _, err := DecodeE820(b[:19]); err == nil {
		t.Fatal("DecodeE820 accepted 19 bytes")
	}
}

func TestDeviceMemoryStart(t *testing.T) {
	for _, tt := range []struct {
		mem, want uint64
	}{
		{256 * MiB, 4 * GiB},
		{3 * GiB, 4 * GiB},
		{3*GiB + 2*MiB, 5 * GiB},
		{4 * GiB, 5 * GiB},
		{MaxMemorySize, 513 * GiB},
	} {
		if got := DeviceMemoryStart(tt.mem); got != tt.want {
			t.Errorf("DeviceMemoryStart(%#x) = %#x, want %#x", tt.mem, got, tt.want)
		}
		ranges, err := MemoryRanges(tt.mem)
		if err != nil {
			t.Fatal(err)
		}
		last := ranges[len(ranges)-1]
		if end := last.GPA + last.Size; end > DeviceMemoryStart(tt.mem) {
			t.Errorf("memory %#x: RAM ends at %#x, after device memory", tt.mem, end)
		}
	}
}
