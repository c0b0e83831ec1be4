package kvm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// ErrInterrupted is returned (wrapped with the errno) by Run when KVM_RUN
// returned EINTR or EAGAIN: a signal or immediate_exit kicked the vCPU
// out, and the caller should check for stop or pause requests.
var ErrInterrupted = errors.New("KVM_RUN interrupted")

// System-event types (kvm_run.system_event.type).
const (
	SystemEventShutdown = 1
	SystemEventReset    = 2
	SystemEventCrash    = 3
	SystemEventWakeup   = 4
	SystemEventSuspend  = 5
)

// Internal-error suberrors (kvm_run.internal.suberror).
const (
	InternalErrorEmulation            = 1
	InternalErrorSimulEx              = 2
	InternalErrorDeliveryEv           = 3
	InternalErrorUnexpectedExitReason = 4
)

// Offsets and limits inside kvm_run.
const (
	emulationFlagInstructionBytes = 1
	unionOff                      = 32
	unionSize                     = 256
	internalMaxData               = 16
	emulationInsnOff              = unionOff + 16
	emulationInsnMax              = 15
	systemEventMaxData            = 16
	mmioDataOff                   = unionOff + 8
	mmioMaxLen                    = 8
)

// VCPU is one virtual CPU: its fd and its mmap'd kvm_run. Except for
// SetImmediateExit (safe from any goroutine), call its methods only from
// the OS thread that runs it.
type VCPU struct {
	fd  int
	id  int
	run []byte
	hdr *runHeader
	// fast is the FastMMIO Run serves (nil: none); fastServed counts the
	// exits served from it.
	fast       *FastMMIO
	fastServed uint64
}

func newVCPU(fd, id, mmapSize int) (*VCPU, error) {
	if mmapSize < runHeaderSize {
		return nil, fmt.Errorf("kvm_run mmap size %d too small", mmapSize)
	}
	run, err := unix.Mmap(fd, 0, mmapSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("mmap kvm_run: %w", err)
	}
	return &VCPU{fd: fd, id: id, run: run, hdr: overlayRun(run)}, nil
}

// ID returns the vCPU id given to CreateVCPU (also its initial APIC id).
func (v *VCPU) ID() int { return v.id }

// Fd returns the vCPU descriptor.
func (v *VCPU) Fd() int { return v.fd }

// Close unmaps kvm_run and closes the vCPU fd.
func (v *VCPU) Close() error {
	var errs []error
	if v.run != nil {
		v.hdr = nil
		errs = append(errs, unix.Munmap(v.run))
		v.run = nil
	}
	if v.fd >= 0 {
		errs = append(errs, unix.Close(v.fd))
		v.fd = -1
	}
	return errors.Join(errs...)
}

func (v *VCPU) wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("vcpu %d: %s: %w", v.id, op, err)
}

// Run enters the guest once (KVM_RUN). A nil error means the vCPU exited
// for ExitReason(). EINTR/EAGAIN come back wrapping ErrInterrupted.
func (v *VCPU) Run() error {
	if v.hdr == nil {
		return ErrClosed
	}
	// KVM_RUN without retrying, so that EINTR and EAGAIN come back, serving
	// the FastMMIO registers on the way.
	switch e := runServing(uintptr(v.fd), v.hdr, v.fast.current(), &v.fastServed); e {
	case 0:
		return nil
	case unix.EINTR, unix.EAGAIN:
		return fmt.Errorf("vcpu %d: %w: %w", v.id, ErrInterrupted, e)
	default:
		return fmt.Errorf("vcpu %d: KVM_RUN: %w", v.id, e)
	}
}

// ServeFast makes Run serve the registers of f itself (nil: none). Call it
// before Run, on the vCPU's thread.
func (v *VCPU) ServeFast(f *FastMMIO) { v.fast = f }

// FastServed reports how many exits Run served from its FastMMIO; safe
// from any goroutine.
func (v *VCPU) FastServed() uint64 { return atomic.LoadUint64(&v.fastServed) }

// SetImmediateExit sets kvm_run.immediate_exit: while set, KVM_RUN returns
// EINTR at once. Safe to call from any goroutine while the vCPU is open.
func (v *VCPU) SetImmediateExit(on bool) {
	if h := v.hdr; h != nil {
		h.setImmediateExit(on)
	}
}

// ImmediateExit reports kvm_run.immediate_exit.
func (v *VCPU) ImmediateExit() bool {
	if h := v.hdr; h != nil {
		return h.immediateExit()
	}
	return false
}

// ExitReason returns kvm_run.exit_reason of the last Run.
func (v *VCPU) ExitReason() uint32 { return v.hdr.ExitReason }

// IFFlag reports kvm_run.if_flag (guest RFLAGS.IF) of the last exit.
func (v *VCPU) IFFlag() bool { return v.hdr.IfFlag != 0 }

func (v *VCPU) union() []byte { return v.run[unionOff : unionOff+unionSize] }

// IOExit describes an ExitIO. Data aliases kvm_run: for IODirIn fill it
// before the next Run, for IODirOut read it. It holds Count accesses of
// Size bytes each (string I/O when Count > 1).
type IOExit struct {
	Dir   uint8
	Size  uint8
	Port  uint16
	Count uint32
	Data  []byte
}

// IO decodes the ExitIO union, bounds-checking data_offset+size*count
// against the kvm_run mapping.
func (v *VCPU) IO() (IOExit, error) {
	u := v.union()
	e := IOExit{Dir: u[0], Size: u[1], Port: binary.LittleEndian.Uint16(u[2:]), Count: binary.LittleEndian.Uint32(u[4:])}
	off := binary.LittleEndian.Uint64(u[8:])
	switch e.Size {
	case 1, 2, 4:
	default:
		return e, fmt.Errorf("vcpu %d: io exit port %#x: bad access size %d", v.id, e.Port, e.Size)
	}
	n := uint64(e.Size) * uint64(e.Count)
	if e.Count == 0 || off < runHeaderSize || off > uint64(len(v.run)) || n > uint64(len(v.run))-off {
		return e, fmt.Errorf("vcpu %d: io exit port %#x: data offset %#x size %d count %d outside kvm_run (%d bytes)",
			v.id, e.Port, off, e.Size, e.Count, len(v.run))
	}
	e.Data = v.run[off : off+n : off+n]
	return e, nil
}

// MMIOExit describes an ExitMMIO. Data aliases kvm_run.mmio.data: on a read
// fill it before the next Run.
type MMIOExit struct {
	Addr    uint64
	Data    []byte
	IsWrite bool
}

// MMIO decodes the ExitMMIO union.
func (v *VCPU) MMIO() (MMIOExit, error) {
	u := v.union()
	e := MMIOExit{Addr: binary.LittleEndian.Uint64(u[0:]), IsWrite: u[20] != 0}
	n := binary.LittleEndian.Uint32(u[16:])
	if n == 0 || n > mmioMaxLen {
		return e, fmt.Errorf("vcpu %d: mmio exit at %#x: bad length %d", v.id, e.Addr, n)
	}
	e.Data = v.run[mmioDataOff : mmioDataOff+int(n) : mmioDataOff+int(n)]
	return e, nil
}

// SystemEvent decodes an ExitSystemEvent: its type and data words.
func (v *VCPU) SystemEvent() (typ uint32, data []uint64) {
	u := v.union()
	typ = binary.LittleEndian.Uint32(u[0:])
	n := binary.LittleEndian.Uint32(u[4:])
	if n > systemEventMaxData {
		n = systemEventMaxData
	}
	for i := uint32(0); i < n; i++ {
		data = append(data, binary.LittleEndian.Uint64(u[8+8*i:]))
	}
	return typ, data
}

// InternalError is the decoded ExitInternalError union.
type InternalError struct {
	Suberror uint32
	Data     []uint64
	// Insn holds the bytes of the instruction KVM failed to emulate, when
	// the kernel provided them (InternalErrorEmulation only).
	Insn []byte
}

// InternalError decodes an ExitInternalError.
func (v *VCPU) InternalError() InternalError {
	u := v.union()
	ie := InternalError{Suberror: binary.LittleEndian.Uint32(u[0:])}
	n := binary.LittleEndian.Uint32(u[4:])
	if n > internalMaxData {
		n = internalMaxData
	}
	for i := uint32(0); i < n; i++ {
		ie.Data = append(ie.Data, binary.LittleEndian.Uint64(u[8+8*i:]))
	}
	if ie.Suberror == InternalErrorEmulation && n >= 1 && ie.Data[0]&emulationFlagInstructionBytes != 0 {
		size := int(v.run[emulationInsnOff])
		if size > emulationInsnMax {
			size = emulationInsnMax
		}
		ie.Insn = append([]byte(nil), v.run[emulationInsnOff+1:emulationInsnOff+1+size]...)
	}
	return ie
}

// FailEntry decodes an ExitFailEntry: the hardware reason and host CPU.
func (v *VCPU) FailEntry() (reason uint64, cpu uint32) {
	u := v.union()
	return binary.LittleEndian.Uint64(u[0:]), binary.LittleEndian.Uint32(u[8:])
}

// HardwareExitReason decodes the union of an ExitUnknown.
func (v *VCPU) HardwareExitReason() uint64 {
	return binary.LittleEndian.Uint64(v.union())
}

// GetRegs reads the general-purpose registers.
func (v *VCPU) GetRegs() (Regs, error) {
	var r Regs
	_, err := ioctlStruct(v.fd, kvmGetRegs, &r)
	return r, v.wrap("KVM_GET_REGS", err)
}

// SetRegs writes the general-purpose registers.
func (v *VCPU) SetRegs(r Regs) error {
	_, err := ioctlStruct(v.fd, kvmSetRegs, &r)
	return v.wrap("KVM_SET_REGS", err)
}

// GetSregs reads the special registers.
func (v *VCPU) GetSregs() (Sregs, error) {
	var s Sregs
	_, err := ioctlStruct(v.fd, kvmGetSregs, &s)
	return s, v.wrap("KVM_GET_SREGS", err)
}

// SetSregs writes the special registers.
func (v *VCPU) SetSregs(s Sregs) error {
	_, err := ioctlStruct(v.fd, kvmSetSregs, &s)
	return v.wrap("KVM_SET_SREGS", err)
}

// GetFPU reads the FPU/SSE state.
func (v *VCPU) GetFPU() (FPU, error) {
	var f FPU
	_, err := ioctlStruct(v.fd, kvmGetFPU, &f)
	return f, v.wrap("KVM_GET_FPU", err)
}

// SetFPU writes the FPU/SSE state.
func (v *VCPU) SetFPU(f FPU) error {
	_, err := ioctlStruct(v.fd, kvmSetFPU, &f)
	return v.wrap("KVM_SET_FPU", err)
}

// GetLAPIC reads the in-kernel local APIC register page.
func (v *VCPU) GetLAPIC() (LAPICState, error) {
	var l LAPICState
	_, err := ioctlStruct(v.fd, kvmGetLAPIC, &l)
	return l, v.wrap("KVM_GET_LAPIC", err)
}

// SetLAPIC writes the in-kernel local APIC register page.
func (v *VCPU) SetLAPIC(l *LAPICState) error {
	_, err := ioctlStruct(v.fd, kvmSetLAPIC, l)
	return v.wrap("KVM_SET_LAPIC", err)
}

// GetMPState reads the multiprocessing state (MPState* constants).
func (v *VCPU) GetMPState() (uint32, error) {
	var s uint32
	_, err := ioctlStruct(v.fd, kvmGetMPState, &s)
	return s, v.wrap("KVM_GET_MP_STATE", err)
}

// SetMPState writes the multiprocessing state.
func (v *VCPU) SetMPState(s uint32) error {
	_, err := ioctlStruct(v.fd, kvmSetMPState, &s)
	return v.wrap("KVM_SET_MP_STATE", err)
}

// maxPreFaultRaces bounds PreFaultMemory's retries without progress.
const maxPreFaultRaces = 100

// preFaultMemory mirrors struct kvm_pre_fault_memory (64 bytes).
type preFaultMemory struct {
	GPA   uint64
	Size  uint64
	Flags uint64
	_     [5]uint64
}

// PreFaultMemory maps [gpa, gpa+size) in KVM's stage-2 page tables now,
// as the guest's first touch of each page would (KVM_PRE_FAULT_MEMORY,
// CapPreFaultMemory). It returns how many bytes were mapped; on error the
// rest of the range is left to fault in as usual.
func (v *VCPU) PreFaultMemory(gpa, size uint64) (uint64, error) {
	r := preFaultMemory{GPA: gpa, Size: size}
	for races := 0; r.Size > 0; {
		_, err := ioctlStruct(v.fd, kvmPreFaultMemory, &r)
		// EAGAIN: a race with an invalidation before any progress; a
		// retry may succeed, but not forever.
		if errors.Is(err, unix.EAGAIN) && races < maxPreFaultRaces {
			races++
			continue
		}
		if err != nil {
			return size - r.Size, v.wrap("KVM_PRE_FAULT_MEMORY", err)
		}
		races = 0
	}
	return size, nil
}
