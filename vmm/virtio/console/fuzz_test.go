package console

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"

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
//     left noticed, even while its input waits for the guest to make room;
//   - Broken is called only for a malformed ring, with an ErrBroken error,
//     a kicked malformed transmit chain always breaks the device, and
//     after Broken guest memory is not touched;
//   - Reset leaves nothing registered and, unless the device broke, no
//     chain taken and not completed; Close removes the socket file and
//     leaves no file descriptor and no goroutine behind.
func FuzzConsoleDevice(f *testing.F) {
	vt.FuzzDevice(f, fzConsoleSeeds(), "c", fzRunConsole)
}

// Harness limits (the guest-physical layout is virtiotest's).
const (
	fzMaxOps = 48
	// fzTxBudget bounds the bytes the guest transmits per program (a
	// chain may alias the pattern up to past maxChain).
	fzTxBudget = 2 << 20
	fzWait     = 5 * time.Second
)

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

func fzDecodeTx(in *vt.Input) fzTxOp {
	var o fzTxOp
	o.Count, o.Size, o.Val, o.Off = in.U8(), in.U8(), in.U16(), in.U16()
	o.Layout, o.Split, o.Mal, o.MV = in.U8(), in.U8(), in.U8(), in.U8()
	return o
}

func (o fzRxOp) bytes() []byte {
	return []byte{fzOpRx, o.Count, o.Size, byte(o.Val), byte(o.Val >> 8), o.Layout, o.Gap, o.Mal, o.MV}
}

func fzDecodeRx(in *vt.Input) fzRxOp {
	var o fzRxOp
	o.Count, o.Size, o.Val = in.U8(), in.U8(), in.U16()
	o.Layout, o.Gap, o.Mal, o.MV = in.U8(), in.U8(), in.U8(), in.U8()
	return o
}

func (o fzWriteOp) bytes() []byte {
	return []byte{fzOpWrite, o.Len, byte(o.Val), byte(o.Val >> 8), byte(o.Off), byte(o.Off >> 8)}
}

func fzDecodeWrite(in *vt.Input) fzWriteOp {
	var o fzWriteOp
	o.Len, o.Val, o.Off = in.U8(), in.U16(), in.U16()
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
	g          *vt.Shadow
	loop       *eventloop.Loop
	dev        *Console
	path       string
	kicks      [2]int
	rx, tx     *vt.Ring
	vq         []*virtio.Queue // the device's view of rx and tx
	features   uint64
	broken     *vt.BrokenLog
	brokenSeen bool
	sess       *fzSession // the latest client the device accepted
	guestIn    []byte     // what the guest received, in order
	txTotal    int
	buf        []byte
}

func fzRunConsole(t *testing.T, path string, prog []byte) {
	in := &vt.Input{B: prog}
	h := &conFuzz{t: t, g: vt.NewShadow(t), path: path, kicks: [2]int{-1, -1}, buf: make([]byte, 128<<10)}
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
		if len(in.B) == 0 {
			break
		}
		switch in.U8() % fzConOps {
		case fzOpTx:
			h.transmit(fzDecodeTx(in))
		case fzOpRx:
			h.postRx(fzDecodeRx(in))
		case fzOpConnect:
			h.connect()
		case fzOpWrite:
			h.write(fzDecodeWrite(in))
		case fzOpRead:
			h.read(int(in.U16()))
		case fzOpDisconnect:
			h.disconnect(in.U8() % fzDisModes)
		case fzOpKick:
			h.kick(int(in.U8() % 2))
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
	h.rx, h.tx = vt.NewRing(h.g, vt.FuzzRxRing), vt.NewRing(h.g, vt.FuzzTxRing)
	var qs []*virtio.Queue
	for i, q := range []*vt.Ring{h.rx, h.tx} {
		qs = append(qs, q.Activate(h.features))
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		h.kicks[i] = fd
		h.g.Allow(q.Used, q.UsedLen())
	}
	h.broken, h.brokenSeen, h.vq = &vt.BrokenLog{}, false, qs
	err := h.dev.Activate(virtio.Activation{Mem: h.g.Mem, Features: h.features, Queues: qs, Kicks: h.kicks[:],
		Interrupt: vt.NoIRQ{}, Broken: h.broken.Report})
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
}

func (h *conFuzz) kick(q int) {
	if q == RxQueue {
		h.rx.Kick()
	} else {
		h.tx.Kick()
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
		cuts := vt.Cut(size, k, uint32(o.Split)<<16|uint32(o.Off)+uint32(i))
		if size > 0xffff {
			cuts = vt.Cut(size, k, 0)
		}
		var pieces []vt.Piece
		data := make([]byte, 0, size)
		for j := 1; j < len(cuts); j++ {
			n := cuts[j] - cuts[j-1]
			off := (int(o.Off) + 7919*(i+j)) % (vt.FuzzPatternLen - n + 1)
			pieces = append(pieces, vt.Piece{Addr: uint64(vt.FuzzPattern + off), Len: uint32(n)})
			data = append(data, vt.PatternBytes[off:off+n]...)
		}
		if o.Layout&(1<<3) != 0 { // the device must neither read nor write it
			a, ok := h.g.Alloc(&h.g.Scratch, vt.FuzzRxHeap, 256, 1)
			if !ok {
				break
			}
			at := int(o.Split) % (len(pieces) + 1)
			pieces = append(pieces[:at], append([]vt.Piece{{Addr: a, Len: 1 + uint32(o.MV), Write: true}}, pieces[at:]...)...)
		}
		if o.Layout&(1<<4) != 0 {
			at := int(o.Off) % (len(pieces) + 1)
			pieces = append(pieces[:at], append([]vt.Piece{{Addr: vt.FuzzPattern}}, pieces[at:]...)...)
		}
		mal := vt.MalNone
		if i == count-1 {
			mal = vt.MalKind(o.Mal)
		}
		c := h.tx.Post(pieces, o.Layout&(1<<5) != 0, int(o.Split>>4), mal, o.MV, h.features)
		if c == nil {
			break
		}
		c.Data = data
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
	h.rx.PostRx(size, count, vt.FuzzRAM, vt.RxLayout{Layout: o.Layout, Gap: o.Gap, Mal: o.Mal, MV: o.MV}, h.features, h.brokenSeen)
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
		vt.Pause(i)
	}
}

func (h *conFuzz) dial() int { return vt.DialUnix(h.t, h.path, fzWait) }

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
	off := int(o.Off) % (vt.FuzzPatternLen - n + 1)
	k, err := unix.Write(s.fd, vt.PatternBytes[off:off+n])
	if err != nil && !errors.Is(err, unix.EAGAIN) {
		h.t.Fatalf("client write: %v", err)
	}
	s.sent = append(s.sent, vt.PatternBytes[off:off+max(k, 0)]...)
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
		// The device hangs up on end of input, within hupPoll when its
		// reader waits for the guest to make room (the rest stays unread).
		h.poll("the console hangs up on a half-closed client", func() bool { return h.read(0) })
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
		return (len(h.tx.Order) == 0 || h.brokenSeen) && len(s.got) == len(s.want)
	})
	if !bytes.Equal(s.got, s.want) {
		h.t.Fatalf("the client read %d bytes, not the %d the guest sent", len(s.got), len(s.want))
	}
}

// collect takes the completions; c.mu is held, so the device is not in
// the middle of a batch and what the client read is accounted for.
func (h *conFuzz) collect() {
	t := h.t
	for _, d := range h.tx.Collect() {
		if d.Len != 0 {
			t.Fatalf("transmit chain %d completed with %d bytes written, want 0", d.C.Head, d.Len)
		}
		// Chains the device completes while the harness has the client
		// (even half-closed, when the device may already have dropped it
		// and discarded the rest) are for it.
		if s := h.sess; s != nil && s.fd >= 0 && len(d.C.Data) <= maxChain {
			s.want = append(s.want, d.C.Data...)
		}
	}
	for _, d := range h.rx.Collect() {
		if uint64(d.Len) > d.C.Cap {
			t.Fatalf("receive chain %d completed with %d bytes, but it holds %d", d.C.Head, d.Len, d.C.Cap)
		}
		h.guestIn = append(h.guestIn, h.g.Written(d.C, d.Len)...)
		for _, p := range d.C.Pieces {
			if p.Write {
				h.g.Settle(p.Addr, uint64(p.Len))
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
	txDone := len(h.tx.Order) == 0 && !h.tx.KickedBad
	if next := h.tx.Order; len(next) > 0 && !next[0].Malformed && !h.tx.Dead {
		size := len(next[0].Data)
		txDone = s != nil && s.fd >= 0 && c.client == srv && out > 0 && size <= maxChain && out+size > bufMax
	}
	// Receive: the client's bytes all in the guest, or no buffers left,
	// or the client gone and nothing buffered from it.
	rxDone := got == sent || (len(h.rx.Order) == 0 && !h.rx.Dead) || (c.client != srv && in == 0)
	// A closed client is dropped, also while the device's reader holds
	// its input until the guest makes room.
	hungUp := s == nil || (s.fd >= 0 && !s.half) || c.client != srv
	// A broken device processes nothing more; its clients come and go.
	broken := len(h.broken.Get()) > 0
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
				fzWait, len(h.tx.Order), h.tx.KickedBad, len(h.rx.Order), c != nil, left, in, out, h.broken.Get())
		}
		vt.Pause(i)
	}
	h.observeBroken()
	if s := h.sess; s != nil && !bytes.HasPrefix(s.want, s.got) {
		h.t.Fatalf("the client read %d bytes that are not what the guest sent (%d bytes)", len(s.got), len(s.want))
	}
}

// observeBroken checks a device that broke and, the first time, accounts
// for what it did before.
func (h *conFuzz) observeBroken() {
	if h.broken.Check(h.t, h.rx, h.tx) && !h.brokenSeen {
		h.brokenSeen = true
		h.tookUnpublished()
		// From now on the device may not touch guest memory at all.
		h.g.Checkpoint("after Broken")
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
			if len(ch.Data) <= maxChain {
				s.want = append(s.want, ch.Data...)
			}
		}
	}
	for _, ch := range h.unpublished(RxQueue) {
		h.guestIn = append(h.guestIn, h.g.Written(ch, uint32(ch.Cap))...)
	}
	h.checkGuestIn()
}

// unpublished returns the chains of queue i the device took without
// publishing their completions. Only the queues of a broken or reset
// device may be read.
func (h *conFuzz) unpublished(i int) []*vt.RingChain {
	q := []*vt.Ring{h.rx, h.tx}[i]
	k := int(h.vq[i].NextAvail() - q.UsedSeen)
	if k > len(q.Order) {
		h.t.Fatalf("the device took %d chains of %d posted on queue %d", k, len(q.Order), i)
	}
	return q.Order[:k]
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
	h.g.Checkpoint("after Reset")
	for i, fd := range h.kicks {
		unix.Close(fd)
		h.kicks[i] = -1
	}
	zero := make([]byte, 0x3000)
	h.g.Write(vt.FuzzRxRing, zero)
	h.g.Write(vt.FuzzTxRing, zero)
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
	h.g.Release()
}

// fzConsoleSeeds are the corpus' starting programs: the unit tests'
// scenarios, back-pressure both ways, the client's ways to leave, odd
// layouts and one of each malformation class.
func fzConsoleSeeds() [][]byte {
	return [][]byte{
		// TestRoundTripAndReconnect: output without a client is lost; a
		// round trip; a second client refused; reconnect.
		vt.Prog(
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
		vt.Prog(
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
		vt.Prog(
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
		vt.Prog(
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
		vt.Prog(
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
		vt.Prog(
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
		vt.Prog(
			fzConnectOp(),
			fzRxOp{Size: fzRxOdd, Val: 10, Mal: vt.MalByte(vt.MalOutside)}.bytes(),
			fzWriteOp{Len: fzWrTiny, Val: 5}.bytes(),
			fzWriteOp{Len: fzWrTiny, Val: 5}.bytes(),
			fzTxOp{Size: fzTxTiny, Val: 5}.bytes()),
		vt.Prog(fzTxOp{Size: fzTxTiny, Layout: 2, Mal: vt.MalByte(vt.MalLoop)}.bytes()),
		vt.Prog(fzTxOp{Size: fzTxTiny, Layout: 2, Mal: vt.MalByte(vt.MalNested)}.bytes()),
		vt.Prog(fzTxOp{Size: fzTxTiny, Mal: vt.MalByte(vt.MalStraddle), MV: 1}.bytes()),
		vt.Prog(fzTxOp{Size: fzTxTiny, Mal: vt.MalByte(vt.MalNext)}.bytes()),
		vt.Prog(fzTxOp{Size: fzTxTiny, Mal: vt.MalByte(vt.MalTableLen)}.bytes()),
		vt.Prog(fzTxOp{Size: fzTxTiny, Mal: vt.MalByte(vt.MalIndirectNext)}.bytes()),
		vt.Prog(fzTxOp{Size: fzTxTiny, Mal: vt.MalByte(vt.MalTableOutside)}.bytes()),
		vt.Prog(fzTxOp{Size: fzTxTiny, Mal: vt.MalByte(vt.MalTooLong)}.bytes()),
		vt.Prog(fzConnectOp(), fzTxOp{Count: 2, Size: fzTxTiny, Mal: vt.MalByte(vt.MalHead)}.bytes(), fzDisconnectOp(fzDisGraceful)),
		vt.Prog(fzTxOp{Size: fzTxTiny, Mal: vt.MalByte(vt.MalJump)}.bytes()),
		// A device that breaks mid-batch sent chains it never completes;
		// it is reset and used again.
		vt.Prog(
			fzConnectOp(),
			fzTxOp{Count: 1, Size: fzTxTiny, Val: 48, Mal: vt.MalByte(vt.MalNext)}.bytes(),
			fzResetOp(),
			fzTxOp{Size: fzTxTiny, Val: 7}.bytes(),
			fzWriteOp{Len: fzWrTiny, Val: 3}.bytes(),
			fzRxOp{Size: fzRxTiny, Val: 14}.bytes()),
		// The same on receive: input taken into chains never completed.
		vt.Prog(
			fzConnectOp(),
			fzWriteOp{Len: fzWrPage, Val: 3000}.bytes(),
			fzRxOp{Count: 2, Size: fzRxOdd, Val: 1000, Mal: vt.MalByte(vt.MalHead)}.bytes(),
			fzResetOp(),
			fzRxOp{Count: 1, Size: fzRxPage}.bytes()),
	}
}
