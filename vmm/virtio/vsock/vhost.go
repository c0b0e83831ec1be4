package vsock

import (
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// fSeqpacket is VIRTIO_VSOCK_F_SEQPACKET.
const fSeqpacket = 1

// vhostGuestFeatures are the vhost features passed on to the guest (the
// rest, such as VHOST_F_LOG_ALL or ACCESS_PLATFORM, are host-side only).
const vhostGuestFeatures = 1<<virtio.FVersion1 | 1<<virtio.FEventIdx | 1<<virtio.FIndirectDesc | 1<<fSeqpacket

// Vhost is the vhost-vsock device: the kernel serves the rx and tx
// queues; the VMM holds the event queue.
type Vhost struct {
	cfg      Config
	loop     *eventloop.Loop
	fd       int
	features uint64 // offered to the guest
	calls    [2]int // rx, tx "call" eventfds relayed to the interrupt

	mu sync.Mutex // guards running, act, closed
	// Owned by the loop thread while running.
	act     *virtio.Activation
	evKick  int
	running bool
	closed  bool
}

// NewVhost opens the vhost-vsock device, takes ownership of it and claims
// the guest CID. A CID that another VM (or the host) already uses is an
// error naming it.
func NewVhost(cfg Config, loop *eventloop.Loop) (_ *Vhost, err error) {
	path := cfg.VhostPath
	if path == "" {
		path = VhostDevice
	}
	d := &Vhost{cfg: cfg, loop: loop, fd: -1, calls: [2]int{-1, -1}, evKick: -1}
	defer func() {
		if err != nil {
			d.closeFds()
		}
	}()
	d.fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("vsock %s: open %s: %w (%w)", cfg.ID, path, err, errNoVhost)
		}
		return nil, fmt.Errorf("vsock %s: open %s: %w", cfg.ID, path, err)
	}
	if err = ioctlNone(d.fd, vhostSetOwner); err != nil {
		return nil, fmt.Errorf("vsock %s: VHOST_SET_OWNER: %w", cfg.ID, err)
	}
	host, err := getFeatures(d.fd)
	if err != nil {
		return nil, fmt.Errorf("vsock %s: VHOST_GET_FEATURES: %w", cfg.ID, err)
	}
	d.features = host & vhostGuestFeatures &^ (1 << virtio.FVersion1)
	if err = ioctlU64(d.fd, vhostVsockSetCID, uint64(cfg.GuestCID)); err != nil {
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("vsock %s: guest-cid %d is already in use by another VM or the host (vhost-vsock: %w)", cfg.ID, cfg.GuestCID, err)
		}
		return nil, fmt.Errorf("vsock %s: VHOST_VSOCK_SET_GUEST_CID %d: %w", cfg.ID, cfg.GuestCID, err)
	}
	for i := range d.calls {
		if d.calls[i], err = unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK); err != nil {
			return nil, fmt.Errorf("vsock %s: eventfd: %w", cfg.ID, err)
		}
	}
	log.L.Debugf("vsock %s: vhost backend %s, guest cid %d, features %#x", cfg.ID, path, cfg.GuestCID, d.features)
	return d, nil
}

func (d *Vhost) closeFds() {
	for _, fd := range []*int{&d.fd, &d.calls[0], &d.calls[1]} {
		if *fd >= 0 {
			unix.Close(*fd)
			*fd = -1
		}
	}
}

// Info implements Device.
func (d *Vhost) Info() Info {
	return Info{ID: d.cfg.ID, Backend: BackendVhost, GuestCID: d.cfg.GuestCID}
}

// Close stops the device and releases the vhost descriptor (and with it
// the CID).
func (d *Vhost) Close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	d.mu.Unlock()
	d.Reset()
	d.closeFds()
	return nil
}

// DeviceID implements virtio.Device.
func (d *Vhost) DeviceID() uint32 { return virtio.IDVsock }

// Features implements virtio.Device.
func (d *Vhost) Features() uint64 { return d.features }

// QueueMaxSizes implements virtio.Device.
func (d *Vhost) QueueMaxSizes() []uint16 { return []uint16{QueueSize, QueueSize, EventQSize} }

// ReadConfig implements virtio.Device.
func (d *Vhost) ReadConfig(offset uint64, data []byte) { readConfig(d.cfg.GuestCID, offset, data) }

// WriteConfig implements virtio.Device: the configuration is read-only.
func (d *Vhost) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device: features, memory table and the rx
// and tx rings go to the kernel, then the device runs.
func (d *Vhost) Activate(a virtio.Activation) error {
	if len(a.Queues) != queueCount || len(a.Kicks) != queueCount {
		return fmt.Errorf("vsock %s: %d queues, want %d", d.cfg.ID, len(a.Queues), queueCount)
	}
	if err := d.setup(a); err != nil {
		return fmt.Errorf("vsock %s: %w", d.cfg.ID, err)
	}
	var err error
	d.loop.Call(func() {
		for i, fd := range d.calls {
			if err = d.loop.Add(fd, d.onCall(fd)); err != nil {
				for _, done := range d.calls[:i] {
					_ = d.loop.Remove(done)
				}
				return
			}
		}
		if err = d.loop.Add(a.Kicks[eventQueue], func() { drain(a.Kicks[eventQueue]) }); err != nil {
			for _, fd := range d.calls {
				_ = d.loop.Remove(fd)
			}
			return
		}
		d.evKick = a.Kicks[eventQueue]
	})
	if err != nil {
		return fmt.Errorf("vsock %s: %w", d.cfg.ID, err)
	}
	if err = ioctlInt(d.fd, vhostVsockSetRun, 1); err != nil {
		d.unregister()
		return fmt.Errorf("vsock %s: VHOST_VSOCK_SET_RUNNING: %w", d.cfg.ID, err)
	}
	d.mu.Lock()
	d.act, d.running = &a, true
	d.mu.Unlock()
	return nil
}

// setup hands features, memory and the two data rings to the kernel.
func (d *Vhost) setup(a virtio.Activation) error {
	if err := ioctlU64(d.fd, vhostSetFeatures, a.Features&vhostGuestFeatures); err != nil {
		return fmt.Errorf("VHOST_SET_FEATURES %#x: %w", a.Features, err)
	}
	if err := setMemTable(d.fd, a.Mem); err != nil {
		return fmt.Errorf("VHOST_SET_MEM_TABLE: %w", err)
	}
	for i := range uint32(2) { // rx and tx; the event queue stays here
		q := a.Queues[i]
		n := uint64(q.Size)
		if err := setVringState(d.fd, vhostSetVringNum, i, uint32(q.Size)); err != nil {
			return fmt.Errorf("VHOST_SET_VRING_NUM %d: %w", i, err)
		}
		addr := vringAddr{index: i}
		var err error
		if addr.desc, err = hostAddr(a.Mem, q.DescTable, 16*n); err != nil {
			return err
		}
		if addr.avail, err = hostAddr(a.Mem, q.AvailRing, 6+2*n); err != nil {
			return err
		}
		if addr.used, err = hostAddr(a.Mem, q.UsedRing, 6+8*n); err != nil {
			return err
		}
		if err := setVringAddr(d.fd, &addr); err != nil {
			return fmt.Errorf("VHOST_SET_VRING_ADDR %d: %w", i, err)
		}
		if err := setVringState(d.fd, vhostSetVringBase, i, uint32(q.NextAvail())); err != nil {
			return fmt.Errorf("VHOST_SET_VRING_BASE %d: %w", i, err)
		}
		if err := setVringState(d.fd, vhostSetVringKick, i, uint32(a.Kicks[i])); err != nil {
			return fmt.Errorf("VHOST_SET_VRING_KICK %d: %w", i, err)
		}
		if err := setVringState(d.fd, vhostSetVringCall, i, uint32(d.calls[i])); err != nil {
			return fmt.Errorf("VHOST_SET_VRING_CALL %d: %w", i, err)
		}
	}
	return nil
}

// onCall relays the kernel's used-buffer notification to the guest.
func (d *Vhost) onCall(fd int) func() {
	return func() {
		drain(fd)
		d.mu.Lock()
		act := d.act
		d.mu.Unlock()
		if act != nil {
			if err := act.Interrupt.Signal(virtio.InterruptVring); err != nil {
				log.L.Errorf("vsock %s: %v", d.cfg.ID, err)
			}
		}
	}
}

func (d *Vhost) unregister() {
	d.loop.Call(func() {
		for _, fd := range d.calls {
			_ = d.loop.Remove(fd)
		}
		if d.evKick >= 0 {
			_ = d.loop.Remove(d.evKick)
			d.evKick = -1
		}
	})
}

// Reset implements virtio.Device: the kernel stops touching the rings.
func (d *Vhost) Reset() {
	d.mu.Lock()
	running := d.running
	d.running, d.act = false, nil
	d.mu.Unlock()
	if !running {
		return
	}
	if err := ioctlInt(d.fd, vhostVsockSetRun, 0); err != nil {
		log.L.Errorf("vsock %s: stop vhost: %v", d.cfg.ID, err)
	}
	d.unregister()
	for _, fd := range d.calls {
		drain(fd)
	}
}

// VhostAvailable reports whether the vhost-vsock device can be opened.
func VhostAvailable() bool {
	f, err := os.OpenFile(VhostDevice, os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	return true
}
