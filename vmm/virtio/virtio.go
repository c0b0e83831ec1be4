// Package virtio owns the transport-independent part of virtio devices:
// split virtqueues (descriptor chains, direct and indirect, event-idx
// notification suppression, the used ring) parsed and written through
// vmm/guestmem with every index and length bounds-checked, and the small
// Device interface that transports (vmm/virtio/mmio) drive.
//
// Concurrency: a Queue's configuration is written by the transport while
// the device is not activated; after Activate the queue belongs to the one
// goroutine (event loop) that processes it, until the device's Reset
// returns. No locks are taken here.
//
// A guest that breaks the ring protocol (an index out of range, a loop in
// a chain, a descriptor outside RAM) gets an error wrapping ErrBroken; the
// device then reports it through Activation.Broken and the transport sets
// DEVICE_NEEDS_RESET. Nothing here panics on guest data.
package virtio

import (
	"errors"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// Device IDs (virtio spec 5).
const (
	IDNet     = 1
	IDBlock   = 2
	IDConsole = 3
	IDRNG     = 4
	IDBalloon = 5
	IDVsock   = 19
	IDPmem    = 27
)

// Transport feature bits.
const (
	FIndirectDesc = 28
	FEventIdx     = 29
	FVersion1     = 32
)

// Device status bits.
const (
	StatusAcknowledge = 1
	StatusDriver      = 2
	StatusDriverOK    = 4
	StatusFeaturesOK  = 8
	StatusNeedsReset  = 64
	StatusFailed      = 128
)

// Interrupt status bits (InterruptStatus / InterruptACK).
const (
	InterruptVring  = 1
	InterruptConfig = 2
)

// ErrBroken marks a guest that violated the virtqueue protocol.
var ErrBroken = errors.New("virtio: guest broke the virtqueue protocol")

// Interrupt raises the device's interrupt with the given status bits
// (InterruptVring, InterruptConfig). Safe for concurrent use.
type Interrupt interface {
	Signal(bits uint32) error
}

// LineInterrupt is an Interrupt whose line a host kernel agent (vhost)
// can pulse without the VMM, by writing EventFd. The transport reports
// InterruptVring from the device's activation until its reset, so that a
// driver interrupted that way looks at its queues.
type LineInterrupt interface {
	Interrupt
	EventFd() int
}

// Activation is what a device receives when the driver sets DRIVER_OK.
type Activation struct {
	Mem *guestmem.Memory
	// Features are the negotiated features.
	Features uint64
	// Queues are validated and ready; Queues[i] is notified through
	// Kicks[i], an eventfd the device reads (8 bytes) to clear.
	Queues []*Queue
	Kicks  []int
	// Interrupt raises the device's interrupt.
	Interrupt Interrupt
	// Broken reports a guest protocol violation: the transport sets
	// DEVICE_NEEDS_RESET and raises a configuration interrupt. The device
	// must stop processing its queues.
	Broken func(error)
}

// Device is a virtio device behind a transport.
type Device interface {
	// DeviceID is the virtio device type (IDBlock, ...).
	DeviceID() uint32
	// Features are the device's feature bits; the transport adds
	// FVersion1.
	Features() uint64
	// QueueMaxSizes gives the maximum size of each queue.
	QueueMaxSizes() []uint16
	// ReadConfig and WriteConfig access the device configuration space;
	// offset is relative to its start, len(data) is 1, 2, 4 or 8. Bytes
	// beyond the configuration read as zero; writes there are ignored.
	ReadConfig(offset uint64, data []byte)
	WriteConfig(offset uint64, data []byte)
	// Activate starts queue processing. An error leaves the device
	// inactive (the transport sets DEVICE_NEEDS_RESET).
	Activate(a Activation) error
	// Reset stops queue processing and returns once the device no longer
	// touches guest memory or the queues. It is a no-op when inactive.
	Reset()
}

// QueueCounter is implemented by a device some of whose queues exist only
// with a feature (virtio-balloon's reporting queue): the driver sets up
// the first ActiveQueues(negotiated features) queues and leaves the rest
// alone. A device without it needs every queue of QueueMaxSizes.
type QueueCounter interface {
	ActiveQueues(features uint64) int
}

// HasFeature reports whether bit is set in features.
func HasFeature(features uint64, bit uint) bool { return features&(1<<bit) != 0 }
