package virtiotest

// A fuzz harness's side of a virtio device: guest RAM with a shadow of
// what the device may not write, and split rings whose chains can be laid
// out every way the spec allows, or malformed in each way a device's ring
// walk must refuse. The device-level fuzz targets (vmm/virtio/net,
// vmm/virtio/console) drive their devices through these.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Guest-physical layout of a Shadow. Well-formed chains point only into
// the pattern, the scratch area and the receive heap; rings and indirect
// tables are the driver's own.
const (
	FuzzRAM        = 2 << 20
	FuzzRxRing     = 0x1000
	FuzzTxRing     = 0x5000
	FuzzTables     = 0x10000
	FuzzPattern    = 0x30000 // read-only bytes transmit data is cut from
	FuzzPatternLen = 0x20000
	FuzzScratch    = 0x50000 // transmit headers, writable garbage in transmit chains
	FuzzRxHeap     = 0x80000
	// RingSize is the size of every Ring (the devices' queue size).
	RingSize = 256
	// leakWait bounds how long NoLeaks waits for goroutines to end.
	leakWait = 5 * time.Second
)

var PatternBytes = func() []byte {
	b := make([]byte, FuzzPatternLen)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}()

// Input decodes the program; an exhausted input reads as zeros.
type Input struct{ B []byte }

func (in *Input) U8() byte {
	if len(in.B) == 0 {
		return 0
	}
	v := in.B[0]
	in.B = in.B[1:]
	return v
}

func (in *Input) U16() uint16 { return uint16(in.U8()) | uint16(in.U8())<<8 }

// Shadow is guest RAM with a shadow of what it must hold wherever the
// device may not write (mask 0). It is reused across inputs (shadowPool):
// clearing only what an input dirtied keeps an execution cheap.
type Shadow struct {
	T                     *testing.T
	Mem                   *guestmem.Memory
	RAM, Shadow, Mask     []byte
	Allowed               [][2]uint64 // the ranges set in mask
	Tables, Scratch, Heap uint64      // bump pointers
}

var shadowPool sync.Pool

func NewShadow(t *testing.T) *Shadow {
	g, _ := shadowPool.Get().(*Shadow)
	if g == nil {
		ram := make([]byte, FuzzRAM)
		mem, err := guestmem.FromBytes([]uint64{0}, [][]byte{ram})
		if err != nil {
			t.Fatal(err)
		}
		g = &Shadow{Mem: mem, RAM: ram, Shadow: make([]byte, FuzzRAM), Mask: make([]byte, FuzzRAM)}
		g.Write(FuzzPattern, PatternBytes)
	}
	g.T, g.Tables, g.Scratch, g.Heap = t, FuzzTables, FuzzScratch, FuzzRxHeap
	return g
}

// Release clears what the input wrote and pools g, once the device is
// closed. After a failure RAM may hold anything: it is dropped.
func (g *Shadow) Release() {
	if g.T.Failed() {
		return
	}
	for _, r := range [][2]uint64{{0, g.Tables}, {FuzzScratch, g.Scratch}, {FuzzRxHeap, g.Heap}} {
		clear(g.RAM[r[0]:r[1]])
		clear(g.Shadow[r[0]:r[1]])
	}
	g.Forbid()
	shadowPool.Put(g)
}

func (g *Shadow) Write(a uint64, b []byte) {
	copy(g.RAM[a:], b)
	copy(g.Shadow[a:], b)
}

func (g *Shadow) Store16(a uint64, v uint16) {
	if err := g.Mem.StoreUint16(a, v); err != nil {
		g.T.Fatal(err)
	}
	binary.LittleEndian.PutUint16(g.Shadow[a:], v)
}

// Alloc takes n bytes at alignment align from the area whose bump
// pointer is p and which ends at end.
func (g *Shadow) Alloc(p *uint64, end, n, align uint64) (uint64, bool) {
	a := (*p + align - 1) &^ (align - 1)
	if a+n > end {
		return 0, false
	}
	*p = a + n
	return a, true
}

// Allow lets the device write [a, a+n).
func (g *Shadow) Allow(a, n uint64) {
	m := g.Mask[a : a+n]
	for i := range m {
		m[i] = 1
	}
	g.Allowed = append(g.Allowed, [2]uint64{a, a + n})
}

// Forbid clears the mask.
func (g *Shadow) Forbid() {
	for _, r := range g.Allowed {
		clear(g.Mask[r[0]:r[1]])
	}
	g.Allowed = g.Allowed[:0]
}

// Settle takes what the device wrote into [a, a+n) as final: it may not
// write there any more.
func (g *Shadow) Settle(a, n uint64) {
	copy(g.Shadow[a:a+n], g.RAM[a:a+n])
	clear(g.Mask[a : a+n])
}

// Checkpoint fails the test if RAM differs from the shadow outside the
// mask, then takes RAM as it is, with nothing writable.
func (g *Shadow) Checkpoint(when string) {
	const page = 4096
	for off := 0; off < len(g.RAM); off += page {
		a, s := g.RAM[off:off+page], g.Shadow[off:off+page]
		if bytes.Equal(a, s) {
			continue
		}
		for i := range a {
			if a[i] != s[i] && g.Mask[off+i] == 0 {
				g.T.Fatalf("%s: the device wrote guest memory at %#x (%#x, was %#x), outside the buffers it holds", when, off+i, a[i], s[i])
			}
		}
		copy(s, a)
	}
	g.Forbid()
}

// Written returns the first n bytes of c's writable buffers.
func (g *Shadow) Written(c *RingChain, n uint32) []byte {
	out := make([]byte, 0, n)
	for _, p := range c.Pieces {
		if !p.Write || n == 0 {
			continue
		}
		k := min(p.Len, n)
		out = append(out, g.RAM[p.Addr:p.Addr+uint64(k)]...)
		n -= k
	}
	return out
}

type Piece struct {
	Addr  uint64
	Len   uint32
	Write bool
}

type RingChain struct {
	Head      uint16
	Descs     []uint16 // direct descriptors, free again on completion
	Pieces    []Piece
	Malformed bool
	Data      []byte // transmit: the readable bytes in order
	Cap       uint64 // receive: the writable bytes
}

// Malformations of a chain; each makes the device's ring walk fail.
const (
	MalNone         = iota
	MalOutside      // a buffer outside RAM or wrapping the address space
	MalStraddle     // a buffer running past the end of RAM
	MalNext         // next out of range
	MalLoop         // next back to the chain's first descriptor
	MalNested       // an indirect descriptor in an indirect table
	MalTableLen     // indirect table length not a non-zero multiple of 16
	MalIndirectNext // indirect descriptor with NEXT
	MalTableOutside // indirect table outside RAM
	MalTooLong      // indirect table longer than the queue
	MalHead         // avail entry out of range
	MalJump         // avail.idx more than a ring ahead
	malKinds
)

// MalKind decodes a malformation byte: mostly none, so that mutated
// programs keep reaching the device's processing.
func MalKind(m byte) int {
	if m < 0x80 {
		return MalNone
	}
	return 1 + int(m)%(malKinds-1)
}

// Ring is the fake driver's side of one split ring (like Driver;
// it also frees descriptors and mirrors its writes in the shadow).
type Ring struct {
	G                  *Shadow
	Desc, Avail, Used  uint64
	Free               []uint16
	AvailIdx, UsedSeen uint16
	Order              []*RingChain // published and not completed, in order
	Dead               bool         // avail.idx was corrupted
	Malformed          bool         // a malformed chain was published
	KickedBad          bool         // a kick came after a malformed chain
}

func NewRing(g *Shadow, base uint64) *Ring {
	d := NewDriver(g.Mem, base, RingSize, base)
	q := &Ring{G: g, Desc: d.Desc, Avail: d.Avail, Used: d.UsedRing}
	for i := RingSize - 1; i >= 0; i-- {
		q.Free = append(q.Free, uint16(i))
	}
	return q
}

func (q *Ring) UsedLen() uint64 { return 6 + 8*RingSize }

// Activate builds the device's queue over the ring.
func (q *Ring) Activate(features uint64) *virtio.Queue {
	vq := virtio.NewQueue(RingSize)
	vq.Size, vq.DescTable, vq.AvailRing, vq.UsedRing, vq.Ready = RingSize, q.Desc, q.Avail, q.Used, true
	if err := vq.Activate(q.G.Mem, features); err != nil {
		q.G.T.Fatal(err)
	}
	return vq
}

func (q *Ring) Kick() {
	if q.Malformed || q.Dead {
		q.KickedBad = true
	}
}

func flag(write bool) uint16 {
	if write {
		return FlagWrite
	}
	return 0
}

// Post lays out pieces as a chain (with indirect, the pieces after the
// first direct ones go into an indirect table), applies malformation mal
// (parameter mv) and publishes it. It returns nil when the ring or the
// table area is full.
func (q *Ring) Post(pieces []Piece, indirect bool, direct int, mal int, mv byte, features uint64) *RingChain {
	if q.Dead || len(q.Order) >= RingSize {
		return nil
	}
	if len(pieces) == 0 {
		pieces = []Piece{{Addr: FuzzPattern}} // a chain has a descriptor
	}
	switch mal {
	case MalNested, MalTableLen, MalIndirectNext, MalTableOutside, MalTooLong:
		indirect = true
	}
	nd := len(pieces)
	if indirect {
		nd = min(direct, len(pieces)-1)
	}
	table := pieces[nd:]
	if mal == MalTooLong {
		table = make([]Piece, RingSize+1)
	}
	ndesc := nd
	if indirect {
		ndesc++
	}
	if len(q.Free) < ndesc {
		return nil
	}
	var taddr uint64
	if indirect {
		var ok bool
		if taddr, ok = q.G.Alloc(&q.G.Tables, FuzzPattern, 16*uint64(len(table)), 16); !ok {
			return nil
		}
	}
	idx := append([]uint16(nil), q.Free[len(q.Free)-ndesc:]...)
	q.Free = q.Free[:len(q.Free)-ndesc]
	type desc struct {
		table       uint64
		i           uint16
		Addr        uint64
		Len         uint32
		flags, next uint16
	}
	var ds []desc
	for i := range nd {
		p := pieces[i]
		d := desc{table: q.Desc, i: idx[i], Addr: p.Addr, Len: p.Len, flags: flag(p.Write)}
		if i+1 < ndesc {
			d.flags |= FlagNext
			d.next = idx[i+1]
		}
		ds = append(ds, d)
	}
	bufs := len(ds) // ds[:bufs] are direct buffers
	if indirect {
		for j, p := range table {
			d := desc{table: taddr, i: uint16(j), Addr: p.Addr, Len: p.Len, flags: flag(p.Write)}
			if j+1 < len(table) {
				d.flags |= FlagNext
				d.next = uint16(j + 1)
			}
			ds = append(ds, d)
		}
		ds = append(ds, desc{table: q.Desc, i: idx[nd], Addr: taddr, Len: uint32(16 * len(table)), flags: FlagIndirect})
	}
	last := len(ds) - 1 // the chain's last buffer, and its table's first
	first, tableLen := idx[0], uint16(RingSize)
	if indirect {
		last, first, tableLen = len(ds)-2, 0, uint16(len(table))
	}
	ind := &ds[len(ds)-1]
	switch mal {
	case MalOutside:
		d := &ds[int(mv)%max(1, len(ds)-Bit(indirect))]
		d.Addr = FuzzRAM + uint64(mv)*4096
		if mv&1 != 0 {
			d.Addr = ^uint64(0) - uint64(mv)
		}
	case MalStraddle:
		d := &ds[int(mv)%max(1, len(ds)-Bit(indirect))]
		d.Addr, d.Len = FuzzRAM-1-uint64(mv%16), 64
	case MalNext:
		ds[last].flags |= FlagNext
		ds[last].next = tableLen + uint16(mv)
	case MalLoop:
		ds[last].flags |= FlagNext
		ds[last].next = first
	case MalNested:
		ds[bufs].flags |= FlagIndirect
	case MalTableLen:
		ind.Len += 1 + uint32(mv%15)
		if mv&1 != 0 {
			ind.Len = 0
		}
	case MalIndirectNext:
		ind.flags |= FlagNext
	case MalTableOutside:
		ind.Addr = FuzzRAM - 8 + uint64(mv)*16
	}
	var b [16]byte
	for _, d := range ds {
		binary.LittleEndian.PutUint64(b[0:], d.Addr)
		binary.LittleEndian.PutUint32(b[8:], d.Len)
		binary.LittleEndian.PutUint16(b[12:], d.flags)
		binary.LittleEndian.PutUint16(b[14:], d.next)
		q.G.Write(d.table+16*uint64(d.i), b[:])
	}
	c := &RingChain{Head: idx[0], Descs: idx, Pieces: pieces,
		Malformed: mal != MalNone || (indirect && !virtio.HasFeature(features, virtio.FIndirectDesc))}
	if mal == MalHead {
		c.Head = RingSize + uint16(mv)
	}
	q.G.Store16(q.Avail+4+2*uint64(q.AvailIdx%RingSize), c.Head)
	q.AvailIdx++
	q.G.Store16(q.Avail+2, q.AvailIdx)
	if mal == MalJump {
		q.G.Store16(q.Avail+2, q.AvailIdx+RingSize+1+uint16(mv))
		q.Dead = true
	}
	q.Order = append(q.Order, c)
	q.Malformed = q.Malformed || c.Malformed
	return c
}

func Bit(b bool) int {
	if b {
		return 1
	}
	return 0
}

type Done struct {
	C   *RingChain
	Len uint32
}

// Collect returns the chains completed since the last call. Both devices
// complete chains in the order they take them.
func (q *Ring) Collect() []Done {
	t := q.G.T
	idx, err := q.G.Mem.LoadUint16(q.Used + 2)
	if err != nil {
		t.Fatal(err)
	}
	if n := idx - q.UsedSeen; int(n) > len(q.Order) {
		t.Fatalf("used.idx moved by %d with %d chains outstanding", n, len(q.Order))
	}
	var done []Done
	for ; q.UsedSeen != idx; q.UsedSeen++ {
		var e [8]byte
		copy(e[:], q.G.RAM[q.Used+4+8*uint64(q.UsedSeen%RingSize):])
		id, n := binary.LittleEndian.Uint32(e[0:]), binary.LittleEndian.Uint32(e[4:])
		c := q.Order[0]
		if c.Malformed || id != uint32(c.Head) {
			t.Fatalf("used element %d names chain %d; the oldest outstanding chain is %d (malformed %v)", q.UsedSeen, id, c.Head, c.Malformed)
		}
		q.Order = q.Order[1:]
		q.Free = append(q.Free, c.Descs...)
		done = append(done, Done{c, n})
	}
	return done
}

// BrokenLog records the Activation's Broken calls.
type BrokenLog struct {
	Mu   sync.Mutex
	Errs []error
}

func (b *BrokenLog) Report(err error) {
	b.Mu.Lock()
	b.Errs = append(b.Errs, err)
	b.Mu.Unlock()
}

func (b *BrokenLog) Get() []error {
	b.Mu.Lock()
	defer b.Mu.Unlock()
	return append([]error(nil), b.Errs...)
}

// Check checks that the device broke only on a malformed ring, with
// errors that say so, and returns whether it broke.
func (b *BrokenLog) Check(t *testing.T, qs ...*Ring) bool {
	t.Helper()
	errs := b.Get()
	if len(errs) == 0 {
		return false
	}
	bad := false
	for _, q := range qs {
		bad = bad || q.Malformed || q.Dead
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

func Readable(fd int) bool {
	p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	n, err := unix.Poll(p, 0)
	return err == nil && n > 0
}

func CountFds(t *testing.T) int {
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

// WarmUp runs an event loop once, so that the runtime's own poller
// descriptors exist before the per-input counts.
func WarmUp(f *testing.F) {
	l, err := eventloop.New("fuzz-warmup", eventloop.Poller)
	if err != nil {
		f.Fatal(err)
	}
	l.Close()
}

// NoLeaks fails if descriptors or goroutines outlive the input.
func NoLeaks(t *testing.T, fds, goroutines int) {
	t.Helper()
	if n := CountFds(t); n > fds {
		t.Fatalf("%d file descriptors open after teardown, %d before", n, fds)
	}
	deadline := time.Now().Add(leakWait)
	for runtime.NumGoroutine() > goroutines {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after teardown, %d before", runtime.NumGoroutine(), goroutines)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// Cut splits n bytes into k pieces at points derived from seed; pieces
// may be empty.
func Cut(n, k int, seed uint32) []int {
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

// MalByte returns a malformation byte that decodes to kind k.
func MalByte(k int) byte {
	for m := 0x80; m <= 0xff; m++ {
		if MalKind(byte(m)) == k {
			return byte(m)
		}
	}
	panic("no malformation byte for the kind") // k out of range: a bug in the caller's seeds
}

// RxLayout is how a program lays out receive chains.
type RxLayout struct {
	// Layout: bits 0–1 the pieces a chain's bytes are cut into, less
	// one; bit 2 a readable piece among them (which the device must not
	// write); bit 3 indirect; bit 4 an empty writable piece.
	Layout byte
	// Gap: the low 3 bits skip bytes before each piece, the high 4 are
	// how many descriptors stay direct in an indirect chain; it also
	// seeds the cuts and places the readable piece.
	Gap byte
	// Mal: the malformation of the last chain (MalKind); MV its
	// parameter, which also places the empty piece.
	Mal, MV byte
}

// PostRx posts count receive chains of size writable bytes each, from
// the receive heap below end, laid out as l says, and lets the device
// write their buffers unless broken (a broken device may write nothing).
// It stops early when the heap or the ring is full.
func (q *Ring) PostRx(size, count int, end uint64, l RxLayout, features uint64, broken bool) {
	g := q.G
	for i := range count {
		var pieces []Piece
		cuts := Cut(size, 1+int(l.Layout&3), uint32(l.Gap)<<8|uint32(i))
		for j := 1; j < len(cuts); j++ {
			n := uint64(cuts[j] - cuts[j-1])
			a, ok := g.Alloc(&g.Heap, end, uint64(l.Gap&7)+n, 1)
			if !ok {
				return
			}
			pieces = append(pieces, Piece{Addr: a + uint64(l.Gap&7), Len: uint32(n), Write: true})
		}
		if l.Layout&(1<<2) != 0 {
			at := int(l.Gap) % (len(pieces) + 1)
			pieces = append(pieces[:at], append([]Piece{{Addr: FuzzPattern, Len: 1 + 3*uint32(l.Gap)}}, pieces[at:]...)...)
		}
		if l.Layout&(1<<4) != 0 {
			at := int(l.MV) % (len(pieces) + 1)
			pieces = append(pieces[:at], append([]Piece{{Addr: FuzzRxHeap, Write: true}}, pieces[at:]...)...)
		}
		mal := MalNone
		if i == count-1 {
			mal = MalKind(l.Mal)
		}
		c := q.Post(pieces, l.Layout&(1<<3) != 0, int(l.Gap>>4), mal, l.MV, features)
		if c == nil {
			return
		}
		for _, p := range c.Pieces {
			if p.Write && !c.Malformed {
				c.Cap += uint64(p.Len)
				if !broken {
					g.Allow(p.Addr, uint64(p.Len))
				}
			}
		}
	}
}

// TxLayout is how a program lays out a transmit chain of a header and
// a payload.
type TxLayout struct {
	// Layout: bits 0–1 how the header is cut (whole; with the start of
	// the payload; in two; in three), bits 2–4 the pieces the rest of
	// the payload is cut into, less one; bit 5 a writable piece among
	// them (which the device must neither read nor write); bit 6 an
	// empty readable piece; bit 7 indirect.
	Layout byte
	// Split places the cuts, the writable piece and (high 4 bits) how
	// many descriptors stay direct in an indirect chain; Off seeds the
	// payload's cuts and places the empty piece; MV is the
	// malformation's parameter and the writable piece's length.
	Split, MV byte
	Off       uint16
}

// PostPacket posts a transmit chain of hdr (copied into the scratch
// area) and payload (pattern bytes from poff), laid out as l says and
// malformed as mal, and returns it with its Data set, or nil when the
// ring or the scratch area is full.
func (q *Ring) PostPacket(hdr, payload []byte, poff int, l TxLayout, mal int, features uint64) *RingChain {
	g := q.G
	var pieces []Piece
	scratch := func(b []byte) bool {
		a, ok := g.Alloc(&g.Scratch, FuzzRxHeap, uint64(len(b)), 1)
		if ok {
			g.Write(a, b)
			pieces = append(pieces, Piece{Addr: a, Len: uint32(len(b))})
		}
		return ok
	}
	rest := 0 // payload bytes already in a scratch piece
	ok := true
	switch l.Layout & 3 {
	case 0:
		ok = scratch(hdr)
	case 1:
		rest = min(len(payload), int(l.Split)*8)
		ok = scratch(append(append([]byte(nil), hdr...), payload[:rest]...))
	case 2:
		p := min(len(hdr), 1+int(l.Split)%max(1, len(hdr)))
		ok = scratch(hdr[:p]) && scratch(hdr[p:])
	case 3:
		a := min(len(hdr), 1+int(l.Split)%10)
		b := min(len(hdr), a+1+int(l.Split>>4)%20)
		ok = scratch(hdr[:a]) && scratch(hdr[a:b]) && scratch(hdr[b:])
	}
	if !ok {
		return nil
	}
	cuts := Cut(len(payload)-rest, 1+int(l.Layout>>2)&7, uint32(l.Split)<<16|uint32(l.Off))
	for i := 1; i < len(cuts); i++ {
		pieces = append(pieces, Piece{Addr: uint64(FuzzPattern + poff + rest + cuts[i-1]), Len: uint32(cuts[i] - cuts[i-1])})
	}
	if l.Layout&(1<<5) != 0 {
		a, ok := g.Alloc(&g.Scratch, FuzzRxHeap, 256, 1)
		if !ok {
			return nil
		}
		at := int(l.Split) % (len(pieces) + 1)
		pieces = append(pieces[:at], append([]Piece{{Addr: a, Len: 1 + uint32(l.MV), Write: true}}, pieces[at:]...)...)
	}
	if l.Layout&(1<<6) != 0 {
		at := int(l.Off) % (len(pieces) + 1)
		pieces = append(pieces[:at], append([]Piece{{Addr: FuzzPattern}}, pieces[at:]...)...)
	}
	c := q.Post(pieces, l.Layout&(1<<7) != 0, int(l.Split>>4), mal, l.MV, features)
	if c != nil {
		c.Data = append(append([]byte(nil), hdr...), payload...)
	}
	return c
}
