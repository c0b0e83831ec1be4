package amd64

import (
	"encoding/binary"
	"errors"
	"reflect"
	"testing"
)

// fakeSetup returns the first 1 KiB of a bzImage-like image with a setup
// header of protocol version.
func fakeSetup(version uint16) []byte {
	b := make([]byte, 1024)
	le := binary.LittleEndian
	b[offSetupSects] = 3
	le.PutUint16(b[offBootFlag:], 0xaa55)
	b[offJump] = 0xeb
	b[offJump+1] = 0x6a // header ends at 0x26c
	le.PutUint32(b[offHeader:], 0x53726448)
	le.PutUint16(b[offVersion:], version)
	b[offLoadFlags] = LoadFlagLoadedHigh
	le.PutUint32(b[offCode32Start:], 0x100000)
	le.PutUint32(b[offInitrdAddrMax:], 0x7fffffff)
	le.PutUint32(b[offKernelAlignment:], 0x200000)
	b[offRelocatable] = 1
	le.PutUint16(b[offXLoadFlags:], XLoadFlagKernel64|XLoadFlagAbove4G)
	le.PutUint32(b[offCmdlineSize:], 2047)
	le.PutUint64(b[offPrefAddress:], 0x1000000)
	le.PutUint32(b[offInitSize:], 0x2000000)
	return b
}

func TestParseSetupHeader(t *testing.T) {
	h, err := ParseSetupHeader(fakeSetup(0x020f))
	if err != nil {
		t.Fatal(err)
	}
	want := SetupHeader{
		SetupSects: 3, Version: 0x020f, LoadFlags: 1, Code32Start: 0x100000,
		InitrdAddrMax: 0x7fffffff, KernelAlignment: 0x200000, RelocatableKernel: true,
		XLoadFlags: 3, CmdlineSize: 2047, PrefAddress: 0x1000000, InitSize: 0x2000000,
	}
	if len(h.Raw) != 0x26c-0x1f1 {
		t.Errorf("Raw is %d bytes, want %d", len(h.Raw), 0x26c-0x1f1)
	}
	h.Raw = nil
	if !reflect.DeepEqual(*h, want) {
		t.Errorf("got %+v\nwant %+v", *h, want)
	}
	if got := h.SetupOffset(); got != 4*512 {
		t.Errorf("SetupOffset = %d, want 2048", got)
	}
	h.SetupSects = 0
	if got := h.SetupOffset(); got != 5*512 {
		t.Errorf("SetupOffset(0 sects) = %d, want 2560", got)
	}

	bad := map[string]func([]byte) []byte{
		"truncated":     func(b []byte) []byte { return b[:0x200] },
		"short header":  func(b []byte) []byte { return b[:0x250] },
		"no boot flag":  func(b []byte) []byte { b[offBootFlag] = 0; return b },
		"no HdrS":       func(b []byte) []byte { b[offHeader] = 'X'; return b },
		"header length": func(b []byte) []byte { b[offJump+1] = 0x10; return b },
	}
	for name, mut := range bad {
		if _, err := ParseSetupHeader(mut(fakeSetup(0x020f))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := ParseSetupHeader(make([]byte, 1024)); !errors.Is(err, ErrNotBzImage) {
		t.Errorf("zero image: err = %v, want ErrNotBzImage", err)
	}
	// initrd_addr_max 0 means the protocol default.
	b := fakeSetup(0x020c)
	binary.LittleEndian.PutUint32(b[offInitrdAddrMax:], 0)
	if h, err := ParseSetupHeader(b); err != nil || h.InitrdAddrMax != 0x37ffffff {
		t.Errorf("default initrd_addr_max = %#x, %v", h.InitrdAddrMax, err)
	}
}

func TestBuildZeroPage(t *testing.T) {
	e820 := []E820Entry{{0, 0x9fc00, E820RAM}, {0x9fc00, 0x60400, E820Reserved}, {MiB, 255 * MiB, E820RAM}}
	h, err := ParseSetupHeader(fakeSetup(0x020f))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		p    BootParams
		want ZeroPage
	}{
		{
			name: "bzImage",
			p: BootParams{Header: h.Raw, CmdlineAddr: CmdlineAddr, CmdlineLen: 20,
				InitrdAddr: 0xfe00000, InitrdSize: 0x123456, RSDPAddr: RSDPAddr, E820: e820},
			want: ZeroPage{BootFlag: 0xaa55, Header: 0x53726448, Version: 0x020f, VidMode: 0xffff,
				TypeOfLoader: 0xff, LoadFlags: LoadFlagLoadedHigh | LoadFlagCanUseHeap, Code32Start: HimemStart,
				CmdlinePtr: CmdlineAddr, CmdlineSize: 2047, RamdiskImage: 0xfe00000, RamdiskSize: 0x123456,
				KernelAlignment: 0x200000, XLoadFlags: 3, InitSize: 0x2000000, ACPIRSDPAddr: RSDPAddr, E820: e820},
		},
		{
			name: "elf, initrd above 4GiB",
			p: BootParams{CmdlineAddr: CmdlineAddr, CmdlineLen: 7,
				InitrdAddr: 0x1_2000_0000, InitrdSize: 0x1_0000_1000, E820: e820},
			want: ZeroPage{BootFlag: 0xaa55, Header: 0x53726448, VidMode: 0xffff, TypeOfLoader: 0xff,
				LoadFlags: LoadFlagLoadedHigh, CmdlinePtr: CmdlineAddr, CmdlineSize: 7,
				RamdiskImage: 0x1_2000_0000, RamdiskSize: 0x1_0000_1000, KernelAlignment: 16 * MiB, E820: e820},
		},
		{
			name: "no initrd",
			p:    BootParams{CmdlineAddr: 0x1_0002_0000, E820: e820[:1]},
			want: ZeroPage{BootFlag: 0xaa55, Header: 0x53726448, VidMode: 0xffff, TypeOfLoader: 0xff,
				LoadFlags: LoadFlagLoadedHigh, CmdlinePtr: 0x1_0002_0000, KernelAlignment: 16 * MiB, E820: e820[:1]},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			z, err := tt.p.Build()
			if err != nil {
				t.Fatal(err)
			}
			if len(z) != 4096 {
				t.Fatalf("zero page is %d bytes", len(z))
			}
			got, err := ParseZeroPage(z)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("got  %+v\nwant %+v", *got, tt.want)
			}
			// Spot-check raw offsets independently of ParseZeroPage.
			le := binary.LittleEndian
			if z[0x1e8] != uint8(len(tt.p.E820)) || le.Uint16(z[0x1fa:]) != 0xffff || z[0x210] != 0xff ||
				le.Uint64(z[0x070:]) != tt.p.RSDPAddr || le.Uint32(z[0x228:]) != uint32(tt.p.CmdlineAddr) ||
				le.Uint64(z[0x2d0+20*(len(tt.p.E820)-1):]) != tt.p.E820[len(tt.p.E820)-1].Addr ||
				z[0x1ef] != 0 {
				t.Fatalf("raw offsets wrong")
			}
		})
	}
	if _, err := (&BootParams{}).Build(); err == nil {
		t.Error("Build with no e820 accepted")
	}
	if _, err := (&BootParams{E820: make([]E820Entry, 129)}).Build(); err == nil {
		t.Error("Build with 129 e820 entries accepted")
	}
	if _, err := (&BootParams{E820: e820, Header: make([]byte, 0x200)}).Build(); err == nil {
		t.Error("Build with oversized header accepted")
	}
	if _, err := ParseZeroPage(make([]byte, 100)); err == nil {
		t.Error("ParseZeroPage of 100 bytes accepted")
	}
}

func TestPVHStartInfo(t *testing.T) {
	e820 := []E820Entry{{0, 0x9fc00, E820RAM}, {MiB, 255 * MiB, E820RAM}}
	in := PVHStartInfo{CmdlineAddr: CmdlineAddr, RSDPAddr: RSDPAddr, InitrdAddr: 0xf000000, InitrdSize: 0x5000, Memmap: e820}
	b, err := in.Encode()
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	si := b.StartInfo
	if le.Uint32(si[0:]) != 0x336ec578 || le.Uint32(si[4:]) != 1 || le.Uint32(si[12:]) != 1 ||
		le.Uint64(si[16:]) != 0x6040 || le.Uint64(si[24:]) != 0x20000 || le.Uint64(si[32:]) != 0xe0000 ||
		le.Uint64(si[40:]) != 0x7000 || le.Uint32(si[48:]) != 2 {
		t.Fatalf("start info bytes wrong: % x", si)
	}
	if len(b.Memmap) != 48 || le.Uint64(b.Memmap[24:]) != MiB || le.Uint32(b.Memmap[40:]) != 1 {
		t.Fatalf("memmap bytes wrong: % x", b.Memmap)
	}
	got, err := ParsePVHStartInfo(b.StartInfo, b.Modlist, b.Memmap)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(*got, in) {
		t.Fatalf("round trip %+v, want %+v", *got, in)
	}
	noInitrd := PVHStartInfo{Memmap: e820}
	b, err = noInitrd.Encode()
	if err != nil || len(b.Modlist) != 0 || le.Uint32(b.StartInfo[12:]) != 0 || le.Uint64(b.StartInfo[16:]) != 0 {
		t.Fatalf("no-initrd start info wrong: %v", err)
	}
	if _, err := (&PVHStartInfo{}).Encode(); err == nil {
		t.Error("empty memmap accepted")
	}
}

func FuzzParseSetupHeader(f *testing.F) {
	f.Add(fakeSetup(0x020f))
	f.Add(fakeSetup(0x0200)[:0x280])
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := ParseSetupHeader(b)
		if err != nil {
			return
		}
		if len(h.Raw) < setupHeaderMinEnd-offSetupHeader || len(h.Raw) > setupHeaderMaxEnd-offSetupHeader {
			t.Fatalf("Raw length %d", len(h.Raw))
		}
		p := BootParams{Header: h.Raw, E820: []E820Entry{{0, MiB, E820RAM}}}
		z, err := p.Build()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := ParseZeroPage(z); err != nil {
			t.Fatal(err)
		}
	})
}
