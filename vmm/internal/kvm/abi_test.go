package kvm

import (
	"testing"
	"unsafe"
)

func TestIoctlNumbers(t *testing.T) {
	// Values from <linux/kvm.h>, as listed in the project's reference.
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"KVM_GET_API_VERSION", kvmGetAPIVersion, 0xAE00},
		{"KVM_CREATE_VM", kvmCreateVM, 0xAE01},
		{"KVM_CHECK_EXTENSION", kvmCheckExtension, 0xAE03},
		{"KVM_GET_VCPU_MMAP_SIZE", kvmGetVCPUMmapSize, 0xAE04},
		{"KVM_GET_SUPPORTED_CPUID", kvmGetSupportedCPUID, 0xC008AE05},
		{"KVM_CREATE_VCPU", kvmCreateVCPU, 0xAE41},
		{"KVM_SET_USER_MEMORY_REGION", kvmSetUserMemoryRegion, 0x4020AE46},
		{"KVM_SET_TSS_ADDR", kvmSetTSSAddr, 0xAE47},
		{"KVM_SET_IDENTITY_MAP_ADDR", kvmSetIdentityMapAddr, 0x4008AE48},
		{"KVM_CREATE_IRQCHIP", kvmCreateIRQChip, 0xAE60},
		{"KVM_IRQ_LINE", kvmIRQLine, 0x4008AE61},
		{"KVM_IRQFD", kvmIRQFD, 0x4020AE76},
		{"KVM_CREATE_PIT2", kvmCreatePIT2, 0x4040AE77},
		{"KVM_IOEVENTFD", kvmIOEventFD, 0x4040AE79},
		{"KVM_SIGNAL_MSI", kvmSignalMSI, 0x4020AEA5},
		{"KVM_RUN", kvmRun, 0xAE80},
		{"KVM_GET_REGS", kvmGetRegs, 0x8090AE81},
		{"KVM_SET_REGS", kvmSetRegs, 0x4090AE82},
		{"KVM_GET_SREGS", kvmGetSregs, 0x8138AE83},
		{"KVM_SET_SREGS", kvmSetSregs, 0x4138AE84},
		{"KVM_GET_MSRS", kvmGetMSRs, 0xC008AE88},
		{"KVM_SET_MSRS", kvmSetMSRs, 0x4008AE89},
		{"KVM_GET_FPU", kvmGetFPU, 0x81A0AE8C},
		{"KVM_SET_FPU", kvmSetFPU, 0x41A0AE8D},
		{"KVM_GET_LAPIC", kvmGetLAPIC, 0x8400AE8E},
		{"KVM_SET_LAPIC", kvmSetLAPIC, 0x4400AE8F},
		{"KVM_SET_CPUID2", kvmSetCPUID2, 0x4008AE90},
		{"KVM_GET_MP_STATE", kvmGetMPState, 0x8004AE98},
		{"KVM_SET_MP_STATE", kvmSetMPState, 0x4004AE99},
		{"KVM_PRE_FAULT_MEMORY", kvmPreFaultMemory, 0xC040AED5},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %#x, want %#x", tc.name, tc.got, tc.want)
		}
	}
}

func TestStructSizes(t *testing.T) {
	tests := []struct {
		name      string
		got, want uintptr
	}{
		{"kvm_userspace_memory_region", unsafe.Sizeof(userspaceMemoryRegion{}), 32},
		{"kvm_irqfd", unsafe.Sizeof(irqfd{}), 32},
		{"kvm_ioeventfd", unsafe.Sizeof(ioeventfd{}), 64},
		{"kvm_pit_config", unsafe.Sizeof(pitConfig{}), 64},
		{"kvm_irq_level", unsafe.Sizeof(irqLevel{}), 8},
		{"kvm_msi", unsafe.Sizeof(msi{}), 32},
		{"kvm_pre_fault_memory", unsafe.Sizeof(preFaultMemory{}), 64},
		{"kvm_run header", unsafe.Sizeof(runHeader{}), 32},
		{"kvm_run.exit_reason offset", unsafe.Offsetof(runHeader{}.ExitReason), 8},
		{"kvm_run.if_flag offset", unsafe.Offsetof(runHeader{}.IfFlag), 13},
		{"kvm_regs", unsafe.Sizeof(Regs{}), 144},
		{"kvm_sregs", unsafe.Sizeof(Sregs{}), 312},
		{"kvm_fpu", unsafe.Sizeof(FPU{}), 416},
		{"kvm_cpuid_entry2", unsafe.Sizeof(CPUIDEntry{}), 40},
		{"kvm_msr_entry", unsafe.Sizeof(MSREntry{}), 16},
		{"kvm_lapic_state", unsafe.Sizeof(LAPICState{}), 1024},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("sizeof %s = %d, want %d", tc.name, tc.got, tc.want)
		}
	}
}

func TestImmediateExitBit(t *testing.T) {
	run := make([]byte, runHeaderSize)
	h := overlayRun(run)
	h.setImmediateExit(true)
	if run[1] != 1 || run[0] != 0 {
		t.Fatalf("immediate_exit set: bytes %v, want [0 1]", run[:2])
	}
	if !h.immediateExit() {
		t.Fatal("immediateExit() = false after set")
	}
	h.setImmediateExit(false)
	if run[1] != 0 {
		t.Fatalf("immediate_exit clear: byte %d", run[1])
	}
}

func TestCapString(t *testing.T) {
	if got := CapIRQFD.String(); got != "KVM_CAP_IRQFD" {
		t.Errorf("CapIRQFD = %q", got)
	}
	if got := Cap(9999).String(); got != "KVM_CAP(9999)" {
		t.Errorf("Cap(9999) = %q", got)
	}
}

func TestDecodeExits(t *testing.T) {
	run := make([]byte, 4096)
	v := &VCPU{fd: -1, id: 3, run: run, hdr: overlayRun(run)}
	u := run[unionOff:]

	// IO: out, size 2, port 0x3f8, count 3, data at 0x200.
	u[0], u[1] = IODirOut, 2
	u[2], u[3] = 0xf8, 0x03
	u[4] = 3
	u[8], u[9] = 0x00, 0x02
	io, err := v.IO()
	if err != nil {
		t.Fatal(err)
	}
	if io.Port != 0x3f8 || io.Size != 2 || io.Count != 3 || len(io.Data) != 6 || &io.Data[0] != &run[0x200] {
		t.Fatalf("IO = %+v", io)
	}
	// data_offset near the end: 0xffc + 3*2 > 4096.
	u[8], u[9] = 0xfc, 0x0f
	if _, err := v.IO(); err == nil {
		t.Fatal("IO with data past the mapping: no error")
	}
	// data_offset huge (overflow attempt).
	for i := 8; i < 16; i++ {
		u[i] = 0xff
	}
	if _, err := v.IO(); err == nil {
		t.Fatal("IO with huge data_offset: no error")
	}
	u[1] = 3
	if _, err := v.IO(); err == nil {
		t.Fatal("IO with size 3: no error")
	}

	// MMIO: read of 4 bytes at 0xd0000000.
	clear(u[:unionSize])
	u[0], u[1], u[2], u[3] = 0x00, 0x00, 0x00, 0xd0
	u[16] = 4
	m, err := v.MMIO()
	if err != nil {
		t.Fatal(err)
	}
	if m.Addr != 0xd0000000 || m.IsWrite || len(m.Data) != 4 || &m.Data[0] != &run[unionOff+8] {
		t.Fatalf("MMIO = %+v", m)
	}
	u[16] = 9
	if _, err := v.MMIO(); err == nil {
		t.Fatal("MMIO len 9: no error")
	}

	// Emulation failure with instruction bytes.
	clear(u[:unionSize])
	u[0] = InternalErrorEmulation
	u[4] = 3  // ndata
	u[8] = 1  // flags: instruction bytes valid
	u[16] = 2 // insn_size
	u[17], u[18] = 0x0f, 0xc7
	ie := v.InternalError()
	if ie.Suberror != InternalErrorEmulation || len(ie.Data) != 3 || string(ie.Insn) != "\x0f\xc7" {
		t.Fatalf("InternalError = %+v", ie)
	}
	u[4] = 200 // absurd ndata is clamped
	if ie := v.InternalError(); len(ie.Data) != internalMaxData {
		t.Fatalf("clamped ndata: %d", len(ie.Data))
	}

	clear(u[:unionSize])
	u[0] = SystemEventReset
	u[4] = 1
	u[8] = 7
	typ, data := v.SystemEvent()
	if typ != SystemEventReset || len(data) != 1 || data[0] != 7 {
		t.Fatalf("SystemEvent = %d %v", typ, data)
	}
}

// FuzzDecodeExits feeds arbitrary exit unions to the decoders: they must
// never panic, and any data slice they return must lie inside kvm_run.
func FuzzDecodeExits(f *testing.F) {
	f.Add([]byte{IODirOut, 1, 0xf8, 0x03, 1, 0, 0, 0, 0, 0x10})
	f.Add([]byte{0, 0, 0, 0xd0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 4, 0, 0, 0, 1})
	f.Add([]byte{1, 0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 15})
	f.Fuzz(func(t *testing.T, union []byte) {
		run := make([]byte, 4096)
		copy(run[unionOff:unionOff+unionSize], union)
		v := &VCPU{fd: -1, run: run, hdr: overlayRun(run)}
		if io, err := v.IO(); err == nil {
			if len(io.Data) != int(io.Size)*int(io.Count) || len(io.Data) == 0 {
				t.Fatalf("IO data length %d for size %d count %d", len(io.Data), io.Size, io.Count)
			}
		}
		if m, err := v.MMIO(); err == nil && (len(m.Data) == 0 || len(m.Data) > 8) {
			t.Fatalf("MMIO data length %d", len(m.Data))
		}
		if ie := v.InternalError(); len(ie.Data) > internalMaxData || len(ie.Insn) > emulationInsnMax {
			t.Fatalf("internal error decode too long: %d data, %d insn", len(ie.Data), len(ie.Insn))
		}
		if _, data := v.SystemEvent(); len(data) > systemEventMaxData {
			t.Fatalf("system event data %d", len(data))
		}
		v.FailEntry()
		v.HardwareExitReason()
	})
}
