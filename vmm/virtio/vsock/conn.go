package vsock

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

// connKey names a connection by its two ports (the CIDs are fixed: the
// host and the guest).
type connKey struct {
	hostPort  uint32
	guestPort uint32
}

type connState int

const (
	// stateConnecting: a host-initiated connection whose REQUEST waits
	// for the guest's RESPONSE.
	stateConnecting connState = iota
	stateEstablished
)

// conn is one stream between a host unix socket and a guest port. All
// counters are the protocol's wrapping u32s.
type conn struct {
	key           connKey
	fd            int
	gen           int32 // epoll token, see Unix.newGen
	state         connState
	hostInitiated bool
	deadline      time.Time
	events        uint32 // current interest in the nested epoll (0: not registered)

	// Control packets owed to the guest.
	needRequest, needResponse, needCredit, needRst bool
	shutdownOwed                                   uint32 // SHUTDOWN flags not yet sent
	shutdownSent                                   uint32
	inRx                                           bool // in Unix.rxList

	// Host socket state.
	readable bool // EPOLLIN seen, not yet drained to EAGAIN
	hostEOF  bool // read returned 0: the host sends no more
	hostHup  bool // EPOLLHUP: the host closed both directions

	// Guest to host: bytes the guest sent that the host socket has not
	// taken yet, and the counters we advertise.
	txBuf        []byte
	fwdCnt       uint32 // bytes handed to the host socket
	lastFwdSent  uint32 // fwdCnt as of our last packet to the guest
	recvCnt      uint32 // bytes received from the guest
	guestShut    uint32 // SHUTDOWN flags received (sticky)
	shutWrittenW bool   // shutdown(SHUT_WR) done on the host socket

	// Host to guest: the guest's receive window.
	sentCnt      uint32 // bytes sent to the guest
	peerBufAlloc uint32
	peerFwdCnt   uint32
}

// peerCredit is how many more bytes the guest can take.
func (c *conn) peerCredit() uint32 {
	used := c.sentCnt - c.peerFwdCnt
	if used > c.peerBufAlloc {
		return 0
	}
	return c.peerBufAlloc - used
}

// wantRead says whether the host socket should be read now.
func (c *conn) wantRead() bool {
	return c.state == stateEstablished && !c.hostEOF && c.guestShut&ShutdownRcv == 0 &&
		(c.shutdownOwed|c.shutdownSent)&ShutdownSend == 0 && !c.needRst && c.peerCredit() > 0
}

// hasRxWork says whether the connection has a packet for the guest.
func (c *conn) hasRxWork() bool {
	return c.needRst || c.needRequest || c.needResponse || c.needCredit || c.shutdownOwed != 0 ||
		(c.readable && c.wantRead())
}

// header returns a packet header from the host side of c.
func (d *Unix) header(c *conn, op uint16) Header {
	c.lastFwdSent = c.fwdCnt
	return Header{SrcCID: HostCID, DstCID: uint64(d.cfg.GuestCID), SrcPort: c.key.hostPort, DstPort: c.key.guestPort,
		Type: TypeStream, Op: op, BufAlloc: ConnBufSize, FwdCnt: c.fwdCnt}
}

// schedule queues c for the rx path if it has something for the guest.
func (d *Unix) schedule(c *conn) {
	if !c.inRx && c.hasRxWork() {
		c.inRx = true
		d.rxList = append(d.rxList, c)
	}
}

// updateInterest registers what the host socket is watched for.
func (d *Unix) updateInterest(c *conn) {
	if c.fd < 0 {
		return
	}
	var ev uint32
	if !c.readable && c.wantRead() {
		ev |= unix.EPOLLIN
	}
	if len(c.txBuf) > 0 {
		ev |= unix.EPOLLOUT
	}
	if ev == c.events {
		return
	}
	var err error
	switch {
	case ev == 0:
		err = rawsys.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
	case c.events == 0:
		err = rawsys.EpollCtl(d.epfd, unix.EPOLL_CTL_ADD, c.fd, &unix.EpollEvent{Events: ev, Fd: int32(c.fd), Pad: c.gen})
	default:
		err = rawsys.EpollCtl(d.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: ev, Fd: int32(c.fd), Pad: c.gen})
	}
	if err != nil {
		log.L.Warnf("vsock %s: epoll for port %d: %v", d.cfg.ID, c.key.guestPort, err)
	}
	c.events = ev
}

// onConnEvent handles readiness of a connection's host socket.
func (d *Unix) onConnEvent(c *conn, ev uint32) {
	if ev&unix.EPOLLHUP != 0 {
		c.hostHup = true
	}
	if ev&(unix.EPOLLIN|unix.EPOLLHUP|unix.EPOLLERR) != 0 && c.wantRead() {
		c.readable = true
	}
	if ev&unix.EPOLLOUT != 0 || (ev&(unix.EPOLLHUP|unix.EPOLLERR) != 0 && len(c.txBuf) > 0) {
		if !d.flushTx(c) {
			return
		}
	}
	d.updateInterest(c)
	d.schedule(c)
}

// reset ends c: the host socket is closed at once and an RST goes to
// the guest.
func (d *Unix) reset(c *conn) {
	d.closeHost(c)
	c.needRst = true
	c.needRequest, c.needResponse, c.needCredit, c.shutdownOwed, c.readable = false, false, false, 0, false
	d.schedule(c)
}

// closeHost closes the host socket of c.
func (d *Unix) closeHost(c *conn) {
	if c.fd < 0 {
		return
	}
	if c.events != 0 {
		_ = unix.EpollCtl(d.epfd, unix.EPOLL_CTL_DEL, c.fd, nil)
		c.events = 0
	}
	delete(d.fds, int32(c.fd))
	unix.Close(c.fd)
	c.fd = -1
	c.txBuf, c.readable = nil, false
}

// forget drops c entirely (after the last packet, or an RST from the
// guest).
func (d *Unix) forget(c *conn) {
	d.closeHost(c)
	if d.conns[c.key] == c {
		delete(d.conns, c.key)
	}
	c.needRst, c.needRequest, c.needResponse, c.needCredit, c.shutdownOwed = false, false, false, false, 0
	// Off the rx list too: a new connection may take the same ports.
	if c.inRx {
		c.inRx = false
		for i, o := range d.rxList {
			if o == c {
				d.rxList = append(d.rxList[:i], d.rxList[i+1:]...)
				break
			}
		}
	}
}

// processTx handles the guest's packets on the tx queue.
func (d *Unix) processTx() {
	if d.act == nil || d.stopped {
		return
	}
	q := d.txq
	for {
		ok, err := q.Pop(&d.chain)
		if err != nil {
			d.fail(err)
			return
		}
		if !ok {
			more, err := q.ArmNotify()
			if err != nil {
				d.fail(err)
				return
			}
			if more {
				continue
			}
			break
		}
		d.handleTx(&d.chain)
		if err := q.Push(d.chain.Head, 0); err != nil {
			d.fail(err)
			return
		}
	}
	d.signal(q)
}

func (d *Unix) signal(q *virtio.Queue) {
	need, err := q.Flush()
	if err != nil {
		d.fail(err)
		return
	}
	if need {
		if err := d.act.Interrupt.Signal(virtio.InterruptVring); err != nil {
			log.L.Errorf("vsock %s: %v", d.cfg.ID, err)
		}
	}
}

// Segments returns the guest buffers of c that are device-readable
// (writable false) or device-writable (writable true), skipping the first
// skip bytes and taking at most limit bytes, appended to out.
func Segments(mem *guestmem.Memory, c *virtio.Chain, writable bool, skip, limit uint64, out [][]byte) ([][]byte, error) {
	for _, desc := range c.Descs {
		if desc.Write != writable || limit == 0 {
			continue
		}
		n := uint64(desc.Len)
		if skip >= n {
			skip -= n
			continue
		}
		n = min(n-skip, limit)
		b, err := mem.Slice(desc.Addr+skip, n)
		if err != nil {
			return out, fmt.Errorf("%w: buffer %#x+%#x: %v", virtio.ErrBroken, desc.Addr+skip, n, err)
		}
		out = append(out, b)
		skip, limit = 0, limit-n
	}
	return out, nil
}

func total(segs [][]byte) uint64 {
	var n uint64
	for _, s := range segs {
		n += uint64(len(s))
	}
	return n
}

// handleTx handles one packet from the guest. Malformed packets are
// dropped (and answered with RST when they name a connection).
func (d *Unix) handleTx(ch *virtio.Chain) {
	mem := d.act.Mem
	segs, err := Segments(mem, ch, false, 0, HeaderSize, d.segs[:0])
	d.segs = segs[:0]
	if err != nil || total(segs) < HeaderSize {
		log.L.Debugf("vsock %s: short tx packet", d.cfg.ID)
		return
	}
	n := 0
	for _, s := range segs {
		n += copy(d.hdr[n:], s)
	}
	h, err := ParseHeader(d.hdr[:])
	if err != nil {
		log.L.Debugf("vsock %s: %v", d.cfg.ID, err)
		// A malformed packet on a live connection ends it on both sides;
		// an RST alone would leave the host socket open.
		if c := d.conns[connKey{hostPort: h.DstPort, guestPort: h.SrcPort}]; c != nil && !c.needRst &&
			h.SrcCID == uint64(d.cfg.GuestCID) && h.DstCID == HostCID {
			d.reset(c)
		} else if h.Op != OpRst && h.Type == TypeStream {
			d.orphanRst(h)
		}
		return
	}
	if h.SrcCID != uint64(d.cfg.GuestCID) || h.DstCID != HostCID {
		log.L.Debugf("vsock %s: packet %d->%d dropped", d.cfg.ID, h.SrcCID, h.DstCID)
		return
	}
	var payload [][]byte
	if h.Op == OpRW {
		payload, err = Segments(mem, ch, false, HeaderSize, uint64(h.Len), d.segs[:0])
		d.segs = payload[:0]
		if err != nil || total(payload) != uint64(h.Len) {
			log.L.Debugf("vsock %s: RW payload shorter than %d", d.cfg.ID, h.Len)
			payload = nil
			h.Op = OpInvalid
		}
	}
	key := connKey{hostPort: h.DstPort, guestPort: h.SrcPort}
	c := d.conns[key]
	if c == nil || c.needRst {
		switch {
		case h.Op == OpRequest && c == nil:
			d.guestConnect(h, key)
		case h.Op != OpRst:
			d.orphanRst(h)
		}
		return
	}
	c.peerBufAlloc, c.peerFwdCnt = h.BufAlloc, h.FwdCnt
	switch h.Op {
	case OpResponse:
		if c.state != stateConnecting {
			d.guestWarn("guest port %d: RESPONSE on an established connection; reset", c.key.guestPort)
			d.reset(c)
			break
		}
		c.state = stateEstablished
		ok := []byte("OK " + strconv.FormatUint(uint64(c.key.hostPort), 10) + "\n")
		if n, err := rawsys.Write(c.fd, ok); err != nil || n != len(ok) {
			d.reset(c)
			break
		}
		d.armTimer()
	case OpRW:
		if c.state != stateEstablished || c.guestShut&ShutdownSend != 0 {
			d.guestWarn("guest port %d: data before RESPONSE or after SHUTDOWN; reset", c.key.guestPort)
			d.reset(c)
			break
		}
		d.guestData(c, payload, h.Len)
	case OpShutdown:
		c.guestShut |= h.Flags & (ShutdownRcv | ShutdownSend)
		d.finishShutdown(c)
	case OpRst:
		d.forget(c)
		return
	case OpCreditUpdate:
	case OpCreditRequest:
		c.needCredit = true
	default: // REQUEST on a live connection, or a bad RW
		d.guestWarn("guest port %d: unexpected op %d (len %d); reset", c.key.guestPort, h.Op, h.Len)
		d.reset(c)
	}
	if c.fd >= 0 {
		d.updateInterest(c)
	}
	d.schedule(c)
}

// orphanRst answers a packet that belongs to no connection.
func (d *Unix) orphanRst(h Header) {
	if len(d.orphanRsts) >= maxOrphanRsts {
		return
	}
	d.orphanRsts = append(d.orphanRsts, Header{SrcCID: HostCID, DstCID: uint64(d.cfg.GuestCID),
		SrcPort: h.DstPort, DstPort: h.SrcPort, Type: TypeStream, Op: OpRst})
}

// guestConnect handles a guest REQUEST: connect to <uds_path>_<port>.
func (d *Unix) guestConnect(h Header, key connKey) {
	if d.full() {
		d.orphanRst(h)
		return
	}
	path := d.cfg.UDSPath + "_" + strconv.FormatUint(uint64(h.DstPort), 10)
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err == nil {
		err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
		if err != nil {
			unix.Close(fd)
		}
	}
	if err != nil {
		log.L.Debugf("vsock %s: guest port %d -> %s: %v", d.cfg.ID, h.SrcPort, path, err)
		d.orphanRst(h)
		return
	}
	c := &conn{key: key, fd: fd, gen: d.newGen(), state: stateEstablished, needResponse: true,
		peerBufAlloc: h.BufAlloc, peerFwdCnt: h.FwdCnt}
	d.conns[key] = c
	d.fds[int32(fd)] = c
	d.updateInterest(c)
	d.schedule(c)
}

// guestData passes an RW payload to the host socket, queueing what it
// does not take. A guest that sends beyond the credit we gave is reset.
func (d *Unix) guestData(c *conn, payload [][]byte, n uint32) {
	if uint64(len(c.txBuf))+uint64(n) > ConnBufSize {
		d.guestWarn("guest port %d overran its credit (%d buffered + %d); reset", c.key.guestPort, len(c.txBuf), n)
		d.reset(c)
		return
	}
	c.recvCnt += n
	if len(c.txBuf) == 0 {
		for len(payload) > 0 {
			w, err := rawsys.Writev(c.fd, payload)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				if !errors.Is(err, unix.EAGAIN) {
					d.reset(c)
					return
				}
				break
			}
			c.fwdCnt += uint32(w)
			for w > 0 && len(payload) > 0 {
				k := min(w, len(payload[0]))
				payload[0] = payload[0][k:]
				w -= k
				if len(payload[0]) == 0 {
					payload = payload[1:]
				}
			}
		}
	}
	for _, p := range payload {
		c.txBuf = append(c.txBuf, p...)
	}
	d.creditCheck(c)
}

// creditCheck owes the guest a CREDIT_UPDATE when its view of our free
// space is low and the host has consumed more since we last told it.
func (d *Unix) creditCheck(c *conn) {
	seenFree := int64(ConnBufSize) - int64(c.recvCnt-c.lastFwdSent)
	if seenFree < creditThreshold && c.fwdCnt != c.lastFwdSent {
		c.needCredit = true
	}
}

// flushTx writes queued guest data to the host socket; false means c was
// reset.
func (d *Unix) flushTx(c *conn) bool {
	for len(c.txBuf) > 0 {
		w, err := rawsys.Write(c.fd, c.txBuf)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			d.reset(c)
			return false
		}
		c.fwdCnt += uint32(w)
		c.txBuf = c.txBuf[w:]
	}
	if len(c.txBuf) == 0 {
		c.txBuf = nil
	}
	d.creditCheck(c)
	d.finishShutdown(c)
	return c.fd >= 0 || c.needRst
}

// finishShutdown applies the guest's SHUTDOWN flags once its data has
// reached the host: SEND becomes shutdown(SHUT_WR) on the host socket;
// both flags close the connection with an RST, as the peer of a
// closing Linux socket does.
func (d *Unix) finishShutdown(c *conn) {
	if c.fd < 0 || len(c.txBuf) > 0 {
		return
	}
	if c.guestShut == ShutdownRcv|ShutdownSend {
		d.reset(c)
		return
	}
	if c.guestShut&ShutdownSend != 0 && !c.shutWrittenW {
		c.shutWrittenW = true
		_ = unix.Shutdown(c.fd, unix.SHUT_WR)
	}
}
