package net

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// FuzzNetDevice runs the userspace device over a SOCK_SEQPACKET pair
// standing in for the tap (as newRig does) under a program decoded from
// the fuzz input: transmit chains with arbitrary headers, lengths and
// descriptor layouts, receive buffers of odd sizes, frames the host
// writes into the backend, kicks and resets, each layout optionally
// malformed. After every operation the harness waits until the event
// loop has nothing left for the device and checks:
//
//   - completions name outstanding chains, in ring order; transmit
//     completions write nothing, receive ones no more than the chain's
//     writable bytes;
//   - guest memory changes only in the used rings and the writable
//     buffers of receive chains the device holds (a shadow copy of RAM);
//   - each transmitted chain reaches the backend as exactly its readable
//     bytes, or is dropped as transmit documents, in order;
//   - the backend's frames reach the receive buffers in order, num_buffers
//     and the bytes intact, or are dropped as deliver documents, and at
//     the end a frame still waiting has too few buffers posted;
//   - Broken is called only for a malformed ring, with an ErrBroken error,
//     a kicked malformed transmit chain always breaks the device, and
//     after Broken neither the queues nor the event loop are touched;
//   - Reset leaves nothing registered and exactly the frames the device
//     has not taken in the backend; Close and the rig's teardown leave no
//     file descriptor and no goroutine behind.
func FuzzNetDevice(f *testing.F) {
	vt.FuzzDevice(f, fzNetSeeds(), "", func(t *testing.T, _ string, prog []byte) { fzRunNet(t, prog) })
}

// Harness limits (the guest-physical layout is virtiotest's).
const (
	fzMaxOps = 48
	// fzTxPending bounds the bytes queued on the transmit ring before the
	// harness kicks, so the backend socket never fills: the device would
	// drop frames on EAGAIN, which is not what is checked here.
	fzTxPending = 512 << 10
	fzWait      = 5 * time.Second
)

// Program operations.
const (
	fzOpTx = iota
	fzOpRx
	fzOpHost
	fzOpKick
	fzOpReset
	fzNetOps
)

// fzNetFeatures are the negotiable bits, in the order of the program's
// feature masks; VERSION_1 is always negotiated.
var fzNetFeatures = []uint{virtio.FIndirectDesc, virtio.FEventIdx, FCsum, FGuestCsum, FGuestTSO4, FGuestTSO6,
	FGuestUFO, FHostTSO4, FHostTSO6, FHostUFO, FMrgRxbuf, FStatus, FMAC}

const fzAllFeatures = 1<<13 - 1

func fzNetFeatureBits(mask uint16) uint64 {
	f := uint64(1) << virtio.FVersion1
	for i, b := range fzNetFeatures {
		if mask&(1<<i) != 0 {
			f |= 1 << b
		}
	}
	return f
}

// Transmit frame lengths (the bytes after the header).
const (
	fzTxEmpty  = iota // header only
	fzTxTiny          // under 64 bytes
	fzTxMTU           // under 1515
	fzTxAny           // up to 65535
	fzTxMax           // the most the device sends: MaxFrame with the header
	fzTxBeyond        // more: dropped
	fzTxShort         // a chain shorter than the header: dropped
	fzTxLens
)

// fzTxOp posts a transmit chain: header Hdr and a payload of Len
// (selector, with Val) pattern bytes from Off, kicked unless NoKick.
// Layout: bits 0-1 the header's place (own buffer, merged with the
// payload, split in two, split in three), bits 2-4 payload buffers - 1,
// bit 5 a device-writable buffer, bit 6 a zero-length buffer, bit 7
// indirect (Split's high nibble: the direct buffers before the table).
// Split seeds the cut points; Mal and MV malform the chain.
type fzTxOp struct {
	Hdr           [HeaderSize]byte
	Len           byte
	Val, Off      uint16
	Layout, Split byte
	Mal, MV       byte
	NoKick        bool
}

// fzRxOp posts Count%16+1 receive chains of Size (selector, with Val)
// bytes each, kicked unless NoKick. Layout: bits 0-1 writable buffers - 1, bit 2 a device-readable
// buffer, bit 3 indirect, bit 4 a zero-length writable buffer; Gap: bytes
// left unused before each buffer (low 3 bits), direct buffers before an
// indirect table (high nibble). The malformation goes to the last chain.
type fzRxOp struct {
	Count, Size byte
	Val         uint16
	Layout, Gap byte
	Mal, MV     byte
	NoKick      bool
}

// Receive buffer sizes.
const (
	fzRxZero = iota
	fzRxTiny // 1..15, below the header for most
	fzRxOdd  // under 2048
	fzRxAny  // up to 65535
	fzRxMTU  // 1518
	fzRxBig  // the device's frame buffer: any frame fits
	fzRxSizes
)

// fzHostOp writes Count%4+1 frames of Len (selector) bytes into the
// backend; the first two header bytes are Flags and GSO, the rest comes
// from the pattern at Off.
type fzHostOp struct {
	Len        byte
	Val        uint16
	Flags, GSO byte
	Off        uint16
	Count      byte
}

// Host frame lengths, the vnet header included.
const (
	fzHostEmpty  = iota
	fzHostShort  // 1..11: dropped by the device
	fzHostMTU    // 12..1525
	fzHostAny    // 12..65547
	fzHostMax    // MaxFrame
	fzHostBuf    // the device's frame buffer, the most it reads
	fzHostBeyond // longer: the read truncates it
	fzHostLens
)

func (o fzTxOp) bytes() []byte {
	b := []byte{fzOpTx}
	b = append(b, o.Hdr[:]...)
	b = append(b, o.Len, byte(o.Val), byte(o.Val>>8), byte(o.Off), byte(o.Off>>8), o.Layout, o.Split, o.Mal, o.MV, byte(vt.Bit(o.NoKick)))
	return b
}

func fzDecodeTx(in *vt.Input) fzTxOp {
	var o fzTxOp
	for i := range o.Hdr {
		o.Hdr[i] = in.U8()
	}
	o.Len, o.Val, o.Off = in.U8(), in.U16(), in.U16()
	o.Layout, o.Split, o.Mal, o.MV = in.U8(), in.U8(), in.U8(), in.U8()
	o.NoKick = in.U8()&1 != 0
	return o
}

func (o fzRxOp) bytes() []byte {
	return []byte{fzOpRx, o.Count, o.Size, byte(o.Val), byte(o.Val >> 8), o.Layout, o.Gap, o.Mal, o.MV, byte(vt.Bit(o.NoKick))}
}

func fzDecodeRx(in *vt.Input) fzRxOp {
	var o fzRxOp
	o.Count, o.Size, o.Val = in.U8(), in.U8(), in.U16()
	o.Layout, o.Gap, o.Mal, o.MV = in.U8(), in.U8(), in.U8(), in.U8()
	o.NoKick = in.U8()&1 != 0
	return o
}

func (o fzHostOp) bytes() []byte {
	return []byte{fzOpHost, o.Len, byte(o.Val), byte(o.Val >> 8), o.Flags, o.GSO, byte(o.Off), byte(o.Off >> 8), o.Count}
}

func fzDecodeHost(in *vt.Input) fzHostOp {
	var o fzHostOp
	o.Len, o.Val, o.Flags, o.GSO, o.Off, o.Count = in.U8(), in.U16(), in.U8(), in.U8(), in.U16(), in.U8()
	return o
}

func fzKickOp(q int) []byte { return []byte{fzOpKick, byte(q)} }

func fzResetOp(features uint16) []byte { return []byte{fzOpReset, byte(features), byte(features >> 8)} }

// netFuzz is one input's rig.
type netFuzz struct {
	t        *testing.T
	g        *vt.Shadow
	loop     *eventloop.Loop
	dev      *Net
	peer     int
	kicks    [2]int
	rx, tx   *vt.Ring
	vq       []*virtio.Queue // the device's view of rx and tx
	features uint64
	mrg      bool
	broken   *vt.BrokenLog
	// brokenSeen: the harness has seen Broken in this activation, taken
	// RAM as it was and lets the device write nothing more.
	brokenSeen bool
	// frames the backend sent that the device has not delivered or
	// dropped yet (shorter than the header ones are left out: the device
	// drops them on read), and receive completions not matched yet.
	frames [][]byte
	rxDone []vt.Done
	// want are the expected counters; a device that broke may have
	// counted work it never published (everBroken).
	want       Stats
	everBroken bool
	buf        []byte // backend reads
}

func fzRunNet(t *testing.T, prog []byte) {
	in := &vt.Input{B: prog}
	h := &netFuzz{t: t, g: vt.NewShadow(t), peer: -1, kicks: [2]int{-1, -1}, buf: make([]byte, 2*MaxFrame)}
	defer h.close()
	sp, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	h.peer = sp[1]
	for _, fd := range sp {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_SNDBUF, 1<<20); err != nil {
			t.Fatal(err)
		}
	}
	if h.loop, err = eventloop.New("fuzz-net", eventloop.Poller); err != nil {
		unix.Close(sp[0])
		t.Fatal(err)
	}
	h.dev, err = newNet(Config{ID: "fuzz0", TapFD: -1, MAC: [6]byte{0x52, 0x54, 0, 1, 2, 3}}, h.loop, &Tap{fd: sp[0], name: "fake", fake: true})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range fzNetFeatures {
		if !virtio.HasFeature(h.dev.Features(), b) {
			t.Fatalf("the device does not offer feature %d any more; update fzNetFeatures", b)
		}
	}
	h.activate(fzNetFeatureBits(in.U16()))
	for range fzMaxOps {
		if len(in.B) == 0 {
			break
		}
		switch in.U8() % fzNetOps {
		case fzOpTx:
			h.transmit(fzDecodeTx(in))
		case fzOpRx:
			h.postRx(fzDecodeRx(in))
		case fzOpHost:
			h.hostFrames(fzDecodeHost(in))
		case fzOpKick:
			h.kick(int(in.U8() % 2))
		case fzOpReset:
			h.reactivate(fzNetFeatureBits(in.U16()))
		}
		h.sync()
	}
	h.finish()
}

func (h *netFuzz) activate(features uint64) {
	t := h.t
	h.features, h.mrg = features, virtio.HasFeature(features, FMrgRxbuf)
	h.rx, h.tx = vt.NewRing(h.g, vt.FuzzRxRing), vt.NewRing(h.g, vt.FuzzTxRing)
	var qs []*virtio.Queue
	for i, q := range []*vt.Ring{h.rx, h.tx} {
		qs = append(qs, q.Activate(features))
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		h.kicks[i] = fd
		h.g.Allow(q.Used, q.UsedLen())
	}
	h.broken, h.brokenSeen, h.vq = &vt.BrokenLog{}, false, qs
	err := h.dev.Activate(virtio.Activation{Mem: h.g.Mem, Features: features, Queues: qs, Kicks: h.kicks[:],
		Interrupt: vt.NoIRQ{}, Broken: h.broken.Report})
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
	if got, want := h.dev.tap.offload, offloads(features); got != want {
		t.Fatalf("tap offloads %#x after activation with features %#x, want %#x", got, features, want)
	}
}

func (h *netFuzz) kick(q int) {
	if q == RxQueue {
		h.rx.Kick()
	} else {
		h.tx.Kick()
	}
	if _, err := unix.Write(h.kicks[q], []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		h.t.Fatal(err)
	}
}

// transmit posts one transmit chain (and kicks unless told not to).
func (h *netFuzz) transmit(o fzTxOp) {
	hdr := o.Hdr[:]
	payloadLen := 0
	switch o.Len % fzTxLens {
	case fzTxEmpty:
	case fzTxTiny:
		payloadLen = int(o.Val % 64)
	case fzTxMTU:
		payloadLen = int(o.Val % 1515)
	case fzTxAny:
		payloadLen = int(o.Val)
	case fzTxMax:
		payloadLen = MaxFrame - HeaderSize
	case fzTxBeyond:
		payloadLen = MaxFrame - HeaderSize + 1 + int(o.Val%4096)
	case fzTxShort:
		hdr = hdr[:o.Val%HeaderSize]
	}
	poff := int(o.Off) % (vt.FuzzPatternLen - payloadLen + 1)
	payload := vt.PatternBytes[poff : poff+payloadLen]
	if !h.brokenSeen && h.pendingTx()+len(hdr)+len(payload) > fzTxPending {
		h.kick(TxQueue) // let the device send what is queued first
		h.sync()
	}
	l := vt.TxLayout{Layout: o.Layout, Split: o.Split, Off: o.Off, MV: o.MV}
	if h.tx.PostPacket(hdr, payload, poff, l, vt.MalKind(o.Mal), h.features) == nil {
		return // the ring or the scratch area is full
	}
	if !o.NoKick {
		h.kick(TxQueue)
	}
}

// pendingTx is the bytes of the well-formed chains on the transmit ring.
func (h *netFuzz) pendingTx() int {
	n := 0
	for _, c := range h.tx.Order {
		if !c.Malformed {
			n += len(c.Data)
		}
	}
	return n
}

// postRx posts receive chains.
func (h *netFuzz) postRx(o fzRxOp) {
	var size int
	switch o.Size % fzRxSizes {
	case fzRxZero:
	case fzRxTiny:
		size = 1 + int(o.Val%15)
	case fzRxOdd:
		size = int(o.Val % 2048)
	case fzRxAny:
		size = int(o.Val)
	case fzRxMTU:
		size = 1518
	case fzRxBig:
		size = len(h.dev.rxBuf)
	}
	count := 1 + int(o.Count%16)
	h.rx.PostRx(size, count, vt.FuzzRAM, vt.RxLayout{Layout: o.Layout, Gap: o.Gap, Mal: o.Mal, MV: o.MV}, h.features, h.brokenSeen)
	if !o.NoKick {
		h.kick(RxQueue)
	}
}

// hostFrames writes frames into the backend.
func (h *netFuzz) hostFrames(o fzHostOp) {
	var n int
	switch o.Len % fzHostLens {
	case fzHostEmpty:
	case fzHostShort:
		n = 1 + int(o.Val%(HeaderSize-1))
	case fzHostMTU:
		n = HeaderSize + int(o.Val%1514)
	case fzHostAny:
		n = HeaderSize + int(o.Val)
	case fzHostMax:
		n = MaxFrame
	case fzHostBuf:
		n = len(h.dev.rxBuf)
	case fzHostBeyond:
		n = len(h.dev.rxBuf) + 1 + int(o.Val%4096)
	}
	for i := range 1 + int(o.Count%4) {
		off := (int(o.Off) + 977*i) % (vt.FuzzPatternLen - n + 1)
		f := append([]byte(nil), vt.PatternBytes[off:off+n]...)
		if n >= 2 {
			f[0], f[1] = o.Flags, o.GSO
		}
		if _, err := unix.Write(h.peer, f); err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.ENOBUFS) {
				continue // the backend is full: the frame was never sent
			}
			h.t.Fatalf("write a %d-byte frame into the backend: %v", n, err)
		}
		// A longer record is truncated by the device's read.
		if f = f[:min(n, len(h.dev.rxBuf))]; len(f) >= HeaderSize {
			h.frames = append(h.frames, f)
		}
	}
}

// quiesce returns once the device has nothing left to do on the loop:
// none of its registered descriptors is readable.
func (h *netFuzz) quiesce() {
	t := h.t
	deadline := time.Now().Add(fzWait)
	for {
		var busy, spin bool
		h.loop.Call(func() {
			d := h.dev
			if d.act == nil {
				return
			}
			tap := d.tapInLoop && vt.Readable(d.tap.Fd())
			busy = tap || vt.Readable(d.rxKick) || vt.Readable(d.txKick)
			spin = tap && d.stopped
		})
		if spin {
			t.Fatal("the broken device keeps the readable backend in the event loop: the loop spins on it")
		}
		if !busy {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device still has work on the event loop after %v", fzWait)
		}
	}
}

// sync waits for the device and checks what it did.
func (h *netFuzz) sync() {
	t := h.t
	h.quiesce()
	for _, d := range h.tx.Collect() {
		if d.Len != 0 {
			t.Fatalf("transmit chain %d completed with %d bytes written, want 0", d.C.Head, d.Len)
		}
		h.expectTx(d.C)
	}
	// A device that breaks stops before publishing what it already sent:
	// those frames belong to the next chains it does not drop.
	next := 0
	for {
		n, err := unix.Read(h.peer, h.buf)
		if err != nil {
			break
		}
		for next < len(h.tx.Order) && (h.tx.Order[next].Malformed || h.txDrops(h.tx.Order[next])) {
			next++
		}
		if h.broken.Get() == nil || next >= len(h.tx.Order) || !bytes.Equal(h.buf[:n], h.tx.Order[next].Data) {
			t.Fatalf("the backend got an unexpected %d-byte frame", n)
		}
		next++
	}
	for _, d := range h.rx.Collect() {
		if uint64(d.Len) > d.C.Cap {
			t.Fatalf("receive chain %d completed with %d bytes, but it holds %d", d.C.Head, d.Len, d.C.Cap)
		}
		h.rxDone = append(h.rxDone, d)
	}
	h.matchRx()
	broken := h.broken.Check(t, h.rx, h.tx)
	if broken && !h.brokenSeen {
		// From now on the device may not touch guest memory at all.
		h.brokenSeen, h.everBroken = true, true
		h.g.Checkpoint("after Broken")
	}
	if !broken && h.tx.KickedBad {
		t.Fatal("a kicked malformed transmit ring did not break the device")
	}
}

// txDrops reports whether the device drops well-formed transmit chain c
// instead of sending it, as transmit documents.
func (h *netFuzz) txDrops(c *vt.RingChain) bool {
	if len(c.Data) > MaxFrame || len(c.Data) < HeaderSize {
		return true
	}
	hd, _ := ParseHeader(c.Data)
	return hd.CheckTx(h.features, len(c.Data)-HeaderSize) != nil
}

// expectTx checks what the backend got for completed chain c.
func (h *netFuzz) expectTx(c *vt.RingChain) {
	t := h.t
	if h.txDrops(c) {
		h.want.TxDropped++
		return
	}
	h.want.TxFrames++
	h.want.TxBytes += uint64(len(c.Data) - HeaderSize)
	n, err := unix.Read(h.peer, h.buf)
	if err != nil {
		t.Fatalf("transmit chain %d (%d bytes) completed, but the backend got nothing: %v", c.Head, len(c.Data), err)
	}
	if !bytes.Equal(h.buf[:n], c.Data) {
		t.Fatalf("transmit chain %d: the backend got %d bytes, want the chain's %d readable bytes (header % x)", c.Head, n, len(c.Data), c.Data[:HeaderSize])
	}
}

// fzWithBuffers is frame f with num_buffers nb.
func fzWithBuffers(f []byte, nb uint16) []byte {
	w := append([]byte(nil), f...)
	binary.LittleEndian.PutUint16(w[10:], nb)
	return w
}

// matchRx matches receive completions with the backend's frames, in
// order, and takes the buffers' contents as final.
func (h *netFuzz) matchRx() {
	t := h.t
	for len(h.rxDone) > 0 {
		d := h.rxDone[0]
		if len(h.frames) == 0 {
			t.Fatalf("receive chain %d completed with %d bytes, but no frame was sent", d.C.Head, d.Len)
		}
		f := h.frames[0]
		nb := 1
		switch {
		case !h.mrg && d.Len == 0:
			if uint64(len(f)) <= d.C.Cap {
				t.Fatalf("a %d-byte frame was dropped though the %d-byte receive chain %d holds it", len(f), d.C.Cap, d.C.Head)
			}
			h.want.RxDropped++
		case !h.mrg:
			if got := h.g.Written(d.C, d.Len); !bytes.Equal(got, fzWithBuffers(f, 1)) {
				t.Fatalf("receive chain %d got %d bytes, want the %d-byte frame with num_buffers 1", d.C.Head, d.Len, len(f))
			}
			h.want.RxFrames++
			h.want.RxBytes += uint64(len(f) - HeaderSize)
		case d.C.Cap < HeaderSize:
			if d.Len != 0 {
				t.Fatalf("receive chain %d of %d bytes, too small for the header, completed with %d", d.C.Head, d.C.Cap, d.Len)
			}
			h.want.RxDropped++
		default:
			if d.Len < HeaderSize {
				t.Fatalf("receive chain %d starts a frame with %d bytes, less than the header", d.C.Head, d.Len)
			}
			first := h.g.Written(d.C, d.Len)
			nb = int(binary.LittleEndian.Uint16(first[10:]))
			if nb == 0 || nb > len(h.rxDone) {
				t.Fatalf("num_buffers %d with %d receive chains completed", nb, len(h.rxDone))
			}
			var got []byte
			for _, e := range h.rxDone[:nb] {
				got = append(got, h.g.Written(e.C, e.Len)...)
			}
			if !bytes.Equal(got, fzWithBuffers(f, uint16(nb))) {
				t.Fatalf("a %d-byte frame over %d receive chains (%d bytes) differs from the one sent", len(f), nb, len(got))
			}
			h.want.RxFrames++
			h.want.RxBytes += uint64(len(f) - HeaderSize)
		}
		for _, e := range h.rxDone[:nb] {
			for _, p := range e.C.Pieces {
				if p.Write {
					h.g.Settle(p.Addr, uint64(p.Len))
				}
			}
		}
		h.rxDone, h.frames = h.rxDone[nb:], h.frames[1:]
	}
}

// reset resets the device and checks that it let go of everything.
func (h *netFuzz) reset() {
	t := h.t
	var held bool
	h.loop.Call(func() { held = h.dev.rxLen > 0 })
	h.dev.Reset()
	h.loop.Call(func() {
		d := h.dev
		if d.act != nil || d.tapInLoop || d.rxKick >= 0 || d.txKick >= 0 || d.rxLen != 0 {
			t.Errorf("after Reset: activation %v, tap polled %v, kicks %d %d, held frame %d bytes", d.act != nil, d.tapInLoop, d.rxKick, d.txKick, d.rxLen)
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	if h.dev.tap.offload != 0 {
		t.Fatalf("tap offloads %#x after Reset, want 0", h.dev.tap.offload)
	}
	h.g.Checkpoint("after Reset")
	broken := len(h.broken.Get()) > 0
	for i, q := range []*vt.Ring{h.rx, h.tx} {
		if k := h.vq[i].NextAvail() - q.UsedSeen; k != 0 && !broken {
			t.Fatalf("the device took %d chains of queue %d it never completed", k, i)
		}
	}
	// The frames the device has not read are in the backend: take them
	// out and back in. Unless the device broke, which stops it mid-batch
	// with frames taken and not published, that is what the model has
	// left after the frame the device held, which goes with the queues.
	var records, frames [][]byte
	for {
		n, err := unix.Read(h.dev.tap.Fd(), h.buf)
		if err != nil {
			break
		}
		f := append([]byte(nil), h.buf[:n]...)
		records = append(records, f)
		if f = f[:min(n, len(h.dev.rxBuf))]; len(f) >= HeaderSize {
			frames = append(frames, f)
		}
	}
	if !broken {
		model := h.frames
		if held {
			if len(model) == 0 {
				t.Fatal("the device held a frame nobody sent")
			}
			model = model[1:]
		}
		if len(model) != len(frames) {
			t.Fatalf("%d frames left in the backend at Reset, want %d", len(frames), len(model))
		}
		for i := range model {
			if !bytes.Equal(model[i], frames[i]) {
				t.Fatalf("frame %d left in the backend at Reset is not the one the model has", i)
			}
		}
	}
	h.frames = frames
	for _, f := range records {
		if _, err := unix.Write(h.peer, f); err != nil {
			t.Fatalf("put a %d-byte frame back into the backend: %v", len(f), err)
		}
	}
	for i, fd := range h.kicks {
		unix.Close(fd)
		h.kicks[i] = -1
	}
}

// reactivate resets the device and activates it again with features on
// fresh rings.
func (h *netFuzz) reactivate(features uint64) {
	h.reset()
	zero := make([]byte, 0x3000)
	h.g.Write(vt.FuzzRxRing, zero)
	h.g.Write(vt.FuzzTxRing, zero)
	h.activate(features)
}

// finish kicks both queues and checks that the device is done: every
// transmit chain sent and a frame still waiting only for want of
// buffers. Then it checks the counters, and Reset.
func (h *netFuzz) finish() {
	t := h.t
	h.kick(RxQueue)
	h.kick(TxQueue)
	h.sync()
	if !h.brokenSeen {
		if len(h.tx.Order) > 0 {
			t.Fatalf("%d transmit chains left after a kick", len(h.tx.Order))
		}
		if len(h.frames) > 0 {
			h.checkWaiting(len(h.frames[0]))
		}
	}
	if s := h.dev.Stats(); !h.everBroken && (s.TxFrames != h.want.TxFrames || s.TxBytes != h.want.TxBytes ||
		s.TxDropped != h.want.TxDropped || s.RxFrames != h.want.RxFrames || s.RxBytes != h.want.RxBytes) {
		t.Fatalf("stats %+v, want %+v (receive drops not counted)", s, h.want)
	}
	h.reset()
}

// checkWaiting fails unless a frame of n bytes may wait: the device would
// drop it into or deliver it to the receive chains posted.
func (h *netFuzz) checkWaiting(n int) {
	t := h.t
	if h.rx.Dead {
		t.Fatalf("a %d-byte frame waits on a receive ring whose avail.idx is corrupt: taking a buffer must break the device", n)
	}
	sum := uint64(0)
	for i, c := range h.rx.Order {
		switch {
		case c.Malformed:
			t.Fatalf("a %d-byte frame waits with malformed receive chain %d next in line: taking it must break the device", n, i)
		case !h.mrg:
			t.Fatalf("a %d-byte frame waits with receive chain %d (%d bytes) posted", n, c.Head, c.Cap)
		case i == 0 && c.Cap < HeaderSize:
			t.Fatalf("a %d-byte frame waits with a %d-byte receive chain first, which the device drops it into", n, c.Cap)
		}
		if sum += c.Cap; sum >= uint64(n) {
			t.Fatalf("a %d-byte frame waits with %d bytes in %d receive chains posted", n, sum, i+1)
		}
	}
}

// close tears the rig down: the device (its tap with it), the loop and
// the harness's descriptors.
func (h *netFuzz) close() {
	if h.dev != nil {
		h.dev.Close()
	}
	if h.loop != nil {
		h.loop.Close()
	}
	for _, fd := range append(h.kicks[:], h.peer) {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
	h.g.Release()
}

// fzHdr encodes a transmit header for the seeds.
func fzHdr(h Header) [HeaderSize]byte {
	var b [HeaderSize]byte
	h.Put(b[:])
	return b
}

func fzProg(features uint16, ops ...[]byte) []byte {
	b := []byte{byte(features), byte(features >> 8)}
	for _, o := range ops {
		b = append(b, o...)
	}
	return b
}

// fzNetSeeds are the corpus' starting programs: the unit tests' scenarios
// and one of each layout, length and malformation class.
func fzNetSeeds() [][]byte {
	const (
		noMrg      = fzAllFeatures &^ (1 << 10)
		noOffloads = 1<<0 | 1<<1 | 1<<10 // indirect, event idx, mergeable
		plainRing  = fzAllFeatures &^ 3  // no indirect, no event idx
	)
	csum := fzHdr(Header{Flags: HdrFNeedsCsum, CsumStart: 34, CsumOffset: 16})
	tso4 := fzHdr(Header{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16})
	ufo := fzHdr(Header{Flags: HdrFNeedsCsum, GSOType: GSOUDP, GSOSize: 1472, CsumStart: 34, CsumOffset: 6})
	return [][]byte{
		// TestTransmit: header and payload apart, the payload in two
		// buffers; TSO without gso_size (dropped); a chain shorter than
		// the header (dropped).
		fzProg(fzAllFeatures,
			fzTxOp{Hdr: csum, Len: fzTxAny, Val: 3000, Layout: 1 << 2}.bytes(),
			fzTxOp{Hdr: fzHdr(Header{Flags: HdrFNeedsCsum, GSOType: GSOTCPv4, CsumStart: 34, CsumOffset: 16}), Len: fzTxMTU, Val: 100}.bytes(),
			fzTxOp{Len: fzTxShort, Val: 3}.bytes()),
		// Transmit layouts: the header merged with the payload, split in
		// two and in three, indirect with direct buffers first, a
		// writable and a zero-length buffer; maximal and oversized
		// frames; offloads the driver did not negotiate.
		fzProg(fzAllFeatures,
			fzTxOp{Hdr: tso4, Len: fzTxMax, Layout: 1 | 7<<2, Split: 0x35}.bytes(),
			fzTxOp{Hdr: csum, Len: fzTxMTU, Val: 1400, Layout: 2 | 3<<2 | 1<<5, Split: 5, MV: 40}.bytes(),
			fzTxOp{Hdr: ufo, Len: fzTxAny, Val: 9000, Layout: 3 | 2<<2 | 1<<6 | 1<<7, Split: 0x27}.bytes(),
			fzTxOp{Len: fzTxBeyond, Val: 1, Layout: 4 << 2}.bytes(),
			fzTxOp{Len: fzTxEmpty}.bytes(),
			fzTxOp{Len: fzTxTiny, Val: 1, Layout: 1<<7 | 3<<2, NoKick: true}.bytes(),
			fzTxOp{Hdr: fzHdr(Header{Flags: HdrFDataValid}), Len: fzTxTiny, Val: 20}.bytes()),
		fzProg(noOffloads,
			fzTxOp{Hdr: tso4, Len: fzTxAny, Val: 200}.bytes(),
			fzTxOp{Hdr: csum, Len: fzTxMTU, Val: 200}.bytes(),
			fzTxOp{Len: fzTxMTU, Val: 60}.bytes()),
		// TestReceiveMergeable: three 1500-byte buffers for a 3000-byte
		// payload, then a small frame.
		fzProg(fzAllFeatures,
			fzRxOp{Count: 3, Size: fzRxAny, Val: 1500}.bytes(),
			fzHostOp{Len: fzHostAny, Val: 3000, Flags: HdrFDataValid}.bytes(),
			fzHostOp{Len: fzHostMTU, Val: 60}.bytes()),
		// TestReceiveBackPressure: frames before buffers, then too few
		// buffers, then enough.
		fzProg(fzAllFeatures,
			fzHostOp{Len: fzHostMTU, Val: 100}.bytes(),
			fzHostOp{Len: fzHostAny, Val: 2500}.bytes(),
			fzHostOp{Len: fzHostMTU, Val: 50}.bytes(),
			fzRxOp{Size: fzRxAny, Val: 1500}.bytes(),
			fzRxOp{Count: 2, Size: fzRxAny, Val: 1500}.bytes()),
		// TestReceiveWithoutMergeable: one frame fits, a bigger one is
		// dropped into the next buffer.
		fzProg(noMrg,
			fzRxOp{Count: 1, Size: fzRxAny, Val: 2048}.bytes(),
			fzHostOp{Len: fzHostAny, Val: 1000}.bytes(),
			fzHostOp{Len: fzHostAny, Val: 3000}.bytes()),
		// Maximal frames over 1518-byte mergeable buffers, a truncated
		// one into a big buffer, empty and short frames (dropped).
		fzProg(fzAllFeatures,
			fzRxOp{Count: 15, Size: fzRxMTU}.bytes(),
			fzRxOp{Count: 15, Size: fzRxMTU}.bytes(),
			fzRxOp{Count: 15, Size: fzRxMTU, Layout: 1 << 3, Gap: 0x33}.bytes(),
			fzHostOp{Len: fzHostMax}.bytes(),
			fzHostOp{Len: fzHostEmpty}.bytes(),
			fzHostOp{Len: fzHostShort, Val: 5}.bytes(),
			fzRxOp{Size: fzRxBig}.bytes(),
			fzHostOp{Len: fzHostBeyond, Val: 100}.bytes(),
			fzHostOp{Len: fzHostBuf}.bytes()),
		// Odd receive layouts: buffers too small for the header, split
		// buffers with gaps, a readable buffer and a zero-length one in
		// the chain, indirect; without and with mergeable buffers.
		fzProg(fzAllFeatures,
			fzRxOp{Count: 1, Size: fzRxTiny, Val: 7}.bytes(),
			fzRxOp{Count: 4, Size: fzRxOdd, Val: 333, Layout: 3 | 1<<2 | 1<<4, Gap: 5, MV: 1}.bytes(),
			fzRxOp{Count: 2, Size: fzRxZero}.bytes(),
			fzRxOp{Count: 3, Size: fzRxOdd, Val: 1001, Layout: 2 | 1<<3, Gap: 0x13}.bytes(),
			fzHostOp{Len: fzHostMTU, Val: 1000, Count: 3}.bytes(),
			fzHostOp{Len: fzHostAny, Val: 5000, Count: 1}.bytes()),
		fzProg(noMrg,
			fzRxOp{Count: 2, Size: fzRxTiny, Val: 11}.bytes(),
			fzRxOp{Count: 3, Size: fzRxOdd, Val: 1600, Layout: 3 | 1<<2 | 1<<4 | 1<<3, Gap: 0x16}.bytes(),
			fzHostOp{Len: fzHostMTU, Val: 1000, Count: 3}.bytes()),
		// Buffers posted without a kick while the backend is paused,
		// then the kick.
		fzProg(plainRing,
			fzHostOp{Len: fzHostMTU, Val: 700, Count: 2}.bytes(),
			fzRxOp{Count: 1, Size: fzRxMTU, NoKick: true}.bytes(),
			fzHostOp{Len: fzHostMTU, Val: 70}.bytes(),
			fzKickOp(RxQueue),
			fzTxOp{Len: fzTxMTU, Val: 90, NoKick: true}.bytes(),
			fzKickOp(TxQueue)),
		// Reset with a frame held for buffers, then again without
		// mergeable buffers.
		fzProg(fzAllFeatures,
			fzHostOp{Len: fzHostAny, Val: 4000, Count: 1}.bytes(),
			fzRxOp{Size: fzRxMTU}.bytes(),
			fzResetOp(noMrg),
			fzRxOp{Count: 2, Size: fzRxAny, Val: 5000}.bytes(),
			fzTxOp{Hdr: csum, Len: fzTxMTU, Val: 500}.bytes()),
		// TestBrokenRing: a receive buffer outside RAM breaks the device
		// on the first frame; frames keep arriving.
		fzProg(fzAllFeatures,
			fzRxOp{Size: fzRxMTU, Mal: vt.MalByte(vt.MalOutside)}.bytes(),
			fzHostOp{Len: fzHostMTU, Val: 100, Count: 2}.bytes(),
			fzRxOp{Size: fzRxMTU}.bytes(),
			fzHostOp{Len: fzHostMTU, Val: 100}.bytes()),
		// A device that breaks mid-batch delivered frames it never
		// completes; it is reset and used again.
		fzProg(fzAllFeatures,
			fzHostOp{Len: fzHostMTU, Val: 1000, Count: 3}.bytes(),
			fzRxOp{Count: 2, Size: fzRxMTU, Mal: vt.MalByte(vt.MalHead)}.bytes(),
			fzResetOp(fzAllFeatures),
			fzRxOp{Count: 3, Size: fzRxMTU}.bytes()),
		// Malformed transmit rings, one class each.
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Layout: 2 << 2, Mal: vt.MalByte(vt.MalLoop)}.bytes()),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Layout: 2 << 2, Mal: vt.MalByte(vt.MalNested)}.bytes()),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Mal: vt.MalByte(vt.MalStraddle), MV: 1}.bytes()),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Mal: vt.MalByte(vt.MalNext)}.bytes()),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Mal: vt.MalByte(vt.MalTableLen)}.bytes()),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Mal: vt.MalByte(vt.MalIndirectNext)}.bytes()),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Mal: vt.MalByte(vt.MalTableOutside)}.bytes()),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Mal: vt.MalByte(vt.MalTooLong)}.bytes()),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60}.bytes(), fzTxOp{Len: fzTxMTU, Val: 60, Mal: vt.MalByte(vt.MalHead), NoKick: true}.bytes(), fzKickOp(TxQueue)),
		fzProg(fzAllFeatures, fzTxOp{Len: fzTxMTU, Val: 60, Mal: vt.MalByte(vt.MalJump)}.bytes()),
		fzProg(plainRing, fzTxOp{Len: fzTxMTU, Val: 60, Layout: 1 << 7}.bytes()), // indirect not negotiated
		fzProg(fzAllFeatures,
			fzRxOp{Count: 2, Size: fzRxOdd, Val: 700, Mal: vt.MalByte(vt.MalLoop), Layout: 1}.bytes(),
			fzHostOp{Len: fzHostMTU, Val: 1400, Count: 1}.bytes()),
	}
}
