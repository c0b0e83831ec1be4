// Package mmio owns the virtio-mmio transport (version 2, "modern"): the
// register file a guest driver sees in one MMIO window, feature
// negotiation, the device status state machine, device reset, the
// configuration generation counter, and InterruptStatus/InterruptACK.
//
// Data path: each queue has an eventfd that the VMM registers with
// KVM_IOEVENTFD at base+NotifyOffset with datamatch = queue index, and the
// interrupt is an eventfd registered with KVM_IRQFD; queue kicks and
// interrupts therefore never exit to userspace. From DRIVER_OK until a
// reset InterruptStatus reports the vring bit whatever the driver
// acknowledges (VringAlwaysSet), so that the VMM can have the kernel
// swallow the driver's acknowledgement of it too. Every other register
// access arrives through the MMIO bus (bus.Device) on a vCPU thread.
//
// Concurrency: register accesses are serialised by the Transport's
// mutex. The device runs on its own event loop and only touches the
// transport through Signal (lock-free) and Broken. Lock order:
// Transport.mu before anything the device's Reset takes.
package mmio

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

// Register offsets (virtio 1.x, 4.2.2).
const (
	RegMagic             = 0x000
	RegVersion           = 0x004
	RegDeviceID          = 0x008
	RegVendorID          = 0x00c
	RegDeviceFeatures    = 0x010
	RegDeviceFeaturesSel = 0x014
	RegDriverFeatures    = 0x020
	RegDriverFeaturesSel = 0x024
	RegQueueSel          = 0x030
	RegQueueNumMax       = 0x034
	RegQueueNum          = 0x038
	RegQueueReady        = 0x044
	RegQueueNotify       = 0x050
	RegInterruptStatus   = 0x060
	RegInterruptACK      = 0x064
	RegStatus            = 0x070
	RegQueueDescLow      = 0x080
	RegQueueDescHigh     = 0x084
	RegQueueDriverLow    = 0x090
	RegQueueDriverHigh   = 0x094
	RegQueueDeviceLow    = 0x0a0
	RegQueueDeviceHigh   = 0x0a4
	RegConfigGeneration  = 0x0fc
	RegConfig            = 0x100
)

// Constant register values.
const (
	MagicValue = 0x74726976 // "virt"
	Version    = 2
	VendorID   = 0
)

// NotifyOffset is where the VMM registers the queue ioeventfds.
const NotifyOffset = RegQueueNotify

// Transport is one virtio-mmio window. It implements bus.Device.
type Transport struct {
	dev    virtio.Device
	mem    *guestmem.Memory
	irq    int   // eventfd bound to the window's GSI with KVM_IRQFD
	kicks  []int // one eventfd per queue
	queues []*virtio.Queue

	// isr holds the InterruptStatus bits the driver acknowledges (the
	// config bit); latched holds the vring bit from DRIVER_OK until reset
	// (VringAlwaysSet). A read returns both. They are only accessed
	// atomically: vCPU threads may serve the two interrupt registers from
	// them directly (InterruptWords).
	isr     uint32
	latched uint32
	// needsReset is set by Broken from the device's goroutine.
	needsReset atomic.Bool

	mu             sync.Mutex
	status         uint32
	devFeatSel     uint32
	drvFeatSel     uint32
	driverFeatures uint64
	queueSel       uint32
	configGen      uint32
	active         bool
}

// New builds a transport for dev over guest memory mem. irqFd is an
// eventfd the caller binds to the window's GSI (KVM_IRQFD); New creates one
// eventfd per queue (QueueEventFds) for the caller to bind with
// KVM_IOEVENTFD. Close releases the queue eventfds, not irqFd.
func New(dev virtio.Device, mem *guestmem.Memory, irqFd int) (*Transport, error) {
	sizes := dev.QueueMaxSizes()
	t := &Transport{dev: dev, mem: mem, irq: irqFd}
	for i, n := range sizes {
		if n == 0 || n&(n-1) != 0 || n > virtio.MaxQueueSize {
			t.Close()
			return nil, fmt.Errorf("virtio-mmio: queue %d max size %d is not a power of two in [1, %d]", i, n, virtio.MaxQueueSize)
		}
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			t.Close()
			return nil, fmt.Errorf("virtio-mmio: queue %d eventfd: %w", i, err)
		}
		t.kicks = append(t.kicks, fd)
		t.queues = append(t.queues, virtio.NewQueue(n))
	}
	return t, nil
}

// QueueEventFds returns the queue notification eventfds, index = queue.
func (t *Transport) QueueEventFds() []int { return t.kicks }

// Device returns the device behind the transport.
func (t *Transport) Device() virtio.Device { return t.dev }

// Close resets the device and releases the queue eventfds.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.active {
		t.dev.Reset()
		t.active = false
	}
	t.mu.Unlock()
	var errs []error
	for _, fd := range t.kicks {
		errs = append(errs, unix.Close(fd))
	}
	t.kicks = nil
	return errors.Join(errs...)
}

// Signal sets bits in InterruptStatus and pulses the interrupt line. It
// implements virtio.Interrupt and is safe from any goroutine.
func (t *Transport) Signal(bits uint32) error {
	// The vring bit of a running device is latched already.
	atomic.OrUint32(&t.isr, bits&^atomic.LoadUint32(&t.latched))
	if err := rawsys.Signal(t.irq); err != nil {
		return fmt.Errorf("virtio-mmio: raise interrupt: %w", err)
	}
	return nil
}

// EventFd is the eventfd bound to the window's interrupt line; it
// implements virtio.LineInterrupt.
func (t *Transport) EventFd() int { return t.irq }

// InterruptWords returns the words behind the interrupt registers: a
// read of InterruptStatus returns *status | *latched, a write to
// InterruptACK clears its bits in *status. Access them only atomically.
// They let a vCPU serve both registers without a call into the transport
// (kvm.FastMMIO).
func (t *Transport) InterruptWords() (status, latched *uint32) { return &t.isr, &t.latched }

// VringAlwaysSet is the InterruptACK value that needs no action from the
// transport: from DRIVER_OK until a reset the vring bit reads as set
// whatever the driver acknowledges. An interrupt that a host kernel agent
// (vhost) raises without the VMM therefore still sends the driver to its
// queues, and an acknowledgement of the vring bit alone can be swallowed
// by the kernel (an ioeventfd with this datamatch) instead of costing an
// exit to the VMM on every interrupt. The price is a look at the queues
// on a configuration interrupt, which Linux's driver takes anyway
// whenever the bit is set.
const VringAlwaysSet = virtio.InterruptVring

// Broken marks the device as needing a reset after a guest protocol
// violation and tells the driver with a configuration interrupt.
func (t *Transport) Broken(err error) {
	log.L.Warnf("virtio-mmio: device %d needs reset: %v", t.dev.DeviceID(), err)
	t.needsReset.Store(true)
	_ = t.Signal(virtio.InterruptConfig)
}

// ConfigChanged bumps the configuration generation and raises a
// configuration interrupt (for example after a disk is resized or
// replaced).
func (t *Transport) ConfigChanged() error {
	t.mu.Lock()
	t.configGen++
	t.mu.Unlock()
	return t.Signal(virtio.InterruptConfig)
}

func (t *Transport) deviceFeatures() uint64 {
	return t.dev.Features() | 1<<virtio.FVersion1
}

func (t *Transport) statusLocked() uint32 {
	s := t.status
	if t.needsReset.Load() {
		s |= virtio.StatusNeedsReset
	}
	return s
}

// selected returns the queue chosen by QueueSel, or nil.
func (t *Transport) selected() *virtio.Queue {
	if int(t.queueSel) < len(t.queues) {
		return t.queues[t.queueSel]
	}
	return nil
}

// Read implements bus.Device.
func (t *Transport) Read(offset uint64, data []byte) {
	clear(data)
	if offset >= RegConfig {
		t.mu.Lock()
		defer t.mu.Unlock()
		t.dev.ReadConfig(offset-RegConfig, data)
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		log.L.Debugf("virtio-mmio: ignored %d-byte read at %#x", len(data), offset)
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	var v uint32
	switch offset {
	case RegMagic:
		v = MagicValue
	case RegVersion:
		v = Version
	case RegDeviceID:
		v = t.dev.DeviceID()
	case RegVendorID:
		v = VendorID
	case RegDeviceFeatures:
		switch f := t.deviceFeatures(); t.devFeatSel {
		case 0:
			v = uint32(f)
		case 1:
			v = uint32(f >> 32)
		}
	case RegQueueNumMax:
		if q := t.selected(); q != nil {
			v = uint32(q.MaxSize)
		}
	case RegQueueReady:
		if q := t.selected(); q != nil && q.Ready {
			v = 1
		}
	case RegInterruptStatus:
		v = atomic.LoadUint32(&t.isr) | atomic.LoadUint32(&t.latched)
	case RegStatus:
		v = t.statusLocked()
	case RegConfigGeneration:
		v = t.configGen
	}
	binary.LittleEndian.PutUint32(data, v)
}

// Write implements bus.Device.
func (t *Transport) Write(offset uint64, data []byte) {
	if offset >= RegConfig {
		t.mu.Lock()
		defer t.mu.Unlock()
		// Config writes need the driver to have at least found the device.
		if t.status&virtio.StatusDriver != 0 && t.status&virtio.StatusFailed == 0 {
			t.dev.WriteConfig(offset-RegConfig, data)
		}
		return
	}
	if len(data) != 4 || offset%4 != 0 {
		log.L.Debugf("virtio-mmio: ignored %d-byte write at %#x", len(data), offset)
		return
	}
	v := binary.LittleEndian.Uint32(data)
	t.mu.Lock()
	defer t.mu.Unlock()
	switch offset {
	case RegDeviceFeaturesSel:
		t.devFeatSel = v
	case RegDriverFeaturesSel:
		t.drvFeatSel = v
	case RegDriverFeatures:
		// Only while negotiating: DRIVER set, FEATURES_OK not yet.
		if t.status&(virtio.StatusDriver|virtio.StatusFeaturesOK|virtio.StatusFailed) != virtio.StatusDriver {
			return
		}
		switch t.drvFeatSel {
		case 0:
			t.driverFeatures = t.driverFeatures&^0xffffffff | uint64(v)
		case 1:
			t.driverFeatures = t.driverFeatures&0xffffffff | uint64(v)<<32
		}
	case RegQueueSel:
		t.queueSel = v
	case RegQueueNotify:
		// Normally consumed by the ioeventfd; a write that reaches us (no
		// ioeventfd, or a queue index no ioeventfd matches) is forwarded.
		if int(v) < len(t.kicks) {
			_ = rawsys.Signal(t.kicks[v])
		}
	case RegInterruptACK:
		atomic.AndUint32(&t.isr, ^v)
	case RegStatus:
		t.writeStatus(v)
	case RegQueueNum, RegQueueReady, RegQueueDescLow, RegQueueDescHigh,
		RegQueueDriverLow, RegQueueDriverHigh, RegQueueDeviceLow, RegQueueDeviceHigh:
		t.writeQueue(offset, v)
	default:
		log.L.Debugf("virtio-mmio: ignored write %#x to %#x", v, offset)
	}
}

// writeQueue sets a queue register: allowed only while the driver sets
// up queues (FEATURES_OK, not yet DRIVER_OK, not failed).
func (t *Transport) writeQueue(offset uint64, v uint32) {
	s := t.statusLocked()
	if s&(virtio.StatusFeaturesOK|virtio.StatusDriverOK|virtio.StatusFailed|virtio.StatusNeedsReset) != virtio.StatusFeaturesOK {
		return
	}
	q := t.selected()
	if q == nil {
		return
	}
	lo := func(a uint64) uint64 { return a&^0xffffffff | uint64(v) }
	hi := func(a uint64) uint64 { return a&0xffffffff | uint64(v)<<32 }
	switch offset {
	case RegQueueNum:
		q.Size = uint16(min(v, 0xffff))
		if v > 0xffff {
			q.Size = 0 // rejected at activation
		}
	case RegQueueReady:
		q.Ready = v == 1
	case RegQueueDescLow:
		q.DescTable = lo(q.DescTable)
	case RegQueueDescHigh:
		q.DescTable = hi(q.DescTable)
	case RegQueueDriverLow:
		q.AvailRing = lo(q.AvailRing)
	case RegQueueDriverHigh:
		q.AvailRing = hi(q.AvailRing)
	case RegQueueDeviceLow:
		q.UsedRing = lo(q.UsedRing)
	case RegQueueDeviceHigh:
		q.UsedRing = hi(q.UsedRing)
	}
}

// writeStatus drives the status state machine. Accepted transitions:
// 0 resets; ACKNOWLEDGE; +DRIVER; +FEATURES_OK (kept only if the driver
// accepted no feature the device lacks and VERSION_1); +DRIVER_OK
// (activates the device); FAILED at any time (sticky until reset).
func (t *Transport) writeStatus(v uint32) {
	if v == 0 {
		t.reset()
		return
	}
	old := t.status
	if v&virtio.StatusFailed != 0 {
		t.status |= virtio.StatusFailed
		if t.active {
			t.dev.Reset()
			t.active = false
			atomic.StoreUint32(&t.latched, 0)
		}
		return
	}
	if old&virtio.StatusFailed != 0 || v&old != old {
		// Bits can only be added; clearing needs a reset.
		log.L.Debugf("virtio-mmio: invalid status transition %#x -> %#x", old, v)
		return
	}
	added := v &^ old
	switch {
	case added == virtio.StatusAcknowledge && old == 0:
	case added == virtio.StatusDriver && old == virtio.StatusAcknowledge:
	case added == virtio.StatusFeaturesOK && old == virtio.StatusAcknowledge|virtio.StatusDriver:
		if t.driverFeatures&^t.deviceFeatures() != 0 || !virtio.HasFeature(t.driverFeatures, virtio.FVersion1) {
			log.L.Debugf("virtio-mmio: refusing features %#x (device offers %#x)", t.driverFeatures, t.deviceFeatures())
			return // FEATURES_OK does not stick
		}
	case added == virtio.StatusDriverOK && old == virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK:
		t.status = v
		t.activate()
		return
	case added == 0:
		return
	default:
		log.L.Debugf("virtio-mmio: invalid status transition %#x -> %#x", old, v)
		return
	}
	t.status = v
}

// activate hands the ready queues to the device: all of them, or the
// first ActiveQueues for a virtio.QueueCounter, whose later queues must
// be left disabled. A failure sets DEVICE_NEEDS_RESET.
func (t *Transport) activate() {
	want := len(t.queues)
	if qc, ok := t.dev.(virtio.QueueCounter); ok {
		want = min(max(qc.ActiveQueues(t.driverFeatures), 0), want)
	}
	var qs []*virtio.Queue
	var kicks []int
	for i, q := range t.queues {
		if !q.Ready {
			continue
		}
		if i >= want {
			t.failActivation(fmt.Errorf("queue %d enabled without the feature that adds it", i))
			return
		}
		if err := q.Activate(t.mem, t.driverFeatures); err != nil {
			t.failActivation(fmt.Errorf("queue %d: %w", i, err))
			return
		}
		qs = append(qs, q)
		kicks = append(kicks, t.kicks[i])
	}
	if len(qs) != want {
		t.failActivation(fmt.Errorf("%d of %d queues ready", len(qs), want))
		return
	}
	// Latched before the device starts: vhost may raise the line as soon
	// as it has the queues.
	atomic.StoreUint32(&t.latched, virtio.InterruptVring)
	err := t.dev.Activate(virtio.Activation{
		Mem: t.mem, Features: t.driverFeatures, Queues: qs, Kicks: kicks,
		Interrupt: t, Broken: t.Broken,
	})
	if err != nil {
		atomic.StoreUint32(&t.latched, 0)
		t.failActivation(err)
		return
	}
	t.active = true
	// A kick that raced with DRIVER_OK is not lost: look at every queue.
	for _, fd := range kicks {
		_ = rawsys.Signal(fd)
	}
}

func (t *Transport) failActivation(err error) {
	log.L.Warnf("virtio-mmio: activate device %d: %v", t.dev.DeviceID(), err)
	t.needsReset.Store(true)
	_ = t.Signal(virtio.InterruptConfig)
}

// reset returns the transport and device to their initial state; the
// configuration generation keeps counting.
func (t *Transport) reset() {
	if t.active {
		t.dev.Reset()
		t.active = false
	}
	t.status = 0
	t.devFeatSel, t.drvFeatSel, t.driverFeatures, t.queueSel = 0, 0, 0, 0
	atomic.StoreUint32(&t.isr, 0)
	atomic.StoreUint32(&t.latched, 0)
	t.needsReset.Store(false)
	for _, q := range t.queues {
		q.ResetConfig()
	}
	// Drain stale kicks.
	for _, fd := range t.kicks {
		_ = rawsys.Drain(fd)
	}
}
