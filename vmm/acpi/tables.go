// Package acpi owns the ACPI description the VMM hands to an x86_64 guest:
// an AML byte-code builder (and a decoder for the same subset), the
// RSDP, XSDT, FADT, MADT and DSDT as byte slices with explicit offsets,
// placement of those tables in guest memory, and a parser that reads them
// back (used by tests and fuzzing).
//
// Everything is built once, on the goroutine that assembles the VM, before
// any vCPU runs; nothing here is shared or locked.
//
// The platform described is hardware-reduced ACPI: no SCI, no PM timer,
// no PIC. Reset and S5 power-off go through one 8-bit I/O port
// (Config.PowerPort, 0x600 by default, as in Cloud Hypervisor): the guest
// writes 1 to reset, and (SLP_TYP=5)<<2 | SLP_EN(1<<5) = 0x34 to power off.
//
// Interrupt routing: ISA IRQ n is GSI n (identity, as KVM's default
// in-kernel irqchip routing does). No IRQ0→GSI2 interrupt source override
// is emitted by default: a hardware-reduced Linux guest does not use the
// PIT as its timer interrupt, and with KVM's in-kernel IOAPIC the PIT
// raises GSI 0, so an override to GSI 2 would be wrong. Config.IRQ0ToGSI2
// adds it for platforms that route the PIT like a PC.
package acpi

import (
	"encoding/binary"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// Defaults and fixed addresses.
const (
	DefaultPowerPort        = 0x600
	DefaultOEMID            = "SVGO"
	DefaultOEMTableID       = "SVGOMVM"
	DefaultHypervisorVendor = "STRATOGO"
	LocalAPICAddr           = 0xFEE00000
	IOAPICAddr              = 0xFEC00000
	IOAPICPins              = 24
	MaxVCPUs                = 4096

	// DefaultIAPCBootArch: VGA not present (bit 2), MSI not supported
	// (bit 3), OS must not enable PCIe ASPM (bit 4). The 8042 bit is left
	// clear: the DSDT describes the PS/2 controller instead.
	DefaultIAPCBootArch = 1<<2 | 1<<3 | 1<<4

	// SleepValueS5 is what the guest writes to the power port for S5.
	SleepValueS5 = 5<<2 | 1<<5
	// ResetValue is what the guest writes to the power port to reset.
	ResetValue = 1

	// RSDPSize is the size of a revision-2 RSDP.
	RSDPSize = 36

	headerSize = 36
	fadtSize   = 276
	creatorID  = "SVGO"
	creatorRev = 1
	tableAlign = 8
)

// FADT field offsets (ACPI 6.5, table 5.9).
const (
	fadtDSDT32       = 40
	fadtIAPCBootArch = 109
	fadtFlags        = 112
	fadtResetReg     = 116
	fadtResetValue   = 128
	fadtMinorVersion = 131
	fadtXDSDT        = 140
	fadtSleepControl = 244
	fadtSleepStatus  = 256
	fadtHypervisorID = 268

	fadtMinor = 5

	// FADT flags.
	FlagResetRegSup   = 1 << 10
	FlagHWReducedACPI = 1 << 20
)

// MADT entry types.
const (
	madtLocalAPIC   = 0
	madtIOAPIC      = 1
	madtOverride    = 2
	madtLocalX2APIC = 9
	madtEnabled     = 1
)

// MMIODevice is one virtio-mmio window described to the guest.
type MMIODevice struct {
	Base uint64
	Size uint32
	GSI  uint32
}

// Config selects what Build describes.
type Config struct {
	VCPUs       int          // 1..MaxVCPUs; APIC id = vCPU index
	MMIODevices []MMIODevice // in guest enumeration order (first disk = vda)
	PowerPort   uint16       // 0 means DefaultPowerPort
	OEMID       string       // up to 6 ASCII characters; "" means DefaultOEMID
	OEMTableID  string       // up to 8 ASCII characters; "" means DefaultOEMTableID
	OEMRevision uint32
	// HypervisorVendor is the FADT hypervisor vendor identity (up to 8
	// ASCII characters); "" means DefaultHypervisorVendor.
	HypervisorVendor string
	// IAPCBootArch is the FADT IA-PC boot architecture flags; 0 means
	// DefaultIAPCBootArch.
	IAPCBootArch uint16
	// IRQ0ToGSI2 adds an ISA IRQ0→GSI2 interrupt source override.
	IRQ0ToGSI2 bool
}

// Tables are the built tables. Pointers between them (X_DSDT, the XSDT
// entries, the RSDP's XSDT address) are filled in by Write.
type Tables struct {
	DSDT []byte
	FADT []byte
	MADT []byte
	cfg  Config
}

// GSIs used by the fixed legacy devices described in the DSDT.
const (
	gsiPS2  = 1
	gsiCOM1 = 4
)

func (c *Config) withDefaults() Config {
	out := *c
	if out.PowerPort == 0 {
		out.PowerPort = DefaultPowerPort
	}
	if out.OEMID == "" {
		out.OEMID = DefaultOEMID
	}
	if out.OEMTableID == "" {
		out.OEMTableID = DefaultOEMTableID
	}
	if out.HypervisorVendor == "" {
		out.HypervisorVendor = DefaultHypervisorVendor
	}
	if out.IAPCBootArch == 0 {
		out.IAPCBootArch = DefaultIAPCBootArch
	}
	return out
}

func checkASCII(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("acpi: %s %q longer than %d characters", what, s, max)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7E {
			return fmt.Errorf("acpi: %s %q: non-printable byte %#x", what, s, s[i])
		}
	}
	return nil
}

func (c *Config) validate() error {
	if c.VCPUs < 1 || c.VCPUs > MaxVCPUs {
		return fmt.Errorf("acpi: %d vCPUs out of range 1..%d", c.VCPUs, MaxVCPUs)
	}
	for _, s := range []struct {
		what, v string
		max     int
	}{{"OEM id", c.OEMID, 6}, {"OEM table id", c.OEMTableID, 8}, {"hypervisor vendor", c.HypervisorVendor, 8}} {
		if err := checkASCII(s.what, s.v, s.max); err != nil {
			return err
		}
	}
	if len(c.MMIODevices) > 0x1000 {
		return fmt.Errorf("acpi: %d virtio-mmio devices (max 4096)", len(c.MMIODevices))
	}
	usedGSI := map[uint32]int{gsiPS2: -1, gsiCOM1: -1}
	for i, d := range c.MMIODevices {
		if d.Size == 0 || d.Base+uint64(d.Size) > 1<<32 {
			return fmt.Errorf("acpi: virtio-mmio device %d at %#x+%#x must be non-empty and below 4 GiB", i, d.Base, d.Size)
		}
		if d.GSI == 0 || d.GSI >= IOAPICPins {
			return fmt.Errorf("acpi: virtio-mmio device %d: GSI %d out of range 1..%d", i, d.GSI, IOAPICPins-1)
		}
		if j, ok := usedGSI[d.GSI]; ok {
			return fmt.Errorf("acpi: virtio-mmio device %d: GSI %d already used (by %s)", i, d.GSI, gsiUser(j))
		}
		usedGSI[d.GSI] = i
		for j, e := range c.MMIODevices[:i] {
			if d.Base < e.Base+uint64(e.Size) && e.Base < d.Base+uint64(d.Size) {
				return fmt.Errorf("acpi: virtio-mmio device %d at %#x overlaps device %d at %#x", i, d.Base, j, e.Base)
			}
		}
	}
	return nil
}

func gsiUser(i int) string {
	if i < 0 {
		return "a legacy device"
	}
	return fmt.Sprintf("virtio-mmio device %d", i)
}

// Build validates cfg and builds the DSDT, FADT and MADT.
func Build(cfg Config) (*Tables, error) {
	c := cfg.withDefaults()
	if err := c.validate(); err != nil {
		return nil, err
	}
	aml, err := dsdtAML(&c)
	if err != nil {
		return nil, fmt.Errorf("acpi: build DSDT: %w", err)
	}
	t := &Tables{cfg: c}
	t.DSDT = append(newHeader(&c, "DSDT", headerSize, 2), aml...)
	t.FADT = buildFADT(&c)
	t.MADT = buildMADT(&c)
	for _, b := range [][]byte{t.DSDT, t.FADT, t.MADT} {
		finishTable(b)
	}
	return t, nil
}

// newHeader returns a table of the given length with the standard header
// filled in (checksum 0 until finishTable).
func newHeader(c *Config, sig string, length int, rev byte) []byte {
	b := make([]byte, length)
	copy(b[0:4], sig)
	b[8] = rev
	putPadded(b[10:16], c.OEMID)
	putPadded(b[16:24], c.OEMTableID)
	binary.LittleEndian.PutUint32(b[24:], c.OEMRevision)
	copy(b[28:32], creatorID)
	binary.LittleEndian.PutUint32(b[32:], creatorRev)
	return b
}

// putPadded copies s into dst and pads with spaces.
func putPadded(dst []byte, s string) {
	n := copy(dst, s)
	for i := n; i < len(dst); i++ {
		dst[i] = ' '
	}
}

// finishTable sets the length field and the checksum of a table.
func finishTable(b []byte) {
	binary.LittleEndian.PutUint32(b[4:], uint32(len(b)))
	b[9] = 0
	b[9] = -sum(b)
}

func sum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}

// putGASIO8 writes an 8-bit System I/O generic address structure at off.
func putGASIO8(b []byte, off int, port uint16) {
	b[off] = 1   // System I/O space
	b[off+1] = 8 // register bit width
	b[off+2] = 0 // bit offset
	b[off+3] = 1 // byte access
	binary.LittleEndian.PutUint64(b[off+4:], uint64(port))
}

func buildFADT(c *Config) []byte {
	b := newHeader(c, "FACP", fadtSize, 6)
	binary.LittleEndian.PutUint16(b[fadtIAPCBootArch:], c.IAPCBootArch)
	binary.LittleEndian.PutUint32(b[fadtFlags:], FlagHWReducedACPI|FlagResetRegSup)
	putGASIO8(b, fadtResetReg, c.PowerPort)
	b[fadtResetValue] = ResetValue
	b[fadtMinorVersion] = fadtMinor
	putGASIO8(b, fadtSleepControl, c.PowerPort)
	putGASIO8(b, fadtSleepStatus, c.PowerPort)
	putPadded(b[fadtHypervisorID:fadtHypervisorID+8], c.HypervisorVendor)
	return b
}

func buildMADT(c *Config) []byte {
	b := newHeader(c, "APIC", headerSize+8, 5)
	binary.LittleEndian.PutUint32(b[36:], LocalAPICAddr)
	binary.LittleEndian.PutUint32(b[40:], 0) // no PCAT_COMPAT: no dual 8259 for the OS
	for i := 0; i < c.VCPUs; i++ {
		if i < 255 {
			b = append(b, madtLocalAPIC, 8, byte(i), byte(i))
			b = binary.LittleEndian.AppendUint32(b, madtEnabled)
			continue
		}
		b = append(b, madtLocalX2APIC, 16, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, uint32(i)) // x2APIC id
		b = binary.LittleEndian.AppendUint32(b, madtEnabled)
		b = binary.LittleEndian.AppendUint32(b, uint32(i)) // processor UID
	}
	b = append(b, madtIOAPIC, 12, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, IOAPICAddr)
	b = binary.LittleEndian.AppendUint32(b, 0) // GSI base
	if c.IRQ0ToGSI2 {
		b = append(b, madtOverride, 10, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, 2)
		b = binary.LittleEndian.AppendUint16(b, 0) // conforms to bus
	}
	return b
}

// MMIODeviceName is the DSDT name of the i-th virtio-mmio device
// ("V000", "V001", ...).
func MMIODeviceName(i int) string { return fmt.Sprintf("V%03X", i) }

func dsdtAML(c *Config) ([]byte, error) {
	edge := func(gsi uint32) Interrupt {
		return Interrupt{Consumer: true, Edge: true, GSIs: []uint32{gsi}}
	}
	sb := []Term{
		Device{Path: "COM1", Body: []Term{
			Name{"_HID", EISAID("PNP0501")},
			Name{"_UID", Integer(0)},
			Name{"_DDN", String("COM1")},
			Name{"_CRS", ResourceTemplate{
				IO{Decode16: true, Min: 0x3F8, Max: 0x3F8, Align: 1, Length: 8},
				edge(gsiCOM1),
			}},
		}},
		Device{Path: "PS2_", Body: []Term{
			Name{"_HID", EISAID("PNP0303")},
			Method{Path: "_STA", Body: []Term{Return{Integer(0x0F)}}},
			Name{"_CRS", ResourceTemplate{
				IO{Decode16: true, Min: 0x60, Max: 0x60, Align: 1, Length: 1},
				IO{Decode16: true, Min: 0x64, Max: 0x64, Align: 1, Length: 1},
				edge(gsiPS2),
			}},
		}},
	}
	for i, d := range c.MMIODevices {
		sb = append(sb, Device{Path: MMIODeviceName(i), Body: []Term{
			Name{"_HID", String("LNRO0005")},
			Name{"_UID", Integer(i)},
			Name{"_CCA", Integer(1)},
			Name{"_CRS", ResourceTemplate{
				Memory32Fixed{ReadWrite: true, Base: uint32(d.Base), Length: d.Size},
				edge(d.GSI),
			}},
		}})
	}
	return Encode(
		Name{"_S5_", Package{Integer(5), Integer(5), Integer(0), Integer(0)}},
		Scope{Path: "\\_SB_", Body: sb},
	)
}

// Size returns the number of bytes Write needs from an 8-byte aligned
// tablesAddr (DSDT, FADT, MADT and XSDT, each 8-byte aligned).
func (t *Tables) Size() uint64 {
	end, _ := t.layout(0)
	return end
}

// layout returns the end address and the start of each of DSDT, FADT,
// MADT, XSDT when laid out from base.
func (t *Tables) layout(base uint64) (end uint64, at [4]uint64) {
	off := alignUp(base)
	for i, n := range []int{len(t.DSDT), len(t.FADT), len(t.MADT), headerSize + 2*8} {
		at[i] = off
		off = alignUp(off + uint64(n))
	}
	return off, at
}

func alignUp(v uint64) uint64 { return (v + tableAlign - 1) &^ (tableAlign - 1) }

// Write places the RSDP at rsdpAddr (16-byte aligned, RSDPSize bytes) and
// the DSDT, FADT, MADT and XSDT from tablesAddr (aligned up to 8) without
// passing tablesLimit, patches X_DSDT, the XSDT entries and the RSDP's
// XSDT address, and recomputes every checksum. tablesAddr may be
// rsdpAddr+RSDPSize; the two ranges must not overlap. Nothing is written
// unless everything fits in guest RAM. The integrator must also pass
// rsdpAddr to the kernel (boot_params.acpi_rsdp_addr) unless rsdpAddr is in
// the BIOS area Linux scans (0xE0000-0xFFFFF).
func (t *Tables) Write(mem *guestmem.Memory, rsdpAddr, tablesAddr, tablesLimit uint64) error {
	if rsdpAddr%16 != 0 {
		return fmt.Errorf("acpi: RSDP address %#x is not 16-byte aligned", rsdpAddr)
	}
	end, at := t.layout(tablesAddr)
	if end < tablesAddr || end > tablesLimit {
		return fmt.Errorf("acpi: tables need %#x bytes at %#x, limit is %#x", t.Size(), tablesAddr, tablesLimit)
	}
	if rsdpAddr < end && at[0] < rsdpAddr+RSDPSize {
		return fmt.Errorf("acpi: RSDP at %#x overlaps tables at %#x-%#x", rsdpAddr, at[0], end)
	}
	img := make([]byte, end-at[0])
	put := func(addr uint64, b []byte) { copy(img[addr-at[0]:], b) }

	fadt := append([]byte(nil), t.FADT...)
	binary.LittleEndian.PutUint64(fadt[fadtXDSDT:], at[0])
	finishTable(fadt)

	xsdt := newHeader(&t.cfg, "XSDT", headerSize, 1)
	xsdt = binary.LittleEndian.AppendUint64(xsdt, at[1])
	xsdt = binary.LittleEndian.AppendUint64(xsdt, at[2])
	finishTable(xsdt)

	put(at[0], t.DSDT)
	put(at[1], fadt)
	put(at[2], t.MADT)
	put(at[3], xsdt)

	rsdp := make([]byte, RSDPSize)
	copy(rsdp, "RSD PTR ")
	putPadded(rsdp[9:15], t.cfg.OEMID)
	rsdp[15] = 2 // revision: ACPI 2.0+ with XSDT
	binary.LittleEndian.PutUint32(rsdp[20:], RSDPSize)
	binary.LittleEndian.PutUint64(rsdp[24:], at[3])
	rsdp[8] = -sum(rsdp[:20])
	rsdp[32] = -sum(rsdp)

	if !mem.Contains(at[0], uint64(len(img))) || !mem.Contains(rsdpAddr, RSDPSize) {
		return fmt.Errorf("acpi: RSDP at %#x or tables at %#x+%#x not in guest RAM", rsdpAddr, at[0], len(img))
	}
	if err := mem.WriteAt(img, at[0]); err != nil {
		return fmt.Errorf("acpi: write tables at %#x: %w", at[0], err)
	}
	if err := mem.WriteAt(rsdp, rsdpAddr); err != nil {
		return fmt.Errorf("acpi: write RSDP at %#x: %w", rsdpAddr, err)
	}
	return nil
}
