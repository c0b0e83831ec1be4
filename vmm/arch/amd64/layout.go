// Package amd64 owns the x86_64 guest platform description used to enter
// Linux: the guest-physical memory layout, the e820 map, the Linux zero
// page and PVH start info encodings, boot page tables and GDT, the
// initial register state, CPUID shaping, boot MSRs and LAPIC LINT setup.
//
// Everything here is pure: functions compute values or write into a
// *guestmem.Memory handed to them; nothing issues ioctls. There is no
// shared mutable state, so no goroutine owns anything and there are no
// locks.
package amd64

import (
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// Size helpers.
const (
	KiB = 1 << 10
	MiB = 1 << 20
	GiB = 1 << 30
)

// PageSize is the x86 base page size.
const PageSize = 4 * KiB

// Guest-physical layout of the low megabyte and the boot structures.
// The same layout is used by the 64-bit Linux boot path and by PVH.
const (
	// GDTAddr holds the 4-entry boot GDT (null, code, data, TSS): 32 bytes.
	GDTAddr = 0x500
	// IDTAddr holds the boot IDT: a single zero 8-byte entry (limit 7),
	// so any exception before the kernel loads its own IDT triple-faults.
	IDTAddr = 0x520
	// PVHStartInfoAddr holds struct hvm_start_info (56 bytes) for PVH boots.
	PVHStartInfoAddr = 0x6000
	// PVHModlistAddr holds the PVH module list (one 32-byte entry: the initrd).
	PVHModlistAddr = 0x6040
	// ZeroPageAddr holds struct boot_params (4 KiB) for 64-bit Linux boots.
	ZeroPageAddr = 0x7000
	// PVHMemmapAddr holds the PVH memory map (24-byte entries). It shares
	// the zero page's spot: a boot uses one protocol or the other.
	PVHMemmapAddr = ZeroPageAddr
	// BootStackAddr is the initial RSP/RBP; the stack grows down into the
	// page at 0x8000.
	BootStackAddr = 0x8ff0
	// PML4Addr is the boot page-map level 4 (CR3).
	PML4Addr = 0x9000
	// PDPTAddr is the boot page-directory-pointer table.
	PDPTAddr = 0xa000
	// PDAddr is the first of PDCount page directories, one per GiB
	// identity-mapped with 2 MiB pages.
	PDAddr = 0xb000
	// PDCount is the number of page directories: 4 map the first 4 GiB.
	PDCount = 4
	// PageTablesEnd is the first address after the boot page tables.
	PageTablesEnd = PDAddr + PDCount*PageSize
	// CmdlineAddr is where the NUL-terminated kernel command line goes.
	CmdlineAddr = 0x20000
	// CmdlineMaxSize is the space reserved for the command line, NUL
	// included. The kernel's own limit (cmdline_size) is usually lower.
	CmdlineMaxSize = 0x10000
	// EBDAStart is the start of the extended BIOS data area; RAM below it
	// is usable low memory, everything from here to HimemStart is reserved.
	EBDAStart = 0x9fc00
	// MPTableAddr is where the MP floating pointer and table are written.
	// The table may extend up to MPTableEnd (it grows with the vCPU count:
	// about 5.5 KiB for 254 vCPUs), through the legacy VGA hole, which
	// this platform does not emulate and the e820 map reserves.
	MPTableAddr = EBDAStart
	// MPTableEnd bounds the MP table area.
	MPTableEnd = RSDPAddr
	// RSDPAddr is the ACPI RSDP: inside the BIOS area Linux scans, and also
	// passed in boot_params.acpi_rsdp_addr / hvm_start_info.rsdp_paddr.
	RSDPAddr = 0xe0000
	// ACPITablesAddr is the first address for the other ACPI tables
	// (after the 36-byte RSDP, 64-byte aligned).
	ACPITablesAddr = RSDPAddr + 0x40
	// ACPITablesEnd bounds the ACPI table area.
	ACPITablesEnd = HimemStart
	// HimemStart (1 MiB) is where bzImage protected-mode code is loaded;
	// no boot structure lies at or above it.
	HimemStart = 0x100000
)

// The 32-bit MMIO hole and the fixed devices in it.
const (
	// MMIOHoleStart is the start of the 32-bit MMIO hole: RAM never
	// occupies [MMIOHoleStart, MMIOHoleEnd).
	MMIOHoleStart = 3 * GiB
	// MMIOHoleEnd is the end of the hole; RAM beyond 3 GiB resumes here.
	MMIOHoleEnd = 4 * GiB
	// VirtioMMIOBase is the first virtio-mmio window.
	VirtioMMIOBase = 0xd000_0000
	// VirtioMMIOWindowSize is the size of one virtio-mmio window.
	VirtioMMIOWindowSize = 4 * KiB
	// VirtioMMIOMaxWindows is how many windows the region has room for.
	VirtioMMIOMaxWindows = 64
	// VirtioMMIOEnd is the end of the virtio-mmio region.
	VirtioMMIOEnd = VirtioMMIOBase + VirtioMMIOMaxWindows*VirtioMMIOWindowSize
	// IOAPICAddr is the IOAPIC register window (in-kernel irqchip).
	IOAPICAddr = 0xfec0_0000
	// LAPICAddr is the local APIC register window.
	LAPICAddr = 0xfee0_0000
	// KVMTSSAddr is given to KVM_SET_TSS_ADDR: 3 pages, overlapping no
	// RAM and no MMIO device.
	KVMTSSAddr = 0xfffb_d000
	// KVMTSSSize is the size of the KVM TSS region.
	KVMTSSSize = 3 * PageSize
	// KVMIdentityMapAddr is given to KVM_SET_IDENTITY_MAP_ADDR: one page
	// just below the TSS (KVM's own default location).
	KVMIdentityMapAddr = KVMTSSAddr - PageSize
)

// Legacy interrupt lines. GSIs 0..4 belong to the PIT, keyboard, cascade
// and serial ports; GSIs FirstDeviceGSI..LastDeviceGSI are free for
// devices (one per virtio-mmio window).
const (
	FirstDeviceGSI = 5
	LastDeviceGSI  = 23
)

// Guest RAM size limits accepted by MemoryRanges.
const (
	MinMemorySize = 256 * MiB
	MaxMemorySize = 512 * GiB
	// MemoryAlign is the required granularity of the RAM size: 2 MiB, so
	// every region is a whole number of huge pages and of boot page-table
	// entries. The hole boundaries (3 GiB, 4 GiB) are 2 MiB aligned too.
	MemoryAlign = 2 * MiB
)

// VirtioMMIOWindow returns the base address of virtio-mmio window i.
func VirtioMMIOWindow(i int) (uint64, error) {
	if i < 0 || i >= VirtioMMIOMaxWindows {
		return 0, fmt.Errorf("virtio-mmio window %d out of range [0, %d)", i, VirtioMMIOMaxWindows)
	}
	return VirtioMMIOBase + uint64(i)*VirtioMMIOWindowSize, nil
}

// MemoryRanges splits size bytes of guest RAM around the 32-bit MMIO hole.
// Up to 3 GiB the result is one range at 0; above, the first 3 GiB stay
// low and the rest starts at 4 GiB. size must be in
// [MinMemorySize, MaxMemorySize] and a multiple of MemoryAlign.
func MemoryRanges(size uint64) ([]guestmem.Range, error) {
	if size < MinMemorySize || size > MaxMemorySize {
		return nil, fmt.Errorf("guest memory size %d MiB out of range [%d MiB, %d GiB]",
			size/MiB, MinMemorySize/MiB, MaxMemorySize/GiB)
	}
	if size%MemoryAlign != 0 {
		return nil, fmt.Errorf("guest memory size %#x is not a multiple of %d MiB", size, MemoryAlign/MiB)
	}
	if size <= MMIOHoleStart {
		return []guestmem.Range{{GPA: 0, Size: size}}, nil
	}
	return []guestmem.Range{
		{GPA: 0, Size: MMIOHoleStart},
		{GPA: MMIOHoleEnd, Size: size - MMIOHoleStart},
	}, nil
}

// DeviceMemoryAlign aligns where device memory starts.
const DeviceMemoryAlign = 1 * GiB

// DeviceMemoryStart is the first guest-physical address of device memory
// (virtio-pmem regions) for a VM with memSize bytes of RAM: above the
// 32-bit MMIO hole and above RAM, so that it is in no e820 entry and the
// guest's driver can claim it.
func DeviceMemoryStart(memSize uint64) uint64 {
	end := uint64(MMIOHoleEnd)
	if memSize > MMIOHoleStart {
		end = MMIOHoleEnd + memSize - MMIOHoleStart
	}
	return (end + DeviceMemoryAlign - 1) &^ (DeviceMemoryAlign - 1)
}
