package vmm

import (
	"errors"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/virtio/vsock"
)

// VsockInfo is what a host program needs to reach the guest's vsock: with
// Backend "vhost" it dials AF_VSOCK at GuestCID; with "unix" it connects
// to UDSPath and sends "CONNECT <port>\n" (see vmm/vsockdial, which does
// either).
type VsockInfo = vsock.Info

// setupVsock attaches the vsock device, if configured, on the default
// event loop.
func (v *VM) setupVsock() error {
	c := v.cfg.Vsock
	if c == nil {
		return nil
	}
	loop, err := v.eventLoop("")
	if err != nil {
		return err
	}
	dev, err := vsock.New(vsock.Config{ID: c.ID, GuestCID: uint32(c.GuestCID), Backend: c.Backend, UDSPath: c.UDSPath}, loop)
	if err != nil {
		return err
	}
	if err := v.attachVirtio(dev, dev); err != nil {
		dev.Close()
		return fmt.Errorf("vsock %q: %w", c.ID, err)
	}
	v.virtio.vsock = dev
	return nil
}

// ErrNoVsock is returned by Vsock when the VM has no vsock device.
var ErrNoVsock = errors.New("the VM has no vsock device")

// Vsock returns how host programs reach the guest's vsock.
func (v *VM) Vsock() (VsockInfo, error) {
	if v.virtio.vsock == nil {
		return VsockInfo{}, ErrNoVsock
	}
	return v.virtio.vsock.Info(), nil
}
