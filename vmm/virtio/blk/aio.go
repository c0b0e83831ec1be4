package blk

import (
	"fmt"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/internal/uring"
)

// Asynchronous requests. Where the kernel has io_uring, each disk gets a
// ring (package uring) and reads, flushes and O_DIRECT writes go through
// it (a buffered read the page cache holds is served before, at once:
// backend.readCached): the loop queues every request it pops, submits them in one call,
// and completes them as the ring reports them (on the done eventfd), so a
// guest's queue depth reaches the disk. Everything else (buffered writes,
// buffered reads on a file system without non-blocking reads, GET_ID,
// discard, write-zeroes, unaligned O_DIRECT buffers, a request the ring
// cannot take, a ring that could not be set up, and every request to a
// file in memory, where each is a copy done at once) is served
// synchronously. Requests in flight are waited for before the queue is reset
// and before the file behind the device changes (replace.go).

// useRing turns the rings off (tests cover both paths).
var useRing = true

// readCachedFirst makes a buffered read try the page cache at once
// (backend.readCached) before it goes to the ring or the synchronous
// path; tests turn it off to put reads in flight on the ring.
var readCachedFirst = true

// aioReq is one request in flight on the ring.
type aioReq struct {
	head   uint16
	status []byte // the guest's status byte
	used   uint32 // bytes written into the chain on success
	typ    uint32
	off    uint64
	len    uint64
	data   [][]byte // the request's buffers (guest memory); reused
	iov    []unix.Iovec
}

// openRing gives be a ring that signals done, or leaves it synchronous.
func (b *Block) openRing(be *backend) {
	if !useRing {
		return
	}
	if be.cow != nil {
		// A request may read the base, copy a cluster up and set the
		// cluster map: it runs whole, in order, on the loop.
		log.L.Debugf("virtio-blk %s: synchronous I/O: copy-on-write over %s", b.cfg.ID, b.cfg.Backing)
		return
	}
	if be.inMemory {
		// Every request is a memory copy, done at once (tmpfs cannot even
		// read without blocking when asked, so the ring would hand its
		// requests to kernel worker threads).
		log.L.Debugf("virtio-blk %s: synchronous I/O: the file is in memory", b.cfg.ID)
		return
	}
	if !be.direct && !be.nowaitRead {
		// A buffered file whose reads cannot be served inline: the ring
		// would only hand its flushes to kernel worker threads.
		log.L.Debugf("virtio-blk %s: synchronous I/O: no non-blocking buffered reads", b.cfg.ID)
		return
	}
	r, err := uring.New(QueueSize, be.fd, b.done)
	if err != nil {
		log.L.Debugf("virtio-blk %s: synchronous I/O: %v", b.cfg.ID, err)
		return
	}
	be.ring = r
	if b.reqs == nil {
		b.reqs = make([]aioReq, QueueSize)
		b.free = make([]uint16, 0, QueueSize)
		for i := QueueSize - 1; i >= 0; i-- {
			b.free = append(b.free, uint16(i))
		}
	}
}

// slot takes a free request slot for an asynchronous request, or -1.
func (b *Block) slot() int {
	if b.be == nil || b.be.ring == nil || len(b.free) == 0 {
		return -1
	}
	s := b.free[len(b.free)-1]
	b.free = b.free[:len(b.free)-1]
	return int(s)
}

func (b *Block) release(s int) { b.free = append(b.free, uint16(s)) }

// start queues r (parsed into slot s) on the ring; false leaves it to the
// synchronous path, which also reports every error.
func (b *Block) start(s int, head uint16, r *Request) bool {
	be := b.be
	a := &b.reqs[s]
	var err error
	switch r.Type {
	case TypeIn, TypeOut:
		if b.checkRW(r) != StatusOK || (be.direct && !be.aligned(r.Data)) || len(r.Data) > iovMax {
			return false
		}
		if !be.direct && r.Type == TypeIn && !be.nowaitRead {
			// Every read would go to a worker thread (see nowaitRead).
			return false
		}
		if r.Type == TypeOut && !be.direct {
			// A buffered write is a copy into the page cache, which the
			// kernel's io_uring does not do inline on common file systems
			// (ext4): it hands the write to a worker thread, a hop that
			// costs more than the copy (QD1 writes: 69 µs against 17
			// synchronously, docs/performance.md). So it stays a pwritev.
			return false
		}
		a.iov = a.iov[:0]
		for _, d := range r.Data {
			if len(d) > 0 {
				v := unix.Iovec{Base: &d[0]}
				v.SetLen(len(d))
				a.iov = append(a.iov, v)
			}
		}
		off := r.Sector * SectorSize
		if len(a.iov) == 0 {
			return false
		}
		a.used = 1
		if r.Type == TypeIn {
			a.used += uint32(r.Len)
			err = be.ring.Readv(a.iov, off, uint64(s))
		} else {
			err = be.ring.Writev(a.iov, off, uint64(s))
		}
		a.off = off
	case TypeFlush:
		if b.cfg.ReadOnly {
			return false
		}
		a.used = 1
		err = be.ring.Fdatasync(uint64(s))
	default:
		return false
	}
	if err != nil {
		return false
	}
	a.head, a.status, a.typ, a.len = head, r.Status, r.Type, r.Len
	return true
}

// submit hands what process queued to the kernel and completes what the
// kernel finished inside the call.
func (b *Block) submit() {
	be := b.be
	if be == nil || be.ring == nil {
		return
	}
	err := be.ring.Submit()
	// The kernel finishes cached I/O inside the call and signals done for
	// it too: take those completions now rather than in onDone. Draining
	// first keeps every later completion's signal.
	_ = rawsys.Drain(b.done)
	be.ring.Reap(b.complete)
	if err != nil {
		// The queue holds at most QueueSize requests and the completion
		// queue twice that, so this is the kernel out of memory or a
		// ring we broke: the device stops (the guest sees NEEDS_RESET).
		log.L.Errorf("virtio-blk %s: %v", b.cfg.ID, err)
		b.fail(fmt.Errorf("virtio-blk %s: %w", b.cfg.ID, err))
	}
}

// onDone reaps completions the kernel posted after the submitting call.
func (b *Block) onDone() {
	_ = rawsys.Drain(b.done)
	if b.be == nil || b.be.ring == nil {
		return
	}
	if b.be.ring.Reap(b.complete) > 0 {
		b.signal()
	}
}

// complete finishes slot user with the ring's result res.
func (b *Block) complete(user uint64, res int32) {
	s := int(user)
	if s >= len(b.reqs) {
		return // not ours: the ring takes no other user data
	}
	a := &b.reqs[s]
	status := uint8(StatusOK)
	used := a.used
	switch {
	case res < 0:
		// Cancelled or interrupted (the submitting thread exited, say):
		// do it here instead. Real errors fail the request.
		errno := unix.Errno(-res)
		if errno == unix.ECANCELED || errno == unix.EINTR || errno == unix.EAGAIN {
			status, used = b.finishSync(a, 0)
		} else {
			log.L.Warnf("virtio-blk %s: request %d of %d bytes at %d: %v", b.cfg.ID, a.typ, a.len, a.off, errno)
			status, used = StatusIOErr, 1
		}
	case a.typ != TypeFlush && uint64(res) < a.len:
		status, used = b.finishSync(a, uint64(res))
	}
	a.status[0] = status
	b.release(s)
	if b.q == nil || b.stopped {
		return // reset: the queue is gone
	}
	if err := b.q.Push(a.head, used); err != nil {
		b.fail(err)
	}
}

// finishSync does what the ring left of a (done bytes transferred) with
// the synchronous calls; a read past the end of the file reads zeroes.
func (b *Block) finishSync(a *aioReq, done uint64) (uint8, uint32) {
	var err error
	switch a.typ {
	case TypeFlush:
		err = b.be.flush()
	default:
		rest := skip(a.data, done)
		err = b.be.rw(rest, a.off+done, a.typ == TypeOut)
	}
	if err != nil {
		log.L.Warnf("virtio-blk %s: request %d of %d bytes at %d: %v", b.cfg.ID, a.typ, a.len, a.off, err)
		return StatusIOErr, 1
	}
	return StatusOK, a.used
}

// drain waits for every request in flight on be's ring. With the queue
// still active they complete to the guest; after a reset they are
// dropped.
func (b *Block) drain(be *backend) {
	if be == nil || be.ring == nil || be.ring.Inflight() == 0 {
		return
	}
	if err := be.ring.Wait(b.complete); err != nil {
		log.L.Errorf("virtio-blk %s: wait for requests in flight: %v", b.cfg.ID, err)
	}
	if b.q != nil && !b.stopped {
		b.signal()
	}
}
