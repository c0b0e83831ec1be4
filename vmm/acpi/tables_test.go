package acpi

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

const (
	testRSDP  = 0xE0000
	testLimit = 0x100000
)

func newTestMem(t testing.TB) (*guestmem.Memory, []byte) {
	t.Helper()
	buf := make([]byte, 2<<20)
	mem, err := guestmem.FromBytes([]uint64{0}, [][]byte{buf})
	if err != nil {
		t.Fatal(err)
	}
	return mem, buf
}

func mmioDevices(n int) []MMIODevice {
	var out []MMIODevice
	for i := 0; i < n; i++ {
		out = append(out, MMIODevice{Base: 0xD0000000 + uint64(i)*0x1000, Size: 0x1000, GSI: uint32(5 + i)})
	}
	return out
}

// buildAndParse builds, writes right after the RSDP, and parses back.
func buildAndParse(t *testing.T, cfg Config) (*Tables, *Parsed, []byte) {
	t.Helper()
	tab, err := Build(cfg)
	if err != nil {
		t.Fatalf("Build: %v", err)
	}
	mem, buf := newTestMem(t)
	if err := tab.Write(mem, testRSDP, testRSDP+RSDPSize, testLimit); err != nil {
		t.Fatalf("Write: %v", err)
	}
	p, err := Parse(mem, testRSDP)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return tab, p, buf
}

func TestBuildParse(t *testing.T) {
	for _, ncpu := range []int{1, 4, 254} {
		for _, ndev := range []int{0, 3, 11} {
			t.Run(fmt.Sprintf("cpus=%d/devs=%d", ncpu, ndev), func(t *testing.T) {
				devs := mmioDevices(ndev)
				_, p, buf := buildAndParse(t, Config{VCPUs: ncpu, MMIODevices: devs})
				checkRSDPAndXSDT(t, p, buf)
				checkFADT(t, p.FADT, DefaultPowerPort)
				checkMADT(t, p.MADT, ncpu, false)
				checkDSDT(t, p, devs)
			})
		}
	}
}

func checkRSDPAndXSDT(t *testing.T, p *Parsed, buf []byte) {
	t.Helper()
	if p.RSDP.Revision != 2 || p.RSDP.RSDTAddr != 0 || p.RSDP.OEMID != DefaultOEMID {
		t.Errorf("RSDP = %+v", p.RSDP)
	}
	if sum(buf[testRSDP:testRSDP+20]) != 0 || sum(buf[testRSDP:testRSDP+RSDPSize]) != 0 {
		t.Errorf("RSDP checksums do not sum to zero")
	}
	if p.XSDT.Addr%8 != 0 || p.XSDT.Addr < testRSDP+RSDPSize || p.XSDT.Addr+uint64(p.XSDT.Length) > testLimit {
		t.Errorf("XSDT at %#x+%d outside the tables area", p.XSDT.Addr, p.XSDT.Length)
	}
	var sigs []string
	for _, h := range p.Tables {
		sigs = append(sigs, h.Signature)
		if sum(buf[h.Addr:h.Addr+uint64(h.Length)]) != 0 {
			t.Errorf("%s checksum does not sum to zero", h.Signature)
		}
		if h.OEMID != DefaultOEMID || h.OEMTableID != DefaultOEMTableID || h.CreatorID != creatorID {
			t.Errorf("%s header = %+v", h.Signature, h)
		}
	}
	if !reflect.DeepEqual(sigs, []string{"FACP", "APIC"}) {
		t.Errorf("XSDT tables = %v, want [FACP APIC]", sigs)
	}
	if p.DSDT.Revision != 2 || p.Tables[0].Revision != 6 || p.Tables[1].Revision != 5 || p.XSDT.Revision != 1 {
		t.Errorf("revisions DSDT %d FADT %d MADT %d XSDT %d", p.DSDT.Revision, p.Tables[0].Revision, p.Tables[1].Revision, p.XSDT.Revision)
	}
}

func checkFADT(t *testing.T, f *ParsedFADT, port uint16) {
	t.Helper()
	if f.Length != 276 {
		t.Errorf("FADT length %d, want 276", f.Length)
	}
	if f.Flags != 1<<20|1<<10 {
		t.Errorf("FADT flags %#x, want HW_REDUCED_ACPI|RESET_REG_SUP", f.Flags)
	}
	io8 := GAS{SpaceID: 1, BitWidth: 8, AccessSize: 1, Address: uint64(port)}
	for name, g := range map[string]GAS{"reset": f.ResetReg, "sleep control": f.SleepControl, "sleep status": f.SleepStatus} {
		if g != io8 {
			t.Errorf("%s register = %+v, want %+v", name, g, io8)
		}
	}
	if f.ResetValue != 1 || f.MinorVersion != fadtMinor || f.HypervisorVendor != DefaultHypervisorVendor {
		t.Errorf("FADT reset value %d minor %d vendor %q", f.ResetValue, f.MinorVersion, f.HypervisorVendor)
	}
	if f.IAPCBootArch != 0x1C {
		t.Errorf("IAPC boot arch %#x, want 0x1c", f.IAPCBootArch)
	}
	if f.XDSDT == 0 || f.DSDT32 != 0 {
		t.Errorf("X_DSDT %#x DSDT %#x", f.XDSDT, f.DSDT32)
	}
}

func checkMADT(t *testing.T, m *ParsedMADT, ncpu int, irq0 bool) {
	t.Helper()
	if m.LocalAPICAddr != 0xFEE00000 || m.Flags != 0 || m.OtherEntries != 0 {
		t.Errorf("MADT lapic %#x flags %#x other %d", m.LocalAPICAddr, m.Flags, m.OtherEntries)
	}
	if len(m.LocalAPICs) != ncpu {
		t.Fatalf("%d local APIC entries, want %d", len(m.LocalAPICs), ncpu)
	}
	for i, l := range m.LocalAPICs {
		want := LocalAPIC{X2APIC: i >= 255, ProcessorUID: uint32(i), APICID: uint32(i), Flags: 1}
		if l != want {
			t.Errorf("local APIC %d = %+v, want %+v", i, l, want)
		}
	}
	if want := []IOAPIC{{ID: 0, Addr: 0xFEC00000, GSIBase: 0}}; !reflect.DeepEqual(m.IOAPICs, want) {
		t.Errorf("IOAPICs = %+v, want %+v", m.IOAPICs, want)
	}
	var want []InterruptOverride
	if irq0 {
		want = []InterruptOverride{{Bus: 0, Source: 0, GSI: 2}}
	}
	if !reflect.DeepEqual(m.Overrides, want) {
		t.Errorf("overrides = %+v, want %+v", m.Overrides, want)
	}
}

func nameValue(t *testing.T, dev *Node, name string) Node {
	t.Helper()
	n := dev.Find("Name", name)
	if n == nil || len(n.Children) != 1 {
		t.Fatalf("%s: no Name %s", dev.Name, name)
	}
	return n.Children[0]
}

func crs(t *testing.T, dev *Node) []Resource {
	t.Helper()
	v := nameValue(t, dev, "_CRS")
	if v.Op != "Buffer" {
		t.Fatalf("%s._CRS is a %s", dev.Name, v.Op)
	}
	r, err := DecodeResources(v.Bytes)
	if err != nil {
		t.Fatalf("%s._CRS: %v", dev.Name, err)
	}
	return r
}

func checkDSDT(t *testing.T, p *Parsed, devs []MMIODevice) {
	t.Helper()
	nodes, err := DecodeAML(p.AML)
	if err != nil {
		t.Fatalf("DSDT AML is not well-formed: %v", err)
	}
	if len(nodes) != 2 {
		t.Fatalf("DSDT has %d top-level terms, want 2", len(nodes))
	}
	s5 := Node{Op: "Package", Children: []Node{{Op: "Integer", Int: 5}, {Op: "Integer", Int: 5}, {Op: "Integer"}, {Op: "Integer"}}}
	if nodes[0].Op != "Name" || nodes[0].Name != "_S5_" || !reflect.DeepEqual(nodes[0].Children[0], s5) {
		t.Errorf("_S5_ = %+v", nodes[0])
	}
	sb := &nodes[1]
	if sb.Op != "Scope" || sb.Name != "\\_SB_" || len(sb.Children) != 2+len(devs) {
		t.Fatalf("\\_SB_ scope = %s %s with %d children", sb.Op, sb.Name, len(sb.Children))
	}
	edge := func(g uint32) Interrupt { return Interrupt{Consumer: true, Edge: true, GSIs: []uint32{g}} }

	com1 := sb.Find("Device", "COM1")
	if com1 == nil {
		t.Fatal("no COM1")
	}
	if v := nameValue(t, com1, "_HID"); v.Int != 0x0105D041 {
		t.Errorf("COM1._HID = %#x", v.Int)
	}
	wantCOM := []Resource{IO{Decode16: true, Min: 0x3F8, Max: 0x3F8, Align: 1, Length: 8}, edge(4)}
	if got := crs(t, com1); !reflect.DeepEqual(got, wantCOM) {
		t.Errorf("COM1._CRS = %+v", got)
	}

	ps2 := sb.Find("Device", "PS2_")
	if ps2 == nil {
		t.Fatal("no PS2_")
	}
	if v := nameValue(t, ps2, "_HID"); v.Int != 0x0303D041 {
		t.Errorf("PS2_._HID = %#x", v.Int)
	}
	wantPS2 := []Resource{
		IO{Decode16: true, Min: 0x60, Max: 0x60, Align: 1, Length: 1},
		IO{Decode16: true, Min: 0x64, Max: 0x64, Align: 1, Length: 1},
		edge(1),
	}
	if got := crs(t, ps2); !reflect.DeepEqual(got, wantPS2) {
		t.Errorf("PS2_._CRS = %+v", got)
	}

	for i, d := range devs {
		dev := &sb.Children[2+i] // in the order given
		if dev.Op != "Device" || dev.Name != MMIODeviceName(i) {
			t.Fatalf("child %d = %s %s, want Device %s", 2+i, dev.Op, dev.Name, MMIODeviceName(i))
		}
		if v := nameValue(t, dev, "_HID"); v.Str != "LNRO0005" {
			t.Errorf("%s._HID = %+v", dev.Name, v)
		}
		if v := nameValue(t, dev, "_UID"); v.Op != "Integer" || v.Int != uint64(i) {
			t.Errorf("%s._UID = %+v", dev.Name, v)
		}
		if v := nameValue(t, dev, "_CCA"); v.Int != 1 {
			t.Errorf("%s._CCA = %+v", dev.Name, v)
		}
		want := []Resource{Memory32Fixed{ReadWrite: true, Base: uint32(d.Base), Length: d.Size}, edge(d.GSI)}
		if got := crs(t, dev); !reflect.DeepEqual(got, want) {
			t.Errorf("%s._CRS = %+v, want %+v", dev.Name, got, want)
		}
	}
}

func TestBuildOptions(t *testing.T) {
	cfg := Config{
		VCPUs:            300,
		MMIODevices:      []MMIODevice{{Base: 0xFEB00000, Size: 0x200, GSI: 16}},
		PowerPort:        0x510,
		OEMID:            "ABCDEF",
		OEMTableID:       "TABLE123",
		OEMRevision:      7,
		HypervisorVendor: "VENDORID",
		IAPCBootArch:     0x20,
		IRQ0ToGSI2:       true,
	}
	_, p, _ := buildAndParse(t, cfg)
	checkFADT := p.FADT
	if checkFADT.ResetReg.Address != 0x510 || checkFADT.SleepControl.Address != 0x510 || checkFADT.IAPCBootArch != 0x20 || checkFADT.HypervisorVendor != "VENDORID" {
		t.Errorf("FADT = %+v", checkFADT)
	}
	if h := p.Tables[1]; h.OEMID != "ABCDEF" || h.OEMTableID != "TABLE123" || h.OEMRevision != 7 {
		t.Errorf("MADT header = %+v", h)
	}
	checkMADT(t, p.MADT, 300, true)
	checkDSDT(t, p, cfg.MMIODevices)
}

func TestBuildRejects(t *testing.T) {
	dev := func(base uint64, size, gsi uint32) MMIODevice { return MMIODevice{Base: base, Size: size, GSI: gsi} }
	for name, cfg := range map[string]Config{
		"no vcpus":           {},
		"too many vcpus":     {VCPUs: MaxVCPUs + 1},
		"long OEM id":        {VCPUs: 1, OEMID: "1234567"},
		"long table id":      {VCPUs: 1, OEMTableID: "123456789"},
		"nonprint vendor":    {VCPUs: 1, HypervisorVendor: "a\x00"},
		"empty window":       {VCPUs: 1, MMIODevices: []MMIODevice{dev(0xD0000000, 0, 5)}},
		"window above 4GiB":  {VCPUs: 1, MMIODevices: []MMIODevice{dev(0xFFFFF000, 0x2000, 5)}},
		"gsi 0":              {VCPUs: 1, MMIODevices: []MMIODevice{dev(0xD0000000, 0x1000, 0)}},
		"gsi 24":             {VCPUs: 1, MMIODevices: []MMIODevice{dev(0xD0000000, 0x1000, 24)}},
		"gsi of COM1":        {VCPUs: 1, MMIODevices: []MMIODevice{dev(0xD0000000, 0x1000, 4)}},
		"duplicate gsi":      {VCPUs: 1, MMIODevices: []MMIODevice{dev(0xD0000000, 0x1000, 5), dev(0xD0001000, 0x1000, 5)}},
		"overlapping window": {VCPUs: 1, MMIODevices: []MMIODevice{dev(0xD0000000, 0x1000, 5), dev(0xD0000800, 0x1000, 6)}},
	} {
		if _, err := Build(cfg); err == nil {
			t.Errorf("%s: Build accepted %+v", name, cfg)
		}
	}
}

func TestWriteRejects(t *testing.T) {
	tab, err := Build(Config{VCPUs: 2, MMIODevices: mmioDevices(3)})
	if err != nil {
		t.Fatal(err)
	}
	size := tab.Size()
	if size == 0 || size%8 != 0 {
		t.Fatalf("Size() = %d", size)
	}
	mem, buf := newTestMem(t)
	cases := []struct {
		name                string
		rsdp, tables, limit uint64
		want                string
	}{
		{"unaligned rsdp", testRSDP + 4, 0x1000, 0x10000, "aligned"},
		{"too small", testRSDP, 0x1000, 0x1000 + size - 1, "limit"},
		{"limit below start", testRSDP, 0x2000, 0x1000, "limit"},
		{"overlap", 0x1000 + 16, 0x1000, 0x10000, "overlaps"},
		{"outside RAM", testRSDP, uint64(len(buf)) - 8, uint64(len(buf)) + size, "not in guest RAM"},
		{"rsdp outside RAM", uint64(len(buf)), 0x1000, 0x10000, "not in guest RAM"},
	}
	for _, tc := range cases {
		err := tab.Write(mem, tc.rsdp, tc.tables, tc.limit)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want %q", tc.name, err, tc.want)
		}
	}
	for i, b := range buf {
		if b != 0 {
			t.Fatalf("a failed Write modified guest memory at %#x", i)
		}
	}
	// Exactly enough room works, and Write is repeatable.
	for i := 0; i < 2; i++ {
		if err := tab.Write(mem, testRSDP, 0x1000, 0x1000+size); err != nil {
			t.Fatalf("exact fit: %v", err)
		}
	}
	if _, err := Parse(mem, testRSDP); err != nil {
		t.Fatalf("Parse after exact fit: %v", err)
	}
}

func TestParseRejects(t *testing.T) {
	_, p, buf := buildAndParse(t, Config{VCPUs: 2, MMIODevices: mmioDevices(1)})
	mem, err := guestmem.FromBytes([]uint64{0}, [][]byte{buf})
	if err != nil {
		t.Fatal(err)
	}
	corrupt := func(addr uint64, v byte) func() {
		old := buf[addr]
		buf[addr] = v
		return func() { buf[addr] = old }
	}
	madt, fadt := p.Tables[1].Addr, p.Tables[0].Addr
	cases := []struct {
		name string
		addr uint64
		v    byte
	}{
		{"rsdp signature", testRSDP, 'X'},
		{"rsdp checksum", testRSDP + 8, buf[testRSDP+8] + 1},
		{"rsdp extended checksum", testRSDP + 32, buf[testRSDP+32] + 1},
		{"rsdp revision", testRSDP + 15, 0},
		{"xsdt signature", p.XSDT.Addr, 'Y'},
		{"madt byte", madt + 50, buf[madt+50] ^ 0xFF},
		{"dsdt byte", p.DSDT.Addr + 40, buf[p.DSDT.Addr+40] + 1},
		{"fadt length", fadt + 4, 200},
		{"xsdt huge length", p.XSDT.Addr + 7, 0x10},
	}
	for _, tc := range cases {
		undo := corrupt(tc.addr, tc.v)
		if _, err := Parse(mem, testRSDP); err == nil {
			t.Errorf("%s: corrupted tables parsed", tc.name)
		}
		undo()
	}
	if _, err := Parse(mem, testRSDP); err != nil {
		t.Fatalf("undo failed: %v", err)
	}
	if _, err := Parse(mem, 0x1000); !errors.Is(err, ErrTable) {
		t.Errorf("no RSDP: err %v, want ErrTable", err)
	}
	if _, err := Parse(mem, uint64(len(buf))-8); !errors.Is(err, guestmem.ErrOutOfRange) {
		t.Errorf("RSDP past RAM: err %v, want ErrOutOfRange", err)
	}
}
