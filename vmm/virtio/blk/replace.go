package blk

import (
	"errors"
	"fmt"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/ratelimit"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Hot replacement (StratoVirt's microVM model): a disk's virtio-mmio
// device exists from boot, and QMP or the VMM swaps the file behind it.
// An empty slot is a disk of capacity 0 whose GET_ID answers an empty
// serial; Plug opens a file, publishes its capacity and serial and raises
// a configuration interrupt (Linux's virtio-blk re-reads the capacity
// then, so /sys/block/vdX/size goes from 0 to the disk's size); Unplug
// sets the capacity back to 0 and fails every later request with
// VIRTIO_BLK_S_IOERR.
//
// The swap runs on the device's event loop, between two requests; the
// requests the old file has in flight on its ring complete first (aio.go),
// so none is in flight across a swap. What the driver negotiated at probe stays fixed: the feature
// bits (read-only, discard, write-zeroes) and the logical block size. A
// read-only file plugged into a writable slot is enforced per request
// (writes, discards and write-zeroes fail); a file that needs a larger
// O_DIRECT alignment than the slot's block size is opened without
// O_DIRECT.

// ErrNoBackend is returned by Unplug for an empty slot.
var ErrNoBackend = errors.New("no disk is plugged")

// ErrPlugged is returned by Plug for a slot that already has a disk.
var ErrPlugged = errors.New("a disk is already plugged")

// NewEmpty builds a hot-replaceable disk slot without a file: capacity
// 0, empty serial, writable with discard and write-zeroes offered, a
// 512-byte block size. name identifies the slot in logs until a disk is
// plugged.
func NewEmpty(name string, loop *eventloop.Loop) (*Block, error) {
	timer, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("disk slot %q: timerfd: %w", name, err)
	}
	done, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(timer)
		return nil, fmt.Errorf("disk slot %q: eventfd: %w", name, err)
	}
	b := &Block{cfg: Config{ID: name}, loop: loop, timer: timer, done: done, kick: -1, blkSize: SectorSize}
	b.features = 1<<virtio.FIndirectDesc | 1<<virtio.FEventIdx | 1<<FSegMax | 1<<FFlush | 1<<FBlkSize |
		1<<FWriteZeroes | 1<<FDiscard
	log.L.Debugf("virtio-blk slot %s: empty, loop %s", name, loop.Name())
	return b, nil
}

// SetConfigNotifier sets the function that raises a configuration change
// interrupt (the transport's ConfigChanged); Plug and Unplug call it.
func (b *Block) SetConfigNotifier(f func() error) {
	b.mu.Lock()
	b.notify = f
	b.mu.Unlock()
}

// Plugged reports whether the device has a file behind it.
func (b *Block) Plugged() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.be != nil
}

// Serial is the serial GET_ID answers ("" while empty).
func (b *Block) Serial() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.Serial
}

// Plug opens cfg.Path and makes it the disk behind an empty slot; the
// driver is told with a configuration interrupt. It is safe while the
// guest runs.
func (b *Block) Plug(cfg Config) error {
	if b.Plugged() {
		return ErrPlugged
	}
	be, err := openBackend(cfg)
	if err != nil {
		return err
	}
	if cfg.Direct && be.offAlign > b.blkSize {
		// The driver only aligns to the block size it saw at probe.
		log.L.Warnf("virtio-blk %s: %s needs %d-byte O_DIRECT alignment, slot block size is %d: opening without O_DIRECT",
			cfg.ID, cfg.Path, be.offAlign, b.blkSize)
		be.close()
		cfg.Direct = false
		if be, err = openBackend(cfg); err != nil {
			return err
		}
	}
	var raced bool
	b.loop.Call(func() {
		b.mu.Lock()
		if b.be != nil {
			raced = true
			b.mu.Unlock()
			return
		}
		b.be, b.cfg, b.capacity = be, cfg, be.size/SectorSize
		b.mu.Unlock()
		b.openRing(be)
		b.limiter = ratelimit.New(cfg.IOPS, time.Now())
		b.throttled = false
		_ = unix.TimerfdSettime(b.timer, 0, &unix.ItimerSpec{}, nil)
	})
	if raced {
		be.close()
		return ErrPlugged
	}
	log.L.Debugf("virtio-blk %s: plugged %s, backing %q, %d sectors, direct %v, ro %v, iops %d", cfg.ID, cfg.Path, cfg.Backing,
		be.size/SectorSize, cfg.Direct, cfg.ReadOnly, cfg.IOPS)
	return b.configChanged()
}

// Unplug drops the file behind the disk: the capacity becomes 0, the
// serial empty and every later request fails. name is the slot's name
// from now on. The driver is told with a configuration interrupt.
func (b *Block) Unplug(name string) error {
	var be *backend
	b.loop.Call(func() {
		// Requests in flight finish on the old file first.
		b.drain(b.be)
		b.mu.Lock()
		be = b.be
		b.be, b.cfg, b.capacity = nil, Config{ID: name}, 0
		b.mu.Unlock()
		if b.act != nil {
			b.limiter = ratelimit.New(0, time.Now())
		}
		b.throttled = false
		_ = unix.TimerfdSettime(b.timer, 0, &unix.ItimerSpec{}, nil)
		if b.act != nil && !b.stopped {
			// Requests the rate limiter held back now fail at once.
			b.process()
		}
	})
	if be == nil {
		return ErrNoBackend
	}
	err := be.close()
	return errors.Join(err, b.configChanged())
}

func (b *Block) configChanged() error {
	b.mu.Lock()
	f := b.notify
	b.mu.Unlock()
	if f == nil {
		return nil
	}
	return f()
}
