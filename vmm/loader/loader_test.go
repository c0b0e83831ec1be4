package loader

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/arch/amd64"
	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

const (
	MiB     = 1 << 20
	testRAM = 64 * MiB
)

var le = binary.LittleEndian

// bzOpts are the knobs of a synthetic bzImage.
type bzOpts struct {
	version     uint16
	xloadflags  uint16
	loadflags   uint8
	setupSects  uint8
	initrdMax   uint32
	cmdlineSize uint32
	pref        uint64
	align       uint32
	reloc       bool
	initSize    uint32
	payload     []byte
}

func defaultBz() bzOpts {
	return bzOpts{
		version: 0x020f, xloadflags: 3, loadflags: 1, setupSects: 1, initrdMax: 0x7fffffff,
		cmdlineSize: 2047, pref: 16 * MiB, align: 2 * MiB, reloc: true, initSize: 8 * MiB,
		payload: bytes.Repeat([]byte{0xcc, 0x90, 0xf4}, 3000),
	}
}

// makeBzImage builds a minimal bzImage: a setup area of (setupSects+1)
// sectors with a valid header, then the payload.
func makeBzImage(o bzOpts) []byte {
	n := int(o.setupSects)
	if n == 0 {
		n = 4
	}
	b := make([]byte, (n+1)*512)
	b[0x1f1] = o.setupSects
	le.PutUint16(b[0x1fe:], 0xaa55)
	b[0x200], b[0x201] = 0xeb, 0x6a
	copy(b[0x202:], "HdrS")
	le.PutUint16(b[0x206:], o.version)
	b[0x211] = o.loadflags
	le.PutUint32(b[0x214:], 0x100000)
	le.PutUint32(b[0x22c:], o.initrdMax)
	le.PutUint32(b[0x230:], o.align)
	if o.reloc {
		b[0x234] = 1
	}
	le.PutUint16(b[0x236:], o.xloadflags)
	le.PutUint32(b[0x238:], o.cmdlineSize)
	le.PutUint64(b[0x258:], o.pref)
	le.PutUint32(b[0x260:], o.initSize)
	return append(b, o.payload...)
}

type elfSeg struct {
	paddr  uint64
	data   []byte
	memsz  uint64
	isNote bool
}

type elfOpts struct {
	class, data uint8
	machine     uint16
	entry       uint64
	segs        []elfSeg
}

func defaultELF() elfOpts {
	return elfOpts{
		class: 2, data: 1, machine: 62, entry: 16 * MiB,
		segs: []elfSeg{
			{paddr: 16 * MiB, data: bytes.Repeat([]byte{0xab}, 5000), memsz: 3 * 4096},
			{paddr: 20 * MiB, data: []byte("data segment"), memsz: 64},
		},
	}
}

// makeELF builds an ELF64 executable with one program header per segment.
func makeELF(o elfOpts) []byte {
	const phoff = 64
	dataOff := phoff + 56*len(o.segs)
	h := make([]byte, dataOff)
	copy(h, "\x7fELF")
	h[4], h[5], h[6] = o.class, o.data, 1
	le.PutUint16(h[16:], 2)
	le.PutUint16(h[18:], o.machine)
	le.PutUint32(h[20:], 1)
	le.PutUint64(h[24:], o.entry)
	le.PutUint64(h[32:], phoff)
	le.PutUint16(h[52:], 64)
	le.PutUint16(h[54:], 56)
	le.PutUint16(h[56:], uint16(len(o.segs)))
	var body []byte
	for i, s := range o.segs {
		p := h[phoff+56*i:]
		typ := uint32(1)
		if s.isNote {
			typ = 4
		}
		le.PutUint32(p[0:], typ)
		le.PutUint64(p[8:], uint64(dataOff+len(body)))
		le.PutUint64(p[16:], 0xffffffff80000000+s.paddr)
		le.PutUint64(p[24:], s.paddr)
		le.PutUint64(p[32:], uint64(len(s.data)))
		le.PutUint64(p[40:], max(s.memsz, uint64(len(s.data))))
		body = append(body, s.data...)
	}
	return append(h, body...)
}

// note encodes one ELF note.
func note(name string, typ uint32, desc []byte) []byte {
	var b []byte
	b = le.AppendUint32(b, uint32(len(name)+1))
	b = le.AppendUint32(b, uint32(len(desc)))
	b = le.AppendUint32(b, typ)
	b = append(b, name...)
	b = append(b, 0)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	b = append(b, desc...)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}

func newMem(t testing.TB, size int) *guestmem.Memory {
	t.Helper()
	buf := make([]byte, size)
	m, err := guestmem.FromBytes([]uint64{0}, [][]byte{buf})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readMem(t *testing.T, m *guestmem.Memory, gpa, n uint64) []byte {
	t.Helper()
	b := make([]byte, n)
	if err := m.ReadAt(b, gpa); err != nil {
		t.Fatal(err)
	}
	return b
}

func zeroPage(t *testing.T, m *guestmem.Memory) *amd64.ZeroPage {
	t.Helper()
	z, err := amd64.ParseZeroPage(readMem(t, m, amd64.ZeroPageAddr, amd64.ZeroPageSize))
	if err != nil {
		t.Fatal(err)
	}
	return z
}

func wantE820(size uint64) []amd64.E820Entry {
	return []amd64.E820Entry{
		{Addr: 0, Size: 0x9fc00, Type: 1},
		{Addr: 0x9fc00, Size: 0x60400, Type: 2},
		{Addr: MiB, Size: size - MiB, Type: 1},
	}
}

func TestLoadBzImage(t *testing.T) {
	initrd := bytes.Repeat([]byte("initrd!"), 700) // 4900 bytes
	tests := []struct {
		name       string
		mut        func(*bzOpts)
		initrd     []byte
		wantInitrd uint64
		wantEnd    uint64
	}{
		{"default", func(*bzOpts) {}, initrd, (testRAM - 4900) &^ 0xfff, 24 * MiB},
		{"no initrd", func(*bzOpts) {}, nil, 0, 24 * MiB},
		{"initrd_addr_max", func(o *bzOpts) { o.initrdMax = 32*MiB - 1 }, initrd, (32*MiB - 4900) &^ 0xfff, 24 * MiB},
		{"setup_sects 0 means 4", func(o *bzOpts) { o.setupSects = 0 }, initrd, (testRAM - 4900) &^ 0xfff, 24 * MiB},
		{"not relocatable", func(o *bzOpts) { o.reloc = false; o.pref = 2 * MiB }, initrd, (testRAM - 4900) &^ 0xfff, 10 * MiB},
		{"alignment above pref", func(o *bzOpts) { o.pref = MiB; o.align = 32 * MiB }, initrd, (testRAM - 4900) &^ 0xfff, 40 * MiB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultBz()
			tt.mut(&o)
			img := makeBzImage(o)
			mem := newMem(t, testRAM)
			opts := Options{KernelName: "bz", Cmdline: "console=ttyS0 reboot=k", RSDPAddr: amd64.RSDPAddr}
			if tt.initrd != nil {
				opts.Initrd, opts.InitrdSize = bytes.NewReader(tt.initrd), int64(len(tt.initrd))
			}
			b, err := Load(mem, bytes.NewReader(img), int64(len(img)), opts)
			if err != nil {
				t.Fatal(err)
			}
			want := Boot{Mode: Linux64, Format: FormatBzImage, Entry: 0x100200, BootInfoAddr: 0x7000,
				KernelStart: MiB, KernelEnd: tt.wantEnd, InitrdAddr: tt.wantInitrd, InitrdSize: uint64(len(tt.initrd)),
				CmdlineAddr: 0x20000, CmdlineLen: len(opts.Cmdline)}
			if *b != want {
				t.Fatalf("Boot = %+v\nwant   %+v", *b, want)
			}
			if got := readMem(t, mem, MiB, uint64(len(o.payload))); !bytes.Equal(got, o.payload) {
				t.Error("payload not at 1 MiB")
			}
			if got := readMem(t, mem, 0x20000, uint64(len(opts.Cmdline)+1)); string(got) != opts.Cmdline+"\x00" {
				t.Errorf("cmdline in memory %q", got)
			}
			if tt.initrd != nil {
				if got := readMem(t, mem, tt.wantInitrd, uint64(len(tt.initrd))); !bytes.Equal(got, tt.initrd) {
					t.Error("initrd content wrong")
				}
			}
			z := zeroPage(t, mem)
			if z.BootFlag != 0xaa55 || z.Header != 0x53726448 || z.Version != o.version || z.VidMode != 0xffff ||
				z.TypeOfLoader != 0xff || z.LoadFlags&0x81 != 0x81 || z.CmdlinePtr != 0x20000 || z.CmdlineSize != 2047 ||
				z.RamdiskImage != tt.wantInitrd || z.RamdiskSize != uint64(len(tt.initrd)) || z.ACPIRSDPAddr != 0xe0000 ||
				z.KernelAlignment != o.align || z.InitSize != o.initSize {
				t.Errorf("zero page %+v", z)
			}
			if !reflect.DeepEqual(z.E820, wantE820(testRAM)) {
				t.Errorf("e820 %+v", z.E820)
			}
			if b.Regs() != amd64.LinuxRegs(0x100200) {
				t.Errorf("Regs %+v", b.Regs())
			}
			s, err := b.Sregs(kvm.Sregs{}, mem)
			if err != nil || s.CR3 != amd64.PML4Addr || s.EFER&amd64.EFERLMA == 0 {
				t.Errorf("Sregs %+v, %v", s, err)
			}
		})
	}
}

func TestLoadELF(t *testing.T) {
	pvhEntry := []byte{0x78, 0x56, 0x34, 0x01, 0xff, 0xff, 0xff, 0xff} // 8-byte pointer, low 4 used
	notes := append(note("GNU", 3, make([]byte, 20)), note("Xen", 18, pvhEntry)...)
	tests := []struct {
		name      string
		mut       func(*elfOpts)
		wantMode  Mode
		wantEntry uint64
		wantEnd   uint64
	}{
		{"linux64", func(*elfOpts) {}, Linux64, 16 * MiB, 20*MiB + 64},
		{"pvh", func(o *elfOpts) {
			o.segs = append(o.segs, elfSeg{isNote: true, data: notes})
		}, PVH, 0x01345678, 20*MiB + 64},
		{"other xen note only", func(o *elfOpts) {
			o.segs = append(o.segs, elfSeg{isNote: true, data: note("Xen", 17, pvhEntry)})
		}, Linux64, 16 * MiB, 20*MiB + 64},
		{"note with wrong name", func(o *elfOpts) {
			o.segs = append(o.segs, elfSeg{isNote: true, data: note("Xem", 18, pvhEntry)})
		}, Linux64, 16 * MiB, 20*MiB + 64},
	}
	initrd := bytes.Repeat([]byte{7}, 10000)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := defaultELF()
			tt.mut(&o)
			img := makeELF(o)
			buf := bytes.Repeat([]byte{0xff}, testRAM) // stale data the bss must clear
			mem, err := guestmem.FromBytes([]uint64{0}, [][]byte{buf})
			if err != nil {
				t.Fatal(err)
			}
			opts := Options{Cmdline: "root=/dev/vda", Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd)), RSDPAddr: amd64.RSDPAddr}
			b, err := Load(mem, bytes.NewReader(img), int64(len(img)), opts)
			if err != nil {
				t.Fatal(err)
			}
			wantInitrd := uint64(testRAM-10000) &^ 0xfff
			if b.Mode != tt.wantMode || b.Format != FormatELF || b.Entry != tt.wantEntry || b.KernelStart != 16*MiB ||
				b.KernelEnd != tt.wantEnd || b.InitrdAddr != wantInitrd || b.InitrdSize != 10000 {
				t.Fatalf("Boot = %+v", *b)
			}
			seg0 := readMem(t, mem, 16*MiB, 3*4096)
			if !bytes.Equal(seg0[:5000], o.segs[0].data) || !bytes.Equal(seg0[5000:], make([]byte, 3*4096-5000)) {
				t.Error("segment 0 content or bss wrong")
			}
			if got := readMem(t, mem, 20*MiB, 64); !bytes.HasPrefix(got, []byte("data segment")) || got[63] != 0 {
				t.Error("segment 1 wrong")
			}
			if readMem(t, mem, 20*MiB+64, 1)[0] != 0xff {
				t.Error("wrote past segment 1")
			}
			if tt.wantMode == PVH {
				if b.BootInfoAddr != 0x6000 || b.Regs() != amd64.PVHRegs(0x01345678) {
					t.Errorf("PVH boot info %#x regs %+v", b.BootInfoAddr, b.Regs())
				}
				si, err := amd64.ParsePVHStartInfo(readMem(t, mem, 0x6000, 56), readMem(t, mem, 0x6040, 32), readMem(t, mem, 0x7000, 3*24))
				if err != nil {
					t.Fatal(err)
				}
				want := amd64.PVHStartInfo{CmdlineAddr: 0x20000, RSDPAddr: 0xe0000, InitrdAddr: wantInitrd, InitrdSize: 10000, Memmap: wantE820(testRAM)}
				if !reflect.DeepEqual(*si, want) {
					t.Errorf("start info %+v\nwant %+v", *si, want)
				}
				if v := le.Uint32(readMem(t, mem, 0x6004, 4)); v != 1 {
					t.Errorf("start info version %d", v)
				}
				s, err := b.Sregs(kvm.Sregs{}, mem)
				if err != nil || s.CR0 != amd64.CR0PE|amd64.CR0ET || s.CS.DB != 1 {
					t.Errorf("PVH sregs %+v %v", s, err)
				}
				return
			}
			z := zeroPage(t, mem)
			if z.BootFlag != 0xaa55 || z.KernelAlignment != 16*MiB || z.CmdlineSize != uint32(len(opts.Cmdline)) ||
				z.CmdlinePtr != 0x20000 || z.RamdiskImage != wantInitrd || z.RamdiskSize != 10000 || z.ACPIRSDPAddr != 0xe0000 ||
				!reflect.DeepEqual(z.E820, wantE820(testRAM)) {
				t.Errorf("zero page %+v", z)
			}
		})
	}
}

func TestLoadCustomE820(t *testing.T) {
	img := makeELF(defaultELF())
	mem := newMem(t, testRAM)
	e820 := []amd64.E820Entry{{Addr: 0, Size: 0x1000, Type: 1}, {Addr: MiB, Size: 4 * MiB, Type: 1}}
	if _, err := Load(mem, bytes.NewReader(img), int64(len(img)), Options{E820: e820}); err != nil {
		t.Fatal(err)
	}
	if z := zeroPage(t, mem); !reflect.DeepEqual(z.E820, e820) || z.ACPIRSDPAddr != 0 {
		t.Fatalf("zero page e820 %+v rsdp %#x", z.E820, z.ACPIRSDPAddr)
	}
}

// sizedReader is a ReaderAt of n zero bytes that starts with prefix.
type sizedReader struct {
	prefix []byte
	n      int64
}

func (r sizedReader) ReadAt(p []byte, off int64) (int, error) {
	for i := range p {
		p[i] = 0
		if o := off + int64(i); o < int64(len(r.prefix)) {
			p[i] = r.prefix[o]
		}
	}
	return len(p), nil
}

func TestLoadErrors(t *testing.T) {
	bz := func(mut func(*bzOpts)) []byte { o := defaultBz(); mut(&o); return makeBzImage(o) }
	elf := func(mut func(*elfOpts)) []byte { o := defaultELF(); mut(&o); return makeELF(o) }
	big := make([]byte, 100*MiB)
	tests := []struct {
		name    string
		kernel  []byte
		size    int64 // overrides len(kernel) when non-zero, via sizedReader
		opts    Options
		mem     int
		wantErr string
	}{
		{"empty", nil, 0, Options{}, testRAM, "empty"},
		{"truncated header", bz(func(*bzOpts) {})[:0x203], 0, Options{}, testRAM, "not a bzImage or an ELF vmlinux"},
		{"wrong magic", bytes.Repeat([]byte{'M', 'Z'}, 2048), 0, Options{}, testRAM, "not a bzImage or an ELF vmlinux"},
		{"short setup header", func() []byte { b := bz(func(*bzOpts) {}); b[0x201] = 0x20; return b }(), 0, Options{}, testRAM, "too short"},
		{"protocol too old", bz(func(o *bzOpts) { o.version = 0x020b }), 0, Options{}, testRAM, "too old"},
		{"no 64-bit entry", bz(func(o *bzOpts) { o.xloadflags = 2 }), 0, Options{}, testRAM, "XLF_KERNEL_64"},
		{"not loaded high", bz(func(o *bzOpts) { o.loadflags = 0 }), 0, Options{}, testRAM, "loaded high"},
		{"no payload", bz(func(o *bzOpts) { o.payload = nil }), 0, Options{}, testRAM, "no protected-mode part"},
		{"bad alignment", bz(func(o *bzOpts) { o.align = 3 * MiB }), 0, Options{}, testRAM, "power of two"},
		{"init_size beyond RAM", bz(func(o *bzOpts) { o.initSize = 60 * MiB }), 0, Options{}, testRAM, "low RAM ends"},
		{"pref_address wraps", bz(func(o *bzOpts) { o.pref = ^uint64(0) - 10 }), 0, Options{}, testRAM, "needs RAM"},
		{"kernel bigger than RAM", bz(func(o *bzOpts) { o.payload = big; o.initSize = 0 }), 0, Options{}, testRAM, "low RAM ends"},
		{"initrd does not fit", bz(func(*bzOpts) {}), 0, Options{Initrd: bytes.NewReader(nil), InitrdSize: 41 * MiB}, testRAM, "initrd of"},
		{"initrd short read", bz(func(*bzOpts) {}), 0, Options{Initrd: bytes.NewReader([]byte("abc")), InitrdSize: 4096}, testRAM, "load initrd"},
		{"cmdline too long", bz(func(o *bzOpts) { o.cmdlineSize = 10 }), 0, Options{Cmdline: "01234567890"}, testRAM, "at most 10"},
		{"elf cmdline too long", elf(func(*elfOpts) {}), 0, Options{Cmdline: strings.Repeat("x", 2048)}, testRAM, "at most 2047"},
		{"cmdline with NUL", bz(func(*bzOpts) {}), 0, Options{Cmdline: "a\x00b"}, testRAM, "NUL"},
		{"elf truncated", elf(func(*elfOpts) {})[:40], 0, Options{}, testRAM, "ELF header truncated"},
		{"elf 32-bit", elf(func(o *elfOpts) { o.class = 1 }), 0, Options{}, testRAM, "not ELF64"},
		{"elf big-endian", elf(func(o *elfOpts) { o.data = 2 }), 0, Options{}, testRAM, "little-endian"},
		{"elf arm64", elf(func(o *elfOpts) { o.machine = 183 }), 0, Options{}, testRAM, "not x86_64"},
		{"elf phdrs truncated", elf(func(*elfOpts) {})[:100], 0, Options{}, testRAM, "beyond file size"},
		{"elf segment data truncated", elf(func(*elfOpts) {})[:64+112+100], 0, Options{}, testRAM, "beyond file size"},
		{"elf no PT_LOAD", elf(func(o *elfOpts) { o.segs = []elfSeg{{isNote: true, data: note("Xen", 18, []byte{1, 2, 3, 4})}} }), 0, Options{}, testRAM, "no PT_LOAD"},
		{"elf segment below 1MiB", elf(func(o *elfOpts) { o.segs[0].paddr = 0x7000 }), 0, Options{}, testRAM, "outside [1 MiB, 4 GiB)"},
		{"elf segment above 4GiB", elf(func(o *elfOpts) { o.segs[0].paddr = 5 << 30 }), 0, Options{}, testRAM, "outside [1 MiB, 4 GiB)"},
		{"elf segment beyond RAM", elf(func(o *elfOpts) { o.segs[1].paddr = testRAM - 10 }), 0, Options{}, testRAM, "not inside guest RAM"},
		{"elf entry outside RAM", elf(func(o *elfOpts) { o.entry = 0xffffffff81000000 }), 0, Options{}, testRAM, "entry point"},
		{"elf pvh entry outside RAM", elf(func(o *elfOpts) {
			o.segs = append(o.segs, elfSeg{isNote: true, data: note("Xen", 18, []byte{0, 0, 0, 0xf0})})
		}), 0, Options{}, testRAM, "pvh entry point"},
		{"no low RAM", bz(func(*bzOpts) {}), 0, Options{}, 512 * 1024, "no region"},
		{"huge declared size", bz(func(*bzOpts) {})[:1024], 1 << 40, Options{}, testRAM, "low RAM ends"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mem := newMem(t, tt.mem)
			var b *Boot
			var err error
			if tt.size != 0 {
				b, err = Load(mem, sizedReader{prefix: tt.kernel, n: tt.size}, tt.size, tt.opts)
			} else {
				tt.opts.KernelName = "/k"
				b, err = Load(mem, bytes.NewReader(tt.kernel), int64(len(tt.kernel)), tt.opts)
			}
			if err == nil {
				t.Fatalf("Load succeeded: %+v", b)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("error %q does not contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestPlaceInitrd(t *testing.T) {
	tests := []struct {
		kernelEnd, limit, size uint64
		want                   uint64
		wantErr                bool
	}{
		{MiB, 64 * MiB, 4096, 64*MiB - 4096, false},
		{MiB, 64 * MiB, 4097, 64*MiB - 8192, false},
		{MiB + 1, 3 * MiB, 2*MiB - 4096, MiB + 4096, false},
		{MiB + 1, 3 * MiB, 2*MiB - 4095, 0, true},
		{MiB, 64 * MiB, 64 * MiB, 0, true},
		{MiB, 64 * MiB, 65 * MiB, 0, true},
		{MiB, 0x7fffffff + 1, 10, 0x7ffff000, false},
	}
	for _, tt := range tests {
		got, err := placeInitrd(tt.kernelEnd, tt.limit, tt.size)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("placeInitrd(%#x, %#x, %#x) = %#x, %v; want %#x, err %v", tt.kernelEnd, tt.limit, tt.size, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestLoadFiles(t *testing.T) {
	dir := t.TempDir()
	kp, ip := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "initrd")
	if err := os.WriteFile(kp, makeELF(defaultELF()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(ip, []byte("cpio"), 0o600); err != nil {
		t.Fatal(err)
	}
	mem := newMem(t, testRAM)
	b, err := LoadFiles(mem, kp, ip, Options{Cmdline: "quiet"})
	if err != nil {
		t.Fatal(err)
	}
	if b.InitrdSize != 4 || string(readMem(t, mem, b.InitrdAddr, 4)) != "cpio" {
		t.Errorf("initrd %+v", b)
	}
	if _, err := LoadFiles(mem, filepath.Join(dir, "missing"), "", Options{}); err == nil {
		t.Error("missing kernel accepted")
	}
	if _, err := LoadFiles(mem, kp, filepath.Join(dir, "missing"), Options{}); err == nil {
		t.Error("missing initrd accepted")
	}
	if err := os.WriteFile(kp, []byte("#!/bin/sh\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadFiles(mem, kp, "", Options{})
	if err == nil || !strings.Contains(err.Error(), `kernel "`+kp+`" is not a bzImage or an ELF vmlinux`) {
		t.Errorf("script as kernel: %v", err)
	}
}

// realKernels lists distro kernel images available on this machine:
// /boot/vmlinuz-* and whatever the lab cached under .cache/kernel
// (bzImages named vmlinuz*, extracted ELF images named vmlinux).
func realKernels(prefix string) []string {
	var out []string
	if prefix == "vmlinuz" {
		m, _ := filepath.Glob("/boot/vmlinuz-*")
		out = append(out, m...)
	}
	root := "/work/main/.cache/kernel"
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() && strings.Count(strings.TrimPrefix(p, root), "/") > 2 {
			return filepath.SkipDir
		}
		if d.Type().IsRegular() && strings.HasPrefix(d.Name(), prefix) {
			out = append(out, p)
		}
		return nil
	})
	return out
}

func bigMem(t *testing.T) *guestmem.Memory {
	t.Helper()
	mem, err := guestmem.New([]guestmem.Range{{GPA: 0, Size: 512 * MiB}}, guestmem.Options{})
	if err != nil {
		t.Skipf("cannot map 512 MiB: %v", err)
	}
	t.Cleanup(func() { mem.Close() })
	return mem
}

func TestRealBzImage(t *testing.T) {
	paths := realKernels("vmlinuz")
	if len(paths) == 0 {
		t.Skip("no /boot/vmlinuz-* or cached Debian kernel")
	}
	for _, p := range paths {
		t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
			f, err := os.Open(p)
			if err != nil {
				t.Skipf("cannot read %s: %v", p, err)
			}
			defer f.Close()
			head := make([]byte, 1024)
			if _, err := f.ReadAt(head, 0); err != nil {
				t.Fatal(err)
			}
			h, err := amd64.ParseSetupHeader(head)
			if err != nil {
				t.Fatal(err)
			}
			if h.Version < 0x020c || h.XLoadFlags&1 == 0 || h.LoadFlags&1 == 0 || h.InitSize == 0 || h.CmdlineSize < 255 {
				t.Fatalf("unexpected header %+v", h)
			}
			mem := bigMem(t)
			initrd := bytes.Repeat([]byte{0x5a}, 3*MiB)
			b, err := Load(mem, f, mustSize(t, f), Options{Cmdline: "console=ttyS0", Initrd: bytes.NewReader(initrd), InitrdSize: int64(len(initrd))})
			if err != nil {
				t.Fatal(err)
			}
			if b.Format != FormatBzImage || b.Entry != 0x100200 || b.KernelEnd < uint64(h.PrefAddress)+uint64(h.InitSize) ||
				b.InitrdAddr < b.KernelEnd || b.InitrdAddr+b.InitrdSize > uint64(h.InitrdAddrMax)+1 {
				t.Fatalf("Boot %+v", b)
			}
			payload := make([]byte, 4096)
			if _, err := f.ReadAt(payload, h.SetupOffset()); err != nil {
				t.Fatal(err)
			}
			if got := readMem(t, mem, MiB, 4096); !bytes.Equal(got, payload) {
				t.Error("protected-mode code not at 1 MiB")
			}
			t.Logf("protocol %#x init_size %#x pref %#x kernel end %#x initrd %#x", h.Version, h.InitSize, h.PrefAddress, b.KernelEnd, b.InitrdAddr)
		})
	}
}

func TestRealVmlinux(t *testing.T) {
	paths := realKernels("vmlinux")
	if len(paths) == 0 {
		t.Skip("no cached vmlinux")
	}
	for _, p := range paths {
		t.Run(strings.ReplaceAll(p, "/", "_"), func(t *testing.T) {
			ef, err := elf.Open(p)
			if err != nil {
				t.Skipf("%s is not an ELF file: %v", p, err)
			}
			defer ef.Close()
			mem := bigMem(t)
			b, err := LoadFiles(mem, p, "", Options{Cmdline: "console=ttyS0"})
			if err != nil {
				t.Fatal(err)
			}
			// Cross-check placement with the standard library's parser.
			for _, prog := range ef.Progs {
				if prog.Type != elf.PT_LOAD || prog.Filesz == 0 {
					continue
				}
				want := make([]byte, min(prog.Filesz, 4096))
				if _, err := prog.ReadAt(want, 0); err != nil {
					t.Fatal(err)
				}
				if got := readMem(t, mem, prog.Paddr, uint64(len(want))); !bytes.Equal(got, want) {
					t.Errorf("segment at %#x not loaded", prog.Paddr)
				}
				if prog.Paddr+prog.Memsz > b.KernelEnd {
					t.Errorf("kernel end %#x before segment end %#x", b.KernelEnd, prog.Paddr+prog.Memsz)
				}
			}
			if b.Mode == PVH {
				if b.Entry < b.KernelStart || b.Entry >= b.KernelEnd {
					t.Errorf("PVH entry %#x outside kernel [%#x, %#x)", b.Entry, b.KernelStart, b.KernelEnd)
				}
			} else if b.Entry != ef.Entry {
				t.Errorf("entry %#x, ELF says %#x", b.Entry, ef.Entry)
			}
			t.Logf("%s: mode %s entry %#x kernel [%#x, %#x)", p, b.Mode, b.Entry, b.KernelStart, b.KernelEnd)
		})
	}
}

func mustSize(t *testing.T, f *os.File) int64 {
	t.Helper()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

func FuzzLoadBzImage(f *testing.F) {
	f.Add(makeBzImage(defaultBz()), "console=ttyS0")
	o := defaultBz()
	o.setupSects, o.version = 0, 0x0200
	f.Add(makeBzImage(o), "")
	f.Add([]byte("MZ"), "x")
	mem := newMem(f, 32*MiB)
	f.Fuzz(func(t *testing.T, img []byte, cmdline string) {
		initrd := []byte("initrd")
		b, err := Load(mem, bytes.NewReader(img), int64(len(img)), Options{Cmdline: cmdline, Initrd: bytes.NewReader(initrd), InitrdSize: 6})
		if err != nil {
			return
		}
		if b.InitrdAddr < b.KernelEnd || b.InitrdAddr+b.InitrdSize > 32*MiB || b.KernelEnd > 32*MiB {
			t.Fatalf("overlapping placement %+v", b)
		}
	})
}

func FuzzLoadELF(f *testing.F) {
	// Small seeds keep minimisation of interesting inputs fast.
	small := elfOpts{class: 2, data: 1, machine: 62, entry: 16 * MiB,
		segs: []elfSeg{{paddr: 16 * MiB, data: []byte("text"), memsz: 4096}}}
	f.Add(makeELF(small))
	small.segs = append(small.segs, elfSeg{isNote: true, data: note("Xen", 18, []byte{0, 0, 0, 1})})
	f.Add(makeELF(small))
	mem := newMem(f, 32*MiB)
	f.Fuzz(func(t *testing.T, img []byte) {
		b, err := Load(mem, bytes.NewReader(img), int64(len(img)), Options{Cmdline: "quiet"})
		if err != nil {
			return
		}
		if b.KernelStart < MiB || b.KernelEnd > 32*MiB || !mem.Contains(b.Entry, 1) {
			t.Fatalf("bad placement %+v", b)
		}
	})
}
