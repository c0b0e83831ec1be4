package vsock

import (
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/vhost"
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
	dev      *vhost.Device
	features uint64 // offered to the guest

	mu sync.Mutex // guards running, closed
	// Owned by the loop thread while running.
	evKick  int
	running bool
	closed  bool
}

// NewVhost opens the vhost-vsock device, takes ownership of it and claims
// the guest CID. A CID that another VM (or the host) already uses is an
// error naming it.
func NewVhost(cfg Config, loop *eventloop.Loop) (*Vhost, error) {
	path := cfg.VhostPath
	if path == "" {
		path = VhostDevice
	}
	dev, err := vhost.Open("vsock "+cfg.ID, path, 2) // rx and tx
	if err != nil {
		if errors.Is(err, vhost.ErrUnavailable) {
			return nil, fmt.Errorf("%w (%w)", err, errNoVhost)
		}
		return nil, err
	}
	d := &Vhost{cfg: cfg, loop: loop, dev: dev, evKick: -1}
	d.features = dev.Features() & vhostGuestFeatures &^ (1 << virtio.FVersion1)
	if err = dev.SetVsockGuestCID(cfg.GuestCID); err != nil {
		dev.Close()
		if errors.Is(err, unix.EADDRINUSE) {
			return nil, fmt.Errorf("vsock %s: guest-cid %d is already in use by another VM or the host (vhost-vsock: %w)", cfg.ID, cfg.GuestCID, err)
		}
		return nil, fmt.Errorf("vsock %s: VHOST_VSOCK_SET_GUEST_CID %d: %w", cfg.ID, cfg.GuestCID, err)
	}
	log.L.Debugf("vsock %s: vhost backend %s, guest cid %d, features %#x", cfg.ID, path, cfg.GuestCID, d.features)
	return d, nil
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
	d.dev.Close()
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
	a.Features &= vhostGuestFeatures
	if err := d.dev.Start(a, d.loop); err != nil {
		return err
	}
	var err error
	d.loop.Call(func() {
		if err = d.loop.Add(a.Kicks[eventQueue], func() { _ = rawsys.Drain(a.Kicks[eventQueue]) }); err == nil {
			d.evKick = a.Kicks[eventQueue]
		}
	})
	if err != nil {
		d.unregister()
		return fmt.Errorf("vsock %s: %w", d.cfg.ID, err)
	}
	if err = d.dev.SetVsockRunning(true); err != nil {
		d.unregister()
		return fmt.Errorf("vsock %s: VHOST_VSOCK_SET_RUNNING: %w", d.cfg.ID, err)
	}
	d.mu.Lock()
	d.running = true
	d.mu.Unlock()
	return nil
}

func (d *Vhost) unregister() {
	d.dev.Stop()
	d.loop.Call(func() {
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
	d.running = false
	d.mu.Unlock()
	if !running {
		return
	}
	if err := d.dev.SetVsockRunning(false); err != nil {
		log.L.Errorf("vsock %s: stop vhost: %v", d.cfg.ID, err)
	}
	d.unregister()
}

// VhostAvailable reports whether the vhost-vsock device can be opened.
func VhostAvailable() bool { return vhost.Available(VhostDevice) }
