package amd64

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ZeroPageSize is the size of struct boot_params.
const ZeroPageSize = 4096

// Offsets into struct boot_params (Documentation/arch/x86/zero-page.rst
// and boot.rst). Setup-header offsets equal bzImage file offsets.
const (
	offACPIRSDPAddr     = 0x070 // u64
	offExtRamdiskImage  = 0x0c0 // u32
	offExtRamdiskSize   = 0x0c4 // u32
	offExtCmdLinePtr    = 0x0c8 // u32
	offE820Entries      = 0x1e8 // u8
	offSentinel         = 0x1ef // u8
	offSetupHeader      = 0x1f1 // start of struct setup_header
	offSetupSects       = 0x1f1 // u8
	offVidMode          = 0x1fa // u16
	offBootFlag         = 0x1fe // u16
	offJump             = 0x200 // u16: jmp short; byte 0x201 is the header length
	offHeader           = 0x202 // u32 "HdrS"
	offVersion          = 0x206 // u16
	offTypeOfLoader     = 0x210 // u8
	offLoadFlags        = 0x211 // u8
	offCode32Start      = 0x214 // u32
	offRamdiskImage     = 0x218 // u32
	offRamdiskSize      = 0x21c // u32
	offHeapEndPtr       = 0x224 // u16
	offCmdLinePtr       = 0x228 // u32
	offInitrdAddrMax    = 0x22c // u32
	offKernelAlignment  = 0x230 // u32
	offRelocatable      = 0x234 // u8
	offXLoadFlags       = 0x236 // u16
	offCmdlineSize      = 0x238 // u32
	offPrefAddress      = 0x258 // u64
	offInitSize         = 0x260 // u32
	offE820Table        = 0x2d0 // E820MaxEntries * 20 bytes
	setupHeaderMinEnd   = offInitSize + 4
	setupHeaderMaxEnd   = offHeader + 0xff
	bootFlagMagic       = 0xaa55
	headerMagic         = 0x53726448 // "HdrS"
	defaultInitrdMax    = 0x37ffffff
	elfKernelAlignment  = 16 * MiB
	elfLoaderTypeUndef  = 0xff
	defaultVidModeNorm  = 0xffff
	defaultHeapEndPtr   = 0xfe00
	bzImageMinVersion64 = 0x020c
)

// loadflags bits.
const (
	LoadFlagLoadedHigh = 1 << 0
	LoadFlagQuiet      = 1 << 5
	LoadFlagKeepSegs   = 1 << 6
	LoadFlagCanUseHeap = 1 << 7
	XLoadFlagKernel64  = 1 << 0
	XLoadFlagAbove4G   = 1 << 1
)

// MinBzImage64Version is the oldest boot protocol (2.12) whose 64-bit
// entry point and xloadflags the loader relies on.
const MinBzImage64Version = bzImageMinVersion64

// ErrNotBzImage is returned (wrapped) by ParseSetupHeader when the boot
// flag or the "HdrS" magic is missing.
var ErrNotBzImage = errors.New("not a bzImage: missing boot flag 0xAA55 or HdrS magic")

// SetupHeader is the parsed struct setup_header of a bzImage.
type SetupHeader struct {
	SetupSects        uint8 // real-mode sectors after the boot sector (0 means 4)
	Version           uint16
	LoadFlags         uint8
	Code32Start       uint32
	InitrdAddrMax     uint32
	KernelAlignment   uint32
	RelocatableKernel bool
	XLoadFlags        uint16
	CmdlineSize       uint32 // maximum command line length, NUL excluded
	PrefAddress       uint64
	InitSize          uint32
	// Raw is the image bytes [0x1f1, 0x202+jump offset): the header as the
	// kernel declared it, to be copied to the same offsets of the zero page.
	Raw []byte
}

// SetupOffset returns the file offset of the protected-mode kernel.
func (h *SetupHeader) SetupOffset() int64 {
	n := int64(h.SetupSects)
	if n == 0 {
		n = 4
	}
	return (n + 1) * 512
}

// ParseSetupHeader parses the setup header from the first bytes of a
// bzImage (at least up to the end of the header; 1 KiB is always enough).
// It checks the magics and the header length; callers check the version
// and flags they need.
func ParseSetupHeader(image []byte) (*SetupHeader, error) {
	if len(image) < offVersion+2 {
		return nil, fmt.Errorf("setup header truncated: %d bytes: %w", len(image), ErrNotBzImage)
	}
	if binary.LittleEndian.Uint16(image[offBootFlag:]) != bootFlagMagic ||
		binary.LittleEndian.Uint32(image[offHeader:]) != headerMagic {
		return nil, ErrNotBzImage
	}
	end := offHeader + int(image[offJump+1])
	if end < setupHeaderMinEnd {
		return nil, fmt.Errorf("setup header length %#x too short (need %#x)", end, setupHeaderMinEnd)
	}
	if len(image) < end {
		return nil, fmt.Errorf("setup header truncated: need %d bytes, have %d", end, len(image))
	}
	le := binary.LittleEndian
	h := &SetupHeader{
		SetupSects:        image[offSetupSects],
		Version:           le.Uint16(image[offVersion:]),
		LoadFlags:         image[offLoadFlags],
		Code32Start:       le.Uint32(image[offCode32Start:]),
		InitrdAddrMax:     le.Uint32(image[offInitrdAddrMax:]),
		KernelAlignment:   le.Uint32(image[offKernelAlignment:]),
		RelocatableKernel: image[offRelocatable] != 0,
		XLoadFlags:        le.Uint16(image[offXLoadFlags:]),
		CmdlineSize:       le.Uint32(image[offCmdlineSize:]),
		PrefAddress:       le.Uint64(image[offPrefAddress:]),
		InitSize:          le.Uint32(image[offInitSize:]),
		Raw:               append([]byte(nil), image[offSetupHeader:end]...),
	}
	if h.InitrdAddrMax == 0 {
		h.InitrdAddrMax = defaultInitrdMax
	}
	return h, nil
}

// BootParams describes the zero page to build.
type BootParams struct {
	// Header is SetupHeader.Raw of a bzImage, copied to offset 0x1f1. Nil
	// for ELF boots: the page is then built from scratch with a 16 MiB
	// kernel_alignment.
	Header []byte
	// CmdlineAddr and CmdlineLen (NUL excluded) locate the command line.
	CmdlineAddr uint64
	CmdlineLen  uint32
	// InitrdAddr and InitrdSize locate the initrd (size 0: none).
	InitrdAddr uint64
	InitrdSize uint64
	// RSDPAddr is the ACPI RSDP address (0: none, the kernel scans).
	RSDPAddr uint64
	// E820 is the memory map (at most E820MaxEntries).
	E820 []E820Entry
}

// Build returns the 4096-byte zero page.
func (p *BootParams) Build() ([]byte, error) {
	if len(p.E820) == 0 || len(p.E820) > E820MaxEntries {
		return nil, fmt.Errorf("zero page: %d e820 entries, want 1..%d", len(p.E820), E820MaxEntries)
	}
	if len(p.Header) > setupHeaderMaxEnd-offSetupHeader || (p.Header != nil && len(p.Header) < setupHeaderMinEnd-offSetupHeader) {
		return nil, fmt.Errorf("zero page: setup header of %d bytes", len(p.Header))
	}
	if p.CmdlineAddr+uint64(p.CmdlineLen) < p.CmdlineAddr {
		return nil, errors.New("zero page: command line wraps")
	}
	le := binary.LittleEndian
	z := make([]byte, ZeroPageSize)
	if p.Header != nil {
		copy(z[offSetupHeader:], p.Header)
		le.PutUint32(z[offCode32Start:], HimemStart)
		z[offLoadFlags] |= LoadFlagLoadedHigh | LoadFlagCanUseHeap
		le.PutUint16(z[offHeapEndPtr:], defaultHeapEndPtr)
	} else {
		le.PutUint16(z[offBootFlag:], bootFlagMagic)
		le.PutUint32(z[offHeader:], headerMagic)
		le.PutUint32(z[offKernelAlignment:], elfKernelAlignment)
		z[offLoadFlags] = LoadFlagLoadedHigh
		// No header declares a maximum; record the length actually used.
		le.PutUint32(z[offCmdlineSize:], p.CmdlineLen)
	}
	le.PutUint16(z[offVidMode:], defaultVidModeNorm)
	z[offTypeOfLoader] = elfLoaderTypeUndef
	z[offSentinel] = 0

	le.PutUint32(z[offCmdLinePtr:], uint32(p.CmdlineAddr))
	le.PutUint32(z[offExtCmdLinePtr:], uint32(p.CmdlineAddr>>32))
	if p.InitrdSize != 0 {
		le.PutUint32(z[offRamdiskImage:], uint32(p.InitrdAddr))
		le.PutUint32(z[offExtRamdiskImage:], uint32(p.InitrdAddr>>32))
		le.PutUint32(z[offRamdiskSize:], uint32(p.InitrdSize))
		le.PutUint32(z[offExtRamdiskSize:], uint32(p.InitrdSize>>32))
	} else {
		le.PutUint32(z[offRamdiskImage:], 0)
		le.PutUint32(z[offRamdiskSize:], 0)
	}
	le.PutUint64(z[offACPIRSDPAddr:], p.RSDPAddr)
	z[offE820Entries] = uint8(len(p.E820))
	copy(z[offE820Table:], EncodeE820(p.E820))
	return z, nil
}

// ZeroPage is a zero page parsed back, for tests and diagnostics.
type ZeroPage struct {
	BootFlag        uint16
	Header          uint32
	Version         uint16
	VidMode         uint16
	TypeOfLoader    uint8
	LoadFlags       uint8
	Code32Start     uint32
	CmdlinePtr      uint64 // cmd_line_ptr | ext_cmd_line_ptr<<32
	CmdlineSize     uint32
	RamdiskImage    uint64 // ramdisk_image | ext_ramdisk_image<<32
	RamdiskSize     uint64 // ramdisk_size | ext_ramdisk_size<<32
	KernelAlignment uint32
	XLoadFlags      uint16
	InitSize        uint32
	ACPIRSDPAddr    uint64
	E820            []E820Entry
}

// ParseZeroPage decodes the fields Build writes.
func ParseZeroPage(z []byte) (*ZeroPage, error) {
	if len(z) != ZeroPageSize {
		return nil, fmt.Errorf("zero page is %d bytes, want %d", len(z), ZeroPageSize)
	}
	le := binary.LittleEndian
	n := int(z[offE820Entries])
	if n > E820MaxEntries {
		return nil, fmt.Errorf("zero page: e820_entries %d exceeds %d", n, E820MaxEntries)
	}
	e820, err := DecodeE820(z[offE820Table : offE820Table+n*E820EntrySize])
	if err != nil {
		return nil, err
	}
	return &ZeroPage{
		BootFlag:        le.Uint16(z[offBootFlag:]),
		Header:          le.Uint32(z[offHeader:]),
		Version:         le.Uint16(z[offVersion:]),
		VidMode:         le.Uint16(z[offVidMode:]),
		TypeOfLoader:    z[offTypeOfLoader],
		LoadFlags:       z[offLoadFlags],
		Code32Start:     le.Uint32(z[offCode32Start:]),
		CmdlinePtr:      uint64(le.Uint32(z[offCmdLinePtr:])) | uint64(le.Uint32(z[offExtCmdLinePtr:]))<<32,
		CmdlineSize:     le.Uint32(z[offCmdlineSize:]),
		RamdiskImage:    uint64(le.Uint32(z[offRamdiskImage:])) | uint64(le.Uint32(z[offExtRamdiskImage:]))<<32,
		RamdiskSize:     uint64(le.Uint32(z[offRamdiskSize:])) | uint64(le.Uint32(z[offExtRamdiskSize:]))<<32,
		KernelAlignment: le.Uint32(z[offKernelAlignment:]),
		XLoadFlags:      le.Uint16(z[offXLoadFlags:]),
		InitSize:        le.Uint32(z[offInitSize:]),
		ACPIRSDPAddr:    le.Uint64(z[offACPIRSDPAddr:]),
		E820:            e820,
	}, nil
}
