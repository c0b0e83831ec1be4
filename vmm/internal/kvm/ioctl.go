package kvm

import "strconv"

// Ioctl request numbers, built the way <linux/kvm.h> builds them:
// _IOC(dir, KVMIO=0xAE, nr, size). Flexible-array ioctls encode only the
// header size.
const (
	iocNone  = 0
	iocWrite = 1
	iocRead  = 2

	kvmio = 0xAE
)

func ioc(dir, nr, size uintptr) uintptr {
	return dir<<30 | size<<16 | kvmio<<8 | nr
}

var (
	// System ioctls (on the /dev/kvm fd).
	kvmGetAPIVersion     = ioc(iocNone, 0x00, 0)
	kvmCreateVM          = ioc(iocNone, 0x01, 0)
	kvmCheckExtension    = ioc(iocNone, 0x03, 0)
	kvmGetVCPUMmapSize   = ioc(iocNone, 0x04, 0)
	kvmGetSupportedCPUID = ioc(iocRead|iocWrite, 0x05, 8)

	// VM ioctls.
	kvmCreateVCPU          = ioc(iocNone, 0x41, 0)
	kvmSetUserMemoryRegion = ioc(iocWrite, 0x46, 32)
	kvmSetTSSAddr          = ioc(iocNone, 0x47, 0)
	kvmSetIdentityMapAddr  = ioc(iocWrite, 0x48, 8)
	kvmCreateIRQChip       = ioc(iocNone, 0x60, 0)
	kvmIRQLine             = ioc(iocWrite, 0x61, 8)
	kvmIRQFD               = ioc(iocWrite, 0x76, 32)
	kvmCreatePIT2          = ioc(iocWrite, 0x77, 64)
	kvmIOEventFD           = ioc(iocWrite, 0x79, 64)
	kvmSignalMSI           = ioc(iocWrite, 0xa5, 32)

	// vCPU ioctls.
	kvmRun        = ioc(iocNone, 0x80, 0)
	kvmGetRegs    = ioc(iocRead, 0x81, 144)
	kvmSetRegs    = ioc(iocWrite, 0x82, 144)
	kvmGetSregs   = ioc(iocRead, 0x83, 312)
	kvmSetSregs   = ioc(iocWrite, 0x84, 312)
	kvmGetMSRs    = ioc(iocRead|iocWrite, 0x88, 8)
	kvmSetMSRs    = ioc(iocWrite, 0x89, 8)
	kvmGetFPU     = ioc(iocRead, 0x8c, 416)
	kvmSetFPU     = ioc(iocWrite, 0x8d, 416)
	kvmGetLAPIC   = ioc(iocRead, 0x8e, 1024)
	kvmSetLAPIC   = ioc(iocWrite, 0x8f, 1024)
	kvmSetCPUID2  = ioc(iocWrite, 0x90, 8)
	kvmGetMPState = ioc(iocRead, 0x98, 4)
	kvmSetMPState = ioc(iocWrite, 0x99, 4)
	// KVM_PRE_FAULT_MEMORY (Linux 6.10+).
	kvmPreFaultMemory = ioc(iocRead|iocWrite, 0xd5, 64)
)

// Capabilities for System.CheckExtension (KVM_CAP_*).
type Cap int

// Capabilities the VMM asks about.
const (
	CapIRQChip                Cap = 0
	CapHLT                    Cap = 1
	CapUserMemory             Cap = 3
	CapSetTSSAddr             Cap = 4
	CapExtCPUID               Cap = 7
	CapNrVCPUs                Cap = 9
	CapNrMemslots             Cap = 10
	CapMPState                Cap = 14
	CapIRQRouting             Cap = 25
	CapIRQFD                  Cap = 32
	CapPIT2                   Cap = 33
	CapIOEventFD              Cap = 36
	CapSetIdentityMapAddr     Cap = 37
	CapMaxVCPUs               Cap = 66
	CapTSCDeadlineTimer       Cap = 72
	CapSignalMSI              Cap = 77
	CapReadonlyMem            Cap = 81
	CapIRQFDResample          Cap = 82
	CapSplitIRQChip           Cap = 121
	CapX2APICAPI              Cap = 129
	CapImmediateExit          Cap = 136
	CapExitOnEmulationFailure Cap = 204
	CapPreFaultMemory         Cap = 236
)

var capNames = map[Cap]string{
	CapIRQChip:                "KVM_CAP_IRQCHIP",
	CapHLT:                    "KVM_CAP_HLT",
	CapUserMemory:             "KVM_CAP_USER_MEMORY",
	CapSetTSSAddr:             "KVM_CAP_SET_TSS_ADDR",
	CapExtCPUID:               "KVM_CAP_EXT_CPUID",
	CapNrVCPUs:                "KVM_CAP_NR_VCPUS",
	CapNrMemslots:             "KVM_CAP_NR_MEMSLOTS",
	CapMPState:                "KVM_CAP_MP_STATE",
	CapIRQRouting:             "KVM_CAP_IRQ_ROUTING",
	CapIRQFD:                  "KVM_CAP_IRQFD",
	CapPIT2:                   "KVM_CAP_PIT2",
	CapIOEventFD:              "KVM_CAP_IOEVENTFD",
	CapSetIdentityMapAddr:     "KVM_CAP_SET_IDENTITY_MAP_ADDR",
	CapMaxVCPUs:               "KVM_CAP_MAX_VCPUS",
	CapTSCDeadlineTimer:       "KVM_CAP_TSC_DEADLINE_TIMER",
	CapSignalMSI:              "KVM_CAP_SIGNAL_MSI",
	CapReadonlyMem:            "KVM_CAP_READONLY_MEM",
	CapIRQFDResample:          "KVM_CAP_IRQFD_RESAMPLE",
	CapSplitIRQChip:           "KVM_CAP_SPLIT_IRQCHIP",
	CapX2APICAPI:              "KVM_CAP_X2APIC_API",
	CapImmediateExit:          "KVM_CAP_IMMEDIATE_EXIT",
	CapExitOnEmulationFailure: "KVM_CAP_EXIT_ON_EMULATION_FAILURE",
	CapPreFaultMemory:         "KVM_CAP_PRE_FAULT_MEMORY",
}

// String returns the kernel's name for the capability.
func (c Cap) String() string {
	if n, ok := capNames[c]; ok {
		return n
	}
	return "KVM_CAP(" + strconv.Itoa(int(c)) + ")"
}

// RequiredCaps are the capabilities the VMM cannot run without.
var RequiredCaps = []Cap{
	CapIRQChip, CapUserMemory, CapSetTSSAddr, CapExtCPUID, CapMPState,
	CapIRQFD, CapPIT2, CapIOEventFD, CapSetIdentityMapAddr, CapImmediateExit,
}
