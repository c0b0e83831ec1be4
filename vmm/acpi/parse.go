package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// Parser limits: tables bigger than this, or an XSDT with more entries,
// are rejected rather than read.
const (
	maxTableLen    = 1 << 20
	maxXSDTEntries = 64
	maxMADTEntries = 1 << 14
)

// ErrTable is wrapped by every table parsing error.
var ErrTable = errors.New("acpi table")

// Header is a decoded standard table header plus where it was found.
type Header struct {
	Signature       string
	Addr            uint64
	Length          uint32
	Revision        uint8
	OEMID           string
	OEMTableID      string
	OEMRevision     uint32
	CreatorID       string
	CreatorRevision uint32
}

// GAS is a generic address structure.
type GAS struct {
	SpaceID, BitWidth, BitOffset, AccessSize uint8
	Address                                  uint64
}

// ParsedRSDP is the decoded root pointer.
type ParsedRSDP struct {
	OEMID    string
	Revision uint8
	RSDTAddr uint32
	XSDTAddr uint64
}

// ParsedFADT holds the FADT fields this package sets.
type ParsedFADT struct {
	Header
	DSDT32           uint32
	IAPCBootArch     uint16
	Flags            uint32
	ResetReg         GAS
	ResetValue       uint8
	MinorVersion     uint8
	XDSDT            uint64
	SleepControl     GAS
	SleepStatus      GAS
	HypervisorVendor string
}

// LocalAPIC is a MADT Local APIC (type 0) or Local x2APIC (type 9) entry.
type LocalAPIC struct {
	X2APIC       bool
	ProcessorUID uint32
	APICID       uint32
	Flags        uint32
}

// IOAPIC is a MADT I/O APIC entry.
type IOAPIC struct {
	ID      uint8
	Addr    uint32
	GSIBase uint32
}

// InterruptOverride is a MADT interrupt source override entry.
type InterruptOverride struct {
	Bus, Source uint8
	GSI         uint32
	Flags       uint16
}

// ParsedMADT is the decoded MADT.
type ParsedMADT struct {
	Header
	LocalAPICAddr uint32
	Flags         uint32
	LocalAPICs    []LocalAPIC
	IOAPICs       []IOAPIC
	Overrides     []InterruptOverride
	OtherEntries  int // entries of types not decoded above
}

// Parsed is the table set reached from an RSDP.
type Parsed struct {
	RSDP   ParsedRSDP
	XSDT   Header
	Tables []Header // XSDT entries in order
	FADT   *ParsedFADT
	MADT   *ParsedMADT
	DSDT   *Header
	AML    []byte // DSDT body (after the header)
}

// Parse reads the tables back from guest memory: RSDP → XSDT → each
// table (FADT → DSDT), checking signatures, lengths and checksums, and
// decodes the FADT and MADT. Input is untrusted: every length is bounded
// and every read goes through mem.
func Parse(mem *guestmem.Memory, rsdpAddr uint64) (*Parsed, error) {
	return parse(mem, rsdpAddr, true)
}

func tableErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrTable, fmt.Sprintf(format, args...))
}

func parse(mem *guestmem.Memory, rsdpAddr uint64, verifySums bool) (*Parsed, error) {
	rsdp := make([]byte, RSDPSize)
	if err := mem.ReadAt(rsdp, rsdpAddr); err != nil {
		return nil, fmt.Errorf("read RSDP at %#x: %w", rsdpAddr, err)
	}
	if string(rsdp[:8]) != "RSD PTR " {
		return nil, tableErr("no RSDP signature at %#x", rsdpAddr)
	}
	p := &Parsed{RSDP: ParsedRSDP{
		OEMID:    strings.TrimRight(string(rsdp[9:15]), " "),
		Revision: rsdp[15],
		RSDTAddr: uint32At(rsdp, 16),
	}}
	if verifySums && sum(rsdp[:20]) != 0 {
		return nil, tableErr("RSDP checksum mismatch")
	}
	if p.RSDP.Revision < 2 {
		return nil, tableErr("RSDP revision %d has no XSDT", p.RSDP.Revision)
	}
	if l := uint32At(rsdp, 20); l != RSDPSize {
		return nil, tableErr("RSDP length %d, want %d", l, RSDPSize)
	}
	if verifySums && sum(rsdp) != 0 {
		return nil, tableErr("RSDP extended checksum mismatch")
	}
	p.RSDP.XSDTAddr = binary.LittleEndian.Uint64(rsdp[24:])

	xh, xsdt, err := readTable(mem, p.RSDP.XSDTAddr, "XSDT", verifySums)
	if err != nil {
		return nil, err
	}
	p.XSDT = xh
	body := xsdt[headerSize:]
	if len(body)%8 != 0 || len(body)/8 > maxXSDTEntries {
		return nil, tableErr("XSDT body of %d bytes is not a list of at most %d 8-byte entries", len(body), maxXSDTEntries)
	}
	for i := 0; i < len(body); i += 8 {
		addr := binary.LittleEndian.Uint64(body[i:])
		h, b, err := readTable(mem, addr, "", verifySums)
		if err != nil {
			return nil, fmt.Errorf("XSDT entry %d: %w", i/8, err)
		}
		p.Tables = append(p.Tables, h)
		switch h.Signature {
		case "FACP":
			if p.FADT != nil {
				return nil, tableErr("duplicate FADT")
			}
			if p.FADT, err = parseFADT(h, b); err != nil {
				return nil, err
			}
		case "APIC":
			if p.MADT != nil {
				return nil, tableErr("duplicate MADT")
			}
			if p.MADT, err = parseMADT(h, b); err != nil {
				return nil, err
			}
		}
	}
	if p.FADT == nil {
		return nil, tableErr("XSDT lists no FADT")
	}
	dsdtAddr := p.FADT.XDSDT
	if dsdtAddr == 0 {
		dsdtAddr = uint64(p.FADT.DSDT32)
	}
	dh, d, err := readTable(mem, dsdtAddr, "DSDT", verifySums)
	if err != nil {
		return nil, err
	}
	p.DSDT = &dh
	p.AML = d[headerSize:]
	return p, nil
}

// readTable reads and checks one table at addr. want, if not empty, is
// the required signature.
func readTable(mem *guestmem.Memory, addr uint64, want string, verifySum bool) (Header, []byte, error) {
	hdr := make([]byte, headerSize)
	if err := mem.ReadAt(hdr, addr); err != nil {
		return Header{}, nil, fmt.Errorf("read table header at %#x: %w", addr, err)
	}
	h := Header{
		Signature:       string(hdr[0:4]),
		Addr:            addr,
		Length:          uint32At(hdr, 4),
		Revision:        hdr[8],
		OEMID:           strings.TrimRight(string(hdr[10:16]), " "),
		OEMTableID:      strings.TrimRight(string(hdr[16:24]), " "),
		OEMRevision:     uint32At(hdr, 24),
		CreatorID:       string(hdr[28:32]),
		CreatorRevision: uint32At(hdr, 32),
	}
	if want != "" && h.Signature != want {
		return Header{}, nil, tableErr("table at %#x has signature %q, want %q", addr, h.Signature, want)
	}
	if h.Length < headerSize || h.Length > maxTableLen {
		return Header{}, nil, tableErr("%q at %#x: length %d out of range", h.Signature, addr, h.Length)
	}
	if !mem.Contains(addr, uint64(h.Length)) {
		return Header{}, nil, fmt.Errorf("%q at %#x+%#x: %w", h.Signature, addr, h.Length, guestmem.ErrOutOfRange)
	}
	b := make([]byte, h.Length)
	if err := mem.ReadAt(b, addr); err != nil {
		return Header{}, nil, fmt.Errorf("read %q at %#x+%#x: %w", h.Signature, addr, h.Length, err)
	}
	if verifySum && sum(b) != 0 {
		return Header{}, nil, tableErr("%q at %#x: checksum mismatch", h.Signature, addr)
	}
	return h, b, nil
}

func getGAS(b []byte, off int) GAS {
	return GAS{SpaceID: b[off], BitWidth: b[off+1], BitOffset: b[off+2], AccessSize: b[off+3],
		Address: binary.LittleEndian.Uint64(b[off+4:])}
}

func parseFADT(h Header, b []byte) (*ParsedFADT, error) {
	if len(b) < fadtSize {
		return nil, tableErr("FADT of %d bytes, want at least %d", len(b), fadtSize)
	}
	return &ParsedFADT{
		Header:           h,
		DSDT32:           uint32At(b, fadtDSDT32),
		IAPCBootArch:     binary.LittleEndian.Uint16(b[fadtIAPCBootArch:]),
		Flags:            uint32At(b, fadtFlags),
		ResetReg:         getGAS(b, fadtResetReg),
		ResetValue:       b[fadtResetValue],
		MinorVersion:     b[fadtMinorVersion],
		XDSDT:            binary.LittleEndian.Uint64(b[fadtXDSDT:]),
		SleepControl:     getGAS(b, fadtSleepControl),
		SleepStatus:      getGAS(b, fadtSleepStatus),
		HypervisorVendor: strings.TrimRight(string(b[fadtHypervisorID:fadtHypervisorID+8]), " \x00"),
	}, nil
}

func parseMADT(h Header, b []byte) (*ParsedMADT, error) {
	if len(b) < headerSize+8 {
		return nil, tableErr("MADT of %d bytes is too short", len(b))
	}
	m := &ParsedMADT{Header: h, LocalAPICAddr: uint32At(b, 36), Flags: uint32At(b, 40)}
	n := 0
	for off := headerSize + 8; off < len(b); n++ {
		if n >= maxMADTEntries {
			return nil, tableErr("MADT has more than %d entries", maxMADTEntries)
		}
		if len(b)-off < 2 {
			return nil, tableErr("MADT entry at %d truncated", off)
		}
		typ, l := b[off], int(b[off+1])
		if l < 2 || l > len(b)-off {
			return nil, tableErr("MADT entry at %d: length %d out of range", off, l)
		}
		e := b[off : off+l]
		want := map[byte]int{madtLocalAPIC: 8, madtIOAPIC: 12, madtOverride: 10, madtLocalX2APIC: 16}[typ]
		if want != 0 && l != want {
			return nil, tableErr("MADT entry type %d at %d: length %d, want %d", typ, off, l, want)
		}
		switch typ {
		case madtLocalAPIC:
			m.LocalAPICs = append(m.LocalAPICs, LocalAPIC{ProcessorUID: uint32(e[2]), APICID: uint32(e[3]), Flags: uint32At(e, 4)})
		case madtLocalX2APIC:
			m.LocalAPICs = append(m.LocalAPICs, LocalAPIC{X2APIC: true, APICID: uint32At(e, 4), Flags: uint32At(e, 8), ProcessorUID: uint32At(e, 12)})
		case madtIOAPIC:
			m.IOAPICs = append(m.IOAPICs, IOAPIC{ID: e[2], Addr: uint32At(e, 4), GSIBase: uint32At(e, 8)})
		case madtOverride:
			m.Overrides = append(m.Overrides, InterruptOverride{Bus: e[2], Source: e[3], GSI: uint32At(e, 4), Flags: binary.LittleEndian.Uint16(e[8:])})
		default:
			m.OtherEntries++
		}
		off += l
	}
	return m, nil
}

// uint32At reads a little-endian u32 at off.
func uint32At(b []byte, off int) uint32 { return binary.LittleEndian.Uint32(b[off:]) }
