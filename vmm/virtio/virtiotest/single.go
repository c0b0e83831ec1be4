package virtiotest

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

// Single is a one-queue device activated on a fake driver: the rig the
// tests of one-queue devices (rng, pmem) share.
type Single struct {
	Mem  *guestmem.Memory
	Drv  *Driver
	Kick int // the queue's notification eventfd
}

// NoIRQ is an interrupt that goes nowhere.
type NoIRQ struct{}

// Signal implements virtio.Interrupt.
func (NoIRQ) Signal(uint32) error { return nil }

// ActivateSingle lays out memSize bytes of guest RAM with a queue of size
// entries at 0x1000, negotiates dev's features with VERSION_1 and
// activates dev on the queue; broken receives the device's protocol
// errors. The kick eventfd is closed when the test ends.
func ActivateSingle(t testing.TB, dev virtio.Device, memSize int, size uint16, broken func(error)) *Single {
	t.Helper()
	return ActivateSingleIRQ(t, dev, memSize, size, NoIRQ{}, broken)
}

// ActivateSingleIRQ is ActivateSingle with the device's interrupt irq.
func ActivateSingleIRQ(t testing.TB, dev virtio.Device, memSize int, size uint16, irq virtio.Interrupt, broken func(error)) *Single {
	t.Helper()
	mem := NewMemory(memSize)
	drv := NewDriver(mem, 0x1000, size, uint64(memSize))
	q := virtio.NewQueue(size)
	drv.Configure(q)
	features := dev.Features() | 1<<virtio.FVersion1
	if err := q.Activate(mem, features); err != nil {
		t.Fatal(err)
	}
	kick, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(kick) })
	if err := dev.Activate(virtio.Activation{Mem: mem, Features: features, Queues: []*virtio.Queue{q}, Kicks: []int{kick},
		Interrupt: irq, Broken: broken}); err != nil {
		t.Fatal(err)
	}
	return &Single{Mem: mem, Drv: drv, Kick: kick}
}

// Notify kicks the queue.
func (s *Single) Notify() { unix.Write(s.Kick, []byte{1, 0, 0, 0, 0, 0, 0, 0}) }

// Wait kicks the queue and collects used elements until there are n,
// failing the test after within.
func (s *Single) Wait(t testing.TB, n int, within time.Duration) []Used {
	t.Helper()
	s.Notify()
	var got []Used
	deadline := time.Now().Add(within)
	for len(got) < n {
		got = append(got, s.Drv.TakeUsed()...)
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d used elements after %v", len(got), n, within)
		}
		time.Sleep(time.Millisecond)
	}
	return got
}
