// Package vmm assembles and runs a microVM from a validated
// config.VMConfig: guest memory, the KVM VM with its in-kernel irqchip and
// PIT, the kernel and initrd, ACPI and MP tables, the legacy devices and
// the vCPUs. It is the library behind cmd/stratovirt and the containerd
// shim; it is the only package that wires the others together.
//
// A VM is built by New, started by Start and ended by the guest (power-off,
// reboot, a fatal exit) or by Stop; Wait reports why. Build and teardown
// run on the caller's goroutine; the vCPU goroutines belong to vmm/vcpu.
package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/acpi"
	"github.com/stratovirt-go/stratovirt/vmm/arch/amd64"
	"github.com/stratovirt-go/stratovirt/vmm/bus"
	"github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/devices/legacy"
	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/loader"
	"github.com/stratovirt-go/stratovirt/vmm/vcpu"
)

// gsiCOM1 is the ISA interrupt of the first serial port.
const gsiCOM1 = 4

// Reason says why a VM ended.
type Reason = vcpu.Reason

// Reasons a VM ends.
const (
	PowerOff = vcpu.PowerOff
	Reset    = vcpu.Reset
	Stopped  = vcpu.Stopped
	Error    = vcpu.Error
	Halted   = vcpu.Halted
)

// Options are the host-side connections of a VM.
type Options struct {
	// SerialOut receives the guest's ttyS0 output; nil means the VM has
	// no UART at all (as StratoVirt without -serial).
	SerialOut io.Writer
	// OnBootMarker is called when the guest writes a value to the boot
	// marker port (123 = init reached), with the time since Created.
	OnBootMarker func(value uint8, sinceStart time.Duration)
	// OnDebugExit is called when the guest writes to the 0xf4 debug-exit
	// port; the VM then stops with reason PowerOff.
	OnDebugExit func(value uint8)
	// Created is when the VMM started (for boot timing); zero: New's time.
	Created time.Time
	// KVMDevice is the KVM device path; "" is /dev/kvm.
	KVMDevice string
	// OnVCPUThread runs on each vCPU's own locked thread after its
	// set-up, right before it first enters the guest (process.go); an
	// error fails Start. cmd/stratovirt installs the vCPU seccomp
	// filter here.
	OnVCPUThread func(id int) error
}

// VM is one microVM.
type VM struct {
	cfg  *config.VMConfig
	opts Options

	sys   *kvm.System
	vm    *kvm.VM
	mem   *guestmem.Memory
	boot  *loader.Boot
	cpuid []kvm.CPUIDEntry
	pio   bus.Bus
	mmio  bus.Bus
	// fastMMIO: the virtio-mmio interrupt registers, which the vCPU
	// threads serve themselves (attachVirtio).
	fastMMIO kvm.FastMMIO
	serial   *legacy.Serial
	marker   *legacy.BootMarker
	// threads are the vCPU thread ids (process.go).
	threads vcpuThreads
	irqfds  []int
	// nextSlot is the first KVM memory slot after guest RAM's.
	nextSlot uint32
	virtio   virtioDevices // virtio.go
	hot      hotplug       // hot-replaceable disk and NIC slots (hotplug.go)
	// preFaultRanges are device memory (pmem images) the boot vCPU maps
	// ahead of the guest (prefault.go).
	preFaultRanges []guestRange
	// preFaultRuns are the guest-physical runs the boot vCPU maps.
	preFaultRuns [][2]uint64

	mu       sync.Mutex
	group    *vcpu.Group
	stopWant Reason // a stop requested before Start
	started  time.Time
	closed   bool
}

// New builds the VM described by cfg; no vCPU runs until Start. On error
// everything built so far is released.
func New(cfg *config.VMConfig, opts Options) (_ *VM, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	start := time.Now()
	if opts.Created.IsZero() {
		opts.Created = start
	}
	v := &VM{cfg: cfg, opts: opts}
	defer func() {
		if err != nil {
			v.Close()
		}
	}()
	if v.sys, err = kvm.Open(opts.KVMDevice); err != nil {
		return nil, fmt.Errorf("open KVM: %w", err)
	}
	if err := v.sys.RequireCaps(); err != nil {
		return nil, err
	}
	if v.cpuid, err = v.sys.SupportedCPUID(); err != nil {
		return nil, err
	}
	if v.vm, err = v.sys.CreateVM(); err != nil {
		return nil, err
	}
	if err := v.vm.SetTSSAddr(amd64.KVMTSSAddr); err != nil {
		return nil, err
	}
	if err := v.vm.SetIdentityMapAddr(amd64.KVMIdentityMapAddr); err != nil {
		return nil, err
	}
	if err := v.vm.CreateIRQChip(); err != nil {
		return nil, err
	}
	if err := v.vm.CreatePIT2(); err != nil {
		return nil, err
	}
	// Each step's time goes to the debug log: where a slow start goes.
	steps := []struct {
		name string
		run  func() error
	}{
		{"memory", v.setupMemory}, {"devices", v.setupDevices}, {"virtio", v.setupVirtio},
		{"hotplug", v.setupHotplug}, {"tables and kernel", v.setupPlatform},
		{"pre-fault plan", v.planPreFault},
	}
	var took strings.Builder
	t := time.Now()
	fmt.Fprintf(&took, "KVM %v", t.Sub(start).Round(time.Microsecond))
	for _, st := range steps {
		if err := st.run(); err != nil {
			return nil, err
		}
		now := time.Now()
		fmt.Fprintf(&took, ", %s %v", st.name, now.Sub(t).Round(time.Microsecond))
		t = now
	}
	log.L.Debugf("VM %s built in %v: %s", cfg.Name, t.Sub(start).Round(time.Microsecond), took.String())
	return v, nil
}

func (v *VM) setupMemory() error {
	m := v.cfg.Machine
	ranges, err := amd64.MemoryRanges(m.MemSize)
	if err != nil {
		return fmt.Errorf("guest memory: %w", err)
	}
	var total uint64
	for _, r := range ranges {
		total += r.Size
	}
	mopts, err := memoryOptions(m, total) // process.go
	if err != nil {
		return err
	}
	v.mem, err = guestmem.New(ranges, mopts)
	if mopts.UseFD {
		unix.Close(mopts.FD) // the mappings keep the file
	}
	if err != nil {
		return err
	}
	v.nextSlot, err = v.vm.RegisterMemory(v.mem, 0)
	return err
}

// setupPlatform writes what the guest reads at boot: the kernel, initrd
// and command line, the zero page or PVH start info, ACPI and MP tables.
func (v *VM) setupPlatform() error {
	n := v.cfg.Machine.VCPUs
	tables, err := acpi.Build(acpi.Config{VCPUs: n, PowerPort: legacy.PortPower, MMIODevices: v.virtio.acpiDevices()})
	if err != nil {
		return fmt.Errorf("build ACPI tables: %w", err)
	}
	if err := tables.Write(v.mem, amd64.RSDPAddr, amd64.ACPITablesAddr, amd64.ACPITablesEnd); err != nil {
		return fmt.Errorf("write ACPI tables: %w", err)
	}
	if err := amd64.WriteMPTable(v.mem, amd64.MPTableAddr, amd64.MPTableEnd, n); err != nil {
		return fmt.Errorf("write MP table: %w", err)
	}
	b := v.cfg.Boot
	v.boot, err = loader.LoadFiles(v.mem, b.Kernel, b.Initrd, loader.Options{
		KernelName: b.Kernel,
		Cmdline:    v.virtio.withCmdline(b.Cmdline),
		RSDPAddr:   amd64.RSDPAddr,
	})
	if err != nil {
		return err
	}
	log.L.Debugf("kernel %s loaded: %s entry %#x, initrd %#x+%#x", b.Kernel, v.boot.Mode, v.boot.Entry, v.boot.InitrdAddr, v.boot.InitrdSize)
	return nil
}

// setupDevices puts the legacy devices on the port-I/O bus.
func (v *VM) setupDevices() error {
	if v.opts.SerialOut != nil {
		irq, err := v.irqfd(gsiCOM1)
		if err != nil {
			return err
		}
		v.serial = legacy.NewSerial(v.opts.SerialOut, irq)
		if err := v.pio.Insert(v.serial, legacy.PortCOM1, legacy.SerialSize); err != nil {
			return fmt.Errorf("serial port: %w", err)
		}
	}
	v.marker = legacy.NewBootMarker(v.opts.Created, func(value uint8, elapsed time.Duration) {
		log.L.Infof("guest boot marker %d after %v", value, elapsed)
		if v.opts.OnBootMarker != nil {
			v.opts.OnBootMarker(value, elapsed)
		}
	})
	devs := []struct {
		dev  bus.Device
		base uint64
		size uint64
	}{
		{legacy.NewI8042(func() { v.Stop(Reset) }), legacy.PortI8042, legacy.I8042Size},
		{legacy.NewPowerPort(func() { v.Stop(Reset) }, func() { v.Stop(PowerOff) }), legacy.PortPower, legacy.PowerSize},
		{v.marker, legacy.PortBootMarker, legacy.BootMarkerSize},
		{legacy.NewDebugExit(func(value uint8) {
			if v.opts.OnDebugExit != nil {
				v.opts.OnDebugExit(value)
			}
			v.Stop(PowerOff)
		}), legacy.PortDebugExit, legacy.DebugExitSize},
		{legacy.Noop{}, legacy.PortPOST, 1},
		{legacy.NewCMOS(time.Now), legacy.PortCMOS, legacy.CMOSSize},
	}
	for _, d := range devs {
		if err := v.pio.Insert(d.dev, d.base, d.size); err != nil {
			return fmt.Errorf("port I/O device at %#x: %w", d.base, err)
		}
	}
	return nil
}

// irqfd returns an edge-triggered interrupt on gsi backed by a KVM irqfd:
// each Trigger pulses the line without a vCPU exit.
func (v *VM) irqfd(gsi uint32) (legacy.IRQ, error) {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("eventfd for GSI %d: %w", gsi, err)
	}
	v.irqfds = append(v.irqfds, fd)
	if err := v.vm.AssignIRQFD(fd, gsi, -1); err != nil {
		return nil, err
	}
	// A saturated counter is already pending: rawsys.Signal ignores it.
	return legacy.IRQFunc(func() error { return rawsys.Signal(fd) }), nil
}

// setupVCPU runs on each vCPU's own thread before it first enters the
// guest. Order matters: KVM filters MSRs by the guest's CPUID.
func (v *VM) setupVCPU(c *kvm.VCPU) error {
	id := c.ID()
	if err := c.SetCPUID2(amd64.ShapeCPUID(v.cpuid, id, v.cfg.Machine.VCPUs)); err != nil {
		return err
	}
	if err := c.SetMSRs(amd64.BootMSRs()); err != nil {
		return err
	}
	lapic, err := c.GetLAPIC()
	if err != nil {
		return err
	}
	amd64.SetLINT(&lapic)
	if err := c.SetLAPIC(&lapic); err != nil {
		return err
	}
	if id != 0 {
		// Application processors wait for INIT/SIPI from the boot CPU.
		return nil
	}
	base, err := c.GetSregs()
	if err != nil {
		return err
	}
	sregs, err := v.boot.Sregs(base, v.mem)
	if err != nil {
		return err
	}
	if err := c.SetSregs(sregs); err != nil {
		return err
	}
	if err := c.SetRegs(v.boot.Regs()); err != nil {
		return err
	}
	if err := c.SetFPU(amd64.FPUBoot()); err != nil {
		return err
	}
	v.preFault(c)
	return nil
}

// Start creates and starts the vCPUs.
func (v *VM) Start() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return errors.New("vm is closed")
	}
	if v.group != nil {
		return errors.New("vm already started")
	}
	g, err := vcpu.Start(vcpu.Config{
		VM: v.vm, Count: v.cfg.Machine.VCPUs, PIO: &v.pio, MMIO: &v.mmio, FastMMIO: &v.fastMMIO, Setup: v.setupVCPUThread,
	})
	if err != nil {
		return err
	}
	v.group = g
	v.started = time.Now()
	log.L.Debugf("vcpus started %v after VMM start", v.started.Sub(v.opts.Created))
	if v.stopWant != vcpu.Running {
		g.Stop(v.stopWant)
	}
	return nil
}

// Stop ends the VM with reason r. Safe from any goroutine, device code on
// a vCPU thread included.
func (v *VM) Stop(r Reason) {
	log.L.Debugf("vm stop requested: %s", r)
	v.mu.Lock()
	g := v.group
	if g == nil && v.stopWant == vcpu.Running {
		v.stopWant = r
	}
	v.mu.Unlock()
	if g != nil {
		g.Stop(r)
	}
}

// Pause parks every vCPU; Resume lets them run again.
func (v *VM) Pause() error {
	g := v.runningGroup()
	if g == nil {
		return errors.New("vm not started")
	}
	return g.Pause()
}

// Resume resumes a paused VM.
func (v *VM) Resume() error {
	g := v.runningGroup()
	if g == nil {
		return errors.New("vm not started")
	}
	g.Resume()
	return nil
}

func (v *VM) runningGroup() *vcpu.Group {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.group
}

// Wait blocks until the VM ends and returns why.
func (v *VM) Wait() (Reason, error) {
	g := v.runningGroup()
	if g == nil {
		return vcpu.Error, errors.New("vm not started")
	}
	r, err := g.Wait()
	if v.serial != nil {
		v.serial.Close() // flush buffered guest output
	}
	return r, err
}

// SerialInput queues bytes for the guest's ttyS0 and reports how many fit
// (0 when the VM has no UART).
func (v *VM) SerialInput(p []byte) int {
	if v.serial == nil {
		return 0
	}
	return v.serial.Enqueue(p)
}

// BootMarks returns the boot-marker values seen and when, since Created.
func (v *VM) BootMarks() map[uint8]time.Duration { return v.marker.Marks() }

// Close releases the VM's host resources. The vCPUs must have ended.
func (v *VM) Close() error {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		return nil
	}
	v.closed = true
	v.mu.Unlock()
	var errs []error
	if v.serial != nil {
		errs = append(errs, v.serial.Close())
	}
	// Devices stop touching guest memory before it is unmapped.
	errs = append(errs, v.closeVirtio())
	if v.vm != nil {
		errs = append(errs, v.vm.Close())
	}
	for _, fd := range v.irqfds {
		errs = append(errs, unix.Close(fd))
	}
	if v.mem != nil {
		errs = append(errs, v.mem.Close())
	}
	if v.sys != nil {
		errs = append(errs, v.sys.Close())
	}
	return errors.Join(errs...)
}

// Run builds, starts and waits for a VM, stopping it when ctx ends.
func Run(ctx context.Context, cfg *config.VMConfig, opts Options) (Reason, error) {
	v, err := New(cfg, opts)
	if err != nil {
		return vcpu.Error, err
	}
	defer v.Close()
	if err := v.Start(); err != nil {
		return vcpu.Error, err
	}
	stop := context.AfterFunc(ctx, func() { v.Stop(Stopped) })
	defer stop()
	return v.Wait()
}
