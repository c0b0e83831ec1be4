package vsock

import (
	"errors"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

// processRx fills the guest's rx buffers with what connections owe it,
// one packet per buffer, round robin over the connections; a
// connection's turn takes what one read of its host socket brings (up
// to maxRxBatch buffers). It stops when the guest has no buffers left
// (its next rx kick resumes) or nothing is owed.
func (d *Unix) processRx() {
	if d.act == nil || d.stopped {
		return
	}
	q := d.rxq
	pushed := 0
	for len(d.rxList) > 0 || len(d.orphanRsts) > 0 {
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
		written, used, err := d.fillRx()
		if err != nil {
			d.fail(err)
			return
		}
		if !used {
			q.Undo()
			continue
		}
		if !d.pushRx(d.chain.Head, written, &pushed) {
			return
		}
		// The buffers the same read filled after d.chain, in stream order.
		for i := range d.extras {
			if !d.pushRx(d.extras[i].chain.Head, uint32(HeaderSize+d.extras[i].n), &pushed) {
				return
			}
		}
		d.extras = d.extras[:0]
	}
	d.signal(q)
}

// pushRx completes one rx buffer, interrupting the guest every 32; false
// means the device failed.
func (d *Unix) pushRx(head uint16, written uint32, pushed *int) bool {
	if err := d.rxq.Push(head, written); err != nil {
		d.fail(err)
		return false
	}
	if *pushed++; *pushed%32 == 0 {
		d.signal(d.rxq)
	}
	return true
}

// fillRx writes one packet into d.chain, and for data the packets that
// the same read put into d.extras. used false means nothing was written
// (the buffer goes back to the ring).
func (d *Unix) fillRx() (uint32, bool, error) {
	d.extras = d.extras[:0]
	mem := d.act.Mem
	segs, err := Segments(mem, &d.chain, true, 0, HeaderSize+MaxPayload, d.segs[:0])
	d.segs = segs[:0]
	if err != nil {
		return 0, false, err
	}
	room := total(segs)
	if room < HeaderSize {
		// Unusable buffer: complete it empty rather than loop on it.
		log.L.Debugf("vsock %s: rx buffer of %d bytes", d.cfg.ID, room)
		return 0, true, nil
	}
	if n := len(d.orphanRsts); n > 0 {
		h := d.orphanRsts[0]
		d.orphanRsts = d.orphanRsts[1:]
		d.writeHeader(segs, &h)
		return HeaderSize, true, nil
	}
	c := d.rxList[0]
	d.rxList = d.rxList[1:]
	c.inRx = false
	h, n, ok := d.nextPacket(c, segs, room-HeaderSize)
	if ok {
		d.writeHeader(segs, &h)
	}
	// Data is owed but the buffer has room for a header only: complete
	// it empty (the guest drops it) rather than hand it back and take it
	// again forever; the data waits for the next buffer.
	noRoom := !ok && room == HeaderSize && c.readable && c.wantRead()
	if ok && h.Op == OpRst {
		d.forget(c)
	} else {
		if c.fd >= 0 {
			d.updateInterest(c)
		}
		d.schedule(c)
	}
	if noRoom {
		log.L.Debugf("vsock %s: rx buffer without room for data", d.cfg.ID)
		return 0, true, nil
	}
	if !ok {
		return 0, false, nil
	}
	return uint32(HeaderSize + n), true, nil
}

// nextPacket builds c's next packet; RW data is read from the host socket
// straight into the guest buffer after the header.
func (d *Unix) nextPacket(c *conn, segs [][]byte, room uint64) (Header, uint64, bool) {
	switch {
	case c.needRst:
		c.needRst = false
		return d.header(c, OpRst), 0, true
	case c.needRequest:
		c.needRequest = false
		return d.header(c, OpRequest), 0, true
	case c.needResponse:
		c.needResponse = false
		return d.header(c, OpResponse), 0, true
	}
	if c.readable && c.wantRead() && room > 0 {
		credit := uint64(c.peerCredit())
		limit := min(room, credit, MaxPayload)
		data, _ := Segments(d.act.Mem, &d.chain, true, HeaderSize, limit, d.data[:0])
		data = d.takeExtraRx(data, credit-limit)
		d.data = data[:0]
		d.hostReads++
		n, err := rawsys.Readv(c.fd, data)
		if err != nil || n == 0 {
			d.keepExtraRx(0)
		}
		switch {
		case err == nil && n > 0:
			first := min(uint64(n), limit)
			d.spreadExtraRx(c, uint64(n)-first)
			h := d.header(c, OpRW)
			h.Len = uint32(first)
			c.sentCnt += uint32(n)
			c.needCredit = false
			return h, first, true
		case err == nil: // EOF: the host sends no more
			c.readable, c.hostEOF = false, true
			c.shutdownOwed |= ShutdownSend
			if c.hostHup {
				c.shutdownOwed |= ShutdownRcv
			}
		case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
			c.readable = false
		default:
			log.L.Warnf("vsock %s: guest port %d: read host socket: %v; reset", d.cfg.ID, c.key.guestPort, err)
			d.closeHost(c)
			return d.header(c, OpRst), 0, true
		}
	}
	if c.shutdownOwed != 0 {
		h := d.header(c, OpShutdown)
		h.Flags = c.shutdownOwed | c.shutdownSent
		c.shutdownSent |= c.shutdownOwed
		c.shutdownOwed = 0
		return h, 0, true
	}
	if c.needCredit {
		c.needCredit = false
		return d.header(c, OpCreditUpdate), 0, true
	}
	return Header{}, 0, false
}

// writeHeader copies h into the first HeaderSize bytes of segs.
func (d *Unix) writeHeader(segs [][]byte, h *Header) {
	h.Encode(d.hdr[:])
	b := d.hdr[:]
	for _, s := range segs {
		if len(b) == 0 {
			break
		}
		b = b[copy(s, b):]
	}
}

// maxRxBatch bounds the rx buffers that one read of a host socket fills:
// a guest posts 4 KiB buffers, and a read per buffer would make the
// system calls, not the copies, the receive path's cost.
const maxRxBatch = 16

// rxExtra is an rx buffer taken for a batched read after d.chain.
type rxExtra struct {
	chain virtio.Chain
	room  uint64 // payload bytes it can take
	n     uint64 // payload bytes the read put in it
}

// takeExtraRx pops up to maxRxBatch-1 more rx buffers while credit (the
// guest's window beyond the first buffer) lasts, and appends their
// payload areas to iov. A buffer that is unusable here (broken, or
// without room past its header) goes back to the ring for fillRx to
// deal with on its own.
func (d *Unix) takeExtraRx(iov [][]byte, credit uint64) [][]byte {
	for credit > 0 && len(d.extras) < maxRxBatch-1 {
		d.extras = append(d.extras, rxExtra{}) // reuses the slice's room
		x := &d.extras[len(d.extras)-1]
		ok, err := d.rxq.Pop(&x.chain)
		if err != nil || !ok {
			// A broken ring is reported by processRx's next Pop.
			d.extras = d.extras[:len(d.extras)-1]
			break
		}
		more, err := Segments(d.act.Mem, &x.chain, true, HeaderSize, min(credit, MaxPayload), iov)
		if err != nil || len(more) == len(iov) || len(more) > maxIovs {
			d.rxq.Undo()
			d.extras = d.extras[:len(d.extras)-1]
			break
		}
		x.room, x.n = total(more[len(iov):]), 0
		credit -= x.room
		iov = more
	}
	return iov
}

// maxIovs is the kernel's limit on the buffers of one readv (UIO_MAXIOV).
const maxIovs = 1024

// spreadExtraRx gives the rest bytes a batched read put past d.chain
// to the extra buffers in order, writes their headers and returns the
// buffers the read did not reach to the ring.
func (d *Unix) spreadExtraRx(c *conn, rest uint64) {
	filled := 0
	for i := range d.extras {
		x := &d.extras[i]
		if rest == 0 {
			break
		}
		x.n = min(rest, x.room)
		rest -= x.n
		h := d.header(c, OpRW)
		h.Len = uint32(x.n)
		// Not d.segs: fillRx still holds d.chain's buffers there.
		segs, _ := Segments(d.act.Mem, &x.chain, true, 0, HeaderSize, d.hdrSegs[:0])
		d.hdrSegs = segs[:0]
		d.writeHeader(segs, &h)
		filled++
	}
	d.keepExtraRx(filled)
}

// keepExtraRx keeps the first n extra buffers and returns the others to
// the ring (they were popped last, so they go back last first).
func (d *Unix) keepExtraRx(n int) {
	for range len(d.extras) - n {
		d.rxq.Undo()
	}
	d.extras = d.extras[:n]
}
