package kvm

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// Memory-region flags for SetUserMemoryRegion.
const (
	MemLogDirtyPages = 1 << 0
	MemReadonly      = 1 << 1
)

const (
	irqfdFlagDeassign = 1 << 0
	irqfdFlagResample = 1 << 1

	ioeventfdFlagDatamatch = 1 << 0
	ioeventfdFlagPIO       = 1 << 1
	ioeventfdFlagDeassign  = 1 << 2

	pitSpeakerDummy = 1
)

// userspaceMemoryRegion mirrors struct kvm_userspace_memory_region (32 bytes).
type userspaceMemoryRegion struct {
	Slot          uint32
	Flags         uint32
	GuestPhysAddr uint64
	MemorySize    uint64
	UserspaceAddr uint64
}

// irqfd mirrors struct kvm_irqfd (32 bytes).
type irqfd struct {
	Fd         uint32
	GSI        uint32
	Flags      uint32
	ResampleFd uint32
	_          [16]uint8
}

// ioeventfd mirrors struct kvm_ioeventfd (64 bytes).
type ioeventfd struct {
	Datamatch uint64
	Addr      uint64
	Len       uint32
	Fd        int32
	Flags     uint32
	_         [36]uint8
}

// pitConfig mirrors struct kvm_pit_config (64 bytes).
type pitConfig struct {
	Flags uint32
	_     [15]uint32
}

// irqLevel mirrors struct kvm_irq_level (8 bytes).
type irqLevel struct {
	IRQ   uint32
	Level uint32
}

// msi mirrors struct kvm_msi (32 bytes).
type msi struct {
	AddressLo uint32
	AddressHi uint32
	Data      uint32
	Flags     uint32
	DevID     uint32
	_         [12]uint8
}

// VM is a KVM virtual machine fd. Its methods may be called from any
// goroutine; the kernel serialises them.
type VM struct {
	fd       int
	mmapSize int
}

// Fd returns the VM descriptor.
func (vm *VM) Fd() int { return vm.fd }

// Close closes the VM fd. vCPUs must be closed first for the kernel to
// free the VM.
func (vm *VM) Close() error {
	if vm.fd < 0 {
		return nil
	}
	err := unix.Close(vm.fd)
	vm.fd = -1
	return err
}

// CheckExtension asks the VM fd about a capability (some answers, such as
// KVM_CAP_NR_MEMSLOTS, are per VM).
func (vm *VM) CheckExtension(c Cap) (int, error) {
	r, err := ioctlVal(vm.fd, kvmCheckExtension, uintptr(c))
	if err != nil {
		return 0, fmt.Errorf("vm KVM_CHECK_EXTENSION(%v): %w", c, err)
	}
	return int(r), nil
}

// SetTSSAddr places the 3-page TSS region KVM needs on Intel hosts. It
// must overlap no memory slot or MMIO range.
func (vm *VM) SetTSSAddr(addr uint64) error {
	if _, err := ioctlVal(vm.fd, kvmSetTSSAddr, uintptr(addr)); err != nil {
		return fmt.Errorf("KVM_SET_TSS_ADDR %#x: %w", addr, err)
	}
	return nil
}

// SetIdentityMapAddr places the 1-page identity-map region (Intel).
func (vm *VM) SetIdentityMapAddr(addr uint64) error {
	a := addr
	if _, err := ioctlStruct(vm.fd, kvmSetIdentityMapAddr, &a); err != nil {
		return fmt.Errorf("KVM_SET_IDENTITY_MAP_ADDR %#x: %w", addr, err)
	}
	return nil
}

// CreateIRQChip creates the in-kernel PIC, IOAPIC and per-vCPU LAPICs. On
// x86 it must be called before CreateVCPU.
func (vm *VM) CreateIRQChip() error {
	if _, err := ioctlVal(vm.fd, kvmCreateIRQChip, 0); err != nil {
		return fmt.Errorf("KVM_CREATE_IRQCHIP: %w", err)
	}
	return nil
}

// CreatePIT2 creates the in-kernel i8254 with a dummy PC speaker port.
// Requires CreateIRQChip first.
func (vm *VM) CreatePIT2() error {
	cfg := pitConfig{Flags: pitSpeakerDummy}
	if _, err := ioctlStruct(vm.fd, kvmCreatePIT2, &cfg); err != nil {
		return fmt.Errorf("KVM_CREATE_PIT2: %w", err)
	}
	return nil
}

// SetUserMemoryRegion maps host at guest-physical gpa as slot. host must be
// page-aligned, a whole number of pages, and stay mapped (and, if it is Go
// memory, referenced) until the slot is removed or the VM closed. An empty
// host deletes the slot.
func (vm *VM) SetUserMemoryRegion(slot uint32, gpa uint64, host []byte, flags uint32) error {
	page := uint64(unix.Getpagesize())
	hva := hostAddr(host)
	size := uint64(len(host))
	if gpa%page != 0 || hva%page != 0 || size%page != 0 {
		return fmt.Errorf("kvm: memory slot %d gpa %#x size %#x hva %#x: not page aligned", slot, gpa, size, hva)
	}
	r := userspaceMemoryRegion{Slot: slot, Flags: flags, GuestPhysAddr: gpa, MemorySize: size, UserspaceAddr: hva}
	if _, err := ioctlStruct(vm.fd, kvmSetUserMemoryRegion, &r); err != nil {
		return fmt.Errorf("KVM_SET_USER_MEMORY_REGION slot %d gpa %#x size %#x: %w", slot, gpa, size, err)
	}
	return nil
}

// RegisterMemory registers every region of mem as consecutive slots
// starting at firstSlot and returns the next free slot.
func (vm *VM) RegisterMemory(mem *guestmem.Memory, firstSlot uint32) (uint32, error) {
	slot := firstSlot
	for _, r := range mem.Regions() {
		if err := vm.SetUserMemoryRegion(slot, r.GPA, r.Host, 0); err != nil {
			return slot, err
		}
		slot++
	}
	return slot, nil
}

// AssignIRQFD makes a write to the eventfd fd raise gsi. With resampleFd
// >= 0 the line is level-triggered: KVM lowers it and signals resampleFd
// when the guest EOIs. Requires CreateIRQChip.
func (vm *VM) AssignIRQFD(fd int, gsi uint32, resampleFd int) error {
	r := irqfd{Fd: uint32(fd), GSI: gsi}
	if resampleFd >= 0 {
		r.Flags |= irqfdFlagResample
		r.ResampleFd = uint32(resampleFd)
	}
	if _, err := ioctlStruct(vm.fd, kvmIRQFD, &r); err != nil {
		return fmt.Errorf("KVM_IRQFD assign fd %d gsi %d: %w", fd, gsi, err)
	}
	return nil
}

// DeassignIRQFD undoes AssignIRQFD.
func (vm *VM) DeassignIRQFD(fd int, gsi uint32) error {
	r := irqfd{Fd: uint32(fd), GSI: gsi, Flags: irqfdFlagDeassign}
	if _, err := ioctlStruct(vm.fd, kvmIRQFD, &r); err != nil {
		return fmt.Errorf("KVM_IRQFD deassign fd %d gsi %d: %w", fd, gsi, err)
	}
	return nil
}

// IOEvent describes an ioeventfd: a guest write of Len bytes to Addr (port
// space when PIO) signals Fd in the kernel, without a userspace exit.
type IOEvent struct {
	Fd   int
	Addr uint64
	// Len is the access width 1, 2, 4 or 8; 0 matches any width (needs
	// KVM_CAP_IOEVENTFD_ANY_LENGTH).
	Len uint32
	PIO bool
	// MatchData restricts the event to writes of DataMatch.
	MatchData bool
	DataMatch uint64
}

func (e IOEvent) raw(deassign bool) ioeventfd {
	r := ioeventfd{Addr: e.Addr, Len: e.Len, Fd: int32(e.Fd)}
	if e.PIO {
		r.Flags |= ioeventfdFlagPIO
	}
	if e.MatchData {
		r.Flags |= ioeventfdFlagDatamatch
		r.Datamatch = e.DataMatch
	}
	if deassign {
		r.Flags |= ioeventfdFlagDeassign
	}
	return r
}

// AssignIOEventFD registers e.
func (vm *VM) AssignIOEventFD(e IOEvent) error {
	r := e.raw(false)
	if _, err := ioctlStruct(vm.fd, kvmIOEventFD, &r); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD assign addr %#x len %d pio %v: %w", e.Addr, e.Len, e.PIO, err)
	}
	return nil
}

// DeassignIOEventFD removes an event registered with the same e.
func (vm *VM) DeassignIOEventFD(e IOEvent) error {
	r := e.raw(true)
	if _, err := ioctlStruct(vm.fd, kvmIOEventFD, &r); err != nil {
		return fmt.Errorf("KVM_IOEVENTFD deassign addr %#x len %d pio %v: %w", e.Addr, e.Len, e.PIO, err)
	}
	return nil
}

// IRQLine sets the level of an in-kernel irqchip input. For an edge,
// raise then lower.
func (vm *VM) IRQLine(gsi uint32, level bool) error {
	l := irqLevel{IRQ: gsi}
	if level {
		l.Level = 1
	}
	if _, err := ioctlStruct(vm.fd, kvmIRQLine, &l); err != nil {
		return fmt.Errorf("KVM_IRQ_LINE gsi %d level %v: %w", gsi, level, err)
	}
	return nil
}

// SignalMSI injects an MSI. It reports whether the guest accepted it
// (false when it was blocked, e.g. masked).
func (vm *VM) SignalMSI(addr uint64, data uint32) (bool, error) {
	m := msi{AddressLo: uint32(addr), AddressHi: uint32(addr >> 32), Data: data}
	r, err := ioctlStruct(vm.fd, kvmSignalMSI, &m)
	if err != nil {
		return false, fmt.Errorf("KVM_SIGNAL_MSI addr %#x data %#x: %w", addr, data, err)
	}
	return r > 0, nil
}

// CreateVCPU creates vCPU id and maps its kvm_run page. KVM advises issuing
// a vCPU's ioctls from the thread that created it, so call this on the
// locked OS thread that will run it.
func (vm *VM) CreateVCPU(id int) (*VCPU, error) {
	fd, err := ioctlVal(vm.fd, kvmCreateVCPU, uintptr(id))
	if err != nil {
		return nil, fmt.Errorf("KVM_CREATE_VCPU %d: %w", id, err)
	}
	unix.CloseOnExec(int(fd))
	v, err := newVCPU(int(fd), id, vm.mmapSize)
	if err != nil {
		unix.Close(int(fd))
		return nil, fmt.Errorf("vcpu %d: %w", id, err)
	}
	return v, nil
}
