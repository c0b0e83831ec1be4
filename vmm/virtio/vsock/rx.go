package vsock

import (
	"errors"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
)

// processRx fills the guest's rx buffers with what connections owe it,
// one packet per buffer, round robin over the connections. It stops when
// the guest has no buffers left (its next rx kick resumes) or nothing is
// owed.
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
		if err := q.Push(d.chain.Head, written); err != nil {
			d.fail(err)
			return
		}
		if pushed++; pushed%32 == 0 {
			d.signal(q)
		}
	}
	d.signal(q)
}

// fillRx writes one packet into d.chain. used false means nothing was
// written (the buffer goes back to the ring).
func (d *Unix) fillRx() (uint32, bool, error) {
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
		limit := min(room, uint64(c.peerCredit()), MaxPayload)
		data, _ := Segments(d.act.Mem, &d.chain, true, HeaderSize, limit, d.data[:0])
		d.data = data[:0]
		n, err := rawsys.Readv(c.fd, data)
		switch {
		case err == nil && n > 0:
			h := d.header(c, OpRW)
			h.Len = uint32(n)
			c.sentCnt += uint32(n)
			c.needCredit = false
			return h, uint64(n), true
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
