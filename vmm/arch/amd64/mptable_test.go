package amd64

import (
	"encoding/binary"
	"fmt"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

type mpParsed struct {
	procs     [][4]byte // id, version, flags, (unused)
	buses     []string
	ioapicID  byte
	ioapicAdr uint32
	ioInts    [][6]byte // type, flags lo, bus, irq, apic, pin
	localInts [][4]byte // type, bus irq, dest apic, lint
	lapic     uint32
}

// parseMP reads the floating pointer at addr and the table it points to,
// checking signatures, lengths, checksums and entry sizes.
func parseMP(t *testing.T, mem *guestmem.Memory, addr uint64) mpParsed {
	t.Helper()
	f := make([]byte, 16)
	if err := mem.ReadAt(f, addr); err != nil {
		t.Fatal(err)
	}
	if string(f[:4]) != "_MP_" || f[8] != 1 || f[9] != 4 || mpSum(f) != 0 || f[11] != 0 {
		t.Fatalf("bad floating pointer % x", f)
	}
	ptr := uint64(binary.LittleEndian.Uint32(f[4:]))
	if ptr != addr+16 {
		t.Fatalf("config table pointer %#x, want %#x", ptr, addr+16)
	}
	h := make([]byte, 44)
	if err := mem.ReadAt(h, ptr); err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint16(h[4:])
	tab := make([]byte, n)
	if err := mem.ReadAt(tab, ptr); err != nil {
		t.Fatal(err)
	}
	if string(tab[:4]) != "PCMP" || tab[6] != 4 || mpSum(tab) != 0 {
		t.Fatalf("bad config table header % x", tab[:44])
	}
	if string(tab[8:16]) != mpOEMID || string(tab[16:28]) != mpProductID {
		t.Errorf("OEM/product id %q %q", tab[8:16], tab[16:28])
	}
	if binary.LittleEndian.Uint16(tab[40:]) != 0 || tab[42] != 0 || binary.LittleEndian.Uint32(tab[28:]) != 0 {
		t.Errorf("extended table or OEM table set")
	}
	p := mpParsed{lapic: binary.LittleEndian.Uint32(tab[36:])}
	count := int(binary.LittleEndian.Uint16(tab[34:]))
	off := 44
	for i := 0; i < count; i++ {
		if off >= len(tab) {
			t.Fatalf("entry %d past table end", i)
		}
		size := map[byte]int{0: 20, 1: 8, 2: 8, 3: 8, 4: 8}[tab[off]]
		if size == 0 || off+size > len(tab) {
			t.Fatalf("entry %d: bad type %d or truncated", i, tab[off])
		}
		e := tab[off : off+size]
		switch e[0] {
		case 0:
			if binary.LittleEndian.Uint32(e[4:]) != 0x600 || binary.LittleEndian.Uint32(e[8:]) != 0x201 {
				t.Errorf("processor %d signature/features % x", e[1], e[4:12])
			}
			p.procs = append(p.procs, [4]byte{e[1], e[2], e[3]})
		case 1:
			p.buses = append(p.buses, fmt.Sprintf("%d:%s", e[1], e[2:8]))
		case 2:
			if e[2] != 0x11 || e[3] != 1 {
				t.Errorf("IOAPIC version/flags % x", e)
			}
			p.ioapicID, p.ioapicAdr = e[1], binary.LittleEndian.Uint32(e[4:])
		case 3:
			if e[3] != 0 {
				t.Errorf("IO interrupt flags high byte % x", e)
			}
			p.ioInts = append(p.ioInts, [6]byte{e[1], e[2], e[4], e[5], e[6], e[7]})
		case 4:
			if e[2] != 0 || e[3] != 0 || e[4] != 0 {
				t.Errorf("local interrupt flags/bus % x", e)
			}
			p.localInts = append(p.localInts, [4]byte{e[1], e[5], e[6], e[7]})
		}
		off += size
	}
	if off != len(tab) {
		t.Fatalf("entries end at %d, table length %d", off, len(tab))
	}
	return p
}

func TestWriteMPTable(t *testing.T) {
	const addr, limit = 0x9fc00, 0xe0000
	for _, ncpus := range []int{1, 2, 4, 64, 254} {
		t.Run(fmt.Sprint(ncpus), func(t *testing.T) {
			buf := make([]byte, 1<<20)
			mem, err := guestmem.FromBytes([]uint64{0}, [][]byte{buf})
			if err != nil {
				t.Fatal(err)
			}
			if err := WriteMPTable(mem, addr, limit, ncpus); err != nil {
				t.Fatal(err)
			}
			p := parseMP(t, mem, addr)
			size := MPTableSize(ncpus)
			if want := uint64(16 + 44 + 20*ncpus + 8 + 8 + 26*8); size != want {
				t.Errorf("MPTableSize = %d, want %d", size, want)
			}
			if buf[addr+size] != 0 || buf[addr+size-1] == 0 {
				t.Errorf("table does not end at addr+MPTableSize")
			}
			if p.lapic != 0xFEE00000 {
				t.Errorf("LAPIC address %#x", p.lapic)
			}
			if len(p.procs) != ncpus {
				t.Fatalf("%d processors, want %d", len(p.procs), ncpus)
			}
			for i, pr := range p.procs {
				flags := byte(1)
				if i == 0 {
					flags = 3
				}
				if pr != [4]byte{byte(i), 0x14, flags} {
					t.Errorf("processor %d = % x", i, pr)
				}
			}
			if len(p.buses) != 1 || p.buses[0] != "0:ISA   " {
				t.Errorf("buses %q", p.buses)
			}
			ioapic := byte(ncpus + 1)
			if p.ioapicID != ioapic || p.ioapicAdr != 0xFEC00000 {
				t.Errorf("IOAPIC id %d addr %#x", p.ioapicID, p.ioapicAdr)
			}
			if len(p.ioInts) != 24 {
				t.Fatalf("%d IO interrupt entries", len(p.ioInts))
			}
			for i, in := range p.ioInts {
				if in != [6]byte{0, 0, 0, byte(i), ioapic, byte(i)} {
					t.Errorf("IO interrupt %d = % x", i, in)
				}
			}
			want := [][4]byte{{3, 0, 0, 0}, {1, 0, 0xFF, 1}}
			if fmt.Sprint(p.localInts) != fmt.Sprint(want) {
				t.Errorf("local interrupts % x, want % x", p.localInts, want)
			}
		})
	}
}

func TestWriteMPTableRejects(t *testing.T) {
	buf := make([]byte, 0x10000)
	mem, err := guestmem.FromBytes([]uint64{0x90000}, [][]byte{buf})
	if err != nil {
		t.Fatal(err)
	}
	size := MPTableSize(4)
	for _, tc := range []struct {
		name        string
		addr, limit uint64
		ncpus       int
	}{
		{"zero cpus", 0x9fc00, 0xa0000, 0},
		{"255 cpus", 0x90000, 0xa0000, 255},
		{"negative cpus", 0x9fc00, 0xa0000, -1},
		{"unaligned", 0x9fc08, 0xa0000, 4},
		{"one byte short", 0x9fc00, 0x9fc00 + size - 1, 4},
		{"limit below addr", 0x9fc00, 0x9f000, 4},
		{"not in RAM", 0x9ff00, 0xb0000, 4},
		{"254 cpus past limit", 0x9fc00, 0xa0000, 254},
	} {
		if err := WriteMPTable(mem, tc.addr, tc.limit, tc.ncpus); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	for i, b := range buf {
		if b != 0 {
			t.Fatalf("rejected write modified memory at %#x", 0x90000+i)
		}
	}
	if err := WriteMPTable(mem, 0x9fc00, 0x9fc00+size, 4); err != nil {
		t.Fatalf("exact fit: %v", err)
	}
}
