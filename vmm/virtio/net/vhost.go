package net

import (
	"errors"
	"fmt"

	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/vhost"
)

// ErrNoVhost marks a host without a usable vhost-net device.
var ErrNoVhost = errors.New("vhost-net is not available")

// openVhost opens vhost-net for cfg's NIC and lets the tap take the
// kernel's bursts: vhost writes a guest's frames to the tap without
// waiting, so the tap's send buffer, not the guest, would otherwise bound
// the transmit rate (QEMU sets it the same way).
func openVhost(cfg Config, tap *Tap) (*vhost.Device, error) {
	path := cfg.VhostPath
	if path == "" {
		path = VhostDevice
	}
	vh, err := vhost.Open("virtio-net "+cfg.ID, path, 2) // rx and tx
	if err != nil {
		if errors.Is(err, vhost.ErrUnavailable) {
			return nil, fmt.Errorf("%w (%w)", err, ErrNoVhost)
		}
		return nil, err
	}
	if err := tap.SetSendBufferUnlimited(); err != nil {
		vh.Close()
		return nil, fmt.Errorf("virtio-net %s: %w", cfg.ID, err)
	}
	return vh, nil
}

// Vhost reports whether the kernel's vhost-net serves the queues.
func (n *Net) Vhost() bool { return n.vh != nil }

// activateVhost hands the rings and the tap to vhost-net: the tap's
// offloads follow the negotiated GUEST_* features, as in userspace, and
// the tap keeps its 12-byte vnet header, which the kernel then passes
// through between tap and rings (VHOST_NET_F_VIRTIO_NET_HDR is not
// negotiated).
func (n *Net) activateVhost(a virtio.Activation) error {
	a.Features &^= 1 << vhost.FNetVirtioNetHdr
	if err := n.vh.Start(a, n.loop); err != nil {
		return err
	}
	var err error
	n.loop.Call(func() {
		n.vhostRunning, n.vhostFeatures = true, a.Features
		if n.tap == nil {
			return
		}
		if err = n.tap.SetOffload(offloads(a.Features)); err != nil {
			return
		}
		err = n.setVhostBackend(n.tap.Fd())
	})
	if err != nil {
		n.resetVhost()
		return fmt.Errorf("virtio-net %s: %w", n.cfg.ID, err)
	}
	return nil
}

// setVhostBackend attaches fd (or detaches, with -1) on both queues.
func (n *Net) setVhostBackend(fd int) error {
	for _, q := range []uint32{RxQueue, TxQueue} {
		if err := n.vh.SetNetBackend(q, fd); err != nil {
			return fmt.Errorf("VHOST_NET_SET_BACKEND queue %d fd %d: %w", q, fd, err)
		}
	}
	return nil
}

// resetVhost detaches the tap, so the kernel stops touching the rings,
// and ends the interrupt wiring.
func (n *Net) resetVhost() {
	running := false
	n.loop.Call(func() {
		running, n.vhostRunning = n.vhostRunning, false
	})
	if !running {
		return
	}
	if err := n.setVhostBackend(-1); err != nil {
		log.L.Errorf("virtio-net %s: %v", n.cfg.ID, err)
	}
	n.vh.Stop()
}
