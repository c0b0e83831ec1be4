package legacy

import (
	"sync"
	"time"

	"github.com/containerd/log"
)

// BootMarker is a one-byte debug port (Firecracker's boot-timer ABI, at
// PortBootMarker) that records, for each value, the first time the guest
// wrote it, measured from a start time the integrator chooses (for example
// when the VMM process started, or when the vCPUs were started). Writing
// BootCompleteMarker means the guest's init was reached. Safe for concurrent
// use.
type BootMarker struct {
	start  time.Time
	now    func() time.Time
	onMark func(value uint8, elapsed time.Duration)

	mu    sync.Mutex
	seen  [256]bool
	marks [256]time.Duration
}

// NewBootMarker returns a marker port measuring from start. onMark, if not
// nil, is called on the vCPU thread (no locks held) the first time each
// value is written; it must not block.
func NewBootMarker(start time.Time, onMark func(value uint8, elapsed time.Duration)) *BootMarker {
	return &BootMarker{start: start, now: time.Now, onMark: onMark}
}

// Read implements bus.Device; it reads 0.
func (b *BootMarker) Read(offset uint64, data []byte) { clear(data) }

// Write implements bus.Device; only the first byte is used.
func (b *BootMarker) Write(offset uint64, data []byte) {
	if len(data) == 0 || offset != 0 {
		return
	}
	v := data[0]
	elapsed := b.now().Sub(b.start)
	b.mu.Lock()
	first := !b.seen[v]
	if first {
		b.seen[v] = true
		b.marks[v] = elapsed
	}
	b.mu.Unlock()
	if !first {
		return
	}
	log.L.Debugf("boot marker %d after %v", v, elapsed)
	if b.onMark != nil {
		b.onMark(v, elapsed)
	}
}

// Mark returns when value was first written, relative to the start time.
func (b *BootMarker) Mark(value uint8) (time.Duration, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.marks[value], b.seen[value]
}

// Marks returns every recorded value with its first-write time.
func (b *BootMarker) Marks() map[uint8]time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	m := make(map[uint8]time.Duration)
	for v, ok := range b.seen {
		if ok {
			m[uint8(v)] = b.marks[v]
		}
	}
	return m
}

// DebugExit is a QEMU isa-debug-exit style port (PortDebugExit): every byte
// the guest writes is passed to a callback, which a benchmark harness uses to
// stop the VM once the guest is up (QEMU's convention turns value v into exit
// status v<<1|1). It is stateless and safe for concurrent use.
type DebugExit struct {
	onWrite func(value uint8)
}

// NewDebugExit returns the port; onWrite runs on the vCPU thread and must not
// block.
func NewDebugExit(onWrite func(value uint8)) *DebugExit {
	return &DebugExit{onWrite: onWrite}
}

// Read implements bus.Device; it reads 0.
func (d *DebugExit) Read(offset uint64, data []byte) { clear(data) }

// Write implements bus.Device; only the first byte is used.
func (d *DebugExit) Write(offset uint64, data []byte) {
	if len(data) == 0 || offset != 0 || d.onWrite == nil {
		return
	}
	d.onWrite(data[0])
}

// Noop claims ports that Linux touches but that need no behaviour (0x80 POST
// codes and io_delay, and the like), so the vCPU loop does not treat them as
// unhandled. Reads return Fill in every byte; writes are discarded.
type Noop struct {
	Fill uint8
}

// Read implements bus.Device.
func (n Noop) Read(offset uint64, data []byte) {
	for i := range data {
		data[i] = n.Fill
	}
}

// Write implements bus.Device.
func (n Noop) Write(offset uint64, data []byte) {}
