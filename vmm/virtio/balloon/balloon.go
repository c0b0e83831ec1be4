// Package balloon owns the virtio-balloon device (device ID 5): the
// inflate and deflate queues, through which the guest hands pages to the
// host and takes them back, and the statistics queue. Inflated pages are
// released to the host with madvise: MADV_DONTNEED for private anonymous
// RAM, MADV_REMOVE (which punches a hole in the backing file or memfd)
// for shared or file-backed RAM. VIRTIO_BALLOON_F_DEFLATE_ON_OOM is
// offered when configured, letting the guest deflate under memory
// pressure. The host sets the target (num_pages) and the transport raises
// a configuration interrupt; the guest reports progress in actual.
//
// With free page reporting (VIRTIO_BALLOON_F_REPORTING, offered when
// configured) the guest also hands over, on a fourth queue, ranges of its
// free memory (2 MiB blocks from Linux on x86), which the host releases
// the same way. The guest may reuse a reported page at any time and finds
// it zeroed: memory a guest touched once and freed again stops costing
// the host, with no target for the host to set.
//
// Concurrency: the configuration space (target, actual) is read and
// written by vCPU threads under the transport lock and by the VMM's API
// callers; it is kept in atomics. Queue processing runs only on the
// device's event loop; Activate and Reset hand over with eventloop.Call.
package balloon

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Feature bits.
const (
	FMustTellHost = 0
	FStatsVQ      = 1
	FDeflateOnOOM = 2
	FReporting    = 5
)

// Queues and geometry.
const (
	QueueSize   = 256
	StatsQSize  = 1
	inflateQ    = 0
	deflateQ    = 1
	statsQ      = 2
	reportQ     = 3
	ConfigSize  = 8
	maxStatsBuf = 64 * statSize
)

// Config describes the device.
type Config struct {
	DeflateOnOOM bool
	// FreePageReporting offers VIRTIO_BALLOON_F_REPORTING.
	FreePageReporting bool
	// Shared says guest RAM is a shared or file-backed mapping (memfd,
	// -mem-path, mem-share=on): pages are released with MADV_REMOVE.
	Shared bool
	// OnActual is called (on a vCPU thread) when the guest changes
	// actual; may be nil.
	OnActual func(actualPages uint32)
}

// Balloon is a virtio-balloon device.
type Balloon struct {
	cfg  Config
	loop *eventloop.Loop

	target atomic.Uint32 // num_pages: pages the host wants in the balloon
	actual atomic.Uint32 // pages the guest says are in the balloon

	statsMu sync.Mutex
	stats   []Stat
	// released counts pages given back to the host (inflate) and taken
	// back (deflate) since the device was created.
	inflated, deflated atomic.Uint64
	// reported counts bytes of free memory the guest reported and the
	// host released.
	reported atomic.Uint64

	// Owned by the loop while active.
	act        *virtio.Activation
	queues     []*virtio.Queue
	kicks      []int
	stopped    bool
	statsHead  int // held stats buffer head, -1 when none
	chain      virtio.Chain
	pfns       []uint32
	ranges     []Range
	releaseErr bool
}

// New builds the device; its queues are served on loop.
func New(cfg Config, loop *eventloop.Loop) *Balloon {
	return &Balloon{cfg: cfg, loop: loop, statsHead: -1}
}

// DeviceID implements virtio.Device.
func (b *Balloon) DeviceID() uint32 { return virtio.IDBalloon }

// Features implements virtio.Device.
func (b *Balloon) Features() uint64 {
	f := uint64(1<<FStatsVQ | 1<<virtio.FEventIdx)
	if b.cfg.DeflateOnOOM {
		f |= 1 << FDeflateOnOOM
	}
	if b.cfg.FreePageReporting {
		f |= 1 << FReporting
	}
	return f
}

// QueueMaxSizes implements virtio.Device: inflate, deflate, statistics
// (which holds the one buffer the driver keeps there) and, when
// configured, reporting.
func (b *Balloon) QueueMaxSizes() []uint16 {
	if b.cfg.FreePageReporting {
		return []uint16{QueueSize, QueueSize, QueueSize, QueueSize}
	}
	return []uint16{QueueSize, QueueSize, QueueSize}
}

// ActiveQueues implements virtio.QueueCounter: the reporting queue exists
// only when the driver accepted VIRTIO_BALLOON_F_REPORTING.
func (b *Balloon) ActiveQueues(features uint64) int {
	if b.cfg.FreePageReporting && virtio.HasFeature(features, FReporting) {
		return 4
	}
	return 3
}

// ReadConfig implements virtio.Device: num_pages and actual, le32.
func (b *Balloon) ReadConfig(offset uint64, data []byte) {
	clear(data)
	var c [ConfigSize]byte
	binary.LittleEndian.PutUint32(c[0:], b.target.Load())
	binary.LittleEndian.PutUint32(c[4:], b.actual.Load())
	if offset < ConfigSize {
		copy(data, c[offset:])
	}
}

// WriteConfig implements virtio.Device: the driver writes actual (a
// 4-byte write at offset 4, or its bytes one by one).
func (b *Balloon) WriteConfig(offset uint64, data []byte) {
	if offset < 4 || offset+uint64(len(data)) > ConfigSize {
		return
	}
	var c [4]byte
	binary.LittleEndian.PutUint32(c[:], b.actual.Load())
	copy(c[offset-4:], data)
	v := binary.LittleEndian.Uint32(c[:])
	if b.actual.Swap(v) != v && b.cfg.OnActual != nil {
		b.cfg.OnActual(v)
	}
}

// SetTarget sets num_pages, the number of 4 KiB pages the guest should
// put in the balloon. The caller raises the configuration interrupt
// (mmio.Transport.ConfigChanged).
func (b *Balloon) SetTarget(pages uint32) { b.target.Store(pages) }

// Target returns num_pages.
func (b *Balloon) Target() uint32 { return b.target.Load() }

// Actual returns the number of pages the guest reports in the balloon.
func (b *Balloon) Actual() uint32 { return b.actual.Load() }

// Counters returns how many pages were released to the host by inflate
// requests and how many were returned by deflate requests.
func (b *Balloon) Counters() (inflated, deflated uint64) { return b.inflated.Load(), b.deflated.Load() }

// Reported returns how many bytes of free guest memory the guest
// reported and the host released.
func (b *Balloon) Reported() uint64 { return b.reported.Load() }

// Stats returns the last statistics the guest reported.
func (b *Balloon) Stats() []Stat {
	b.statsMu.Lock()
	defer b.statsMu.Unlock()
	return append([]Stat(nil), b.stats...)
}

// RequestStats asks the guest for fresh statistics by completing the
// buffer it left in the statistics queue; they arrive asynchronously.
func (b *Balloon) RequestStats() {
	b.loop.Call(func() {
		if b.act == nil || b.stopped || b.statsHead < 0 {
			return
		}
		q := b.queues[statsQ]
		head := uint16(b.statsHead)
		b.statsHead = -1
		if err := q.Push(head, 0); err != nil {
			b.fail(err)
			return
		}
		b.signal(q)
	})
}

// Activate implements virtio.Device.
func (b *Balloon) Activate(a virtio.Activation) error {
	if want := b.ActiveQueues(a.Features); len(a.Queues) != want || len(a.Kicks) != want {
		return fmt.Errorf("virtio-balloon: %d queues, want %d (the driver must accept VIRTIO_BALLOON_F_STATS_VQ)", len(a.Queues), want)
	}
	var err error
	b.loop.Call(func() {
		b.act, b.queues, b.kicks, b.stopped, b.statsHead = &a, a.Queues, a.Kicks, false, -1
		for i, fd := range a.Kicks {
			if err = b.loop.Add(fd, b.onKick(i)); err != nil {
				for _, done := range a.Kicks[:i] {
					_ = b.loop.Remove(done)
				}
				b.act, b.queues, b.kicks = nil, nil, nil
				return
			}
		}
	})
	if err != nil {
		return fmt.Errorf("virtio-balloon: %w", err)
	}
	return nil
}

// Reset implements virtio.Device. The balloon's pages belong to the guest
// again (a reset guest starts with an empty balloon).
func (b *Balloon) Reset() {
	b.loop.Call(func() {
		if b.act == nil {
			return
		}
		for _, fd := range b.kicks {
			_ = b.loop.Remove(fd)
		}
		b.act, b.queues, b.kicks, b.statsHead = nil, nil, nil, -1
	})
	b.actual.Store(0)
}

// Close implements io.Closer.
func (b *Balloon) Close() error {
	b.Reset()
	return nil
}

func (b *Balloon) onKick(q int) func() {
	return func() {
		_ = rawsys.Drain(b.kicks[q])
		if b.act == nil || b.stopped {
			return
		}
		switch q {
		case inflateQ, deflateQ:
			b.processPages(q)
		case statsQ:
			b.processStats()
		case reportQ:
			b.processReports()
		}
	}
}

func (b *Balloon) fail(err error) {
	if b.stopped {
		return
	}
	b.stopped = true
	b.act.Broken(err)
}

func (b *Balloon) signal(q *virtio.Queue) {
	need, err := q.Flush()
	if err != nil {
		b.fail(err)
		return
	}
	if need {
		if err := b.act.Interrupt.Signal(virtio.InterruptVring); err != nil {
			log.L.Errorf("virtio-balloon: %v", err)
		}
	}
}

// pop takes the next chain of q, arming notifications when it is empty.
func (b *Balloon) pop(q *virtio.Queue) bool {
	for {
		ok, err := q.Pop(&b.chain)
		if err != nil {
			b.fail(err)
			return false
		}
		if ok {
			return true
		}
		more, err := q.ArmNotify()
		if err != nil {
			b.fail(err)
			return false
		}
		if !more {
			return false
		}
	}
}

// processPages serves the inflate or deflate queue.
func (b *Balloon) processPages(qi int) {
	q := b.queues[qi]
	for b.pop(q) {
		pfns, err := b.readPFNs(&b.chain)
		if err != nil {
			log.L.Debugf("virtio-balloon: %v", err)
		} else if qi == inflateQ {
			b.release(pfns)
		} else {
			b.deflated.Add(uint64(len(pfns)))
		}
		if err := q.Push(b.chain.Head, 0); err != nil {
			b.fail(err)
			return
		}
	}
	b.signal(q)
}

// readPFNs decodes the PFN array of a chain's readable buffers.
func (b *Balloon) readPFNs(c *virtio.Chain) ([]uint32, error) {
	pfns := b.pfns[:0]
	for _, d := range c.Descs {
		if d.Write {
			continue
		}
		buf, err := b.act.Mem.Slice(d.Addr, uint64(d.Len))
		if err != nil {
			return nil, err
		}
		if pfns, err = AppendPFNs(pfns, buf); err != nil {
			return nil, err
		}
	}
	b.pfns = pfns[:0]
	return pfns, nil
}

// release gives the pages back to the host. Pages outside guest RAM are
// skipped; a range is released region by region.
func (b *Balloon) release(pfns []uint32) {
	b.ranges = Ranges(pfns, b.ranges[:0])
	for _, r := range b.ranges {
		b.inflated.Add(b.releaseRange(r) / PageSize)
	}
}

// releaseRange releases r and returns the bytes released; the first
// failure is logged.
func (b *Balloon) releaseRange(r Range) uint64 {
	n, err := Release(b.act.Mem, r, b.cfg.Shared)
	if err != nil && !b.releaseErr {
		b.releaseErr = true // log once
		log.L.Warnf("virtio-balloon: release %#x+%#x: %v", r.GPA, r.Size, err)
	}
	return n
}

// Release discards the host memory behind guest range r (pages read back
// as zero, or as the file's contents for a private file mapping) and
// returns how many bytes it released. Parts outside RAM are skipped.
func Release(mem *guestmem.Memory, r Range, shared bool) (uint64, error) {
	end := r.GPA + r.Size
	if end < r.GPA {
		return 0, fmt.Errorf("range %#x+%#x wraps", r.GPA, r.Size)
	}
	advice := unix.MADV_DONTNEED
	if shared {
		advice = unix.MADV_REMOVE
	}
	var done uint64
	var errs []error
	for _, reg := range mem.Regions() {
		lo, hi := max(r.GPA, reg.GPA), min(end, reg.End())
		if lo >= hi {
			continue
		}
		host, err := mem.Slice(lo, hi-lo)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		err = unix.Madvise(host, advice)
		if err != nil && shared && errors.Is(err, unix.EOPNOTSUPP) {
			err = unix.Madvise(host, unix.MADV_DONTNEED)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		done += hi - lo
	}
	return done, errors.Join(errs...)
}

// processStats takes the driver's statistics buffer, records it and holds
// it until the next RequestStats.
func (b *Balloon) processStats() {
	q := b.queues[statsQ]
	for b.pop(q) {
		if b.statsHead >= 0 {
			// A second buffer: the driver should keep only one; give the
			// older one back.
			if err := q.Push(uint16(b.statsHead), 0); err != nil {
				b.fail(err)
				return
			}
		}
		b.statsHead = int(b.chain.Head)
		var raw []byte
		for _, d := range b.chain.Descs {
			if d.Write || uint64(len(raw))+uint64(d.Len) > maxStatsBuf {
				continue
			}
			buf, err := b.act.Mem.Slice(d.Addr, uint64(d.Len))
			if err == nil {
				raw = append(raw, buf...)
			}
		}
		stats, err := ParseStats(raw)
		if err != nil {
			log.L.Debugf("virtio-balloon: %v", err)
			continue
		}
		b.statsMu.Lock()
		b.stats = stats
		b.statsMu.Unlock()
	}
	b.signal(q)
}

// processReports serves the reporting queue: every buffer of a chain is
// a free range of guest memory, released to the host and completed with
// nothing written. Linux adds the ranges as device-writable buffers. Only
// the whole pages inside a range are released; parts outside RAM are
// skipped.
func (b *Balloon) processReports() {
	q := b.queues[reportQ]
	for b.pop(q) {
		for _, d := range b.chain.Descs {
			if r, ok := pageRange(d.Addr, uint64(d.Len)); ok {
				b.reported.Add(b.releaseRange(r))
			}
		}
		if err := q.Push(b.chain.Head, 0); err != nil {
			b.fail(err)
			return
		}
	}
	b.signal(q)
}

// pageRange returns the whole pages inside [addr, addr+size), or false
// when there are none or the range wraps.
func pageRange(addr, size uint64) (Range, bool) {
	end := addr + size
	if end < addr || addr > ^uint64(0)-(PageSize-1) {
		return Range{}, false
	}
	lo := (addr + PageSize - 1) &^ (PageSize - 1)
	hi := end &^ (PageSize - 1)
	if lo >= hi {
		return Range{}, false
	}
	return Range{GPA: lo, Size: hi - lo}, true
}
