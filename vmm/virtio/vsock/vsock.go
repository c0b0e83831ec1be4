// Package vsock owns the virtio-vsock device (device ID 19) with two
// backends behind one device option:
//
//   - vhost (Vhost): the kernel's vhost-vsock (/dev/vhost-vsock) serves the
//     rx and tx queues; host programs reach the guest with AF_VSOCK sockets
//     at the guest's CID. The VMM only claims the CID, hands the kernel the
//     memory table and the rings, relays the kernel's "call" eventfds to
//     the transport's interrupt, and holds the event queue.
//   - unix (Unix): a userspace device that maps guest ports to host unix
//     sockets with Firecracker's protocol. A host program connects to the
//     device's listening socket UDSPath and writes "CONNECT <port>\n"; once
//     the guest accepts it reads "OK <host_port>\n" and the stream is
//     connected to the guest's port. A guest connecting to CID 2 port P is
//     connected to the unix socket "<UDSPath>_<P>".
//
// The userspace backend implements the stream protocol with full credit
// accounting in both directions, many concurrent connections, half-close
// (SHUTDOWN flags) and reset. Everything it does runs on one event loop
// (vmm/virtio/eventloop): queue kicks and one nested epoll descriptor that
// holds the listening socket, the connections' sockets and a timerfd.
// There is no polling: a connection's socket is watched for reading only
// while the guest has credit and for writing only while data is queued.
//
// Concurrency: Activate and Reset are called by the transport (under its
// lock); they hand over to the loop with eventloop.Call. All connection
// state is owned by the loop thread. Info may be called from anywhere.
package vsock

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Backend names (the -device vsock backend= values).
const (
	BackendVhost = "vhost"
	BackendUnix  = "unix"
)

// VhostDevice is the vhost-vsock character device.
const VhostDevice = "/dev/vhost-vsock"

// Queue geometry: rx 0, tx 1, event 2.
const (
	QueueSize   = 256
	EventQSize  = 16
	ConfigSize  = 8
	rxQueue     = 0
	txQueue     = 1
	eventQueue  = 2
	queueCount  = 3
	minGuestCID = 3
	maxGuestCID = 0xffffffff // exclusive
)

// Config describes the device.
type Config struct {
	ID       string
	GuestCID uint32
	// Backend is BackendVhost, BackendUnix or "" for the default: vhost
	// when /dev/vhost-vsock can be opened, else unix.
	Backend string
	// UDSPath is the unix backend's listening socket; it must not exist.
	UDSPath string
	// VhostPath overrides VhostDevice (tests).
	VhostPath string
}

// Info is what a host program needs to reach the guest.
type Info struct {
	ID string
	// Backend is BackendVhost or BackendUnix (never empty).
	Backend string
	// GuestCID is the guest's context id (for AF_VSOCK with vhost).
	GuestCID uint32
	// UDSPath is the unix backend's socket ("" with vhost).
	UDSPath string
}

// Device is a vsock device with either backend.
type Device interface {
	virtio.Device
	Info() Info
	Close() error
}

// New builds the device with the configured backend on loop. With the
// default backend, vhost is used when the vhost device opens; otherwise
// the unix backend is used when UDSPath is set, and an error explains
// both failures when it is not.
func New(cfg Config, loop *eventloop.Loop) (Device, error) {
	if cfg.GuestCID < minGuestCID || cfg.GuestCID == maxGuestCID {
		return nil, fmt.Errorf("vsock %s: guest CID %d out of range [%d, %d)", cfg.ID, cfg.GuestCID, minGuestCID, uint64(maxGuestCID))
	}
	switch cfg.Backend {
	case BackendVhost:
		return NewVhost(cfg, loop)
	case BackendUnix:
		return NewUnix(cfg, loop)
	case "":
		d, err := NewVhost(cfg, loop)
		if err == nil {
			return d, nil
		}
		if !errors.Is(err, os.ErrNotExist) && !errors.Is(err, os.ErrPermission) && !errors.Is(err, errNoVhost) {
			return nil, err // e.g. the CID is taken: do not hide it
		}
		if cfg.UDSPath == "" {
			return nil, fmt.Errorf("vsock %s: %v, and no uds-path for the unix backend", cfg.ID, err)
		}
		return NewUnix(cfg, loop)
	}
	return nil, fmt.Errorf("vsock %s: unknown backend %q (vhost or unix)", cfg.ID, cfg.Backend)
}

// errNoVhost marks a host without a usable vhost-vsock device.
var errNoVhost = errors.New("vhost-vsock is not available")

// readConfig serves the configuration space: guest_cid as le64.
func readConfig(cid uint32, offset uint64, data []byte) {
	clear(data)
	var c [ConfigSize]byte
	binary.LittleEndian.PutUint64(c[:], uint64(cid))
	if offset < ConfigSize {
		copy(data, c[offset:])
	}
}
