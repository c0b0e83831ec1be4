// Package blk owns the virtio-blk device: one request queue served on an
// event loop (an iothread or the VMM's default loop) from a raw file or a
// host block device, with read, write, flush, GET_ID (the drive serial),
// read-only disks, O_DIRECT with aligned bounce buffers, multi-segment
// requests (SEG_MAX), discard and write-zeroes, the iops token bucket,
// copy-on-write overlays of a shared read-only image (cow.go), and hot
// replacement of the file behind a device (replace.go).
//
// Concurrency: Activate and Reset are called by the transport (vCPU
// threads, under the transport's lock); queue processing runs only on the
// device's event loop. Reset stops processing synchronously through
// eventloop.Call. The configuration space is guarded by mu.
package blk

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/ratelimit"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Feature bits (virtio spec 5.2.3).
const (
	FSizeMax     = 1
	FSegMax      = 2
	FRO          = 5
	FBlkSize     = 6
	FFlush       = 9
	FDiscard     = 13
	FWriteZeroes = 14
)

// Queue and request geometry.
const (
	QueueSize = 256
	// SegMax is the most data buffers per request (as StratoVirt).
	SegMax = 126
	// MaxDiscardSectors and MaxWriteZeroesSectors bound one segment.
	MaxDiscardSectors     = 1 << 22
	MaxWriteZeroesSectors = 1 << 22
	// ConfigSize is the size of the configuration space we expose.
	ConfigSize = 60
	// signalBatch is how many completions are published before an
	// interrupt is considered even if more requests are pending.
	signalBatch = 32
)

// Config describes one disk.
type Config struct {
	ID   string
	Path string
	// Backing, when set, is a read-only image Path overlays copy-on-write
	// (cow.go): Path is a sparse file of the same size that holds no data
	// yet, and clusters the guest never wrote read from Backing. It needs
	// ReadOnly and Direct false.
	Backing  string
	ReadOnly bool
	Direct   bool
	// Serial is returned by GET_ID (at most IDBytes are used).
	Serial string
	// IOPS limits the average request rate; 0 is unlimited.
	IOPS uint64
}

// Block is a virtio-blk device.
type Block struct {
	cfg  Config
	loop *eventloop.Loop

	mu       sync.Mutex // guards be's identity, cfg and capacity (replace.go)
	be       *backend   // nil while a hot-replaceable slot is empty
	capacity uint64     // sectors
	features uint64
	blkSize  uint64 // logical block size offered at probe; fixed
	notify   func() error

	timer int // timerfd for the rate limiter
	done  int // eventfd: the ring posted completions (aio.go)

	// Request slots for the ring, owned by the loop (aio.go).
	reqs []aioReq
	free []uint16

	// Owned by the loop while active.
	act       *virtio.Activation
	q         *virtio.Queue
	kick      int
	limiter   *ratelimit.Bucket
	throttled bool
	stopped   bool
	chain     virtio.Chain
	data      [][]byte

	stats stats
}

// stats counts what the guest asked of the device, for the debug line
// at Close: where a boot or a container start spends its disk I/O. The
// loop writes them; Close reads them.
type stats struct {
	reads, readBytes, writes, writeBytes, flushes, other, interrupts atomic.Uint64
}

// count adds the parsed request r.
func (s *stats) count(r *Request) {
	switch r.Type {
	case TypeIn:
		s.reads.Add(1)
		s.readBytes.Add(r.Len)
	case TypeOut:
		s.writes.Add(1)
		s.writeBytes.Add(r.Len)
	case TypeFlush:
		s.flushes.Add(1)
	default:
		s.other.Add(1)
	}
}

func (s *stats) String() string {
	return fmt.Sprintf("%d reads (%d KiB), %d writes (%d KiB), %d flushes, %d other requests, %d interrupts",
		s.reads.Load(), s.readBytes.Load()>>10, s.writes.Load(), s.writeBytes.Load()>>10, s.flushes.Load(), s.other.Load(), s.interrupts.Load())
}

// New opens the disk and builds the device; its queue will be served on
// loop.
func New(cfg Config, loop *eventloop.Loop) (*Block, error) {
	be, err := openBackend(cfg)
	if err != nil {
		return nil, err
	}
	timer, err := unix.TimerfdCreate(unix.CLOCK_MONOTONIC, unix.TFD_CLOEXEC|unix.TFD_NONBLOCK)
	if err != nil {
		be.close()
		return nil, fmt.Errorf("disk %q: timerfd: %w", cfg.ID, err)
	}
	done, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		be.close()
		unix.Close(timer)
		return nil, fmt.Errorf("disk %q: eventfd: %w", cfg.ID, err)
	}
	b := &Block{cfg: cfg, loop: loop, be: be, timer: timer, done: done, kick: -1}
	b.openRing(be)
	b.capacity = be.size / SectorSize
	b.blkSize = be.blockSize()
	b.features = 1<<virtio.FIndirectDesc | 1<<virtio.FEventIdx | 1<<FSegMax | 1<<FFlush | 1<<FBlkSize
	switch {
	case cfg.ReadOnly:
		b.features |= 1 << FRO
	case be.cow != nil:
		// No discard (a hole in the overlay would show the base again) and
		// no write-zeroes (it would be a plain write). A slot that offered
		// them at probe still gets both right (backend.zeroRange; a
		// discard does nothing).
	default:
		b.features |= 1 << FWriteZeroes
		if be.discard {
			b.features |= 1 << FDiscard
		}
	}
	log.L.Debugf("virtio-blk %s: %s, backing %q, %d sectors, block %d, direct %v, ro %v, iops %d, loop %s, io_uring %v",
		cfg.ID, cfg.Path, cfg.Backing, b.capacity, be.blockSize(), cfg.Direct, cfg.ReadOnly, cfg.IOPS, loop.Name(), be.ring != nil)
	return b, nil
}

// ID is the drive id (a slot's name while it is empty).
func (b *Block) ID() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.ID
}

// Capacity is the disk size in 512-byte sectors.
func (b *Block) Capacity() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.capacity
}

// Close resets the device and closes the disk.
func (b *Block) Close() error {
	b.Reset()
	b.mu.Lock()
	defer b.mu.Unlock()
	log.L.Debugf("virtio-blk %s: served %v", b.cfg.ID, &b.stats)
	var err error
	if b.be != nil {
		err = b.be.close()
		b.be = nil
	}
	return errors.Join(err, unix.Close(b.timer), unix.Close(b.done))
}

// DeviceID implements virtio.Device.
func (b *Block) DeviceID() uint32 { return virtio.IDBlock }

// Features implements virtio.Device.
func (b *Block) Features() uint64 { return b.features }

// QueueMaxSizes implements virtio.Device.
func (b *Block) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

func (b *Block) configSpace() [ConfigSize]byte {
	b.mu.Lock()
	capacity, bs := b.capacity, b.blkSize
	b.mu.Unlock()
	var c [ConfigSize]byte
	le := binary.LittleEndian
	le.PutUint64(c[0:], capacity)
	le.PutUint32(c[12:], SegMax)
	le.PutUint32(c[20:], uint32(bs))
	le.PutUint32(c[36:], MaxDiscardSectors)
	le.PutUint32(c[40:], 1)
	le.PutUint32(c[44:], uint32(bs/SectorSize))
	le.PutUint32(c[48:], MaxWriteZeroesSectors)
	le.PutUint32(c[52:], 1)
	c[56] = 1 // write_zeroes_may_unmap
	return c
}

// ReadConfig implements virtio.Device.
func (b *Block) ReadConfig(offset uint64, data []byte) {
	clear(data)
	c := b.configSpace()
	if offset < ConfigSize {
		copy(data, c[offset:])
	}
}

// WriteConfig implements virtio.Device: the configuration is read-only
// (no CONFIG_WCE), so writes are ignored.
func (b *Block) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (b *Block) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 || len(a.Kicks) != 1 {
		return fmt.Errorf("virtio-blk %s: %d queues, want 1", b.cfg.ID, len(a.Queues))
	}
	var err error
	b.loop.Call(func() {
		b.act, b.q, b.kick = &a, a.Queues[0], a.Kicks[0]
		b.limiter = ratelimit.New(b.cfg.IOPS, time.Now())
		b.throttled, b.stopped = false, false
		if err = b.loop.Add(b.kick, b.onKick); err != nil {
			return
		}
		if err = b.loop.Add(b.timer, b.onTimer); err != nil {
			_ = b.loop.Remove(b.kick)
		} else if err = b.loop.Add(b.done, b.onDone); err != nil {
			_ = b.loop.Remove(b.kick)
			_ = b.loop.Remove(b.timer)
		}
		if err != nil {
			b.act, b.q, b.kick = nil, nil, -1
		}
	})
	if err != nil {
		return fmt.Errorf("virtio-blk %s: %w", b.cfg.ID, err)
	}
	return nil
}

// Reset implements virtio.Device.
func (b *Block) Reset() {
	b.loop.Call(func() {
		if b.act == nil {
			return
		}
		_ = b.loop.Remove(b.kick)
		_ = b.loop.Remove(b.timer)
		_ = b.loop.Remove(b.done)
		_ = unix.TimerfdSettime(b.timer, 0, &unix.ItimerSpec{}, nil)
		b.q = nil // completions from now on are dropped
		b.drain(b.be)
		b.act, b.kick = nil, -1
	})
}

func (b *Block) onKick() {
	_ = rawsys.Drain(b.kick)
	if !b.throttled {
		b.process()
	}
}

func (b *Block) onTimer() {
	_ = rawsys.Drain(b.timer)
	b.throttled = false
	b.process()
}

func (b *Block) fail(err error) {
	b.stopped = true
	if b.act != nil {
		b.act.Broken(err)
	}
}

// process serves the queue until it is empty or the rate limiter stops it.
func (b *Block) process() {
	if b.act == nil || b.stopped {
		return
	}
	q := b.q
	pushed, queued := 0, 0
	for {
		ok, err := q.Pop(&b.chain)
		if err != nil {
			b.fail(err)
			return
		}
		if !ok {
			more, err := q.ArmNotify()
			if err != nil {
				b.fail(err)
				return
			}
			if more {
				continue
			}
			break
		}
		if b.limiter != nil && b.throttle() {
			q.Undo()
			break
		}
		written, done := b.handle(&b.chain)
		if !done {
			queued++
			continue
		}
		if err := q.Push(b.chain.Head, written); err != nil {
			b.fail(err)
			return
		}
		if pushed++; pushed%signalBatch == 0 {
			b.signal()
		}
	}
	if queued > 0 {
		b.submit()
	}
	if !b.stopped {
		b.signal()
	}
}

// throttle takes a token for one request; without one it arms the timer
// and reports that processing must pause (the request stays queued).
func (b *Block) throttle() bool {
	wait := b.limiter.Take(time.Now())
	if wait <= 0 {
		return false
	}
	b.throttled = true
	ts := unix.NsecToTimespec(int64(wait))
	if err := unix.TimerfdSettime(b.timer, 0, &unix.ItimerSpec{Value: ts}, nil); err != nil {
		log.L.Errorf("virtio-blk %s: arm rate-limit timer: %v", b.cfg.ID, err)
		b.throttled = false
	}
	return true
}

func (b *Block) signal() {
	need, err := b.q.Flush()
	if err != nil {
		b.fail(err)
		return
	}
	if need {
		b.stats.interrupts.Add(1)
		if err := b.act.Interrupt.Signal(virtio.InterruptVring); err != nil {
			log.L.Errorf("virtio-blk %s: %v", b.cfg.ID, err)
		}
	}
}

// handle runs one request and returns the bytes written into the chain,
// or done false when the request was queued on the ring (aio.go).
func (b *Block) handle(c *virtio.Chain) (written uint32, done bool) {
	s := b.slot()
	scratch := b.data
	if s >= 0 {
		scratch = b.reqs[s].data
	}
	r, err := ParseRequest(b.act.Mem, c, scratch[:0])
	if err == nil {
		b.stats.count(&r)
	}
	if s >= 0 {
		b.reqs[s].data = r.Data
	} else {
		b.data = r.Data[:0]
	}
	if err == nil && b.readCached(&r) {
		if s >= 0 {
			b.release(s)
		}
		r.Status[0] = StatusOK
		return uint32(r.Len) + 1, true
	}
	if s >= 0 {
		if err == nil && b.start(s, c.Head, &r) {
			return 0, false
		}
		b.release(s)
	}
	if err != nil {
		log.L.Debugf("virtio-blk %s: %v", b.cfg.ID, err)
		if r.Status != nil {
			r.Status[0] = StatusIOErr
			return 1, true
		}
		return 0, true
	}
	status, n := b.execute(&r)
	r.Status[0] = status
	return uint32(n) + 1, true
}

// readCached serves r at once if it is a valid buffered read the page
// cache holds whole (backend.readCached).
func (b *Block) readCached(r *Request) bool {
	return r.Type == TypeIn && b.be != nil && b.checkRW(r) == StatusOK &&
		b.be.readCached(r.Data, r.Sector*SectorSize, r.Len)
}

// checkRW validates a read or write against the disk and its alignment.
func (b *Block) checkRW(r *Request) uint8 {
	if r.Len%SectorSize != 0 || !b.inRange(r.Sector, r.Len) {
		return StatusIOErr
	}
	off := r.Sector * SectorSize
	if b.cfg.Direct && (off%b.be.offAlign != 0 || r.Len%b.be.offAlign != 0) {
		return StatusIOErr
	}
	if r.Type == TypeOut && b.cfg.ReadOnly {
		return StatusIOErr
	}
	return StatusOK
}

// inRange reports whether bytes at sector fit on the disk.
func (b *Block) inRange(sector, bytes uint64) bool {
	return sector <= b.capacity && bytes <= b.capacity*SectorSize-sector*SectorSize
}

// execute performs r and returns its status and the data bytes written
// for the driver.
func (b *Block) execute(r *Request) (uint8, uint64) {
	if b.be == nil && r.Type != TypeGetID {
		return StatusIOErr, 0 // empty slot (replace.go)
	}
	switch r.Type {
	case TypeIn, TypeOut:
		if st := b.checkRW(r); st != StatusOK {
			return st, 0
		}
		off := r.Sector * SectorSize
		if r.Type == TypeIn {
			if err := b.be.readAt(r.Data, off, r.Len); err != nil {
				log.L.Warnf("virtio-blk %s: read %d bytes at %d: %v", b.cfg.ID, r.Len, off, err)
				return StatusIOErr, 0
			}
			return StatusOK, r.Len
		}
		if err := b.be.writeAt(r.Data, off, r.Len); err != nil {
			log.L.Warnf("virtio-blk %s: write %d bytes at %d: %v", b.cfg.ID, r.Len, off, err)
			return StatusIOErr, 0
		}
		return StatusOK, 0
	case TypeFlush:
		if b.cfg.ReadOnly {
			return StatusOK, 0
		}
		if err := b.be.flush(); err != nil {
			log.L.Warnf("virtio-blk %s: flush: %v", b.cfg.ID, err)
			return StatusIOErr, 0
		}
		return StatusOK, 0
	case TypeGetID:
		var id [IDBytes]byte
		copy(id[:], b.cfg.Serial)
		rest := id[:min(uint64(IDBytes), r.Len)]
		n := uint64(len(rest))
		for _, d := range r.Data {
			rest = rest[copy(d, rest):]
		}
		return StatusOK, n
	case TypeDiscard, TypeWriteZeroes:
		bit := uint(FDiscard)
		if r.Type == TypeWriteZeroes {
			bit = FWriteZeroes
		}
		if !virtio.HasFeature(b.features, bit) {
			return StatusUnsupp, 0
		}
		if b.cfg.ReadOnly {
			return StatusIOErr, 0 // a read-only disk in a writable slot
		}
		segs, err := r.Segments(1)
		if err != nil {
			return StatusIOErr, 0
		}
		for _, s := range segs {
			n := uint64(s.Sectors) * SectorSize
			if !b.inRange(s.Sector, n) || uint64(s.Sectors) > MaxDiscardSectors {
				return StatusIOErr, 0
			}
			if r.Type == TypeDiscard {
				err = b.be.discardRange(s.Sector*SectorSize, n)
			} else {
				err = b.be.zeroRange(s.Sector*SectorSize, n, s.Unmap)
			}
			if err != nil {
				log.L.Warnf("virtio-blk %s: request %d: %v", b.cfg.ID, r.Type, err)
				return StatusIOErr, 0
			}
		}
		return StatusOK, 0
	}
	return StatusUnsupp, 0
}
