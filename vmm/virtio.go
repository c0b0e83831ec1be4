package vmm

import (
	"errors"
	"fmt"
	"io"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/acpi"
	"github.com/stratovirt-go/stratovirt/vmm/arch/amd64"
	"github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/blk"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/mmio"
	vnet "github.com/stratovirt-go/stratovirt/vmm/virtio/net"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/vsock"
)

// DefaultLoopName names the event loop that serves devices without an
// iothread. It has no thread of its own (eventloop.Poller): the runtime's
// poller thread runs its handlers, which wakes fewer threads per event;
// iothreads are threads, named after their ids, as in StratoVirt.
const DefaultLoopName = "vmm-io"

// virtioDevices are the VM's virtio-mmio devices and the event loops that
// serve them. Slot i is window amd64.VirtioMMIOWindow(i) on GSI
// amd64.FirstDeviceGSI+i, in attach order, which is also the order in the
// DSDT and on the kernel command line (so the first drive is /dev/vda).
// Slots are built on the goroutine that builds the VM; a later hot-replace
// (QMP) swaps the backend of an existing slot in place and raises a
// configuration interrupt, so windows and GSIs never move.
type virtioDevices struct {
	loops map[string]*eventloop.Loop // by iothread id; "" is the default loop
	slots []*virtioSlot
	nets  []*vnet.Net // virtio_net.go
	// vsock and balloon are the optional devices (virtio_vsock.go,
	// virtio_balloon.go).
	vsock   vsock.Device
	balloon *virtioBalloon
	// ackSink is the eventfd every window's InterruptACK ioeventfd
	// signals (ackSinkOpen: created); nothing reads it.
	ackSink     int
	ackSinkOpen bool
}

// virtioSlot is one virtio-mmio window with its device.
type virtioSlot struct {
	base      uint64
	gsi       uint32
	irq       int // eventfd bound with KVM_IRQFD
	transport *mmio.Transport
	dev       io.Closer
	ioevents  []kvm.IOEvent
}

// maxVirtioSlots is how many windows have a free legacy GSI (5..15, as
// StratoVirt hands them out; GSIs above 15 are IOAPIC-only pins we keep
// free for later use).
const maxVirtioSlots = config.MaxMMIODevices

// setupVirtio starts the iothreads and attaches the configured virtio
// devices. It runs after guest memory exists and before the ACPI tables
// and kernel command line are written.
func (v *VM) setupVirtio() error {
	v.virtio.loops = map[string]*eventloop.Loop{}
	for _, t := range v.cfg.IOThreads {
		l, err := eventloop.New(t.ID, eventloop.Thread)
		if err != nil {
			return fmt.Errorf("iothread %q: %w", t.ID, err)
		}
		v.virtio.loops[t.ID] = l
	}
	for _, d := range v.cfg.Drives {
		loop, err := v.eventLoop(d.IOThread)
		if err != nil {
			return err
		}
		dev, err := blk.New(blk.Config{
			ID: d.ID, Path: d.File, Backing: d.Backing, ReadOnly: d.ReadOnly, Direct: d.Direct, Serial: d.Serial, IOPS: d.IOPS,
		}, loop)
		if err != nil {
			return fmt.Errorf("drive %q: %w", d.ID, err)
		}
		if err := v.attachVirtio(dev, dev); err != nil {
			dev.Close()
			return fmt.Errorf("drive %q: %w", d.ID, err)
		}
	}
	if err := v.setupNetConsoleRNG(); err != nil {
		return err
	}
	if err := v.setupVsock(); err != nil {
		return err
	}
	if err := v.setupBalloon(); err != nil {
		return err
	}
	return v.setupPmem()
}

// eventLoop returns the loop of iothread id, or the default loop for "".
func (v *VM) eventLoop(id string) (*eventloop.Loop, error) {
	if l, ok := v.virtio.loops[id]; ok {
		return l, nil
	}
	if id != "" {
		return nil, fmt.Errorf("iothread %q is not configured", id)
	}
	l, err := eventloop.New(DefaultLoopName, eventloop.Poller)
	if err != nil {
		return nil, fmt.Errorf("default event loop: %w", err)
	}
	v.virtio.loops[""] = l
	return l, nil
}

// attachVirtio puts dev behind the next virtio-mmio window: the register
// file on the MMIO bus, queue notifications as ioeventfds at
// base+QueueNotify (datamatch = queue index) and the interrupt as an
// irqfd on the window's GSI. closer releases dev when the VM closes.
func (v *VM) attachVirtio(dev virtio.Device, closer io.Closer) (err error) {
	i := len(v.virtio.slots)
	if i >= maxVirtioSlots {
		return fmt.Errorf("virtio-mmio: at most %d devices", maxVirtioSlots)
	}
	base, err := amd64.VirtioMMIOWindow(i)
	if err != nil {
		return err
	}
	s := &virtioSlot{base: base, gsi: uint32(amd64.FirstDeviceGSI + i), irq: -1}
	defer func() {
		if err != nil {
			s.close(v)
		}
	}()
	if s.irq, err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
		return fmt.Errorf("virtio-mmio irq eventfd: %w", err)
	}
	if err = v.vm.AssignIRQFD(s.irq, s.gsi, -1); err != nil {
		return err
	}
	if s.transport, err = mmio.New(dev, v.mem, s.irq); err != nil {
		return err
	}
	events := make([]kvm.IOEvent, 0, len(s.transport.QueueEventFds())+1)
	for q, fd := range s.transport.QueueEventFds() {
		events = append(events, kvm.IOEvent{Fd: fd, Addr: base + mmio.NotifyOffset, Len: 4, MatchData: true, DataMatch: uint64(q)})
	}
	// The driver's acknowledgement of the vring bit alone changes nothing
	// (mmio.VringAlwaysSet): the kernel takes it, an exit fewer on every
	// interrupt. Other values reach the vCPU's fast path.
	sink, err := v.virtio.ackSinkFd()
	if err != nil {
		return err
	}
	events = append(events, kvm.IOEvent{Fd: sink, Addr: base + mmio.RegInterruptACK, Len: 4, MatchData: true, DataMatch: mmio.VringAlwaysSet})
	for _, e := range events {
		if err = v.vm.AssignIOEventFD(e); err != nil {
			return err
		}
		s.ioevents = append(s.ioevents, e)
	}
	if err = v.mmio.Insert(s.transport, base, amd64.VirtioMMIOWindowSize); err != nil {
		return fmt.Errorf("virtio-mmio window %#x: %w", base, err)
	}
	status, latched := s.transport.InterruptWords()
	if err = v.fastMMIO.Add(
		kvm.FastReg{Addr: base + mmio.RegInterruptStatus, Value: status, Or: latched},
		kvm.FastReg{Addr: base + mmio.RegInterruptACK, Write: true, Value: status},
	); err != nil {
		return fmt.Errorf("virtio-mmio window %#x: %w", base, err)
	}
	s.dev = closer
	v.virtio.slots = append(v.virtio.slots, s)
	return nil
}

// ackSinkFd returns the eventfd the InterruptACK ioeventfds signal,
// creating it on first use.
func (d *virtioDevices) ackSinkFd() (int, error) {
	if !d.ackSinkOpen {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return -1, fmt.Errorf("virtio-mmio ack eventfd: %w", err)
		}
		d.ackSink, d.ackSinkOpen = fd, true
	}
	return d.ackSink, nil
}

// close detaches a slot: off the bus, device reset, eventfds released.
func (s *virtioSlot) close(v *VM) error {
	var errs []error
	if s.transport != nil {
		v.fastMMIO.Remove(s.base+mmio.RegInterruptStatus, s.base+mmio.RegInterruptACK)
		v.mmio.Remove(s.base)
		for _, e := range s.ioevents {
			errs = append(errs, v.vm.DeassignIOEventFD(e))
		}
		errs = append(errs, s.transport.Close())
	}
	if s.dev != nil {
		errs = append(errs, s.dev.Close())
	}
	if s.irq >= 0 {
		errs = append(errs, v.vm.DeassignIRQFD(s.irq, s.gsi), unix.Close(s.irq))
	}
	return errors.Join(errs...)
}

// closeVirtio stops every device and event loop. It must run before guest
// memory is unmapped.
func (v *VM) closeVirtio() error {
	var errs []error
	for _, s := range v.virtio.slots {
		errs = append(errs, s.close(v))
	}
	v.virtio.slots = nil
	if v.virtio.ackSinkOpen {
		errs = append(errs, unix.Close(v.virtio.ackSink))
		v.virtio.ackSinkOpen = false
	}
	for _, l := range v.virtio.loops {
		errs = append(errs, l.Close())
	}
	v.virtio.loops = nil
	return errors.Join(errs...)
}

// acpiDevices describes the windows for the DSDT, in slot order.
func (d *virtioDevices) acpiDevices() []acpi.MMIODevice {
	var out []acpi.MMIODevice
	for _, s := range d.slots {
		out = append(out, acpi.MMIODevice{Base: s.base, Size: amd64.VirtioMMIOWindowSize, GSI: s.gsi})
	}
	return out
}

// withCmdline returns the kernel command line base with the
// virtio_mmio.device= entries for kernels built with
// VIRTIO_MMIO_CMDLINE_DEVICES (others ignore them). They go before a
// " -- ", since the kernel hands everything after it to init.
func (d *virtioDevices) withCmdline(base string) string {
	kernel, initArgs, ok := strings.Cut(base, " -- ")
	kernel += d.cmdline()
	if ok {
		return kernel + " -- " + initArgs
	}
	return kernel
}

// cmdline returns the virtio_mmio.device= entries, each with a leading
// space.
func (d *virtioDevices) cmdline() string {
	var b strings.Builder
	for _, s := range d.slots {
		fmt.Fprintf(&b, " virtio_mmio.device=%dK@%#x:%d", amd64.VirtioMMIOWindowSize>>10, s.base, s.gsi)
	}
	return b.String()
}
