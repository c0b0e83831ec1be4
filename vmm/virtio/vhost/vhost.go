// Package vhost owns the VMM's side of the host kernel's vhost protocol
// (<linux/vhost.h>), which the vhost-vsock and vhost-net backends share:
// opening and owning a vhost character device, its feature bits, the
// guest memory table, handing virtqueues (size, ring addresses, next
// index, kick and call eventfds) to the kernel, and wiring the kernel's
// used-buffer notifications ("call") to the guest's interrupt.
//
// The call goes straight to the interrupt line when the transport offers
// it (virtio.LineInterrupt: the kernel writes the eventfd bound to the
// GSI with KVM_IRQFD, and the transport reports the vring bit while the
// device runs), so an interrupt costs no VMM wake-up. Otherwise a call
// eventfd per queue is relayed to the interrupt on an event loop. The device-specific ioctls (vsock's guest CID and run
// switch, net's backend socket) are methods here too, so that every raw
// vhost ioctl lives in one package.
//
// The kernel moves the data: once a queue is handed over the VMM never
// touches its rings until the device is reset.
package vhost

import (
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// ErrUnavailable marks a host without a usable vhost device of the kind
// asked for (missing module, no permission).
var ErrUnavailable = errors.New("vhost device unavailable")

// Feature bits that belong to the vhost protocol rather than to a device.
const (
	// FNetVirtioNetHdr (VHOST_NET_F_VIRTIO_NET_HDR) asks vhost-net to add
	// and strip the virtio-net header itself; left off, the tap does.
	FNetVirtioNetHdr = 27
	// FLogAll (VHOST_F_LOG_ALL) is dirty logging for migration.
	FLogAll = 26
)

// Device is an open, owned vhost device with one call eventfd per queue
// the kernel serves. Its methods other than the relay are not safe for
// concurrent use; the devices built on it call them from their Activate,
// Reset and Close, which the transport serializes.
type Device struct {
	name     string // for errors: "vsock v0", "virtio-net net0"
	fd       int
	features uint64 // VHOST_GET_FEATURES
	calls    []int

	mu      sync.Mutex // guards signal
	signal  func()
	relayOn *eventloop.Loop
}

// Open opens the vhost device at path, takes ownership of it for this
// process (VHOST_SET_OWNER: the kernel worker thread is created for, and
// accounted to, the caller) and makes queues call eventfds. name prefixes
// errors. A device that cannot be opened for lack of the module or of
// permission is an error wrapping ErrUnavailable.
func Open(name, path string, queues int) (_ *Device, err error) {
	d := &Device{name: name, fd: -1}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	d.fd, err = unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ENXIO) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("%s: open %s: %w (%w)", name, path, err, ErrUnavailable)
		}
		return nil, fmt.Errorf("%s: open %s: %w", name, path, err)
	}
	if err = ioctlNone(d.fd, vhostSetOwner); err != nil {
		return nil, fmt.Errorf("%s: VHOST_SET_OWNER: %w", name, err)
	}
	if d.features, err = getFeatures(d.fd); err != nil {
		return nil, fmt.Errorf("%s: VHOST_GET_FEATURES: %w", name, err)
	}
	d.calls = make([]int, 0, queues)
	for range queues {
		fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
		if err != nil {
			return nil, fmt.Errorf("%s: eventfd: %w", name, err)
		}
		d.calls = append(d.calls, fd)
	}
	return d, nil
}

// Available reports whether the vhost device at path can be opened.
func Available(path string) bool {
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}

// Features are the kernel's feature bits (VHOST_GET_FEATURES).
func (d *Device) Features() uint64 { return d.features }

// Close releases the device; the kernel stops its worker and drops every
// queue and backend.
func (d *Device) Close() {
	if d.fd >= 0 {
		unix.Close(d.fd)
		d.fd = -1
	}
	for _, fd := range d.calls {
		unix.Close(fd)
	}
	d.calls = nil
}

// Start hands the kernel the acked features it knows (acked &
// Features()), the guest memory table, and the first len(calls) queues
// of a: size, ring addresses, the next available index, the transport's
// kick eventfd, and as call eventfd the interrupt line itself when a's
// interrupt is a virtio.LineInterrupt, else the device's own call
// eventfd, relayed to a.Interrupt on loop. The device-specific switch
// (running, backend) comes after Start.
func (d *Device) Start(a virtio.Activation, loop *eventloop.Loop) error {
	if len(a.Queues) < len(d.calls) || len(a.Kicks) < len(d.calls) {
		return fmt.Errorf("%s: %d queues for %d vhost queues", d.name, len(a.Queues), len(d.calls))
	}
	line, direct := a.Interrupt.(virtio.LineInterrupt)
	if err := ioctlU64(d.fd, vhostSetFeatures, a.Features&d.features); err != nil {
		return fmt.Errorf("%s: VHOST_SET_FEATURES %#x: %w", d.name, a.Features&d.features, err)
	}
	if err := setMemTable(d.fd, a.Mem); err != nil {
		return fmt.Errorf("%s: VHOST_SET_MEM_TABLE: %w", d.name, err)
	}
	for i, call := range d.calls {
		if direct {
			call = line.EventFd()
		}
		if err := d.setupQueue(a, uint32(i), call); err != nil {
			return fmt.Errorf("%s: queue %d: %w", d.name, i, err)
		}
	}
	if direct {
		return nil
	}
	return d.startRelay(loop, func() {
		if err := a.Interrupt.Signal(virtio.InterruptVring); err != nil {
			log.L.Errorf("%s: %v", d.name, err)
		}
	})
}

// Stop ends the interrupt wiring of Start, once the kernel no longer
// serves the queues.
func (d *Device) Stop() {
	d.stopRelay()
}

func (d *Device) setupQueue(a virtio.Activation, i uint32, call int) error {
	q := a.Queues[i]
	n := uint64(q.Size)
	if err := setVringState(d.fd, vhostSetVringNum, i, uint32(q.Size)); err != nil {
		return fmt.Errorf("VHOST_SET_VRING_NUM: %w", err)
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
		return fmt.Errorf("VHOST_SET_VRING_ADDR: %w", err)
	}
	if err := setVringState(d.fd, vhostSetVringBase, i, uint32(q.NextAvail())); err != nil {
		return fmt.Errorf("VHOST_SET_VRING_BASE: %w", err)
	}
	if err := setVringState(d.fd, vhostSetVringKick, i, uint32(a.Kicks[i])); err != nil {
		return fmt.Errorf("VHOST_SET_VRING_KICK: %w", err)
	}
	if err := setVringState(d.fd, vhostSetVringCall, i, uint32(call)); err != nil {
		return fmt.Errorf("VHOST_SET_VRING_CALL: %w", err)
	}
	return nil
}

// startRelay watches the call eventfds on loop and runs signal (which
// raises the guest's vring interrupt) whenever the kernel has published
// used buffers. The relay runs on the loop thread.
func (d *Device) startRelay(loop *eventloop.Loop, signal func()) error {
	d.mu.Lock()
	d.signal = signal
	d.mu.Unlock()
	var err error
	loop.Call(func() {
		for i, fd := range d.calls {
			if err = loop.Add(fd, d.onCall(fd)); err != nil {
				for _, done := range d.calls[:i] {
					_ = loop.Remove(done)
				}
				return
			}
		}
	})
	if err != nil {
		return fmt.Errorf("%s: watch call eventfds: %w", d.name, err)
	}
	d.relayOn = loop
	return nil
}

// stopRelay stops the relay and drops notifications not yet relayed (the
// device is being reset: the guest will not look for them).
func (d *Device) stopRelay() {
	d.mu.Lock()
	d.signal = nil
	d.mu.Unlock()
	loop := d.relayOn
	if loop == nil {
		return
	}
	d.relayOn = nil
	loop.Call(func() {
		for _, fd := range d.calls {
			_ = loop.Remove(fd)
		}
	})
	for _, fd := range d.calls {
		_ = rawsys.Drain(fd)
	}
}

func (d *Device) onCall(fd int) func() {
	return func() {
		_ = rawsys.Drain(fd)
		d.mu.Lock()
		signal := d.signal
		d.mu.Unlock()
		if signal != nil {
			signal()
		}
	}
}

// SetVsockGuestCID claims cid for this VM (VHOST_VSOCK_SET_GUEST_CID).
// A CID another VM or the host uses fails with EADDRINUSE.
func (d *Device) SetVsockGuestCID(cid uint32) error {
	return ioctlU64(d.fd, vhostVsockSetCID, uint64(cid))
}

// SetVsockRunning starts or stops the vsock queues
// (VHOST_VSOCK_SET_RUNNING).
func (d *Device) SetVsockRunning(run bool) error {
	v := int32(0)
	if run {
		v = 1
	}
	return ioctlInt(d.fd, vhostVsockSetRun, v)
}

// SetNetBackend attaches the tap (or packet socket) fd to queue index of
// a vhost-net device, or detaches it with fd -1 (VHOST_NET_SET_BACKEND).
// It may be called while the queues run: the kernel flushes the old
// backend first.
func (d *Device) SetNetBackend(index uint32, fd int) error {
	return setVringState(d.fd, vhostNetSetBackend, index, uint32(int32(fd)))
}
