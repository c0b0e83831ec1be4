package console

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// FuzzConsoleDevice runs the console on its unix socket under a program
// decoded from the fuzz input: guest transmit chains of any layout and
// size (up to past maxChain), receive buffers of odd sizes, a host
// client that connects, writes, reads, disconnects (abruptly, after
// reading everything, or half-closing first) and a second client while
// one is connected, kicks and resets, the chains optionally malformed.
// After every operation the harness waits until the device has done what
// it was given, or waits as documented (no receive buffers, an output
// buffer the client does not drain), and checks:
//
//   - completions name outstanding chains, in ring order; transmit
//     completions write nothing, receive ones no more than the chain's
//     writable bytes;
//   - guest memory changes only in the used rings and the writable
//     buffers of receive chains the device holds (a shadow copy of RAM);
//   - what the guest receives is, per client, a prefix of what the client
//     wrote (the rest is dropped when the next client connects), and the
//     device does not sit on input while receive buffers are posted;
//   - what a client reads is a prefix of what the guest transmitted while
//     it was connected, and all of it once the client reads to the end;
//   - a second client is refused, a connected one never dropped, one that
//     left noticed (unless its input waits for the guest to make room);
//   - Broken is called only for a malformed ring, with an ErrBroken error,
//     a kicked malformed transmit chain always breaks the device, and
//     after Broken guest memory is not touched;
//   - Reset leaves nothing registered and, unless the device broke, no
//     chain taken and not completed; Close removes the socket file and
//     leaves no file descriptor and no goroutine behind.
func FuzzConsoleDevice(f *testing.F) {
	for _, s := range fzConsoleSeeds() {
		f.Add(s)
	}
	fzWarmUp(f)
	dir := f.TempDir()
	var n atomic.Int64
	f.Fuzz(func(t *testing.T, prog []byte) {
		path := filepath.Join(dir, fmt.Sprintf("c%d.sock", n.Add(1)))
		fds, gs := fzCountFds(t), runtime.NumGoroutine()
		fzRunConsole(t, path, prog)
		fzNoLeaks(t, fds, gs)
	})
}

// Guest-physical layout. Well-formed chains point only into the pattern,
// the scratch area and the receive heap; rings and indirect tables are
// the driver's own.
const (
	fzMem        = 2 << 20
	fzRxRing     = 0x1000
	fzTxRing     = 0x5000
	fzTables     = 0x10000
	fzPattern    = 0x30000 // read-only bytes transmit data is cut from
	fzPatternLen = 0x20000
	fzScratch    = 0x50000 // writable garbage in transmit chains
	fzRxHeap     = 0x80000
	fzMaxOps     = 48
	// fzTxBudget bounds the bytes the guest transmits per program (a
	// chain may alias the pattern up to past maxChain).
	fzTxBudget = 2 << 20
	fzWait     = 5 * time.Second
)

var fzPatternBytes = func() []byte {
	b := make([]byte, fzPatternLen)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}()

// fzIn decodes the program; an exhausted input reads as zeros.
type fzIn struct{ b []byte }

func (in *fzIn) u8() byte {
	if len(in.b) == 0 {
		return 0
	}
	v := in.b[0]
	in.b = in.b[1:]
	return v
}

func (in *fzIn) u16() uint16 { return uint16(in.u8()) | uint16(in.u8())<<8 }

// fzGuest is guest RAM with a shadow of what it must hold wherever the
// device may not write (mask 0). It is reused across inputs (fzRAM):
// clearing only what an input dirtied keeps an execution cheap.
type fzGuest struct {
	t                     *testing.T
	mem                   *guestmem.Memory
	ram, shadow, mask     []byte
	allowed               [][2]uint64 // the ranges set in mask
	tables, scratch, heap uint64      // bump pointers
}

var fzRAM sync.Pool

func newFzGuest(t *testing.T) *fzGuest {
	g, _ := fzRAM.Get().(*fzGuest)
	if g == nil {
		ram := make([]byte, fzMem)
		mem, err := guestmem.FromBytes([]uint64{0}, [][]byte{ram})
		if err != nil {
			t.Fatal(err)
		}
		g = &fzGuest{mem: mem, ram: ram, shadow: make([]byte, fzMem), mask: make([]byte, fzMem)}
		g.write(fzPattern, fzPatternBytes)
	}
	g.t, g.tables, g.scratch, g.heap = t, fzTables, fzScratch, fzRxHeap
	return g
}

// release clears what the input wrote and pools g, once the device is
// closed. After a failure RAM may hold anything: it is dropped.
func (g *fzGuest) release() {
	if g.t.Failed() {
		return
	}
	for _, r := range [][2]uint64{{0, g.tables}, {fzScratch, g.scratch}, {fzRxHeap, g.heap}} {
		clear(g.ram[r[0]:r[1]])
		clear(g.shadow[r[0]:r[1]])
	}
	g.forbid()
	fzRAM.Put(g)
}

func (g *fzGuest) write(a uint64, b []byte) {
	copy(g.ram[a:], b)
	copy(g.shadow[a:], b)
}

func (g *fzGuest) store16(a uint64, v uint16) {
	if err := g.mem.StoreUint16(a, v); err != nil {
		g.t.Fatal(err)
	}
	binary.LittleEndian.PutUint16(g.shadow[a:], v)
}

// alloc takes n bytes at alignment align from the area whose bump
// pointer is p and which ends at end.
func (g *fzGuest) alloc(p *uint64, end, n, align uint64) (uint64, bool) {
	a := (*p + align - 1) &^ (align - 1)
	if a+n > end {
		return 0, false
	}
	*p = a + n
	return a, true
}

// allow lets the device write [a, a+n).
func (g *fzGuest) allow(a, n uint64) {
	m := g.mask[a : a+n]
	for i := range m {
		m[i] = 1
	}
	g.allowed = append(g.allowed, [2]uint64{a, a + n})
}

// forbid clears the mask.
func (g *fzGuest) forbid() {
	for _, r := range g.allowed {
		clear(g.mask[r[0]:r[1]])
	}
	g.allowed = g.allowed[:0]
}

// settle takes what the device wrote into [a, a+n) as final: it may not
// write there any more.
func (g *fzGuest) settle(a, n uint64) {
	copy(g.shadow[a:a+n], g.ram[a:a+n])
	clear(g.mask[a : a+n])
}

// checkpoint fails the test if RAM differs from the shadow outside the
// mask, then takes RAM as it is, with nothing writable.
func (g *fzGuest) checkpoint(when string) {
	const page = 4096
	for off := 0; off < len(g.ram); off += page {
		a, s := g.ram[off:off+page], g.shadow[off:off+page]
		if bytes.Equal(a, s) {
			continue
		}
		for i := range a {
			if a[i] != s[i] && g.mask[off+i] == 0 {
				g.t.Fatalf("%s: the device wrote guest memory at %#x (%#x, was %#x), outside the buffers it holds", when, off+i, a[i], s[i])
			}
		}
		copy(s, a)
	}
	g.forbid()
}

// written returns the first n bytes of c's writable buffers.
func (g *fzGuest) written(c *fzChain, n uint32) []byte {
	out := make([]byte, 0, n)
	for _, p := range c.pieces {
		if !p.write || n == 0 {
			continue
		}
		k := min(p.len, n)
		out = append(out, g.ram[p.addr:p.addr+uint64(k)]...)
		n -= k
	}
	return out
}

type fzPiece struct {
	addr  uint64
	len   uint32
	write bool
}

type fzChain struct {
	head      uint16
	descs     []uint16 // direct descriptors, free again on completion
	pieces    []fzPiece
	malformed bool
	data      []byte // transmit: the readable bytes in order
	cap       uint64 // receive: the writable bytes
}

// Malformations of a chain; each makes the device's ring walk fail.
const (
	fzMalNone         = iota
	fzMalOutside      // a buffer outside RAM or wrapping the address space
	fzMalStraddle     // a buffer running past the end of RAM
	fzMalNext         // next out of range
	fzMalLoop         // next back to the chain's first descriptor
	fzMalNested       // an indirect descriptor in an indirect table
	fzMalTableLen     // indirect table length not a non-zero multiple of 16
	fzMalIndirectNext // indirect descriptor with NEXT
	fzMalTableOutside // indirect table outside RAM
	fzMalTooLong      // indirect table longer than the queue
	fzMalHead         // avail entry out of range
	fzMalJump         // avail.idx more than a ring ahead
	fzMalKinds
)

// fzMalKind decodes a malformation byte: mostly none, so that mutated
// programs keep reaching the device's processing.
func fzMalKind(m byte) int {
	if m < 0x80 {
		return fzMalNone
	}
	return 1 + int(m)%(fzMalKinds-1)
}

// fzQueue is the fake driver's side of one split ring (see virtiotest;
// this one also frees descriptors and mirrors its writes in the shadow).
type fzQueue struct {
	g                  *fzGuest
	desc, avail, used  uint64
	free               []uint16
	availIdx, usedSeen uint16
	order              []*fzChain // published and not completed, in order
	dead               bool       // avail.idx was corrupted
	malformed          bool       // a malformed chain was published
	kickedBad          bool       // a kick came after a malformed chain
}

func newFzQueue(g *fzGuest, base uint64) *fzQueue {
	d := vt.NewDriver(g.mem, base, QueueSize, base)
	q := &fzQueue{g: g, desc: d.Desc, avail: d.Avail, used: d.UsedRing}
	for i := QueueSize - 1; i >= 0; i-- {
		q.free = append(q.free, uint16(i))
	}
	return q
}

func (q *fzQueue) usedLen() uint64 { return 6 + 8*QueueSize }

// activate builds the device's queue over the ring.
func (q *fzQueue) activate(features uint64) *virtio.Queue {
	vq := virtio.NewQueue(QueueSize)
	vq.Size, vq.DescTable, vq.AvailRing, vq.UsedRing, vq.Ready = QueueSize, q.desc, q.avail, q.used, true
	if err := vq.Activate(q.g.mem, features); err != nil {
		q.g.t.Fatal(err)
	}
	return vq
}

func (q *fzQueue) kick() {
	if q.malformed || q.dead {
		q.kickedBad = true
	}
}

func fzFlag(write bool) uint16 {
	if write {
		return vt.FlagWrite
	}
	return 0
}

// post lays out pieces as a chain (with indirect, the pieces after the
// first direct ones go into an indirect table), applies malformation mal
// (parameter mv) and publishes it. It returns nil when the ring or the
// table area is full.
func (q *fzQueue) post(pieces []fzPiece, indirect bool, direct int, mal int, mv byte, features uint64) *fzChain {
	if q.dead || len(q.order) >= QueueSize {
		return nil
	}
	if len(pieces) == 0 {
		pieces = []fzPiece{{addr: fzPattern}} // a chain has a descriptor
	}
	switch mal {
	case fzMalNested, fzMalTableLen, fzMalIndirectNext, fzMalTableOutside, fzMalTooLong:
		indirect = true
	}
	nd := len(pieces)
	if indirect {
		nd = min(direct, len(pieces)-1)
	}
	table := pieces[nd:]
	if mal == fzMalTooLong {
		table = make([]fzPiece, QueueSize+1)
	}
	ndesc := nd
	if indirect {
		ndesc++
	}
	if len(q.free) < ndesc {
		return nil
	}
	var taddr uint64
	if indirect {
		var ok bool
		if taddr, ok = q.g.alloc(&q.g.tables, fzPattern, 16*uint64(len(table)), 16); !ok {
			return nil
		}
	}
	idx := append([]uint16(nil), q.free[len(q.free)-ndesc:]...)
	q.free = q.free[:len(q.free)-ndesc]
	type desc struct {
		table       uint64
		i           uint16
		addr        uint64
		len         uint32
		flags, next uint16
	}
	var ds []desc
	for i := range nd {
		p := pieces[i]
		d := desc{table: q.desc, i: idx[i], addr: p.addr, len: p.len, flags: fzFlag(p.write)}
		if i+1 < ndesc {
			d.flags |= vt.FlagNext
			d.next = idx[i+1]
		}
		ds = append(ds, d)
	}
	bufs := len(ds) // ds[:bufs] are direct buffers
	if indirect {
		for j, p := range table {
			d := desc{table: taddr, i: uint16(j), addr: p.addr, len: p.len, flags: fzFlag(p.write)}
			if j+1 < len(table) {
				d.flags |= vt.FlagNext
				d.next = uint16(j + 1)
			}
			ds = append(ds, d)
		}
		ds = append(ds, desc{table: q.desc, i: idx[nd], addr: taddr, len: uint32(16 * len(table)), flags: vt.FlagIndirect})
	}
	last := len(ds) - 1 // the chain's last buffer, and its table's first
	first, tableLen := idx[0], uint16(QueueSize)
	if indirect {
		last, first, tableLen = len(ds)-2, 0, uint16(len(table))
	}
	ind := &ds[len(ds)-1]
	switch mal {
	case fzMalOutside:
		d := &ds[int(mv)%max(1, len(ds)-btoi(indirect))]
		d.addr = fzMem + uint64(mv)*4096
		if mv&1 != 0 {
			d.addr = ^uint64(0) - uint64(mv)
		}
	case fzMalStraddle:
		d := &ds[int(mv)%max(1, len(ds)-btoi(indirect))]
		d.addr, d.len = fzMem-1-uint64(mv%16), 64
	case fzMalNext:
		ds[last].flags |= vt.FlagNext
		ds[last].next = tableLen + uint16(mv)
	case fzMalLoop:
		ds[last].flags |= vt.FlagNext
		ds[last].next = first
	case fzMalNested:
		ds[bufs].flags |= vt.FlagIndirect
	case fzMalTableLen:
		ind.len += 1 + uint32(mv%15)
		if mv&1 != 0 {
			ind.len = 0
		}
	case fzMalIndirectNext:
		ind.flags |= vt.FlagNext
	case fzMalTableOutside:
		ind.addr = fzMem - 8 + uint64(mv)*16
	}
	var b [16]byte
	for _, d := range ds {
		binary.LittleEndian.PutUint64(b[0:], d.addr)
		binary.LittleEndian.PutUint32(b[8:], d.len)
		binary.LittleEndian.PutUint16(b[12:], d.flags)
		binary.LittleEndian.PutUint16(b[14:], d.next)
		q.g.write(d.table+16*uint64(d.i), b[:])
	}
	c := &fzChain{head: idx[0], descs: idx, pieces: pieces,
		malformed: mal != fzMalNone || (indirect && !virtio.HasFeature(features, virtio.FIndirectDesc))}
	if mal == fzMalHead {
		c.head = QueueSize + uint16(mv)
	}
	q.g.store16(q.avail+4+2*uint64(q.availIdx%QueueSize), c.head)
	q.availIdx++
	q.g.store16(q.avail+2, q.availIdx)
	if mal == fzMalJump {
		q.g.store16(q.avail+2, q.availIdx+QueueSize+1+uint16(mv))
		q.dead = true
	}
	q.order = append(q.order, c)
	q.malformed = q.malformed || c.malformed
	return c
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

type fzDone struct {
	c   *fzChain
	len uint32
}

// collect returns the chains completed since the last call. Both devices
// complete chains in the order they take them.
func (q *fzQueue) collect() []fzDone {
	t := q.g.t
	idx, err := q.g.mem.LoadUint16(q.used + 2)
	if err != nil {
		t.Fatal(err)
	}
	if n := idx - q.usedSeen; int(n) > len(q.order) {
		t.Fatalf("used.idx moved by %d with %d chains outstanding", n, len(q.order))
	}
	var done []fzDone
	for ; q.usedSeen != idx; q.usedSeen++ {
		var e [8]byte
		copy(e[:], q.g.ram[q.used+4+8*uint64(q.usedSeen%QueueSize):])
		id, n := binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:])
		c := q.order[0]
		if c.malformed || id != uint32(c.head) {
			t.Fatalf("used element %d names chain %d; the oldest outstanding chain is %d (malformed %v)", q.usedSeen, id, c.head, c.malformed)
		}
		q.order = q.order[1:]
		q.free = append(q.free, c.descs...)
		done = append(done, fzDone{c, n})
	}
	return done
}

// fzBroken records the Activation's Broken calls.
type fzBroken struct {
	mu   sync.Mutex
	errs []error
}

func (b *fzBroken) report(err error) {
	b.mu.Lock()
	b.errs = append(b.errs, err)
	b.mu.Unlock()
}

func (b *fzBroken) get() []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]error(nil), b.errs...)
}

// checkBroken checks that the device broke only on a malformed ring, with
// errors that say so, and returns whether it broke.
func (b *fzBroken) check(t *testing.T, qs ...*fzQueue) bool {
	t.Helper()
	errs := b.get()
	if len(errs) == 0 {
		return false
	}
	bad := false
	for _, q := range qs {
		bad = bad || q.malformed || q.dead
	}
	if !bad {
		t.Fatalf("the device broke on a well-formed ring: %v", errs)
	}
	for _, err := range errs {
		if !errors.Is(err, virtio.ErrBroken) {
			t.Fatalf("Broken(%v): the error does not wrap virtio.ErrBroken", err)
		}
	}
	return true
}

func fzCountFds(t *testing.T) int {
	t.Helper()
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		t.Fatal(err)
	}
	return len(names)
}

// fzWarmUp runs an event loop once, so that the runtime's own poller
// descriptors exist before the per-input counts.
func fzWarmUp(f *testing.F) {
	l, err := eventloop.New("fuzz-warmup", eventloop.Poller)
	if err != nil {
		f.Fatal(err)
	}
	l.Close()
}

// fzNoLeaks fails if descriptors or goroutines outlive the input.
func fzNoLeaks(t *testing.T, fds, goroutines int) {
	t.Helper()
	if n := fzCountFds(t); n > fds {
		t.Fatalf("%d file descriptors open after teardown, %d before", n, fds)
	}
	deadline := time.Now().Add(fzWait)
	for runtime.NumGoroutine() > goroutines {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after teardown, %d before", runtime.NumGoroutine(), goroutines)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Program operations.
const (
	fzOpTx = iota
	fzOpRx
	fzOpConnect
	fzOpWrite
	fzOpRead
	fzOpDisconnect
	fzOpKick
	fzOpReset
	fzConOps
)

// Transmit chain sizes (readable bytes).
const (
	fzTxEmpty    = iota
	fzTxTiny     // 1..64
	fzTxPage     // up to 4096
	fzTxAny      // up to 65535
	fzTxOverBuf  // just past the 64 KiB output buffer
	fzTxMaxChain // maxChain: the longest chain the device sends
	fzTxBeyond   // longer: dropped
	fzTxSizes
)

// fzTxOp posts Count%4+1 transmit chains of Size (selector, with Val)
// pattern bytes from Off and kicks. Layout: bits 0-2 buffers - 1 (more for chains past 64 KiB), bit
// 3 a device-writable buffer, bit 4 a zero-length buffer, bit 5 indirect
// (Split's high nibble: the direct buffers before the table). Split seeds
// the cut points. The malformation goes to the last chain.
type fzTxOp struct {
	Count, Size   byte
	Val, Off      uint16
	Layout, Split byte
	Mal, MV       byte
}

// Receive buffer sizes.
const (
	fzRxZero = iota
	fzRxTiny // 1..15
	fzRxOdd  // under 2048
	fzRxAny  // up to 65535
	fzRxPage // 4096
	fzRxSizes
)

// fzRxOp posts Count%16+1 receive chains of Size (selector, with Val)
// bytes each and kicks. Layout: bits 0-1 writable buffers - 1, bit 2 a
// device-readable buffer, bit 3 indirect, bit 4 a zero-length writable
// buffer; Gap: bytes left unused before each buffer (low 3 bits), direct
// buffers before an indirect table (high nibble). The malformation goes
// to the last chain.
type fzRxOp struct {
	Count, Size byte
	Val         uint16
	Layout, Gap byte
	Mal, MV     byte
}

// Client write lengths.
const (
	fzWrTiny  = iota // 1..16
	fzWrPage         // 1..4096
	fzWrAny          // up to 65535
	fzWrOver         // past the 64 KiB input buffer
	fzWrEmpty        // nothing
	fzWrLens
)

// fzWriteOp has the client write Len (selector) bytes of the pattern at
// Off, as much as the socket takes.
type fzWriteOp struct {
	Len      byte
	Val, Off uint16
}

// Disconnect modes.
const (
	fzDisAbrupt   = iota // close without reading
	fzDisGraceful        // read everything the guest sent, then close
	fzDisHalf            // shut down writing, read until the device hangs up
	fzDisModes
)

func (o fzTxOp) bytes() []byte {
	return []byte{fzOpTx, o.Count, o.Size, byte(o.Val), byte(o.Val >> 8), byte(o.Off), byte(o.Off >> 8), o.Layout, o.Split, o.Mal, o.MV}
}

func fzDecodeTx(in *fzIn) fzTxOp {
	var o fzTxOp
	o.Count, o.Size, o.Val, o.Off = in.u8(), in.u8(), in.u16(), in.u16()
	o.Layout, o.Split, o.Mal, o.MV = in.u8(), in.u8(), in.u8(), in.u8()
	return o
}

func (o fzRxOp) bytes() []byte {
	return []byte{fzOpRx, o.Count, o.Size, byte(o.Val), byte(o.Val >> 8), o.Layout, o.Gap, o.Mal, o.MV}
}

func fzDecodeRx(in *fzIn) fzRxOp {
	var o fzRxOp
	o.Count, o.Size, o.Val = in.u8(), in.u8(), in.u16()
	o.Layout, o.Gap, o.Mal, o.MV = in.u8(), in.u8(), in.u8(), in.u8()
	return o
}

func (o fzWriteOp) bytes() []byte {
	return []byte{fzOpWrite, o.Len, byte(o.Val), byte(o.Val >> 8), byte(o.Off), byte(o.Off >> 8)}
}

func fzDecodeWrite(in *fzIn) fzWriteOp {
	var o fzWriteOp
	o.Len, o.Val, o.Off = in.u8(), in.u16(), in.u16()
	return o
}

func fzConnectOp() []byte { return []byte{fzOpConnect} }

// fzReadOp reads up to n bytes (0: all there is) on the client.
func fzReadOp(n uint16) []byte { return []byte{fzOpRead, byte(n), byte(n >> 8)} }

func fzDisconnectOp(mode byte) []byte { return []byte{fzOpDisconnect, mode} }

func fzKickOp(q int) []byte { return []byte{fzOpKick, byte(q)} }

func fzResetOp() []byte { return []byte{fzOpReset} }

// fzSession is one client connection the device accepted.
type fzSession struct {
	fd     int      // the client's socket, -1 once closed
	server *os.File // the device's end of it
	start  int      // len(conFuzz.guestIn) when it was accepted
	sent   []byte   // what the client wrote
	want   []byte   // what the guest transmitted while it was the client
	got    []byte   // what the client read
	half   bool     // the client shut down writing
}

// conFuzz is one input's rig.
type conFuzz struct {
	t          *testing.T
	g          *fzGuest
	loop       *eventloop.Loop
	dev        *Console
	path       string
	kicks      [2]int
	rx, tx     *fzQueue
	vq         []*virtio.Queue // the device's view of rx and tx
	features   uint64
	broken     *fzBroken
	brokenSeen bool
	sess       *fzSession // the latest client the device accepted
	guestIn    []byte     // what the guest received, in order
	txTotal    int
	buf        []byte
}

func fzRunConsole(t *testing.T, path string, prog []byte) {
	in := &fzIn{b: prog}
	h := &conFuzz{t: t, g: newFzGuest(t), path: path, kicks: [2]int{-1, -1}, buf: make([]byte, 128<<10)}
	defer h.close()
	var err error
	if h.loop, err = eventloop.New("fuzz-console", eventloop.Poller); err != nil {
		t.Fatal(err)
	}
	if h.dev, err = New("fuzz0", path, h.loop); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(path); err != nil || fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket file %v (%v): want a socket with mode 0600", fi, err)
	}
	h.activate()
	for range fzMaxOps {
		if len(in.b) == 0 {
			break
		}
		switch in.u8() % fzConOps {
		case fzOpTx:
			h.transmit(fzDecodeTx(in))
		case fzOpRx:
			h.postRx(fzDecodeRx(in))
		case fzOpConnect:
			h.connect()
		case fzOpWrite:
			h.write(fzDecodeWrite(in))
		case fzOpRead:
			h.read(int(in.u16()))
		case fzOpDisconnect:
			h.disconnect(in.u8() % fzDisModes)
		case fzOpKick:
			h.kick(int(in.u8() % 2))
		case fzOpReset:
			h.reset()
			h.activate()
		}
		h.settle()
	}
	h.finish()
}

func (h *conFuzz) activate() {
	t := h.t
	h.features = h.dev.Features() | 1<<virtio.FVersion1
	h.rx, h.tx = newFzQueue(h.g, fzRxRing), newFzQueue(h.g, fzTxRing)
	var qs []*virtio.Queue
	for i, q := range []*fzQueue{h.rx, h.tx} {
		qs = append(qs, q.activate(h.features))
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		h.kicks[i] = fd
		h.g.allow(q.used, q.usedLen())
	}
	h.broken, h.brokenSeen, h.vq = &fzBroken{}, false, qs
	err := h.dev.Activate(virtio.Activation{Mem: h.g.mem, Features: h.features, Queues: qs, Kicks: h.kicks[:],
		Interrupt: vt.NoIRQ{}, Broken: h.broken.report})
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
}

func (h *conFuzz) kick(q int) {
	if q == RxQueue {
		h.rx.kick()
	} else {
		h.tx.kick()
	}
	if _, err := unix.Write(h.kicks[q], []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		h.t.Fatal(err)
	}
}

// transmit posts transmit chains and kicks.
func (h *conFuzz) transmit(o fzTxOp) {
	var size int
	switch o.Size % fzTxSizes {
	case fzTxEmpty:
	case fzTxTiny:
		size = 1 + int(o.Val%64)
	case fzTxPage:
		size = int(o.Val % 4097)
	case fzTxAny:
		size = int(o.Val)
	case fzTxOverBuf:
		size = bufMax + 1 + int(o.Val%4096)
	case fzTxMaxChain:
		size = maxChain
	case fzTxBeyond:
		size = maxChain + 1 + int(o.Val%4096)
	}
	count := 1 + int(o.Count%4)
	for i := range count {
		if h.txTotal+size > fzTxBudget {
			break
		}
		// Buffers alias the pattern, at most 64 KiB each.
		k := max(1+int(o.Layout&7), (size+0xffff)/0x10000)
		cuts := fzCut(size, k, uint32(o.Split)<<16|uint32(o.Off)+uint32(i))
		if size > 0xffff {
			cuts = fzCut(size, k, 0)
		}
		var pieces []fzPiece
		data := make([]byte, 0, size)
		for j := 1; j < len(cuts); j++ {
			n := cuts[j] - cuts[j-1]
			off := (int(o.Off) + 7919*(i+j)) % (fzPatternLen - n + 1)
			pieces = append(pieces, fzPiece{addr: uint64(fzPattern + off), len: uint32(n)})
			data = append(data, fzPatternBytes[off:off+n]...)
		}
		if o.Layout&(1<<3) != 0 { // the device must neither read nor write it
			a, ok := h.g.alloc(&h.g.scratch, fzRxHeap, 256, 1)
			if !ok {
				break
			}
			at := int(o.Split) % (len(pieces) + 1)
			pieces = append(pieces[:at], append([]fzPiece{{addr: a, len: 1 + uint32(o.MV), write: true}}, pieces[at:]...)...)
		}
		if o.Layout&(1<<4) != 0 {
			at := int(o.Off) % (len(pieces) + 1)
			pieces = append(pieces[:at], append([]fzPiece{{addr: fzPattern}}, pieces[at:]...)...)
		}
		mal := fzMalNone
		if i == count-1 {
			mal = fzMalKind(o.Mal)
		}
		c := h.tx.post(pieces, o.Layout&(1<<5) != 0, int(o.Split>>4), mal, o.MV, h.features)
		if c == nil {
			break
		}
		c.data = data
		h.txTotal += size
	}
	h.kick(TxQueue)
}

// postRx posts receive chains and kicks.
func (h *conFuzz) postRx(o fzRxOp) {
	var size int
	switch o.Size % fzRxSizes {
	case fzRxZero:
	case fzRxTiny:
		size = 1 + int(o.Val%15)
	case fzRxOdd:
		size = int(o.Val % 2048)
	case fzRxAny:
		size = int(o.Val)
	case fzRxPage:
		size = 4096
	}
	count := 1 + int(o.Count%16)
	for i := range count {
		var pieces []fzPiece
		cuts := fzCut(size, 1+int(o.Layout&3), uint32(o.Gap)<<8|uint32(i))
		full := false
		for j := 1; j < len(cuts); j++ {
			n := uint64(cuts[j] - cuts[j-1])
			a, ok := h.g.alloc(&h.g.heap, fzMem, uint64(o.Gap&7)+n, 1)
			if !ok {
				full = true // receive heap used up
				break
			}
			pieces = append(pieces, fzPiece{addr: a + uint64(o.Gap&7), len: uint32(n), write: true})
		}
		if full {
			break
		}
		if o.Layout&(1<<2) != 0 { // the device must not write it
			at := int(o.Gap) % (len(pieces) + 1)
			pieces = append(pieces[:at], append([]fzPiece{{addr: fzPattern, len: 1 + 3*uint32(o.Gap)}}, pieces[at:]...)...)
		}
		if o.Layout&(1<<4) != 0 {
			at := int(o.MV) % (len(pieces) + 1)
			pieces = append(pieces[:at], append([]fzPiece{{addr: fzRxHeap, write: true}}, pieces[at:]...)...)
		}
		mal := fzMalNone
		if i == count-1 {
			mal = fzMalKind(o.Mal)
		}
		c := h.rx.post(pieces, o.Layout&(1<<3) != 0, int(o.Gap>>4), mal, o.MV, h.features)
		if c == nil {
			break
		}
		for _, p := range c.pieces {
			if p.write && !c.malformed {
				c.cap += uint64(p.len)
				if !h.brokenSeen {
					h.g.allow(p.addr, uint64(p.len))
				}
			}
		}
	}
	h.kick(RxQueue)
}

// client returns the device's client and buffered byte counts.
func (h *conFuzz) client() (f *os.File, in, out int) {
	c := h.dev
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.client, len(c.in), len(c.out)
}

// poll calls done until it returns true, failing with what after fzWait.
func (h *conFuzz) poll(what string, done func() bool) {
	deadline := time.Now().Add(fzWait)
	for i := 0; !done(); i++ {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: nothing after %v", what, fzWait)
		}
		fzPause(i)
	}
}

// fzPause yields between polls of other goroutines' progress, briefly
// sleeping once yielding has not been enough.
func fzPause(i int) {
	if i < 4 {
		runtime.Gosched()
	} else {
		time.Sleep(50 * time.Microsecond)
	}
}

func (h *conFuzz) dial() int {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		h.t.Fatal(err)
	}
	h.poll("connect to the console", func() bool {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: h.path})
		return !errors.Is(err, unix.EAGAIN) // the backlog is full until the acceptor runs
	})
	if err != nil {
		unix.Close(fd)
		h.t.Fatalf("connect to the console: %v", err)
	}
	return fd
}

// hungUp reports whether the peer of client socket fd has closed it.
func (h *conFuzz) hungUp(fd int) bool {
	var b [1]byte
	n, err := unix.Read(fd, b[:])
	if n > 0 {
		h.t.Fatal("a refused client got data")
	}
	return err == nil || errors.Is(err, unix.ECONNRESET)
}

// connect connects a client: accepted when the device has none, refused
// while the harness's client is connected, either while the device has
// not noticed that one leave (its reader waiting for the guest).
func (h *conFuzz) connect() {
	t := h.t
	cur, _, _ := h.client()
	s := h.sess
	mustRefuse := cur != nil && s != nil && s.fd >= 0 && cur == s.server
	fd := h.dial()
	var srv *os.File
	h.poll("the console takes or refuses a client", func() bool {
		c := h.dev
		c.mu.Lock()
		defer c.mu.Unlock()
		h.collect()
		if c.client != nil && c.client != cur && (s == nil || c.client != s.server) {
			srv = c.client
			return true
		}
		return h.hungUp(fd)
	})
	switch {
	case srv != nil && mustRefuse:
		t.Fatal("the console took a second client while one was connected")
	case srv == nil && cur == nil:
		t.Fatal("the console refused a client with none connected")
	case srv == nil:
		unix.Close(fd)
	default:
		h.sess = &fzSession{fd: fd, server: srv, start: len(h.guestIn)}
	}
}

func (h *conFuzz) write(o fzWriteOp) {
	s := h.sess
	if s == nil || s.fd < 0 || s.half {
		return
	}
	var n int
	switch o.Len % fzWrLens {
	case fzWrTiny:
		n = 1 + int(o.Val%16)
	case fzWrPage:
		n = 1 + int(o.Val%4096)
	case fzWrAny:
		n = int(o.Val)
	case fzWrOver:
		n = bufMax + int(o.Val%(bufMax/2))
	case fzWrEmpty:
	}
	off := int(o.Off) % (fzPatternLen - n + 1)
	k, err := unix.Write(s.fd, fzPatternBytes[off:off+n])
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		h.t.Fatalf("client write: %v", err)
	}
	s.sent = append(s.sent, fzPatternBytes[off:off+max(k, 0)]...)
}

// read reads up to n bytes (0: all there is) on the client; it reports
// whether the device hung up.
func (h *conFuzz) read(n int) (eof bool) {
	s := h.sess
	if s == nil || s.fd < 0 {
		return false
	}
	if n == 0 {
		n = 1 << 30
	}
	for n > 0 {
		k, err := unix.Read(s.fd, h.buf[:min(n, len(h.buf))])
		if errors.Is(err, unix.EAGAIN) {
			return false
		}
		if err != nil || k == 0 {
			return true
		}
		s.got = append(s.got, h.buf[:k]...)
		n -= k
	}
	return false
}

func (h *conFuzz) disconnect(mode byte) {
	t := h.t
	s := h.sess
	if s == nil || s.fd < 0 {
		return
	}
	switch mode {
	case fzDisGraceful:
		h.drain()
	case fzDisHalf:
		if err := unix.Shutdown(s.fd, unix.SHUT_WR); err != nil {
			t.Fatal(err)
		}
		s.half = true
		// The device hangs up on end of input, unless its reader waits
		// for the guest to make room; then the rest stays unread.
		h.poll("the console hangs up on a half-closed client", func() bool {
			if h.read(0) {
				return true
			}
			_, in, _ := h.client()
			return in >= bufMax
		})
		h.settle()
	}
	unix.Close(s.fd)
	s.fd = -1
}

// drain reads on the client until it has everything the guest
// transmitted to it, which must be exactly that.
func (h *conFuzz) drain() {
	s := h.sess
	h.poll("the client reads all the guest sent", func() bool {
		if h.read(0) {
			h.t.Fatal("the console hung up on a connected client")
		}
		h.settle()
		return (len(h.tx.order) == 0 || h.brokenSeen) && len(s.got) == len(s.want)
	})
	if !bytes.Equal(s.got, s.want) {
		h.t.Fatalf("the client read %d bytes, not the %d the guest sent", len(s.got), len(s.want))
	}
}

// collect takes the completions; c.mu is held, so the device is not in
// the middle of a batch and what the client read is accounted for.
func (h *conFuzz) collect() {
	t := h.t
	for _, d := range h.tx.collect() {
		if d.len != 0 {
			t.Fatalf("transmit chain %d completed with %d bytes written, want 0", d.c.head, d.len)
		}
		// Chains the device completes while the harness has the client
		// (even half-closed, when the device may already have dropped it
		// and discarded the rest) are for it.
		if s := h.sess; s != nil && s.fd >= 0 && len(d.c.data) <= maxChain {
			s.want = append(s.want, d.c.data...)
		}
	}
	for _, d := range h.rx.collect() {
		if uint64(d.len) > d.c.cap {
			t.Fatalf("receive chain %d completed with %d bytes, but it holds %d", d.c.head, d.len, d.c.cap)
		}
		h.guestIn = append(h.guestIn, h.g.written(d.c, d.len)...)
		for _, p := range d.c.pieces {
			if p.write {
				h.g.settle(p.addr, uint64(p.len))
			}
		}
	}
	h.checkGuestIn()
}

// checkGuestIn checks that the guest received, since the latest client
// connected, a prefix of what it wrote.
func (h *conFuzz) checkGuestIn() {
	if h.sess == nil {
		if len(h.guestIn) > 0 {
			h.t.Fatalf("the guest received %d bytes before any client connected", len(h.guestIn))
		}
	} else if got := h.guestIn[h.sess.start:]; !bytes.HasPrefix(h.sess.sent, got) {
		h.t.Fatalf("the guest received %d bytes from the client that are not what it wrote (%d bytes)", len(got), len(h.sess.sent))
	}
}

// settled collects completions and reports whether the device has done
// what it was given, or waits as documented.
func (h *conFuzz) settled() bool {
	c := h.dev
	c.mu.Lock()
	defer c.mu.Unlock()
	h.collect()
	in, out := len(c.in), len(c.out)
	var sent, got int
	var srv *os.File
	s := h.sess
	if s != nil {
		sent, got, srv = len(s.sent), len(h.guestIn)-s.start, s.server
		if s.fd >= 0 && !s.half && c.client != srv {
			h.t.Fatal("the console dropped a connected client")
		}
	}
	// Transmit: every chain taken, or the next one waits for a connected
	// client to drain the output buffer (one that left makes the writer
	// fail soon).
	txDone := len(h.tx.order) == 0 && !h.tx.kickedBad
	if next := h.tx.order; len(next) > 0 && !next[0].malformed && !h.tx.dead {
		size := len(next[0].data)
		txDone = s != nil && s.fd >= 0 && c.client == srv && out > 0 && size <= maxChain && out+size > bufMax
	}
	// Receive: the client's bytes all in the guest, or no buffers left,
	// or the client gone and nothing buffered from it.
	rxDone := got == sent || (len(h.rx.order) == 0 && !h.rx.dead) || (c.client != srv && in == 0)
	// A closed client is dropped, unless the device's reader holds its
	// input until the guest makes room.
	hungUp := s == nil || (s.fd >= 0 && !s.half) || c.client != srv || (in >= bufMax && sent-got-in > 0)
	// A broken device processes nothing more; its clients come and go.
	broken := len(h.broken.get()) > 0
	return (broken || txDone && rxDone) && hungUp
}

// settle waits until the device has done what it was given and checks
// what it did.
func (h *conFuzz) settle() {
	deadline := time.Now().Add(fzWait)
	for i := 0; !h.settled(); i++ {
		if time.Now().After(deadline) {
			c, in, out := h.client()
			left := h.sess != nil && (h.sess.fd < 0 || h.sess.half)
			h.t.Fatalf("the console did not settle in %v: %d transmit chains left (malformed kicked %v), %d receive chains left, client %v (it left: %v), %d bytes buffered in, %d out, broken %v",
				fzWait, len(h.tx.order), h.tx.kickedBad, len(h.rx.order), c != nil, left, in, out, h.broken.get())
		}
		fzPause(i)
	}
	h.observeBroken()
	if s := h.sess; s != nil && !bytes.HasPrefix(s.want, s.got) {
		h.t.Fatalf("the client read %d bytes that are not what the guest sent (%d bytes)", len(s.got), len(s.want))
	}
}

// observeBroken checks a device that broke and, the first time, accounts
// for what it did before.
func (h *conFuzz) observeBroken() {
	if h.broken.check(h.t, h.rx, h.tx) && !h.brokenSeen {
		h.brokenSeen = true
		h.tookUnpublished()
		// From now on the device may not touch guest memory at all.
		h.g.checkpoint("after Broken")
	}
}

// tookUnpublished accounts for the chains a broken device took off its
// rings without publishing them, as it stops mid-batch: the transmit
// chains went to its client (as in collect), the receive chains were
// filled (a batch stops only at a chain it cannot take, with input left).
func (h *conFuzz) tookUnpublished() {
	c := h.dev
	c.mu.Lock()
	defer c.mu.Unlock()
	h.collect()
	if s := h.sess; s != nil && s.fd >= 0 {
		for _, ch := range h.unpublished(TxQueue) {
			if len(ch.data) <= maxChain {
				s.want = append(s.want, ch.data...)
			}
		}
	}
	for _, ch := range h.unpublished(RxQueue) {
		h.guestIn = append(h.guestIn, h.g.written(ch, uint32(ch.cap))...)
	}
	h.checkGuestIn()
}

// unpublished returns the chains of queue i the device took without
// publishing their completions. Only the queues of a broken or reset
// device may be read.
func (h *conFuzz) unpublished(i int) []*fzChain {
	q := []*fzQueue{h.rx, h.tx}[i]
	k := int(h.vq[i].NextAvail() - q.usedSeen)
	if k > len(q.order) {
		h.t.Fatalf("the device took %d chains of %d posted on queue %d", k, len(q.order), i)
	}
	return q.order[:k]
}

// reset resets the device and checks that it let go of the queues; the
// client stays.
func (h *conFuzz) reset() {
	t := h.t
	h.dev.Reset()
	h.loop.Call(func() {
		if h.dev.act != nil || h.dev.rxq != nil || h.dev.txq != nil {
			t.Error("the console kept its queues after Reset")
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	// The writer may have made room since the last settle and the device
	// taken more chains, or broken: account for them before the rings go.
	h.observeBroken()
	func() {
		h.dev.mu.Lock()
		defer h.dev.mu.Unlock()
		h.collect()
		if !h.brokenSeen && len(h.unpublished(RxQueue))+len(h.unpublished(TxQueue)) > 0 {
			t.Fatal("the device took chains it never completed")
		}
	}()
	h.g.checkpoint("after Reset")
	for i, fd := range h.kicks {
		unix.Close(fd)
		h.kicks[i] = -1
	}
	zero := make([]byte, 0x3000)
	h.g.write(fzRxRing, zero)
	h.g.write(fzTxRing, zero)
}

// finish kicks both queues, reads everything on a connected client, then
// checks Reset and Close.
func (h *conFuzz) finish() {
	t := h.t
	h.kick(RxQueue)
	h.kick(TxQueue)
	h.settle()
	if s := h.sess; s != nil && s.fd >= 0 && !s.half {
		h.drain()
	}
	h.reset()
	if err := h.dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(h.path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket file is still there after Close: %v", err)
	}
	if c, _, _ := h.client(); c != nil {
		t.Fatal("a client is still connected after Close")
	}
}

// close tears the rig down: the device, the loop and the harness's
// descriptors.
func (h *conFuzz) close() {
	if h.dev != nil {
		h.dev.Close()
	}
	if h.loop != nil {
		h.loop.Close()
	}
	for _, fd := range h.kicks {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	if s := h.sess; s != nil && s.fd >= 0 {
		unix.Close(s.fd)
	}
	h.g.release()
}

// fzCut splits n bytes into k pieces at points derived from seed; pieces
// may be empty.
func fzCut(n, k int, seed uint32) []int {
	cuts := []int{0}
	x := seed*2654435761 + 1
	for i := 1; i < k; i++ {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		c := i * n / k
		if seed&1 != 0 && n > 0 {
			c = int(x % uint32(n+1))
		}
		cuts = append(cuts, c)
	}
	cuts = append(cuts, n)
	for i := 1; i < len(cuts); i++ { // sorted, so pieces are in order
		for j := i; j > 0 && cuts[j] < cuts[j-1]; j-- {
			cuts[j], cuts[j-1] = cuts[j-1], cuts[j]
		}
	}
	return cuts
}

// fzMal returns a malformation byte that decodes to kind k.
func fzMal(k int) byte {
	for m := 0x80; m <= 0xff; m++ {
		if fzMalKind(byte(m)) == k {
			return byte(m)
		}
	}
	panic("no malformation byte for the kind") // seeds only
}

func fzProg(ops ...[]byte) []byte {
	var b []byte
	for _, o := range ops {
		b = append(b, o...)
	}
	return b
}

// fzConsoleSeeds are the corpus' starting programs: the unit tests'
// scenarios, back-pressure both ways, the client's ways to leave, odd
// layouts and one of each malformation class.
func fzConsoleSeeds() [][]byte {
	return [][]byte{
		// TestRoundTripAndReconnect: output without a client is lost; a
		// round trip; a second client refused; reconnect.
		fzProg(
			fzTxOp{Size: fzTxTiny, Val: 4}.bytes(),
			fzConnectOp(),
			fzTxOp{Size: fzTxTiny, Val: 20}.bytes(),
			fzReadOp(0),
			fzWriteOp{Len: fzWrTiny, Val: 4}.bytes(),
			fzRxOp{Size: fzRxOdd, Val: 64}.bytes(),
			fzConnectOp(),
			fzDisconnectOp(fzDisAbrupt),
			fzConnectOp(),
			fzTxOp{Size: fzTxTiny, Val: 5}.bytes(),
			fzReadOp(6),
			fzWriteOp{Len: fzWrTiny}.bytes(),
			fzRxOp{Size: fzRxOdd, Val: 8}.bytes()),
		// TestLargeTransfer: more input than the 64 KiB buffer read in
		// 4 KiB buffers, output in pages, read to the end.
		fzProg(
			fzConnectOp(),
			fzWriteOp{Len: fzWrOver, Val: 30000}.bytes(),
			fzRxOp{Count: 15, Size: fzRxPage}.bytes(),
			fzWriteOp{Len: fzWrAny, Val: 50000, Off: 999}.bytes(),
			fzRxOp{Count: 15, Size: fzRxPage}.bytes(),
			fzRxOp{Count: 15, Size: fzRxPage}.bytes(),
			fzTxOp{Count: 3, Size: fzTxPage, Val: 4096}.bytes(),
			fzTxOp{Count: 3, Size: fzTxPage, Val: 4096, Off: 5}.bytes(),
			fzDisconnectOp(fzDisGraceful)),
		// Output back-pressure: a client that does not read stalls the
		// transmit queue; a partial read, then all of it. A chain past
		// maxChain is dropped.
		fzProg(
			fzConnectOp(),
			fzTxOp{Count: 1, Size: fzTxOverBuf, Val: 100, Layout: 3}.bytes(),
			fzTxOp{Count: 3, Size: fzTxAny, Val: 40000}.bytes(),
			fzReadOp(1000),
			fzTxOp{Size: fzTxMaxChain}.bytes(),
			fzTxOp{Size: fzTxBeyond, Val: 1}.bytes(),
			fzReadOp(0),
			fzTxOp{Size: fzTxTiny, Val: 9}.bytes(),
			fzDisconnectOp(fzDisGraceful),
			fzConnectOp(),
			fzTxOp{Size: fzTxPage, Val: 3000}.bytes()),
		// Input back-pressure: the client fills the input buffer with no
		// receive buffers, leaves, a new client is refused while the
		// device still holds the first; the guest reads; reconnect.
		fzProg(
			fzConnectOp(),
			fzWriteOp{Len: fzWrOver, Val: 32767}.bytes(),
			fzWriteOp{Len: fzWrAny, Val: 20000}.bytes(),
			fzDisconnectOp(fzDisAbrupt),
			fzConnectOp(),
			fzRxOp{Count: 3, Size: fzRxAny, Val: 30000}.bytes(),
			fzConnectOp(),
			fzWriteOp{Len: fzWrPage, Val: 100}.bytes(),
			fzRxOp{Size: fzRxAny, Val: 50}.bytes(),
			fzRxOp{Count: 1, Size: fzRxAny, Val: 60}.bytes()),
		// Input left over from a client is dropped when the next one
		// connects; a half-closed client with output pending.
		fzProg(
			fzConnectOp(),
			fzWriteOp{Len: fzWrPage, Val: 500}.bytes(),
			fzRxOp{Size: fzRxTiny, Val: 9}.bytes(),
			fzDisconnectOp(fzDisAbrupt),
			fzConnectOp(),
			fzWriteOp{Len: fzWrTiny, Val: 10}.bytes(),
			fzTxOp{Count: 1, Size: fzTxAny, Val: 70}.bytes(),
			fzDisconnectOp(fzDisHalf),
			fzRxOp{Count: 2, Size: fzRxOdd, Val: 700}.bytes(),
			fzConnectOp(),
			fzTxOp{Size: fzTxTiny, Val: 33}.bytes()),
		// Odd layouts: indirect transmit chains with a writable and a
		// zero-length buffer; receive chains with gaps, a readable and a
		// zero-length buffer, too small and empty ones; a reset with
		// input buffered.
		fzProg(
			fzConnectOp(),
			fzTxOp{Count: 2, Size: fzTxPage, Val: 2000, Layout: 7 | 1<<3 | 1<<4 | 1<<5, Split: 0x31, MV: 9}.bytes(),
			fzTxOp{Size: fzTxEmpty, Layout: 1 << 5}.bytes(),
			fzWriteOp{Len: fzWrPage, Val: 3000}.bytes(),
			fzRxOp{Count: 2, Size: fzRxTiny, Val: 3, Layout: 3 | 1<<2 | 1<<4, Gap: 5}.bytes(),
			fzRxOp{Count: 1, Size: fzRxZero}.bytes(),
			fzResetOp(),
			fzRxOp{Count: 3, Size: fzRxOdd, Val: 1001, Layout: 2 | 1<<3, Gap: 0x13}.bytes(),
			fzReadOp(0),
			fzKickOp(RxQueue),
			fzKickOp(TxQueue)),
		// Malformed rings: a receive chain taken with input pending, and
		// one transmit chain of each class.
		fzProg(
			fzConnectOp(),
			fzRxOp{Size: fzRxOdd, Val: 10, Mal: fzMal(fzMalOutside)}.bytes(),
			fzWriteOp{Len: fzWrTiny, Val: 5}.bytes(),
			fzWriteOp{Len: fzWrTiny, Val: 5}.bytes(),
			fzTxOp{Size: fzTxTiny, Val: 5}.bytes()),
		fzProg(fzTxOp{Size: fzTxTiny, Layout: 2, Mal: fzMal(fzMalLoop)}.bytes()),
		fzProg(fzTxOp{Size: fzTxTiny, Layout: 2, Mal: fzMal(fzMalNested)}.bytes()),
		fzProg(fzTxOp{Size: fzTxTiny, Mal: fzMal(fzMalStraddle), MV: 1}.bytes()),
		fzProg(fzTxOp{Size: fzTxTiny, Mal: fzMal(fzMalNext)}.bytes()),
		fzProg(fzTxOp{Size: fzTxTiny, Mal: fzMal(fzMalTableLen)}.bytes()),
		fzProg(fzTxOp{Size: fzTxTiny, Mal: fzMal(fzMalIndirectNext)}.bytes()),
		fzProg(fzTxOp{Size: fzTxTiny, Mal: fzMal(fzMalTableOutside)}.bytes()),
		fzProg(fzTxOp{Size: fzTxTiny, Mal: fzMal(fzMalTooLong)}.bytes()),
		fzProg(fzConnectOp(), fzTxOp{Count: 2, Size: fzTxTiny, Mal: fzMal(fzMalHead)}.bytes(), fzDisconnectOp(fzDisGraceful)),
		fzProg(fzTxOp{Size: fzTxTiny, Mal: fzMal(fzMalJump)}.bytes()),
		// A device that breaks mid-batch sent chains it never completes;
		// it is reset and used again.
		fzProg(
			fzConnectOp(),
			fzTxOp{Count: 1, Size: fzTxTiny, Val: 48, Mal: fzMal(fzMalNext)}.bytes(),
			fzResetOp(),
			fzTxOp{Size: fzTxTiny, Val: 7}.bytes(),
			fzWriteOp{Len: fzWrTiny, Val: 3}.bytes(),
			fzRxOp{Size: fzRxTiny, Val: 14}.bytes()),
		// The same on receive: input taken into chains never completed.
		fzProg(
			fzConnectOp(),
			fzWriteOp{Len: fzWrPage, Val: 3000}.bytes(),
			fzRxOp{Count: 2, Size: fzRxOdd, Val: 1000, Mal: fzMal(fzMalHead)}.bytes(),
			fzResetOp(),
			fzRxOp{Count: 1, Size: fzRxPage}.bytes()),
	}
}
