package net

import (
	"errors"
	"fmt"

	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Hot replacement (StratoVirt's microVM model): a NIC's virtio-mmio
// device exists from boot with its MAC, and the VMM swaps the tap behind
// it. An empty slot reports the link down (VIRTIO_NET_F_STATUS) and drops
// what the driver transmits; Plug attaches a tap and sets the link up,
// Unplug sets it down and detaches the tap, each followed by a
// configuration interrupt, so the guest sees its carrier come and go
// (/sys/class/net/ethX/carrier). The MAC is the one the driver read at
// probe; it does not change with the tap.

// ErrNoTap is returned by Unplug for an empty slot.
var ErrNoTap = errors.New("no tap is plugged")

// ErrTapPlugged is returned by Plug for a slot that already has a tap.
var ErrTapPlugged = errors.New("a tap is already plugged")

// NewEmpty builds a hot-replaceable NIC slot without a tap: link down,
// MAC mac (zero: a random locally administered address). name identifies
// the slot in logs until a tap is plugged.
func NewEmpty(name string, mac [6]byte, loop *eventloop.Loop) (*Net, error) {
	n, err := newNet(Config{ID: name, TapFD: -1, MAC: mac}, loop, nil)
	if err != nil {
		return nil, err
	}
	n.linkUp = false
	return n, nil
}

// Plugged reports whether a tap is attached.
func (n *Net) Plugged() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.tap != nil
}

// Plug opens the tap cfg names (TapFD if not negative, else TapName),
// attaches it to an empty slot and sets the link up. cfg.MAC is ignored:
// the guest keeps the MAC it read at probe. It is safe while the guest
// runs.
func (n *Net) Plug(cfg Config) error {
	if n.Plugged() {
		return ErrTapPlugged
	}
	var tap *Tap
	var err error
	if cfg.TapFD >= 0 {
		tap, err = TapFromFD(cfg.TapFD)
	} else {
		tap, err = OpenTap(cfg.TapName)
	}
	if err != nil {
		return fmt.Errorf("virtio-net %s: %w", cfg.ID, err)
	}
	return n.plugTap(cfg.ID, tap)
}

// plugTap attaches an open tap, which the device then owns.
func (n *Net) plugTap(id string, tap *Tap) error {
	var err error
	if n.vh != nil {
		if err = tap.SetSendBufferUnlimited(); err != nil {
			tap.Close()
			return fmt.Errorf("virtio-net %s: %w", id, err)
		}
	}
	n.loop.Call(func() {
		n.mu.Lock()
		if n.tap != nil {
			n.mu.Unlock()
			err = ErrTapPlugged
			return
		}
		n.tap, n.cfg.ID = tap, id
		n.mu.Unlock()
		n.rxLen = 0
		if n.vhostRunning {
			if e := tap.SetOffload(offloads(n.vhostFeatures)); e != nil {
				log.L.Warnf("virtio-net %s: %v", id, e)
			}
			if err = n.setVhostBackend(tap.Fd()); err != nil {
				n.mu.Lock()
				n.tap = nil
				n.mu.Unlock()
			}
			return
		}
		if n.act == nil {
			return // Activate sets the offloads and polls the tap
		}
		if e := tap.SetOffload(offloads(n.act.Features)); e != nil {
			log.L.Warnf("virtio-net %s: %v", id, e)
		}
		if !n.stopped {
			if e := n.loop.Add(tap.Fd(), n.onTap); e != nil {
				log.L.Errorf("virtio-net %s: poll tap: %v", id, e)
				return
			}
			n.tapInLoop = true
		}
	})
	if err != nil {
		tap.Close()
		return err
	}
	log.L.Debugf("virtio-net %s: plugged tap %s", id, tap.Name())
	return n.SetLinkUp(true)
}

// Unplug sets the link down and detaches and closes the tap; name is the
// slot's name from now on.
func (n *Net) Unplug(name string) error {
	if !n.Plugged() {
		return ErrNoTap
	}
	linkErr := n.SetLinkUp(false)
	var tap *Tap
	var backendErr error
	n.loop.Call(func() {
		if n.vhostRunning && n.tap != nil {
			backendErr = n.setVhostBackend(-1)
		}
		if n.tapInLoop {
			_ = n.loop.Remove(n.tap.Fd())
			n.tapInLoop = false
		}
		n.mu.Lock()
		tap, n.tap, n.cfg.ID = n.tap, nil, name
		n.mu.Unlock()
		n.rxLen = 0
	})
	if tap == nil {
		return ErrNoTap
	}
	return errors.Join(linkErr, backendErr, tap.Close())
}
