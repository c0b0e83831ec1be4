package amd64

import (
	"encoding/binary"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// Intel MultiProcessor Specification 1.4 table, for guests that do not use
// ACPI (acpi=off, or kernels without ACPI). Layout written by WriteMPTable:
//
//	addr+0   floating pointer "_MP_" (16 bytes) → addr+16
//	addr+16  configuration table "PCMP" (44-byte header), then entries:
//	         one processor per vCPU (APIC id = index, BSP flag on 0),
//	         one ISA bus (id 0), one I/O APIC (id ncpus+1, 0xFEC00000),
//	         24 I/O interrupts ISA IRQ i → I/O APIC pin i (conforming
//	         polarity and trigger, i.e. edge/active-high as ISA),
//	         ExtINT → LAPIC 0 LINT0 and NMI → all LAPICs LINT1.
//
// The I/O APIC id follows Firecracker (ncpus+1); it never collides with a
// processor's APIC id (0..ncpus-1). Linux finds the floating pointer by
// scanning the last KiB of base memory (0x9fc00), the EBDA and
// 0xF0000-0xFFFFF, so addr should be in one of those.
const (
	mpFloatSize     = 16
	mpHeaderSize    = 44
	mpProcSize      = 20
	mpBusSize       = 8
	mpIOAPICSize    = 8
	mpIntSize       = 8
	mpSpecRev       = 4 // MP spec 1.4
	mpAPICVersion   = 0x14
	mpIOAPICVersion = 0x11
	mpLAPICAddr     = 0xFEE00000
	mpIOAPICAddr    = 0xFEC00000
	mpIOAPICPins    = 24
	mpMaxCPUs       = 254
	mpOEMID         = "SVGO    "     // 8 bytes
	mpProductID     = "MICROVM     " // 12 bytes

	mpEntryProc      = 0
	mpEntryBus       = 1
	mpEntryIOAPIC    = 2
	mpEntryIOInt     = 3
	mpEntryLocalInt  = 4
	mpCPUEnabled     = 1 << 0
	mpCPUBootstrap   = 1 << 1
	mpIntTypeINT     = 0
	mpIntTypeNMI     = 1
	mpIntTypeExtINT  = 3
	mpCPUSignature   = 0x600       // family 6, model 0, stepping 0
	mpCPUFeatures    = 1<<0 | 1<<9 // FPU, APIC
	mpAllLocalAPICs  = 0xFF        // destination "all local APICs"
	mpIOAPICEnabled  = 1
	mpIOAPICIDOffset = 1 // I/O APIC id = ncpus + mpIOAPICIDOffset
)

// MPTableSize returns the number of bytes WriteMPTable writes for ncpus.
func MPTableSize(ncpus int) uint64 {
	entries := ncpus*mpProcSize + mpBusSize + mpIOAPICSize + (mpIOAPICPins+2)*mpIntSize
	return uint64(mpFloatSize + mpHeaderSize + entries)
}

// WriteMPTable writes an MP 1.4 floating pointer at addr (16-byte aligned)
// immediately followed by the configuration table, for ncpus vCPUs with
// APIC ids 0..ncpus-1. It fails, writing nothing, if ncpus is outside
// 1..254, the table would pass limit, or the range is not in guest RAM.
func WriteMPTable(mem *guestmem.Memory, addr, limit uint64, ncpus int) error {
	if ncpus < 1 || ncpus > mpMaxCPUs {
		return fmt.Errorf("mptable: %d vCPUs out of range 1..%d", ncpus, mpMaxCPUs)
	}
	if addr%16 != 0 {
		return fmt.Errorf("mptable: address %#x is not 16-byte aligned", addr)
	}
	size := MPTableSize(ncpus)
	if addr+size < addr || addr+size > limit || addr+size > 1<<32 {
		return fmt.Errorf("mptable: %d bytes at %#x pass limit %#x", size, addr, limit)
	}
	b := buildMPTable(uint32(addr), ncpus)
	if err := mem.WriteAt(b, addr); err != nil {
		return fmt.Errorf("mptable: write %d bytes at %#x: %w", len(b), addr, err)
	}
	return nil
}

func buildMPTable(addr uint32, ncpus int) []byte {
	le := binary.LittleEndian
	ioapicID := byte(ncpus + mpIOAPICIDOffset)

	// Configuration table header; length, count and checksum patched below.
	t := make([]byte, mpHeaderSize)
	copy(t[0:4], "PCMP")
	t[6] = mpSpecRev
	copy(t[8:16], mpOEMID)
	copy(t[16:28], mpProductID)
	le.PutUint32(t[36:], mpLAPICAddr)

	count := 0
	for i := 0; i < ncpus; i++ {
		flags := byte(mpCPUEnabled)
		if i == 0 {
			flags |= mpCPUBootstrap
		}
		t = append(t, mpEntryProc, byte(i), mpAPICVersion, flags)
		t = le.AppendUint32(t, mpCPUSignature)
		t = le.AppendUint32(t, mpCPUFeatures)
		t = append(t, make([]byte, 8)...) // reserved
		count++
	}
	t = append(t, mpEntryBus, 0)
	t = append(t, "ISA   "...)
	count++
	t = append(t, mpEntryIOAPIC, ioapicID, mpIOAPICVersion, mpIOAPICEnabled)
	t = le.AppendUint32(t, mpIOAPICAddr)
	count++
	for irq := 0; irq < mpIOAPICPins; irq++ {
		// type, interrupt type, flags (0: conforms to bus), source bus,
		// source bus IRQ, destination I/O APIC, destination INTIN.
		t = append(t, mpEntryIOInt, mpIntTypeINT, 0, 0, 0, byte(irq), ioapicID, byte(irq))
		count++
	}
	t = append(t, mpEntryLocalInt, mpIntTypeExtINT, 0, 0, 0, 0, 0, 0)            // → LAPIC 0, LINT0
	t = append(t, mpEntryLocalInt, mpIntTypeNMI, 0, 0, 0, 0, mpAllLocalAPICs, 1) // → all, LINT1
	count += 2

	le.PutUint16(t[4:], uint16(len(t)))
	le.PutUint16(t[34:], uint16(count))
	t[7] = -mpSum(t)

	f := make([]byte, mpFloatSize)
	copy(f[0:4], "_MP_")
	le.PutUint32(f[4:], addr+mpFloatSize)
	f[8] = 1 // length in 16-byte units
	f[9] = mpSpecRev
	// f[11] = 0: configuration table present; f[12] bit 7 clear: virtual
	// wire mode (no IMCR).
	f[10] = -mpSum(f)
	return append(f, t...)
}

func mpSum(b []byte) byte {
	var s byte
	for _, c := range b {
		s += c
	}
	return s
}
