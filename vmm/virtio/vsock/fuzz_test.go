package vsock

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// FuzzUnixDevice runs the userspace vsock device (Unix) under a program
// decoded from the fuzz input. The guest side posts packets on the
// transmit queue (every operation, to the connections the harness tracks
// or to random ports, the header and payload laid out every way a chain
// allows, sometimes with a malformed header or a malformed chain) and
// receive buffers of odd sizes (smaller than a header, exactly a header,
// split, indirect). The host side dials the device's socket and sends
// CONNECT lines (whole, in two writes, garbage, too long, with data
// behind the newline), writes, reads, half-closes and closes its
// clients, and listens on <uds>_<port> for the guest's connections. The
// device is reset and activated again on fresh rings, and closed at the
// end. After every operation the harness waits until the device's event
// loop has nothing left to do and checks:
//
//   - Broken is called only for a malformed ring, with an ErrBroken error,
//     and a kicked malformed transmit chain always breaks the device;
//   - guest memory changes only in the used rings and the writable
//     buffers of receive chains the device holds (a shadow copy of RAM),
//     and no used length exceeds the chain's writable bytes;
//   - a receive completion of HeaderSize bytes or more holds a header that
//     parses, from HostCID to the guest's CID, whose Len is the rest of
//     the used length; a shorter completion is empty;
//   - the guest receives, per connection, a prefix of what the host
//     client wrote, within the credit the guest gave, and the host client
//     a prefix of the RW payloads the guest sent; at the end, with buffers
//     and credit, all of it both ways;
//   - the device sends a SHUTDOWN only after the host client half-closed
//     or closed, and an RST only for a connection the host client closed,
//     the guest misbehaved on (or shut down both ways), nobody listened
//     for, or that timed out; packets name only connections that exist;
//   - a connection the device resets, or the guest resets, has its host
//     socket closed (the client reads EOF), and a malformed packet naming
//     a live connection resets it;
//   - the device settles: its epoll handler does not keep running while
//     nothing new comes in (a level-triggered socket it does not consume
//     would make the loop spin);
//   - Reset drops every connection and handshake; Close removes the
//     socket file, every host client reads EOF, and no file descriptor
//     or goroutine is left behind.
func FuzzUnixDevice(f *testing.F) {
	vt.FuzzDevice(f, fzSeeds(), "v", fzRunUnix)
}

// Harness limits and the ports it uses.
const (
	fzCID    = 7
	fzMaxOps = 48
	fzWait   = 3 * time.Second
	// fzSpinRuns: the epoll handler running this often for one operation
	// while its descriptor stays ready means the loop spins.
	fzSpinRuns = 2000
	// Bytes per program each way (the device's buffers and the sockets'
	// hold them all, so that the guest never overruns its credit).
	fzHostCap  = 64 << 10
	fzGuestCap = 96 << 10
	// fzFinishHeap is the receive heap kept for finish.
	fzFinishHeap = 256 << 10
	fzEventRing  = 0x9000
	// Guest ports 1000..1003; the host listens on 2000..2002 (2003 never
	// has a listener); 3000..3007 are ports nobody uses.
	fzGuestPort0  = 1000
	fzListenPort0 = 2000
	fzListeners   = 3
	fzRandPort0   = 3000
)

// Program operations.
const (
	fzOpTx      = iota // a guest packet
	fzOpRx             // guest receive buffers
	fzOpKick           // a queue kick
	fzOpConnect        // a host client dials and sends CONNECT
	fzOpWrite          // a host client writes
	fzOpRead           // a host client reads
	fzOpShut           // a host client shuts down writing
	fzOpClose          // a host client closes
	fzOpListen         // the host listens on <uds>_<port>, or stops
	fzOpReset          // reset and activate on fresh rings
	fzOps
)

// Header malformations (fzTxOp.Bad).
const (
	fzBadNone     = iota
	fzBadType     // type not stream
	fzBadOp       // op 0 or past CREDIT_REQUEST
	fzBadBigLen   // RW with Len past MaxPayload
	fzBadCtrlLen  // a control op with a payload
	fzBadShortHdr // the chain holds less than a header
	fzBadSrcCID   // not from the guest
	fzBadDstCID   // not to the host
	fzBadShortPay // RW with Len past the payload in the chain
	fzBadKinds
)

func fzBadKind(b byte) int {
	if b < 0xc0 {
		return fzBadNone
	}
	return 1 + int(b)%(fzBadKinds-1)
}

// fzBadByte returns a Bad byte that decodes to kind k.
func fzBadByte(k int) byte {
	for b := 0xc0; b <= 0xff; b++ {
		if fzBadKind(byte(b)) == k {
			return byte(b)
		}
	}
	panic("no byte for the header malformation")
}

// fzTxOp posts one guest packet and kicks. Target picks the ports: %3 ==
// 0 the (Target/3)th connection the harness knows by its ports, 1 the
// listener port 2000+(Target/3)%4 from guest port 1000+(Target/12)%4, 2
// the unused port 3000+(Target/3)%8 from guest port 1000+(Target/24)%4.
// Op%7+1 is the operation, Flags%4 a SHUTDOWN's flags. Credit: bits 0-1
// buf_alloc (1 MiB, 4096, 100, 0), bit 2 fwd_cnt catches up with what
// the guest received. Len (selector, with Val) sizes an RW payload of
// pattern bytes from Off. Layout: bits 0-1 the header's place (own
// buffer, merged with the payload, split in two, in three), bits 2-4
// payload buffers - 1, bit 5 a device-writable buffer, bit 6 a
// zero-length buffer, bit 7 indirect (Split's high nibble: the direct
// buffers before the table). Bad malforms the header, Mal and MV the
// chain.
type fzTxOp struct {
	Target, Op, Flags, Credit, Len byte
	Val, Off                       uint16
	Layout, Split, Bad, Mal, MV    byte
}

func (o fzTxOp) bytes() []byte {
	return []byte{fzOpTx, o.Target, o.Op, o.Flags, o.Credit, o.Len, byte(o.Val), byte(o.Val >> 8), byte(o.Off), byte(o.Off >> 8),
		o.Layout, o.Split, o.Bad, o.Mal, o.MV}
}

func fzDecodeTx(in *vt.Input) fzTxOp {
	var o fzTxOp
	o.Target, o.Op, o.Flags, o.Credit, o.Len = in.U8(), in.U8(), in.U8(), in.U8(), in.U8()
	o.Val, o.Off = in.U16(), in.U16()
	o.Layout, o.Split, o.Bad, o.Mal, o.MV = in.U8(), in.U8(), in.U8(), in.U8(), in.U8()
	return o
}

// Operation selectors for fzTxOp.Op (the operation is Op%7+1).
const (
	fzRequest       = OpRequest - 1
	fzResponse      = OpResponse - 1
	fzRst           = OpRst - 1
	fzShutdown      = OpShutdown - 1
	fzRW            = OpRW - 1
	fzCreditUpdate  = OpCreditUpdate - 1
	fzCreditRequest = OpCreditRequest - 1
)

// Targets for fzTxOp.Target.
func fzConnTarget(i int) byte               { return byte(3 * i) }
func fzListenTarget(l, g int) byte          { return byte(3*(l+4*g) + 1) }
func fzUnusedTarget(x, g int) byte          { return byte(3*(x+8*g) + 2) }
func fzCredit(alloc int, catchUp bool) byte { return byte(alloc&3) | byte(vt.Bit(catchUp))<<2 }

// fzRxOp posts Count%8+1 receive chains of Size (selector, with Val)
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

// Receive buffer sizes.
const (
	fzRxZero   = iota
	fzRxTiny   // 1..43: too small for a header
	fzRxHeader // exactly a header
	fzRxSmall  // a header and up to 63 bytes
	fzRxOdd    // a header and under 2048 bytes
	fzRxPage   // a header and 4096 bytes
	fzRxMax    // a header and MaxPayload
	fzRxAny    // up to 65535
	fzRxSizes
)

func (o fzRxOp) bytes() []byte {
	return []byte{fzOpRx, o.Count, o.Size, byte(o.Val), byte(o.Val >> 8), o.Layout, o.Gap, o.Mal, o.MV}
}

func fzDecodeRx(in *vt.Input) fzRxOp {
	var o fzRxOp
	o.Count, o.Size, o.Val = in.U8(), in.U8(), in.U16()
	o.Layout, o.Gap, o.Mal, o.MV = in.U8(), in.U8(), in.U8(), in.U8()
	return o
}

// fzConnectOp dials the device's socket and sends a handshake for guest
// port 1000+Port%4. Mode: see the fzCon constants; Cut places the split
// of a line sent in two writes; Data bytes follow the newline.
type fzConnectOp struct{ Port, Mode, Cut, Data byte }

const (
	fzConWhole   = iota // "CONNECT <port>\n"
	fzConData           // "connect <port>\n" and data in the same write
	fzConSplit          // the line in two writes with a pause between
	fzConGarbage        // a line the device refuses
	fzConTooLong        // no newline within MaxConnectLine
	fzConPartial        // part of the line, never finished
	fzConModes
)

func (o fzConnectOp) bytes() []byte { return []byte{fzOpConnect, o.Port, o.Mode, o.Cut, o.Data} }

// fzWriteOp has host client Conn write Len (selector: 1..16, 1..2048,
// up to 4096, nothing) pattern bytes from Off.
type fzWriteOp struct {
	Conn, Len byte
	Val, Off  uint16
}

func (o fzWriteOp) bytes() []byte {
	return []byte{fzOpWrite, o.Conn, o.Len, byte(o.Val), byte(o.Val >> 8), byte(o.Off), byte(o.Off >> 8)}
}

// fzReadOp reads up to n bytes (0: all there is) on host client conn.
func fzReadOp(conn byte, n uint16) []byte { return []byte{fzOpRead, conn, byte(n), byte(n >> 8)} }
func fzShutOp(conn byte) []byte           { return []byte{fzOpShut, conn} }
func fzCloseOp(conn byte) []byte          { return []byte{fzOpClose, conn} }
func fzListenOp(l int) []byte             { return []byte{fzOpListen, byte(l)} }
func fzUnlistenOp(l int) []byte           { return []byte{fzOpListen, byte(l) | 0x80} }
func fzKickOp(q int) []byte               { return []byte{fzOpKick, byte(q)} }
func fzResetOp() []byte                   { return []byte{fzOpReset} }

// fzConn is one connection as the harness sees it, from both ends.
type fzConn struct {
	key      connKey
	keyOK    bool // host-initiated: learned from the device once its line completed
	hostInit bool
	fd       int // the host client, -1 once closed or before the listener accepted it
	// tainted: the guest reused the ports while the device still held
	// state for them (a pending RST), or the connection may have timed
	// out: its packets are not checked.
	tainted bool
	// Host-initiated handshake.
	lineDone   bool      // the CONNECT line is complete
	expectDrop bool      // the line is bad: the device closes the client
	created    time.Time // when the line completed
	requested  bool      // the guest received the REQUEST
	// State.
	devEst     bool // the device takes data (guest-initiated: REQUEST accepted; host-initiated: RESPONSE sent)
	est        bool // the guest takes data (it saw or sent the RESPONSE)
	refused    bool // guest-initiated with nobody listening
	dead       bool // the guest sent or received RST (or the device was reset)
	devRst     bool // the device sent RST, or was reset: its host socket is closed
	guestRst   bool // the guest sent RST
	mayEnd     bool // the guest misbehaved: the device may reset it
	mustRst    bool // ... and must
	guestShut  uint32
	devShut    uint32
	hostShut   bool // the client shut down writing
	hostClosed bool
	hostEOF    bool
	okLine     []byte // host-initiated: the "OK <port>\n" read so far
	okDone     bool
	// Data: host to guest, guest to host.
	hostSent, guestGot []byte
	guestSent, hostGot []byte
	limit              uint64 // the most the guest's credit ever allowed
	fwd                uint32 // the guest's fwd_cnt as last sent
}

func (c *fzConn) String() string {
	if !c.keyOK {
		return "a host client in its handshake"
	}
	kind := "guest-initiated"
	if c.hostInit {
		kind = "host-initiated"
	}
	return fmt.Sprintf("%s connection host port %d, guest port %d", kind, c.key.hostPort, c.key.guestPort)
}

// ended: the device has no reason to keep it going.
func (c *fzConn) ended() bool { return c.dead || c.mustRst || c.mayEnd || c.refused || c.tainted }

// timedOut: a host-initiated connection the guest did not answer within
// the device's connect timeout.
func (c *fzConn) timedOut() bool {
	return c.hostInit && !c.devEst && !c.created.IsZero() && time.Since(c.created) > connectTimeout-200*time.Millisecond
}

type fzListener struct {
	fd    int
	path  string
	queue []*fzConn // guest-initiated connections not accepted yet, in order
}

// unixFuzz is one input's rig.
type unixFuzz struct {
	t          *testing.T
	g          *vt.Shadow
	loop       *eventloop.Loop
	dev        *Unix
	uds        string
	kicks      [queueCount]int
	rx, tx, ev *vt.Ring
	vq         []*virtio.Queue
	features   uint64
	broken     *vt.BrokenLog
	brokenSeen bool
	everBroken bool
	conns      []*fzConn
	lis        [fzListeners]fzListener
	hostTotal  int
	guestTotal int
	buf        []byte
}

func fzRunUnix(t *testing.T, uds string, prog []byte) {
	in := &vt.Input{B: prog}
	h := &unixFuzz{t: t, g: vt.NewShadow(t), uds: uds, buf: make([]byte, 16<<10)}
	for i := range h.kicks {
		h.kicks[i] = -1
	}
	for i := range h.lis {
		h.lis[i] = fzListener{fd: -1, path: fmt.Sprintf("%s_%d", uds, fzListenPort0+i)}
	}
	defer h.close()
	var err error
	if h.loop, err = eventloop.New("fuzz-vsock", eventloop.Poller); err != nil {
		t.Fatal(err)
	}
	if h.dev, err = NewUnix(Config{ID: "fuzz0", GuestCID: fzCID, UDSPath: uds}, h.loop); err != nil {
		t.Fatal(err)
	}
	h.activate()
	for range fzMaxOps {
		if len(in.B) == 0 {
			break
		}
		switch in.U8() % fzOps {
		case fzOpTx:
			h.guestPacket(fzDecodeTx(in))
		case fzOpRx:
			h.postRx(fzDecodeRx(in), vt.FuzzRAM-fzFinishHeap)
		case fzOpKick:
			h.kick(int(in.U8() % queueCount))
		case fzOpConnect:
			h.connect(fzConnectOp{in.U8(), in.U8(), in.U8(), in.U8()})
		case fzOpWrite:
			o := fzWriteOp{Conn: in.U8(), Len: in.U8()}
			o.Val, o.Off = in.U16(), in.U16()
			h.hostWrite(o)
		case fzOpRead:
			c, n := in.U8(), in.U16()
			if cn := h.client(c); cn != nil {
				h.hostRead(cn, int(n))
			}
		case fzOpShut:
			h.hostShut(in.U8())
		case fzOpClose:
			h.hostClose(in.U8())
		case fzOpListen:
			h.listen(in.U8())
		case fzOpReset:
			h.reset()
			h.activate()
		}
		h.settle()
	}
	h.finish()
}

func (h *unixFuzz) activate() {
	t := h.t
	h.features = h.dev.Features() | 1<<virtio.FVersion1
	h.rx, h.tx, h.ev = vt.NewRing(h.g, vt.FuzzRxRing), vt.NewRing(h.g, vt.FuzzTxRing), vt.NewRing(h.g, fzEventRing)
	var qs []*virtio.Queue
	for i, q := range []*vt.Ring{h.rx, h.tx, h.ev} {
		qs = append(qs, q.Activate(h.features))
		fd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
		if err != nil {
			t.Fatal(err)
		}
		h.kicks[i] = fd
		if i != eventQueue { // the device sends no events
			h.g.Allow(q.Used, q.UsedLen())
		}
	}
	h.broken, h.brokenSeen, h.vq = &vt.BrokenLog{}, false, qs
	err := h.dev.Activate(virtio.Activation{Mem: h.g.Mem, Features: h.features, Queues: qs, Kicks: h.kicks[:],
		Interrupt: vt.NoIRQ{}, Broken: h.broken.Report})
	if err != nil {
		t.Fatalf("Activate: %v", err)
	}
}

func (h *unixFuzz) kick(q int) {
	switch q {
	case rxQueue:
		h.rx.Kick()
	case txQueue:
		h.tx.Kick()
	}
	if _, err := unix.Write(h.kicks[q], []byte{1, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		h.t.Fatal(err)
	}
}

// live returns the connection the guest has on key k, if any.
func (h *unixFuzz) live(k connKey) *fzConn {
	for i := len(h.conns) - 1; i >= 0; i-- {
		if c := h.conns[i]; c.keyOK && c.key == k && !c.dead {
			return c
		}
	}
	return nil
}

// last returns the latest connection on key k, ended or not.
func (h *unixFuzz) last(k connKey) *fzConn {
	for i := len(h.conns) - 1; i >= 0; i-- {
		if c := h.conns[i]; c.keyOK && c.key == k {
			return c
		}
	}
	return nil
}

func (h *unixFuzz) target(b byte) connKey {
	sel, v := b%3, int(b/3)
	if sel == 0 {
		var keyed []*fzConn
		for _, c := range h.conns {
			if c.keyOK {
				keyed = append(keyed, c)
			}
		}
		if len(keyed) > 0 {
			return keyed[v%len(keyed)].key
		}
		sel = 1
	}
	if sel == 1 {
		return connKey{hostPort: uint32(fzListenPort0 + v%4), guestPort: uint32(fzGuestPort0 + (v/4)%4)}
	}
	return connKey{hostPort: uint32(fzRandPort0 + v%8), guestPort: uint32(fzGuestPort0 + (v/8)%4)}
}

// guestPacket posts one packet on the transmit queue, models what the
// device does with it and kicks.
func (h *unixFuzz) guestPacket(o fzTxOp) {
	k := h.target(o.Target)
	c := h.live(k)
	op := uint16(o.Op%7) + 1
	hd := Header{SrcCID: fzCID, DstCID: HostCID, SrcPort: k.guestPort, DstPort: k.hostPort, Type: TypeStream, Op: op,
		BufAlloc: [4]uint32{1 << 20, 4096, 100, 0}[o.Credit&3]}
	if c != nil {
		hd.FwdCnt = c.fwd
		if o.Credit&4 != 0 {
			hd.FwdCnt = uint32(len(c.guestGot))
		}
	}
	var n int
	if op == OpRW {
		switch o.Len % 4 {
		case 0:
			n = 1 + int(o.Val%16)
		case 1:
			n = int(o.Val % 2048)
		case 2:
		case 3:
			n = 1 + int(o.Val%4096)
		}
		if h.guestTotal+n > fzGuestCap {
			n = 0
		}
	}
	if op == OpShutdown {
		hd.Flags = uint32(o.Flags % 4)
	}
	bad := fzBadKind(o.Bad)
	x := uint32(o.MV)
	switch bad {
	case fzBadType:
		hd.Type = uint16(2 + x%3)
	case fzBadOp:
		hd.Op = 0
		if x&1 != 0 {
			hd.Op = uint16(OpCreditRequest + 1 + x%5)
		}
	case fzBadBigLen:
		hd.Op = OpRW
	case fzBadCtrlLen:
		hd.Op = []uint16{OpRequest, OpResponse, OpShutdown, OpCreditUpdate, OpCreditRequest}[x%5]
		n = 1 + int(x%16)
	case fzBadSrcCID:
		hd.SrcCID = []uint64{fzCID + 1, HostCID, 0, 1 << 40}[x%4]
	case fzBadDstCID:
		hd.DstCID = []uint64{fzCID, 3, 0, 1<<32 | HostCID}[x%4]
	case fzBadShortPay:
		hd.Op = OpRW
	}
	poff := int(o.Off) % (vt.FuzzPatternLen - n + 1)
	payload := vt.PatternBytes[poff : poff+n]
	hd.Len = uint32(n)
	switch bad {
	case fzBadBigLen:
		hd.Len = MaxPayload + 1 + x*997
	case fzBadShortPay:
		hd.Len = uint32(n) + 1 + x
	}
	hdr := make([]byte, HeaderSize)
	hd.Encode(hdr)
	if bad == fzBadShortHdr {
		hdr = hdr[:x%HeaderSize]
		payload = nil
	}
	mal := vt.MalKind(o.Mal)
	if !h.postTx(hdr, payload, poff, o, mal) {
		return
	}
	if mal == vt.MalNone {
		h.model(k, c, hd, bad, payload)
	}
	h.kick(txQueue)
}

// postTx lays out a transmit chain of hdr and payload (pattern bytes
// from poff); false when the ring or the scratch area is full.
func (h *unixFuzz) postTx(hdr, payload []byte, poff int, o fzTxOp, mal int) bool {
	l := vt.TxLayout{Layout: o.Layout, Split: o.Split, Off: o.Off, MV: o.MV}
	return h.tx.PostPacket(hdr, payload, poff, l, mal, h.features) != nil
}

// model applies a well-formed transmit chain's packet (header hd, Bad
// kind bad) on key k, whose live connection is c, as the device must.
func (h *unixFuzz) model(k connKey, c *fzConn, hd Header, bad int, payload []byte) {
	if h.brokenSeen {
		return // a broken device takes nothing more
	}
	switch bad {
	case fzBadShortHdr:
		return
	case fzBadType, fzBadSrcCID, fzBadDstCID:
		// Dropped; a connection it names may be reset.
		if c != nil {
			c.mayEnd = true
		}
		return
	case fzBadOp, fzBadBigLen, fzBadCtrlLen, fzBadShortPay:
		// A malformed packet that names a live connection resets it.
		if c != nil {
			c.mayEnd, c.mustRst = true, true
		}
		return
	}
	if c != nil && c.refused && hd.Op == OpRequest {
		c = nil // the device holds no connection for a refused one
	}
	if c == nil {
		if hd.Op == OpRequest {
			h.guestConnect(k, hd)
		}
		return // anything else is answered with RST, or (RST) ignored
	}
	c.fwd = hd.FwdCnt
	c.limit = max(c.limit, uint64(hd.FwdCnt)+uint64(hd.BufAlloc))
	switch hd.Op {
	case OpRequest:
		c.mayEnd, c.mustRst = true, true
	case OpResponse:
		if c.hostInit && !c.devEst {
			c.devEst, c.est = true, true
		} else {
			c.mayEnd, c.mustRst = true, true
		}
	case OpRW:
		if c.devEst && c.guestShut&ShutdownSend == 0 {
			c.guestSent = append(c.guestSent, payload...)
			h.guestTotal += len(payload)
		} else {
			c.mayEnd, c.mustRst = true, true
		}
	case OpShutdown:
		c.guestShut |= hd.Flags
		if c.guestShut == ShutdownRcv|ShutdownSend {
			c.mayEnd, c.mustRst = true, true
		}
	case OpRst:
		c.dead, c.guestRst = true, true
	}
}

// guestConnect models a REQUEST on key k with no live connection. The
// device connects to <uds>_<port> unless it still holds something for
// the ports; a connection made while an RST for the ports is still
// queued is not checked (the guest cannot tell the RSTs apart).
func (h *unixFuzz) guestConnect(k connKey, hd Header) {
	var held, queued bool
	h.loop.Call(func() {
		_, held = h.dev.conns[k]
		for _, r := range h.dev.orphanRsts {
			queued = queued || (r.SrcPort == k.hostPort && r.DstPort == k.guestPort)
		}
	})
	if held {
		return // answered with RST
	}
	if old := h.live(k); old != nil { // refused: its RST and the new connection's packets mix
		old.dead, old.tainted = true, true
		queued = true
	}
	c := &fzConn{key: k, keyOK: true, fd: -1, devEst: true, tainted: queued, limit: uint64(hd.FwdCnt) + uint64(hd.BufAlloc), fwd: hd.FwdCnt}
	l := int(k.hostPort) - fzListenPort0
	if l < 0 || l >= fzListeners || h.lis[l].fd < 0 {
		c.refused, c.devEst = true, false
	} else {
		h.lis[l].queue = append(h.lis[l].queue, c)
	}
	h.conns = append(h.conns, c)
}

// postRx posts receive chains below heap address end and kicks.
func (h *unixFuzz) postRx(o fzRxOp, end uint64) {
	var size int
	switch o.Size % fzRxSizes {
	case fzRxZero:
	case fzRxTiny:
		size = 1 + int(o.Val%(HeaderSize-1))
	case fzRxHeader:
		size = HeaderSize
	case fzRxSmall:
		size = HeaderSize + 1 + int(o.Val%63)
	case fzRxOdd:
		size = HeaderSize + int(o.Val%2048)
	case fzRxPage:
		size = HeaderSize + 4096
	case fzRxMax:
		size = HeaderSize + MaxPayload
	case fzRxAny:
		size = int(o.Val)
	}
	count := 1 + int(o.Count%8)
	h.rx.PostRx(size, count, end, vt.RxLayout{Layout: o.Layout, Gap: o.Gap, Mal: o.Mal, MV: o.MV}, h.features, h.brokenSeen)
	h.kick(rxQueue)
}

func (h *unixFuzz) dial() int { return vt.DialUnix(h.t, h.uds, fzWait) }

// connect dials the device and sends a handshake.
func (h *unixFuzz) connect(o fzConnectOp) {
	t := h.t
	port := fzGuestPort0 + int(o.Port%4)
	line := []byte("CONNECT " + strconv.Itoa(port) + "\n")
	c := &fzConn{hostInit: true, fd: h.dial()}
	h.conns = append(h.conns, c)
	gone := false
	send := func(b []byte) {
		if gone {
			return
		}
		n, err := unix.Write(c.fd, b)
		if (errors.Is(err, unix.EPIPE) || errors.Is(err, unix.ECONNRESET)) && len(h.broken.Get()) > 0 {
			gone = true // a broken device closes new clients at once
			return
		}
		if err != nil || n != len(b) {
			t.Fatalf("handshake write: %d of %d bytes, %v", n, len(b), err)
		}
	}
	complete := func() {
		c.lineDone, c.created = true, time.Now()
		c.key.guestPort = uint32(port)
	}
	switch o.Mode % fzConModes {
	case fzConWhole:
		send(line)
		complete()
	case fzConData:
		n := 1 + int(o.Data%32)
		if h.hostTotal+n > fzHostCap {
			n = 0
		}
		data := vt.PatternBytes[int(o.Cut)*7 : int(o.Cut)*7+n]
		send(append([]byte("connect "+strconv.Itoa(port)+"\n"), data...))
		c.hostSent = append(c.hostSent, data...)
		h.hostTotal += n
		complete()
	case fzConSplit:
		at := 1 + int(o.Cut)%(len(line)-1)
		send(line[:at])
		// The device waits for the rest of the line without spinning.
		h.settle()
		time.Sleep(time.Duration(50+int(o.Data)) * time.Microsecond)
		send(line[at:])
		complete()
	case fzConGarbage:
		bad := [][]byte{[]byte("HELLO 1\n"), []byte("CONNECT x\n"), []byte("CONNECT 99999999999\n"), []byte("CONNECT\n"), []byte("\n"),
			[]byte("CONNECT -1\n"), []byte("CONNECT 12 \n"), []byte("CONNEC 12\n")}
		send(bad[int(o.Cut)%len(bad)])
		c.expectDrop = true
	case fzConTooLong:
		b := bytes.Repeat([]byte{'7'}, MaxConnectLine+1+int(o.Cut%8))
		send(append([]byte("CONNECT "), b...))
		c.expectDrop = true
	case fzConPartial:
		send(line[:1+int(o.Cut)%(len(line)-1)])
	}
	if gone {
		c.expectDrop, c.lineDone = true, false
	}
}

// client returns host client number sel among the open ones.
func (h *unixFuzz) client(sel byte) *fzConn {
	var open []*fzConn
	for _, c := range h.conns {
		if c.fd >= 0 {
			open = append(open, c)
		}
	}
	if len(open) == 0 {
		return nil
	}
	return open[int(sel)%len(open)]
}

func (h *unixFuzz) hostWrite(o fzWriteOp) {
	c := h.client(o.Conn)
	if c == nil || c.hostShut || (c.hostInit && (!c.lineDone || c.expectDrop)) {
		return
	}
	var n int
	switch o.Len % 4 {
	case 0:
		n = 1 + int(o.Val%16)
	case 1:
		n = 1 + int(o.Val%2048)
	case 2:
		n = int(o.Val % 4097)
	}
	n = min(n, fzHostCap-h.hostTotal)
	off := int(o.Off) % (vt.FuzzPatternLen - n + 1)
	k, err := unix.Write(c.fd, vt.PatternBytes[off:off+n])
	if err != nil && !errors.Is(err, unix.EAGAIN) && !errors.Is(err, unix.EPIPE) && !errors.Is(err, unix.ECONNRESET) {
		h.t.Fatalf("host client write: %v", err)
	}
	k = max(k, 0)
	c.hostSent = append(c.hostSent, vt.PatternBytes[off:off+k]...)
	h.hostTotal += k
}

// hostRead reads up to n bytes (0: all there is) on c's client and
// checks them; it reports whether the client read EOF.
func (h *unixFuzz) hostRead(c *fzConn, n int) bool {
	t := h.t
	if c.fd < 0 {
		return c.hostEOF
	}
	if n == 0 {
		n = 1 << 30
	}
	for n > 0 && !c.hostEOF {
		k, err := unix.Read(c.fd, h.buf[:min(n, len(h.buf))])
		if errors.Is(err, unix.EAGAIN) {
			break
		}
		if err != nil && !errors.Is(err, unix.ECONNRESET) {
			t.Fatalf("host client read: %v", err)
		}
		if err != nil || k == 0 {
			h.sawEOF(c)
			break
		}
		n -= k
		b := h.buf[:k]
		if c.hostInit && !c.okDone {
			if !c.keyOK || !c.devEst {
				if !c.tainted {
					t.Fatalf("%v: the client read %q before the guest accepted it", c, b)
				}
			}
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				c.okLine = append(c.okLine, b...)
				continue
			}
			c.okLine = append(c.okLine, b[:i+1]...)
			c.okDone = true
			if want := fmt.Sprintf("OK %d\n", c.key.hostPort); string(c.okLine) != want && !c.tainted {
				t.Fatalf("%v: the client read %q, want %q", c, c.okLine, want)
			}
			b = b[i+1:]
		}
		c.hostGot = append(c.hostGot, b...)
		if !c.tainted && !bytes.HasPrefix(c.guestSent, c.hostGot) {
			t.Fatalf("%v: the client read %d bytes that are not what the guest sent (%d bytes)", c, len(c.hostGot), len(c.guestSent))
		}
	}
	return c.hostEOF
}

// sawEOF checks that c's client may read EOF now.
func (h *unixFuzz) sawEOF(c *fzConn) {
	c.hostEOF = true
	switch {
	case c.tainted || h.everBroken || c.expectDrop || c.devRst || c.guestRst || c.mayEnd || c.mustRst || c.timedOut():
	case c.guestShut&ShutdownSend != 0:
		if !bytes.Equal(c.hostGot, c.guestSent) {
			h.t.Fatalf("%v: the client read EOF after %d bytes, but the guest sent %d before SHUTDOWN", c, len(c.hostGot), len(c.guestSent))
		}
	default:
		h.t.Fatalf("%v: the client read EOF, but neither the guest nor the device ended the connection", c)
	}
}

func (h *unixFuzz) hostShut(sel byte) {
	c := h.client(sel)
	if c == nil || c.hostShut || (c.hostInit && !c.lineDone) {
		return
	}
	if err := unix.Shutdown(c.fd, unix.SHUT_WR); err != nil {
		h.t.Fatal(err)
	}
	c.hostShut = true
}

func (h *unixFuzz) hostClose(sel byte) {
	c := h.client(sel)
	if c == nil {
		return
	}
	unix.Close(c.fd)
	c.fd, c.hostClosed, c.hostShut = -1, true, true
}

func (h *unixFuzz) listen(b byte) {
	t := h.t
	l := &h.lis[int(b&0x7f)%fzListeners]
	if b&0x80 != 0 {
		if l.fd >= 0 {
			h.acceptAll()
			unix.Close(l.fd)
			os.Remove(l.path)
			l.fd = -1
		}
		return
	}
	if l.fd >= 0 {
		return
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: l.path}); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	if err := unix.Listen(fd, 64); err != nil {
		unix.Close(fd)
		t.Fatal(err)
	}
	l.fd = fd
}

// acceptAll takes the device's connections to the listeners: they are
// the guest-initiated connections the model queued, in order.
func (h *unixFuzz) acceptAll() {
	for i := range h.lis {
		l := &h.lis[i]
		for l.fd >= 0 {
			fd, _, err := unix.Accept4(l.fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
			if err != nil {
				break
			}
			if len(l.queue) == 0 {
				unix.Close(fd)
				h.t.Fatalf("the device connected to %s though the guest asked for no connection to it", l.path)
			}
			l.queue[0].fd = fd
			l.queue = l.queue[1:]
		}
	}
}

// runs returns how many times the device's epoll handler has run.
func (h *unixFuzz) runs() uint64 {
	var n uint64
	h.loop.Call(func() { n = h.dev.batches })
	return n
}

// quiesce returns once the device has nothing left to do on the loop:
// neither its epoll descriptor nor a kick is ready. An epoll handler that
// keeps running meanwhile, with nothing new coming in, spins.
func (h *unixFuzz) quiesce() {
	t := h.t
	start := h.runs()
	deadline := time.Now().Add(fzWait)
	for i := 0; ; i++ {
		var busy bool
		h.loop.Call(func() {
			busy = vt.Readable(h.dev.epfd)
			for _, fd := range h.kicks {
				busy = busy || (fd >= 0 && vt.Readable(fd))
			}
		})
		if !busy {
			return
		}
		if n := h.runs() - start; n > fzSpinRuns {
			t.Fatalf("the device's epoll handler ran %d times while the harness fed it nothing, and its epoll is still ready (%s): the loop spins", n, h.ready())
		}
		if time.Now().After(deadline) {
			t.Fatalf("the device still has work on the event loop after %v (%s)", fzWait, h.ready())
		}
		vt.Pause(i)
	}
}

// ready describes the device's sockets that are readable.
func (h *unixFuzz) ready() string {
	var s string
	h.loop.Call(func() {
		for fd, o := range h.dev.fds {
			if !vt.Readable(int(fd)) {
				continue
			}
			switch o := o.(type) {
			case *handshake:
				var b [64]byte
				n, _, _ := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK)
				s += fmt.Sprintf("handshake fd %d holding %q; ", fd, b[:max(n, 0)])
			case *conn:
				s += fmt.Sprintf("connection %+v fd %d, events %#x; ", o.key, fd, o.events)
			}
		}
	})
	if s == "" {
		s = "no connection socket readable"
	}
	return s
}

// learn matches the device's new host-initiated connections with the
// clients whose CONNECT line completed.
func (h *unixFuzz) learn() {
	var keys []connKey
	h.loop.Call(func() {
		for k, c := range h.dev.conns {
			if c.hostInitiated && h.last(k) == nil {
				keys = append(keys, k)
			}
		}
	})
	for len(keys) > 0 { // in allocation order
		m := 0
		for i, k := range keys {
			if k.hostPort < keys[m].hostPort {
				m = i
			}
		}
		k := keys[m]
		keys = append(keys[:m], keys[m+1:]...)
		var c *fzConn
		for _, x := range h.conns {
			// A client is dead before the device made its connection
			// only through a reset, which dropped its handshake.
			if x.hostInit && !x.keyOK && x.lineDone && !x.expectDrop && !x.dead && x.key.guestPort == k.guestPort {
				c = x
				break
			}
		}
		if c == nil {
			h.t.Fatalf("the device made a connection for guest port %d (host port %d) that no client asked for", k.guestPort, k.hostPort)
		}
		c.key, c.keyOK = k, true
		if k.hostPort < firstHostPort || k.hostPort > lastHostPort {
			h.t.Fatalf("%v: host port out of [%d, %d]", c, firstHostPort, lastHostPort)
		}
	}
	if h.everBroken {
		return
	}
	for _, c := range h.conns {
		if c.hostInit && !c.keyOK && c.lineDone && !c.expectDrop && !c.dead && !c.timedOut() {
			h.t.Fatalf("a client sent CONNECT %d; the device neither made the connection nor dropped the client", c.key.guestPort)
		}
	}
}

// settle waits until the device has done what it was given and checks
// what it did.
func (h *unixFuzz) settle() {
	h.quiesce()
	h.learn()
	h.acceptAll()
	h.collect()
	h.observeBroken()
}

// collect takes the completions and checks the packets.
func (h *unixFuzz) collect() {
	t := h.t
	for _, d := range h.tx.Collect() {
		if d.Len != 0 {
			t.Fatalf("transmit chain %d completed with %d bytes written, want 0", d.C.Head, d.Len)
		}
	}
	for _, d := range h.rx.Collect() {
		if uint64(d.Len) > d.C.Cap {
			t.Fatalf("receive chain %d completed with %d bytes, but it holds %d", d.C.Head, d.Len, d.C.Cap)
		}
		b := h.g.Written(d.C, d.Len)
		for _, p := range d.C.Pieces {
			if p.Write {
				h.g.Settle(p.Addr, uint64(p.Len))
			}
		}
		switch {
		case d.Len == 0:
			continue
		case d.Len < HeaderSize:
			t.Fatalf("receive chain %d (%d bytes) completed with %d bytes: less than a header, and not empty", d.C.Head, d.C.Cap, d.Len)
		}
		hd, err := ParseHeader(b)
		if err != nil {
			t.Fatalf("receive chain %d: the device sent a bad header: %v", d.C.Head, err)
		}
		if hd.SrcCID != HostCID || hd.DstCID != fzCID || hd.Len != d.Len-HeaderSize {
			t.Fatalf("receive chain %d: %s %+v in %d bytes: want from CID %d to %d with Len %d", d.C.Head, OpName(hd.Op), hd, d.Len, HostCID, fzCID, d.Len-HeaderSize)
		}
		h.packet(hd, b[HeaderSize:])
	}
}

// packet checks one packet the guest received.
func (h *unixFuzz) packet(hd Header, data []byte) {
	t := h.t
	k := connKey{hostPort: hd.SrcPort, guestPort: hd.DstPort}
	c := h.live(k)
	if hd.Op != OpRst && hd.BufAlloc != ConnBufSize {
		t.Fatalf("%s for %+v advertises buf_alloc %d, want %d", OpName(hd.Op), k, hd.BufAlloc, ConnBufSize)
	}
	if c == nil {
		if hd.Op == OpRst {
			return // an answer to a packet for no connection
		}
		p := h.last(k)
		if p != nil && p.tainted {
			return
		}
		if p != nil && p.devRst && p.fd >= 0 {
			t.Fatalf("%s for %v after the device's RST: it reset the connection for the guest but keeps it going on the host (client open: %v)", OpName(hd.Op), p, !p.hostClosed)
		}
		t.Fatalf("%s for host port %d, guest port %d: the guest has no such connection (any more)", OpName(hd.Op), k.hostPort, k.guestPort)
	}
	if c.tainted || h.everBroken {
		switch hd.Op {
		case OpRst:
			c.dead, c.devRst = true, true
		case OpResponse, OpRequest:
			c.est, c.requested = c.est || hd.Op == OpResponse, true
		case OpRW:
			c.guestGot = append(c.guestGot, data...)
		case OpShutdown:
			c.devShut |= hd.Flags
		}
		return
	}
	if hd.Op != OpRst && hd.FwdCnt > uint32(len(c.guestSent)) {
		t.Fatalf("%v: %s with fwd_cnt %d, but the guest sent %d bytes", c, OpName(hd.Op), hd.FwdCnt, len(c.guestSent))
	}
	switch hd.Op {
	case OpRequest:
		if !c.hostInit || c.requested {
			t.Fatalf("%v: unexpected REQUEST", c)
		}
		c.requested = true
	case OpResponse:
		if c.hostInit || c.refused || c.est {
			t.Fatalf("%v: unexpected RESPONSE (refused %v, established %v)", c, c.refused, c.est)
		}
		c.est = true
	case OpRW:
		switch {
		case !c.est:
			t.Fatalf("%v: RW before the connection was established", c)
		case c.devShut&ShutdownSend != 0:
			t.Fatalf("%v: RW after the device's SHUTDOWN(send)", c)
		case c.guestShut&ShutdownRcv != 0:
			t.Fatalf("%v: RW after the guest's SHUTDOWN(receive)", c)
		}
		c.guestGot = append(c.guestGot, data...)
		if !bytes.HasPrefix(c.hostSent, c.guestGot) {
			t.Fatalf("%v: the guest received %d bytes that are not what the client wrote (%d bytes)", c, len(c.guestGot), len(c.hostSent))
		}
		if uint64(len(c.guestGot)) > c.limit {
			t.Fatalf("%v: the guest received %d bytes; its credit allowed %d", c, len(c.guestGot), c.limit)
		}
	case OpShutdown:
		if !c.hostShut && !c.ended() && !c.timedOut() {
			t.Fatalf("%v: the device sent SHUTDOWN(%d), but the host client is open and the guest did not misbehave (guest received %d of the %d bytes the client wrote)",
				c, hd.Flags, len(c.guestGot), len(c.hostSent))
		}
		if hd.Flags == 0 || hd.Flags&^(ShutdownRcv|ShutdownSend) != 0 {
			t.Fatalf("%v: SHUTDOWN with flags %d", c, hd.Flags)
		}
		c.devShut |= hd.Flags
	case OpRst:
		if !c.hostClosed && !c.ended() && !c.timedOut() {
			t.Fatalf("%v: the device sent RST, but the host client is open and the guest did not misbehave (guest shut %d)", c, c.guestShut)
		}
		c.dead, c.devRst = true, true
	}
}

// observeBroken checks a device that broke and, the first time, takes
// guest memory as it is: from now on the device may not write it.
func (h *unixFuzz) observeBroken() {
	broken := h.broken.Check(h.t, h.rx, h.tx)
	if broken && !h.brokenSeen {
		h.brokenSeen, h.everBroken = true, true
		h.g.Checkpoint("after Broken")
	}
	if !broken && h.tx.KickedBad {
		h.t.Fatal("a kicked malformed transmit chain did not break the device")
	}
}

// reset resets the device and checks that it let go of everything.
func (h *unixFuzz) reset() {
	t := h.t
	h.dev.Reset()
	h.loop.Call(func() {
		d := h.dev
		if d.act != nil || d.rxq != nil || d.txq != nil || len(d.conns) != 0 || len(d.fds) != 0 || len(d.rxList) != 0 || len(d.orphanRsts) != 0 {
			t.Errorf("after Reset: activation %v, %d connections, %d sockets, %d on the rx list, %d RSTs queued",
				d.act != nil, len(d.conns), len(d.fds), len(d.rxList), len(d.orphanRsts))
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	h.observeBroken()
	h.collect()
	if !h.brokenSeen {
		for i, q := range []*vt.Ring{h.rx, h.tx} {
			if k := h.vq[i].NextAvail() - q.UsedSeen; k != 0 {
				t.Fatalf("the device took %d chains of queue %d it never completed", k, i)
			}
		}
	}
	h.g.Checkpoint("after Reset")
	h.acceptAll()
	for _, c := range h.conns {
		c.dead, c.devRst = true, true
	}
	for i, fd := range h.kicks {
		unix.Close(fd)
		h.kicks[i] = -1
	}
	zero := make([]byte, 0x3000)
	h.g.Write(vt.FuzzRxRing, zero)
	h.g.Write(vt.FuzzTxRing, zero)
	h.g.Write(fzEventRing, zero)
}

// drainAll reads every client until nothing more comes.
func (h *unixFuzz) drainAll() {
	for _, c := range h.conns {
		if c.fd >= 0 {
			h.hostRead(c, 0)
		}
	}
}

// progress sums what moved both ways.
func (h *unixFuzz) progress() int {
	n := 0
	for _, c := range h.conns {
		n += len(c.guestGot) + len(c.hostGot)
		if c.dead {
			n++
		}
	}
	return n
}

// waitEOF reads c's client until EOF.
func (h *unixFuzz) waitEOF(c *fzConn, why string) {
	deadline := time.Now().Add(fzWait)
	for i := 0; c.fd >= 0 && !h.hostRead(c, 0); i++ {
		if time.Now().After(deadline) {
			h.t.Fatalf("%v: %s, but its client does not read EOF", c, why)
		}
		vt.Pause(i)
	}
}

// finish gives the guest buffers and credit until everything moved,
// checks that it did, then checks Reset and Close.
func (h *unixFuzz) finish() {
	t := h.t
	for q := range queueCount {
		h.kick(q)
	}
	h.settle()
	if !h.brokenSeen {
		for round := 0; round < 16; round++ {
			before := h.progress()
			h.drainAll()
			if len(h.rx.Order) < 8 {
				h.postRx(fzRxOp{Count: 7, Size: fzRxPage}, vt.FuzzRAM)
			}
			for _, c := range h.conns {
				if !c.dead && !c.tainted && c.est && c.devEst && !h.brokenSeen && len(c.guestGot) < len(c.hostSent) {
					h.guestPacket(fzTxOp{Target: h.targetOf(c), Op: fzCreditUpdate, Credit: fzCredit(0, true)})
				}
			}
			h.settle()
			h.drainAll()
			if h.brokenSeen || h.progress() == before {
				break
			}
		}
	}
	h.settle()
	if !h.everBroken {
		for _, c := range h.conns {
			if c.tainted || c.timedOut() {
				continue
			}
			if (c.mustRst || c.refused) && !c.dead && len(h.rx.Order) > 0 {
				t.Fatalf("%v: the guest misbehaved or nobody listens, but the device sent no RST with %d receive buffers posted", c, len(h.rx.Order))
			}
			open := c.keyOK && !c.dead && !c.mayEnd && !c.mustRst && c.fd >= 0
			if open && c.est && c.guestShut&ShutdownRcv == 0 && c.devShut&ShutdownSend == 0 && len(h.rx.Order) > 0 &&
				!bytes.Equal(c.guestGot, c.hostSent) {
				t.Fatalf("%v: the guest received %d of the %d bytes the client wrote, with %d receive buffers posted and credit", c, len(c.guestGot), len(c.hostSent), len(h.rx.Order))
			}
			if open && !bytes.Equal(c.hostGot, c.guestSent) {
				t.Fatalf("%v: the client read %d of the %d bytes the guest sent", c, len(c.hostGot), len(c.guestSent))
			}
			switch {
			case c.fd < 0:
			case c.expectDrop:
				h.waitEOF(c, "its CONNECT line is bad")
			case c.devRst:
				h.waitEOF(c, "the device sent RST")
			case c.guestRst:
				h.waitEOF(c, "the guest sent RST")
			case c.guestShut&ShutdownSend != 0 && c.devEst:
				h.waitEOF(c, "the guest shut down sending")
			}
		}
		// Nothing fed: the handler must stay idle.
		r := h.runs()
		time.Sleep(2 * time.Millisecond)
		h.quiesce()
		if n := h.runs() - r; n > 20 {
			t.Fatalf("the device's epoll handler ran %d times in 2ms with nothing fed to it (%s)", n, h.ready())
		}
	}
	h.reset()
	if err := h.dev.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := os.Lstat(h.uds); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the socket file is still there after Close: %v", err)
	}
	h.acceptAll()
	for _, c := range h.conns {
		h.waitEOF(c, "the device was closed")
	}
}

// targetOf is a Target byte for c's ports.
func (h *unixFuzz) targetOf(c *fzConn) byte {
	var keyed []*fzConn
	for _, x := range h.conns {
		if x.keyOK {
			keyed = append(keyed, x)
		}
	}
	for i := len(keyed) - 1; i >= 0; i-- {
		if keyed[i] == c && i < 86 {
			return fzConnTarget(i)
		}
	}
	return 2 // an unused port: harmless
}

// close tears the rig down: the device, the loop and the harness's
// descriptors and listeners.
func (h *unixFuzz) close() {
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
	for _, c := range h.conns {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
	}
	for _, l := range h.lis {
		if l.fd >= 0 {
			unix.Close(l.fd)
			os.Remove(l.path)
		}
	}
	h.g.Release()
}

// fzSeeds are the corpus' starting programs: the unit tests' scenarios,
// credit, odd buffers, handshakes, port reuse and one of each
// malformation class.
func fzSeeds() [][]byte {
	rx := fzRxOp{Count: 7, Size: fzRxPage}.bytes()
	// Host-initiated connection 0 on guest port 1000.
	hostConn := vt.Prog(
		rx,
		fzConnectOp{Port: 0}.bytes(),
		fzTxOp{Target: fzConnTarget(0), Op: fzResponse}.bytes(),
		fzReadOp(0, 0))
	guestConn := func(l, g int) []byte { // to listener l from guest port g
		return fzTxOp{Target: fzListenTarget(l, g), Op: fzRequest}.bytes()
	}
	rw := func(target byte, n uint16) []byte {
		return fzTxOp{Target: target, Op: fzRW, Len: 3, Val: n - 1, Off: n * 7}.bytes()
	}
	seeds := [][]byte{
		// TestHostToGuest: data both ways, the guest shuts down both
		// ways, the device answers RST and the client reads EOF.
		vt.Prog(hostConn,
			fzWriteOp{Conn: 0, Len: 1, Val: 1200}.bytes(),
			rw(fzConnTarget(0), 11),
			fzReadOp(0, 0),
			fzTxOp{Target: fzConnTarget(0), Op: fzShutdown, Flags: 3}.bytes(),
			fzReadOp(0, 0)),
		// The client half-closes, then closes.
		vt.Prog(hostConn,
			fzWriteOp{Conn: 0, Len: 0, Val: 9}.bytes(),
			fzShutOp(0),
			rw(fzConnTarget(0), 100),
			fzReadOp(0, 0),
			fzCloseOp(0),
			fzTxOp{Target: fzConnTarget(0), Op: fzRst}.bytes()),
		// TestGuestToHost: a listener, data both ways, the guest
		// half-closes, the host closes, the guest answers RST.
		vt.Prog(rx, fzListenOp(1), guestConn(1, 0),
			rw(fzConnTarget(0), 4),
			fzReadOp(0, 0),
			fzWriteOp{Conn: 0, Len: 0, Val: 3}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzShutdown, Flags: ShutdownSend}.bytes(),
			fzReadOp(0, 0),
			fzWriteOp{Conn: 0, Len: 0, Val: 3}.bytes(),
			fzCloseOp(0),
			fzTxOp{Target: fzConnTarget(0), Op: fzRst}.bytes(),
			fzKickOp(rxQueue),
			fzKickOp(eventQueue)),
		// TestNoListenerGetsRst: refused, then a packet for no
		// connection; a listener that went away.
		vt.Prog(rx, guestConn(3, 2),
			fzTxOp{Target: fzUnusedTarget(1, 1), Op: fzRW, Len: 0}.bytes(),
			fzListenOp(0), fzUnlistenOp(0), guestConn(0, 1),
			fzTxOp{Target: fzUnusedTarget(2, 0), Op: fzRequest}.bytes()),
		// TestCredit: 100 bytes of credit, more data pending; the guest
		// consumes and asks for credit.
		vt.Prog(
			fzConnectOp{Port: 1}.bytes(),
			fzRxOp{Count: 2, Size: fzRxPage}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzResponse, Credit: fzCredit(2, false)}.bytes(),
			fzReadOp(0, 0),
			fzWriteOp{Conn: 0, Len: 1, Val: 1000}.bytes(),
			fzRxOp{Count: 2, Size: fzRxPage}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzCreditUpdate, Credit: fzCredit(2, true)}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzCreditRequest, Credit: fzCredit(3, true)}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzCreditUpdate, Credit: fzCredit(1, true)}.bytes()),
		// Header-only and too small receive buffers while host data is
		// pending (known bug 2: a spurious SHUTDOWN).
		vt.Prog(fzRxOp{Count: 0, Size: fzRxPage}.bytes(),
			fzConnectOp{Port: 0}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzResponse}.bytes(),
			fzReadOp(0, 0),
			fzWriteOp{Conn: 0, Len: 0, Val: 5}.bytes(),
			fzRxOp{Count: 2, Size: fzRxHeader}.bytes(),
			fzRxOp{Count: 1, Size: fzRxTiny, Val: 20}.bytes(),
			fzRxOp{Count: 1, Size: fzRxHeader, Layout: 2 | 1<<3, Gap: 0x15}.bytes(),
			fzRxOp{Count: 1, Size: fzRxSmall, Val: 3}.bytes()),
		// A CONNECT line in two writes (known bug 1: the loop spins on
		// the partial line), one never finished, garbage, too long, data
		// behind the newline.
		vt.Prog(rx,
			fzConnectOp{Port: 2, Mode: fzConSplit, Cut: 4}.bytes(),
			fzConnectOp{Port: 3, Mode: fzConPartial, Cut: 6}.bytes(),
			fzConnectOp{Mode: fzConGarbage, Cut: 1}.bytes(),
			fzConnectOp{Mode: fzConTooLong}.bytes(),
			fzConnectOp{Port: 1, Mode: fzConData, Data: 20}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzResponse}.bytes(),
			fzTxOp{Target: fzConnTarget(1), Op: fzResponse}.bytes(),
			fzReadOp(0, 0), fzReadOp(1, 0)),
		// RST from the guest with host data pending and no receive
		// buffers, then a new connection on the same ports (known bug 3:
		// the stale connection's RST resets the new one).
		vt.Prog(fzListenOp(0),
			fzRxOp{Count: 1, Size: fzRxPage}.bytes(),
			guestConn(0, 0),
			fzWriteOp{Conn: 0, Len: 0, Val: 7}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzRst}.bytes(),
			guestConn(0, 0),
			rx,
			fzWriteOp{Conn: 0, Len: 0, Val: 7}.bytes()),
		// Misbehaviour: RW before RESPONSE, RESPONSE twice, REQUEST on a
		// live connection, RW after SHUTDOWN(send).
		vt.Prog(rx, fzConnectOp{}.bytes(), rw(fzConnTarget(0), 5)),
		vt.Prog(hostConn, fzTxOp{Target: fzConnTarget(0), Op: fzResponse}.bytes()),
		vt.Prog(rx, fzListenOp(2), guestConn(2, 3), guestConn(2, 3)),
		vt.Prog(rx, fzListenOp(2), guestConn(2, 3),
			fzTxOp{Target: fzConnTarget(0), Op: fzShutdown, Flags: ShutdownSend}.bytes(),
			rw(fzConnTarget(0), 3)),
		// Reset with connections, handshakes and data, then use again.
		vt.Prog(hostConn, fzListenOp(0), guestConn(0, 1),
			fzConnectOp{Port: 2}.bytes(),
			fzWriteOp{Conn: 0, Len: 1, Val: 300}.bytes(),
			fzResetOp(),
			rx, fzConnectOp{Port: 2}.bytes(),
			fzTxOp{Target: fzConnTarget(3), Op: fzResponse}.bytes(),
			fzWriteOp{Conn: 3, Len: 0, Val: 3}.bytes()),
		// Odd transmit layouts: header merged with the payload, split in
		// two and three, indirect with a writable and a zero-length
		// buffer.
		vt.Prog(hostConn,
			fzTxOp{Target: fzConnTarget(0), Op: fzRW, Len: 1, Val: 1500, Layout: 1 | 3<<2, Split: 9}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzRW, Len: 1, Val: 700, Layout: 2 | 2<<2 | 1<<5, Split: 0x35, MV: 8}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzRW, Len: 3, Val: 4000, Layout: 3 | 5<<2 | 1<<6 | 1<<7, Split: 0x27}.bytes(),
			fzTxOp{Target: fzConnTarget(0), Op: fzCreditUpdate, Layout: 1<<7 | 2, Split: 0x14}.bytes(),
			fzReadOp(0, 0)),
	}
	// Each header malformation on a live connection (known bug 5 for
	// the ones that must reset it).
	for k := 1; k < fzBadKinds; k++ {
		seeds = append(seeds, vt.Prog(hostConn,
			fzTxOp{Target: fzConnTarget(0), Op: fzCreditUpdate, Len: 0, Val: 3, Bad: fzBadByte(k), MV: 5}.bytes(),
			fzWriteOp{Conn: 0, Len: 0, Val: 3}.bytes()))
	}
	// Each chain malformation.
	for k := 1; k <= vt.MalJump; k++ {
		seeds = append(seeds, vt.Prog(hostConn, fzTxOp{Target: fzConnTarget(0), Op: fzRW, Len: 0, Val: 4, Layout: 2 << 2, Mal: vt.MalByte(k), MV: 1}.bytes(),
			fzWriteOp{Conn: 0, Len: 0, Val: 3}.bytes()))
	}
	seeds = append(seeds, vt.Prog(hostConn, fzWriteOp{Conn: 0, Len: 0, Val: 3}.bytes(),
		fzRxOp{Count: 1, Size: fzRxPage, Mal: vt.MalByte(vt.MalOutside)}.bytes(), fzResetOp(), rx))
	return seeds
}
