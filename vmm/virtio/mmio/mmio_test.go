package mmio

import (
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

type fakeDev struct {
	activations []virtio.Activation
	resets      int
	config      [8]byte
	failAct     bool
}

func (f *fakeDev) DeviceID() uint32        { return virtio.IDBlock }
func (f *fakeDev) Features() uint64        { return 1<<virtio.FEventIdx | 1<<5 }
func (f *fakeDev) QueueMaxSizes() []uint16 { return []uint16{16} }
func (f *fakeDev) ReadConfig(off uint64, d []byte) {
	clear(d)
	if off < uint64(len(f.config)) {
		copy(d, f.config[off:])
	}
}
func (f *fakeDev) WriteConfig(off uint64, d []byte) {
	if off < uint64(len(f.config)) {
		copy(f.config[off:], d)
	}
}
func (f *fakeDev) Activate(a virtio.Activation) error {
	if f.failAct {
		return errors.New("no")
	}
	f.activations = append(f.activations, a)
	return nil
}
func (f *fakeDev) Reset() { f.resets++ }

type rig struct {
	t   *testing.T
	tr  *Transport
	dev *fakeDev
	irq int
	drv *vt.Driver
}

func newRig(t *testing.T) *rig {
	irq, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(irq) })
	mem := vt.NewMemory(1 << 20)
	dev := &fakeDev{}
	tr, err := New(dev, mem, irq)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return &rig{t: t, tr: tr, dev: dev, irq: irq, drv: vt.NewDriver(mem, 0x1000, 16, 1<<20)}
}

func (r *rig) read(off uint64) uint32 {
	var b [4]byte
	r.tr.Read(off, b[:])
	return binary.LittleEndian.Uint32(b[:])
}

func (r *rig) write(off uint64, v uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], v)
	r.tr.Write(off, b[:])
}

// probe runs Linux's virtio_mmio probe and setup sequence.
func (r *rig) probe(features uint64) {
	r.write(RegStatus, 0)
	r.write(RegStatus, virtio.StatusAcknowledge)
	r.write(RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver)
	r.write(RegDriverFeaturesSel, 1)
	r.write(RegDriverFeatures, uint32(features>>32))
	r.write(RegDriverFeaturesSel, 0)
	r.write(RegDriverFeatures, uint32(features))
	r.write(RegStatus, virtio.StatusAcknowledge|virtio.StatusDriver|virtio.StatusFeaturesOK)
}

func (r *rig) setupQueue() { r.setupQueueAt(0, r.drv) }

// setupQueueAt programs queue i with d's rings and enables it.
func (r *rig) setupQueueAt(i uint32, d *vt.Driver) {
	r.write(RegQueueSel, i)
	r.write(RegQueueNum, uint32(d.Size))
	r.write(RegQueueDescLow, uint32(d.Desc))
	r.write(RegQueueDescHigh, uint32(d.Desc>>32))
	r.write(RegQueueDriverLow, uint32(d.Avail))
	r.write(RegQueueDriverHigh, 0)
	r.write(RegQueueDeviceLow, uint32(d.UsedRing))
	r.write(RegQueueDeviceHigh, 0)
	r.write(RegQueueReady, 1)
}

func (r *rig) irqCount() uint64 {
	var b [8]byte
	if _, err := unix.Read(r.irq, b[:]); err != nil {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:])
}

func TestIdentityRegisters(t *testing.T) {
	r := newRig(t)
	for _, c := range []struct {
		off  uint64
		want uint32
	}{{RegMagic, 0x74726976}, {RegVersion, 2}, {RegDeviceID, 2}, {RegVendorID, 0}, {RegStatus, 0}, {RegQueueNumMax, 16}} {
		if got := r.read(c.off); got != c.want {
			t.Errorf("register %#x = %#x, want %#x", c.off, got, c.want)
		}
	}
	r.write(RegDeviceFeaturesSel, 0)
	if got := r.read(RegDeviceFeatures); got != 1<<virtio.FEventIdx|1<<5 {
		t.Errorf("features page 0 = %#x", got)
	}
	r.write(RegDeviceFeaturesSel, 1)
	if got := r.read(RegDeviceFeatures); got != 1 {
		t.Errorf("features page 1 = %#x, want VERSION_1", got)
	}
	r.write(RegQueueSel, 1)
	if got := r.read(RegQueueNumMax); got != 0 {
		t.Errorf("QueueNumMax of absent queue = %d", got)
	}
	// Narrow accesses to registers read zero.
	var b [2]byte
	r.tr.Read(RegMagic, b[:])
	if b != [2]byte{} {
		t.Errorf("2-byte register read = %v", b)
	}
}

func TestNegotiationAndActivation(t *testing.T) {
	r := newRig(t)
	r.probe(1<<virtio.FVersion1 | 1<<virtio.FEventIdx)
	if s := r.read(RegStatus); s != 0xb {
		t.Fatalf("status after FEATURES_OK = %#x, want 0xb", s)
	}
	// Queue registers written before FEATURES_OK would be ignored; now
	// they stick.
	r.setupQueue()
	if r.read(RegQueueReady) != 1 {
		t.Fatal("queue not ready")
	}
	// Config space: byte-granular access, writable after DRIVER.
	r.tr.Write(RegConfig+1, []byte{0xab})
	var c [1]byte
	r.tr.Read(RegConfig+1, c[:])
	if c[0] != 0xab {
		t.Errorf("config byte = %#x", c[0])
	}
	r.write(RegStatus, 0xf)
	if len(r.dev.activations) != 1 {
		t.Fatalf("%d activations, want 1", len(r.dev.activations))
	}
	a := r.dev.activations[0]
	if a.Features != 1<<virtio.FVersion1|1<<virtio.FEventIdx || len(a.Queues) != 1 || a.Queues[0].Size != 16 || a.Queues[0].UsedRing != r.drv.UsedRing {
		t.Errorf("activation %+v", a)
	}
	// Queue registers are frozen after DRIVER_OK.
	r.write(RegQueueNum, 8)
	if a.Queues[0].Size != 16 {
		t.Error("queue size changed after DRIVER_OK")
	}
	// Interrupts: Signal pulses the irqfd; the vring bit reads as set
	// from DRIVER_OK on, whatever the driver acknowledges.
	if err := a.Interrupt.Signal(virtio.InterruptVring); err != nil {
		t.Fatal(err)
	}
	if r.read(RegInterruptStatus) != 1 || r.irqCount() != 1 {
		t.Error("vring interrupt not raised")
	}
	r.write(RegInterruptACK, 1)
	if r.read(RegInterruptStatus) != 1 {
		t.Error("ACK cleared the vring bit")
	}
	// A guest error sets NEEDS_RESET with a config interrupt.
	a.Broken(errors.New("bad ring"))
	if s := r.read(RegStatus); s&virtio.StatusNeedsReset == 0 || r.read(RegInterruptStatus) != 3 {
		t.Errorf("after Broken: status %#x isr %#x", s, r.read(RegInterruptStatus))
	}
	gen := r.read(RegConfigGeneration)
	if err := r.tr.ConfigChanged(); err != nil || r.read(RegConfigGeneration) != gen+1 {
		t.Errorf("config generation %d -> %d", gen, r.read(RegConfigGeneration))
	}
	// Reset.
	r.write(RegStatus, 0)
	if r.dev.resets != 1 || r.read(RegStatus) != 0 || r.read(RegQueueReady) != 0 || r.read(RegInterruptStatus) != 0 {
		t.Errorf("after reset: resets %d status %#x ready %d", r.dev.resets, r.read(RegStatus), r.read(RegQueueReady))
	}
	if r.read(RegConfigGeneration) != gen+1 {
		t.Error("config generation must survive reset")
	}
}

func TestFeatureRefusal(t *testing.T) {
	for _, tc := range []struct {
		name     string
		features uint64
	}{
		{"no VERSION_1", 1 << virtio.FEventIdx},
		{"feature not offered", 1<<virtio.FVersion1 | 1<<virtio.FIndirectDesc},
	} {
		r := newRig(t)
		r.probe(tc.features)
		if s := r.read(RegStatus); s&virtio.StatusFeaturesOK != 0 {
			t.Errorf("%s: FEATURES_OK stuck (status %#x)", tc.name, s)
		}
	}
}

func TestStatusStateMachine(t *testing.T) {
	r := newRig(t)
	// DRIVER_OK without the steps before is refused.
	r.write(RegStatus, virtio.StatusDriverOK)
	if r.read(RegStatus) != 0 || len(r.dev.activations) != 0 {
		t.Fatal("DRIVER_OK accepted from reset state")
	}
	// Queue writes before FEATURES_OK are ignored.
	r.write(RegStatus, 1)
	r.write(RegStatus, 3)
	r.setupQueue()
	if r.read(RegQueueReady) != 0 {
		t.Error("queue configured before FEATURES_OK")
	}
	// Activation with the queue not ready fails: NEEDS_RESET.
	r.write(RegDriverFeaturesSel, 1)
	r.write(RegDriverFeatures, 1)
	r.write(RegStatus, 0xb)
	r.write(RegStatus, 0xf)
	if len(r.dev.activations) != 0 || r.read(RegStatus)&virtio.StatusNeedsReset == 0 {
		t.Errorf("activation without ready queue: status %#x", r.read(RegStatus))
	}
	// FAILED is sticky until reset.
	r.write(RegStatus, 0xf|virtio.StatusFailed)
	r.write(RegStatus, 1)
	if r.read(RegStatus)&virtio.StatusFailed == 0 {
		t.Error("FAILED not sticky")
	}
	r.write(RegStatus, 0)
	if r.read(RegStatus) != 0 {
		t.Error("reset did not clear FAILED")
	}
	// A bad queue (size not a power of two) fails activation too.
	r.probe(1 << virtio.FVersion1)
	r.setupQueue()
	r.write(RegQueueNum, 12)
	r.write(RegStatus, 0xf)
	if len(r.dev.activations) != 0 || r.read(RegStatus)&virtio.StatusNeedsReset == 0 {
		t.Error("queue size 12 activated")
	}
}

func TestNotifyFallback(t *testing.T) {
	r := newRig(t)
	r.write(RegQueueNotify, 0)
	var b [8]byte
	if n, err := unix.Read(r.tr.QueueEventFds()[0], b[:]); err != nil || n != 8 {
		t.Fatalf("notify write did not signal the queue eventfd: %v", err)
	}
	r.write(RegQueueNotify, 7) // no such queue: ignored
}

// FuzzRegisters drives the register file with arbitrary accesses; it must
// never panic, and the device may only be activated through DRIVER_OK
// with validated queues.
func FuzzRegisters(f *testing.F) {
	seq := func(ops ...uint32) []byte {
		var b []byte
		for _, o := range ops {
			b = binary.LittleEndian.AppendUint32(b, o)
		}
		return b
	}
	f.Add(seq(RegStatus<<8|6, 1, RegStatus<<8|6, 3, RegStatus<<8|6, 0xb, RegStatus<<8|6, 0xf))
	f.Add(seq(RegConfig<<8|1, 0xff, RegQueueNum<<8|6, 0xffffffff))
	f.Fuzz(func(t *testing.T, ops []byte) {
		irq, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(irq)
		mem := vt.NewMemory(64 << 10)
		dev := &fakeDev{}
		tr, err := New(dev, mem, irq)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		for len(ops) >= 8 {
			op := binary.LittleEndian.Uint32(ops)
			val := ops[4:8]
			ops = ops[8:]
			off := uint64(op>>8) & 0x1ff
			width := []int{1, 2, 4, 8}[op&3]
			buf := make([]byte, width)
			copy(buf, val)
			if op&4 != 0 {
				tr.Write(off, buf)
			} else {
				tr.Read(off, buf)
			}
		}
		for _, a := range dev.activations {
			for _, q := range a.Queues {
				if err := q.Validate(mem); err != nil {
					t.Fatalf("activated with invalid queue: %v", err)
				}
			}
		}
	})
}

// TestVringAlwaysSet: from DRIVER_OK until a reset the vring bit reads as
// set, so that an interrupt a host kernel agent raises (vhost writing the
// line's eventfd) sends the driver to its queues, and acknowledging it
// needs no action (the VMM lets the kernel swallow that write).
func TestVringAlwaysSet(t *testing.T) {
	r := newRig(t)
	r.probe(1 << virtio.FVersion1)
	r.setupQueue()
	status, latched := r.tr.InterruptWords()
	if r.read(RegInterruptStatus) != 0 || atomic.LoadUint32(latched) != 0 {
		t.Fatal("vring bit set before DRIVER_OK")
	}
	r.write(RegStatus, 0xf)
	li, ok := r.dev.activations[0].Interrupt.(virtio.LineInterrupt)
	if !ok {
		t.Fatal("the transport's interrupt is not a LineInterrupt")
	}
	if li.EventFd() != r.irq {
		t.Errorf("EventFd %d, want the line's %d", li.EventFd(), r.irq)
	}
	// The words a vCPU serves the interrupt registers from
	// (InterruptWords) are the registers' own.
	if atomic.LoadUint32(latched) != VringAlwaysSet || atomic.LoadUint32(status) != 0 {
		t.Fatalf("InterruptWords status %#x latched %#x after DRIVER_OK", *status, *latched)
	}
	// What vhost does: pulse the line without the VMM.
	unix.Write(li.EventFd(), []byte{1, 0, 0, 0, 0, 0, 0, 0})
	if r.irqCount() != 1 || r.read(RegInterruptStatus) != virtio.InterruptVring {
		t.Fatal("vring bit not reported")
	}
	r.write(RegInterruptACK, VringAlwaysSet)
	if r.read(RegInterruptStatus) != virtio.InterruptVring {
		t.Error("ACK cleared the vring bit")
	}
	// A vring Signal leaves the acknowledged word alone.
	if err := li.Signal(virtio.InterruptVring); err != nil || atomic.LoadUint32(status) != 0 {
		t.Errorf("Signal(vring): %v, status word %#x", err, *status)
	}
	// A config interrupt adds its bit; its ACK leaves the vring bit.
	if err := r.tr.ConfigChanged(); err != nil {
		t.Fatal(err)
	}
	if r.read(RegInterruptStatus) != virtio.InterruptVring|virtio.InterruptConfig {
		t.Errorf("isr %#x with config change", r.read(RegInterruptStatus))
	}
	if atomic.LoadUint32(status) != virtio.InterruptConfig {
		t.Errorf("InterruptWords status %#x, want the config bit", *status)
	}
	atomic.AndUint32(status, ^uint32(virtio.InterruptConfig)) // an ACK served by a vCPU
	if r.read(RegInterruptStatus) != virtio.InterruptVring {
		t.Errorf("isr %#x after an ACK through InterruptWords", r.read(RegInterruptStatus))
	}
	r.write(RegStatus, 0)
	if r.read(RegInterruptStatus) != 0 {
		t.Error("reset kept the vring bit")
	}
	// FAILED stops the device and the bit with it.
	r.probe(1 << virtio.FVersion1)
	r.setupQueue()
	r.write(RegStatus, 0xf)
	if r.read(RegInterruptStatus) != virtio.InterruptVring {
		t.Error("vring bit not set again after the second DRIVER_OK")
	}
	r.write(RegStatus, 0xf|virtio.StatusFailed)
	if r.read(RegInterruptStatus) != 0 {
		t.Error("FAILED kept the vring bit")
	}
}

// optionalDev has a second queue that exists only with feature bit 5.
type optionalDev struct{ fakeDev }

func (o *optionalDev) QueueMaxSizes() []uint16 { return []uint16{16, 16} }
func (o *optionalDev) ActiveQueues(f uint64) int {
	if virtio.HasFeature(f, 5) {
		return 2
	}
	return 1
}

func TestOptionalQueue(t *testing.T) {
	mem := vt.NewMemory(1 << 20)
	drivers := []*vt.Driver{vt.NewDriver(mem, 0x1000, 16, 1<<19), vt.NewDriver(mem, 0x8000, 16, 3<<18)}
	for _, tc := range []struct {
		name      string
		feature5  bool
		enable    int // queues the driver sets up
		activated int // queues handed to the device; 0: NEEDS_RESET
	}{
		{"without the feature, first queue", false, 1, 1},
		{"without the feature, both queues", false, 2, 0},
		{"with the feature, first queue only", true, 1, 0},
		{"with the feature, both queues", true, 2, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			irq, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(irq)
			dev := &optionalDev{}
			tr, err := New(dev, mem, irq)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			r := &rig{t: t, tr: tr, irq: irq}
			f := uint64(1) << virtio.FVersion1
			if tc.feature5 {
				f |= 1 << 5
			}
			r.probe(f)
			for i, d := range drivers[:tc.enable] {
				r.setupQueueAt(uint32(i), d)
			}
			r.write(RegStatus, 0xf)
			if tc.activated == 0 {
				if len(dev.activations) != 0 || r.read(RegStatus)&virtio.StatusNeedsReset == 0 {
					t.Errorf("activated: %d, status %#x; want NEEDS_RESET", len(dev.activations), r.read(RegStatus))
				}
				return
			}
			if len(dev.activations) != 1 || len(dev.activations[0].Queues) != tc.activated {
				t.Fatalf("activations %d, status %#x", len(dev.activations), r.read(RegStatus))
			}
		})
	}
}
