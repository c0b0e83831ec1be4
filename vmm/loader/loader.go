// Package loader owns placing a Linux kernel, initrd and command line in
// guest memory and describing how to enter it: it recognises a bzImage or
// an ELF vmlinux (with or without a PVH note), copies them into RAM with
// every address bounds-checked, and writes the zero page or the PVH start
// info. It is called once, by the VM builder, before any vCPU runs; it has
// no state of its own and takes no locks.
package loader

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/vmm/arch/amd64"
	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// Mode is how the vCPU enters the kernel.
type Mode int

// Boot modes.
const (
	// Linux64 is the 64-bit Linux boot protocol: long mode with identity
	// page tables, RSI = zero page.
	Linux64 Mode = iota + 1
	// PVH is the Xen PVH entry: 32-bit protected mode, paging off,
	// RBX = hvm_start_info.
	PVH
)

func (m Mode) String() string {
	switch m {
	case Linux64:
		return "linux64"
	case PVH:
		return "pvh"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// Format is the kernel image format Load recognised.
type Format int

// Kernel image formats.
const (
	FormatBzImage Format = iota + 1
	FormatELF
)

// elfCmdlineMax is the command line limit for ELF boots, which carry no
// setup header: COMMAND_LINE_SIZE (2048) on x86 minus the NUL.
const elfCmdlineMax = 2047

// Options are the inputs of Load besides the kernel image.
type Options struct {
	// KernelName names the kernel in errors (usually its path).
	KernelName string
	// Cmdline is the kernel command line, without NUL.
	Cmdline string
	// Initrd, when non-nil and InitrdSize > 0, is loaded at the top of
	// low RAM.
	Initrd     io.ReaderAt
	InitrdSize int64
	// E820 is the memory map to hand the guest. Nil: amd64.E820 over the
	// RAM regions of mem.
	E820 []amd64.E820Entry
	// RSDPAddr is the ACPI RSDP address (normally amd64.RSDPAddr, written
	// by the ACPI builder); 0 when there are no ACPI tables.
	RSDPAddr uint64
}

// Boot says how to start the loaded kernel.
type Boot struct {
	Mode   Mode
	Format Format
	// Entry is the guest-physical entry point (RIP).
	Entry uint64
	// BootInfoAddr is the zero page (Linux64) or hvm_start_info (PVH).
	BootInfoAddr uint64
	// KernelStart and KernelEnd bound the memory the kernel occupies,
	// including (for a bzImage) the room it needs to decompress.
	KernelStart, KernelEnd uint64
	// InitrdAddr and InitrdSize locate the initrd (size 0: none).
	InitrdAddr, InitrdSize uint64
	// CmdlineAddr and CmdlineLen (NUL excluded) locate the command line.
	CmdlineAddr uint64
	CmdlineLen  int
}

// Regs returns the boot vCPU's general registers.
func (b *Boot) Regs() kvm.Regs {
	if b.Mode == PVH {
		return amd64.PVHRegs(b.Entry)
	}
	return amd64.LinuxRegs(b.Entry)
}

// Sregs writes the boot GDT/IDT (and page tables for Linux64) into mem
// and returns base, as read by KVM_GET_SREGS, set up for the entry mode.
func (b *Boot) Sregs(base kvm.Sregs, mem *guestmem.Memory) (kvm.Sregs, error) {
	if b.Mode == PVH {
		return amd64.PVHSregs(base, mem)
	}
	return amd64.LongModeSregs(base, mem)
}

// LoadFiles opens kernelPath (and initrdPath unless empty) and calls Load.
func LoadFiles(mem *guestmem.Memory, kernelPath, initrdPath string, opts Options) (*Boot, error) {
	k, err := os.Open(kernelPath)
	if err != nil {
		return nil, fmt.Errorf("open kernel: %w", err)
	}
	defer k.Close()
	st, err := k.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat kernel %q: %w", kernelPath, err)
	}
	if opts.KernelName == "" {
		opts.KernelName = kernelPath
	}
	if initrdPath != "" {
		f, err := os.Open(initrdPath)
		if err != nil {
			return nil, fmt.Errorf("open initrd: %w", err)
		}
		defer f.Close()
		ist, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("stat initrd %q: %w", initrdPath, err)
		}
		opts.Initrd, opts.InitrdSize = f, ist.Size()
	}
	return Load(mem, k, st.Size(), opts)
}

// Load places the kernel image of kernelSize bytes, the initrd and the
// command line in mem and writes the zero page or PVH start info. The
// format is detected from the image: an ELF64 x86_64 vmlinux (PVH when it
// has a XEN_ELFNOTE_PHYS32_ENTRY note, else the 64-bit entry at e_entry)
// or a bzImage (protocol >= 2.12 with a 64-bit entry at 1 MiB + 0x200).
// On error mem may be partly written.
func Load(mem *guestmem.Memory, kernel io.ReaderAt, kernelSize int64, opts Options) (*Boot, error) {
	name := opts.KernelName
	if kernelSize <= 0 {
		return nil, fmt.Errorf("kernel %q is empty", name)
	}
	lowEnd, err := lowRAMEnd(mem)
	if err != nil {
		return nil, err
	}
	e820 := opts.E820
	if e820 == nil {
		ranges := make([]guestmem.Range, 0, len(mem.Regions()))
		for _, r := range mem.Regions() {
			ranges = append(ranges, guestmem.Range{GPA: r.GPA, Size: r.Size})
		}
		if e820, err = amd64.E820(ranges); err != nil {
			return nil, fmt.Errorf("build e820 map: %w", err)
		}
	}
	if opts.Initrd == nil || opts.InitrdSize < 0 {
		opts.InitrdSize = 0
	}

	head := make([]byte, min(kernelSize, 1024))
	if _, err := kernel.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("read kernel %q: %w", name, err)
	}

	var (
		b         *Boot
		cmdMax    uint64
		initrdEnd uint64 // exclusive upper bound for the initrd
		header    []byte // bzImage setup header for the zero page
	)
	if bytes.HasPrefix(head, elfMagic) {
		img, err := parseELF(kernel, kernelSize)
		if err != nil {
			return nil, fmt.Errorf("kernel %q: %w", name, err)
		}
		if b, err = loadELF(mem, kernel, img); err != nil {
			return nil, fmt.Errorf("load kernel %q: %w", name, err)
		}
		cmdMax, initrdEnd = elfCmdlineMax, lowEnd
	} else {
		h, err := amd64.ParseSetupHeader(head)
		if errors.Is(err, amd64.ErrNotBzImage) {
			return nil, fmt.Errorf("kernel %q is not a bzImage or an ELF vmlinux: %w", name, err)
		}
		if err != nil {
			return nil, fmt.Errorf("kernel %q: bzImage %w", name, err)
		}
		if b, err = loadBzImage(mem, kernel, kernelSize, h, lowEnd); err != nil {
			return nil, fmt.Errorf("load kernel %q: %w", name, err)
		}
		cmdMax = uint64(min(h.CmdlineSize, amd64.CmdlineMaxSize-1))
		initrdEnd = min(lowEnd, uint64(h.InitrdAddrMax)+1)
		header = h.Raw
	}

	if err := writeCmdline(mem, opts.Cmdline, cmdMax); err != nil {
		return nil, err
	}
	b.CmdlineAddr, b.CmdlineLen = amd64.CmdlineAddr, len(opts.Cmdline)

	if opts.InitrdSize > 0 {
		addr, err := placeInitrd(b.KernelEnd, initrdEnd, uint64(opts.InitrdSize))
		if err != nil {
			return nil, err
		}
		if err := readInto(mem, addr, opts.Initrd, 0, uint64(opts.InitrdSize)); err != nil {
			return nil, fmt.Errorf("load initrd: %w", err)
		}
		b.InitrdAddr, b.InitrdSize = addr, uint64(opts.InitrdSize)
	}

	if b.Mode == PVH {
		err = writePVHStartInfo(mem, b, opts.RSDPAddr, e820)
	} else {
		err = writeZeroPage(mem, b, header, opts.RSDPAddr, e820)
	}
	if err != nil {
		return nil, err
	}
	log.L.Debugf("loaded kernel %q: %s entry %#x, kernel [%#x, %#x), initrd %#x+%#x, cmdline %d bytes",
		name, b.Mode, b.Entry, b.KernelStart, b.KernelEnd, b.InitrdAddr, b.InitrdSize, b.CmdlineLen)
	return b, nil
}

// lowRAMEnd returns the end of the RAM region holding 1 MiB, which must
// also hold the boot structures below it; it is capped at 4 GiB.
func lowRAMEnd(mem *guestmem.Memory) (uint64, error) {
	for _, r := range mem.Regions() {
		if r.GPA == 0 && r.End() > amd64.HimemStart {
			return min(r.End(), amd64.MMIOHoleEnd), nil
		}
	}
	return 0, errors.New("guest RAM has no region covering [0, 1 MiB]")
}

// loadBzImage copies the protected-mode part of a bzImage to 1 MiB.
func loadBzImage(mem *guestmem.Memory, r io.ReaderAt, size int64, h *amd64.SetupHeader, lowEnd uint64) (*Boot, error) {
	if h.Version < amd64.MinBzImage64Version {
		return nil, fmt.Errorf("bzImage boot protocol %d.%02d is too old (need 2.12 or later)", h.Version>>8, h.Version&0xff)
	}
	if h.XLoadFlags&amd64.XLoadFlagKernel64 == 0 {
		return nil, errors.New("bzImage has no 64-bit entry point (XLF_KERNEL_64 not set)")
	}
	if h.LoadFlags&amd64.LoadFlagLoadedHigh == 0 {
		return nil, errors.New("bzImage is not loaded high (zImage not supported)")
	}
	off := h.SetupOffset()
	if off >= size {
		return nil, fmt.Errorf("bzImage of %d bytes has no protected-mode part after %d setup bytes", size, off)
	}
	payload := uint64(size - off)
	const load = amd64.HimemStart

	// Where the kernel decompresses itself: pref_address, or for a
	// relocatable kernel the load address aligned to kernel_alignment if
	// that is higher. It needs init_size bytes from there.
	run := h.PrefAddress
	if h.RelocatableKernel {
		a := uint64(h.KernelAlignment)
		if a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("bzImage kernel_alignment %#x is not a power of two", a)
		}
		run = max(run, (load+a-1)&^(a-1))
	}
	end := max(load+payload, run+uint64(h.InitSize))
	if end < run || end > lowEnd {
		return nil, fmt.Errorf("kernel needs RAM up to %#x (%d bytes payload, init_size %#x at %#x) but low RAM ends at %#x",
			end, payload, h.InitSize, run, lowEnd)
	}
	if err := readInto(mem, load, r, off, payload); err != nil {
		return nil, err
	}
	return &Boot{
		Mode:         Linux64,
		Format:       FormatBzImage,
		Entry:        load + 0x200,
		BootInfoAddr: amd64.ZeroPageAddr,
		KernelStart:  load,
		KernelEnd:    end,
	}, nil
}

// loadELF copies the PT_LOAD segments to their physical addresses.
func loadELF(mem *guestmem.Memory, r io.ReaderAt, img *elfImage) (*Boot, error) {
	b := &Boot{Format: FormatELF, KernelStart: ^uint64(0), BootInfoAddr: amd64.ZeroPageAddr, Mode: Linux64, Entry: img.entry}
	if img.hasPVH {
		b.Mode, b.Entry, b.BootInfoAddr = PVH, uint64(img.pvhEntry), amd64.PVHStartInfoAddr
	}
	for i, s := range img.segments {
		end := s.paddr + s.memsz
		if s.paddr < amd64.HimemStart || end > amd64.IdentityMapSize {
			return nil, fmt.Errorf("ELF segment %d [%#x, %#x) outside [1 MiB, 4 GiB)", i, s.paddr, end)
		}
		if !mem.Contains(s.paddr, s.memsz) {
			return nil, fmt.Errorf("ELF segment %d [%#x, %#x) is not inside guest RAM", i, s.paddr, end)
		}
		if err := readInto(mem, s.paddr, r, int64(s.off), s.filesz); err != nil {
			return nil, fmt.Errorf("ELF segment %d: %w", i, err)
		}
		bss, err := mem.Slice(s.paddr+s.filesz, s.memsz-s.filesz)
		if err != nil {
			return nil, fmt.Errorf("ELF segment %d: %w", i, err)
		}
		clear(bss)
		b.KernelStart = min(b.KernelStart, s.paddr)
		b.KernelEnd = max(b.KernelEnd, end)
	}
	if b.Entry >= amd64.IdentityMapSize || !mem.Contains(b.Entry, 1) {
		return nil, fmt.Errorf("%s entry point %#x is not in guest RAM below 4 GiB", b.Mode, b.Entry)
	}
	return b, nil
}

// readInto copies n bytes at file offset off of r to guest address gpa.
func readInto(mem *guestmem.Memory, gpa uint64, r io.ReaderAt, off int64, n uint64) error {
	dst, err := mem.Slice(gpa, n)
	if err != nil {
		return fmt.Errorf("%d bytes at %#x do not fit in guest RAM: %w", n, gpa, err)
	}
	if _, err := io.ReadFull(io.NewSectionReader(r, off, int64(n)), dst); err != nil {
		return fmt.Errorf("read %d bytes at offset %d: %w", n, off, err)
	}
	return nil
}

// writeCmdline stores the NUL-terminated command line at CmdlineAddr.
func writeCmdline(mem *guestmem.Memory, cmdline string, maxLen uint64) error {
	if uint64(len(cmdline)) > maxLen {
		return fmt.Errorf("kernel command line is %d bytes, the kernel accepts at most %d", len(cmdline), maxLen)
	}
	if bytes.IndexByte([]byte(cmdline), 0) >= 0 {
		return errors.New("kernel command line contains a NUL byte")
	}
	buf := append([]byte(cmdline), 0)
	if err := mem.WriteAt(buf, amd64.CmdlineAddr); err != nil {
		return fmt.Errorf("write kernel command line: %w", err)
	}
	return nil
}

// placeInitrd returns the highest page-aligned address for size bytes
// that ends at or below limit and starts at or above kernelEnd.
func placeInitrd(kernelEnd, limit, size uint64) (uint64, error) {
	floor := (kernelEnd + amd64.PageSize - 1) &^ (amd64.PageSize - 1)
	if size > limit || (limit-size)&^(amd64.PageSize-1) < floor {
		return 0, fmt.Errorf("initrd of %d bytes does not fit between the kernel end %#x and %#x", size, floor, limit)
	}
	return (limit - size) &^ (amd64.PageSize - 1), nil
}

func writeZeroPage(mem *guestmem.Memory, b *Boot, header []byte, rsdp uint64, e820 []amd64.E820Entry) error {
	p := amd64.BootParams{
		Header:      header,
		CmdlineAddr: b.CmdlineAddr,
		CmdlineLen:  uint32(b.CmdlineLen),
		InitrdAddr:  b.InitrdAddr,
		InitrdSize:  b.InitrdSize,
		RSDPAddr:    rsdp,
		E820:        e820,
	}
	z, err := p.Build()
	if err != nil {
		return err
	}
	if err := mem.WriteAt(z, amd64.ZeroPageAddr); err != nil {
		return fmt.Errorf("write zero page: %w", err)
	}
	return nil
}

func writePVHStartInfo(mem *guestmem.Memory, b *Boot, rsdp uint64, e820 []amd64.E820Entry) error {
	si := amd64.PVHStartInfo{
		CmdlineAddr: b.CmdlineAddr,
		RSDPAddr:    rsdp,
		InitrdAddr:  b.InitrdAddr,
		InitrdSize:  b.InitrdSize,
		Memmap:      e820,
	}
	blobs, err := si.Encode()
	if err != nil {
		return err
	}
	for _, w := range []struct {
		what string
		b    []byte
		gpa  uint64
	}{
		{"start info", blobs.StartInfo, amd64.PVHStartInfoAddr},
		{"module list", blobs.Modlist, amd64.PVHModlistAddr},
		{"memory map", blobs.Memmap, amd64.PVHMemmapAddr},
	} {
		if err := mem.WriteAt(w.b, w.gpa); err != nil {
			return fmt.Errorf("write PVH %s: %w", w.what, err)
		}
	}
	return nil
}
