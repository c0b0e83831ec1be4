package amd64

import (
	"encoding/binary"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// Model-specific register indices used at boot.
const (
	MSRIA32TSC           = 0x10
	MSRIA32SysenterCS    = 0x174
	MSRIA32SysenterESP   = 0x175
	MSRIA32SysenterEIP   = 0x176
	MSRIA32MiscEnable    = 0x1a0
	MSRMTRRDefType       = 0x2ff
	MSRSTAR              = 0xc0000081
	MSRLSTAR             = 0xc0000082
	MSRCSTAR             = 0xc0000083
	MSRSyscallMask       = 0xc0000084
	MSRKernelGSBase      = 0xc0000102
	MiscEnableFastString = 1 << 0
	// MTRRDefTypeBoot enables MTRRs (bit 11) with write-back (6) as the
	// default memory type, so the guest does not run RAM uncached.
	MTRRDefTypeBoot = 1<<11 | 6
)

// BootMSRs returns the MSR values every vCPU gets at boot: the syscall
// and sysenter MSRs and the TSC zeroed, fast strings enabled, and MTRRs
// on with write-back default. Set them after KVM_SET_CPUID2: KVM filters
// MSRs by the guest CPUID.
func BootMSRs() []kvm.MSREntry {
	return []kvm.MSREntry{
		{Index: MSRIA32SysenterCS},
		{Index: MSRIA32SysenterESP},
		{Index: MSRIA32SysenterEIP},
		{Index: MSRSTAR},
		{Index: MSRCSTAR},
		{Index: MSRKernelGSBase},
		{Index: MSRSyscallMask},
		{Index: MSRLSTAR},
		{Index: MSRIA32TSC},
		{Index: MSRIA32MiscEnable, Data: MiscEnableFastString},
		{Index: MSRMTRRDefType, Data: MTRRDefTypeBoot},
	}
}

// FPUBoot returns the x87/SSE state at boot: FCW 0x37f (all exceptions
// masked, extended precision) and MXCSR 0x1f80 (all SSE exceptions masked).
func FPUBoot() kvm.FPU {
	return kvm.FPU{FCW: 0x37f, MXCSR: 0x1f80}
}

// LAPIC register offsets and LVT delivery modes.
const (
	LAPICLVT0       = 0x350
	LAPICLVT1       = 0x360
	LVTDeliveryNMI  = 4
	LVTDeliveryExt  = 7
	lvtDeliveryMask = 0x7 << 8
)

// SetLINT programs LINT0 as ExtINT (the legacy PIC) and LINT1 as NMI in a
// LAPIC register image read with KVM_GET_LAPIC, touching only the
// delivery-mode bits 8-10 of each LVT entry.
func SetLINT(s *kvm.LAPICState) {
	setDeliveryMode(s, LAPICLVT0, LVTDeliveryExt)
	setDeliveryMode(s, LAPICLVT1, LVTDeliveryNMI)
}

func setDeliveryMode(s *kvm.LAPICState, off int, mode uint32) {
	v := binary.LittleEndian.Uint32(s.Regs[off:])
	v = v&^lvtDeliveryMask | mode<<8
	binary.LittleEndian.PutUint32(s.Regs[off:], v)
}
