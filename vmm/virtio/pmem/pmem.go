// Package pmem owns the virtio-pmem device: a host file mapped into guest
// physical memory, which the guest's nvdimm driver uses as a block device
// read and written with plain memory accesses, plus one request queue on
// which the guest asks for a flush (written data made durable).
//
// The device owns the host mapping: the file's pages (MAP_SHARED, or
// MAP_PRIVATE when read-only, so that guest writes stay in this VM) padded
// with zero pages up to Align. The VM builder registers Mapping as a KVM
// memory slot at the address it chose (SetAddress) and describes that
// address in the configuration space (start, size). A read-only device is
// the guest image case: many VMs map one file and share its page cache.
//
// Concurrency: Activate and Reset hand over to the event loop with
// eventloop.Call; the queue is processed only on the loop.
package pmem

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
)

// Geometry and protocol constants (virtio spec 5.19).
const (
	QueueSize = 64
	// Align is the granularity of the region's size and guest address:
	// Linux's nvdimm regions work in 2 MiB sections.
	Align = 2 << 20
	// MaxSize bounds the file (and so the region): 1 TiB.
	MaxSize = 1 << 40
	// ConfigSize is the configuration space: le64 start, le64 size.
	ConfigSize = 16

	ReqTypeFlush = 0
	RespOK       = 0
	RespEIO      = 1
)

// Config describes the device.
type Config struct {
	ID   string
	Path string
	// ReadOnly maps the file privately: the guest may write, but its
	// writes reach only its own copy of the pages, never the file.
	ReadOnly bool
}

// Pmem is a virtio-pmem device.
type Pmem struct {
	cfg     Config
	loop    *eventloop.Loop
	file    *os.File
	mapping []byte
	fileLen uint64 // the file's part of mapping, in whole pages
	start   uint64

	// Owned by the loop while active.
	act     *virtio.Activation
	q       *virtio.Queue
	kick    int
	stopped bool
	chain   virtio.Chain
	flushes uint64
}

// New opens and maps the file; its queue will be served on loop.
func New(cfg Config, loop *eventloop.Loop) (_ *Pmem, err error) {
	flag := os.O_RDWR
	if cfg.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(cfg.Path, flag|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("virtio-pmem %q: %w", cfg.ID, err)
	}
	p := &Pmem{cfg: cfg, loop: loop, file: f, kick: -1}
	defer func() {
		if err != nil {
			p.release()
		}
	}()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("virtio-pmem %q: %w", cfg.ID, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("virtio-pmem %q: %s is not a regular file", cfg.ID, cfg.Path)
	}
	size := fi.Size()
	if size <= 0 || size > MaxSize {
		return nil, fmt.Errorf("virtio-pmem %q: %s: size %d out of range [1, %d]", cfg.ID, cfg.Path, size, int64(MaxSize))
	}
	if p.mapping, p.fileLen, err = mapFile(f, uint64(size), cfg.ReadOnly); err != nil {
		return nil, fmt.Errorf("virtio-pmem %q: map %s: %w", cfg.ID, cfg.Path, err)
	}
	log.L.Debugf("virtio-pmem %q: %s, %d bytes as a %d MiB region, read-only %v, loop %s",
		cfg.ID, cfg.Path, size, len(p.mapping)>>20, cfg.ReadOnly, loop.Name())
	return p, nil
}

// mapFile maps size bytes of f and zero pages after them up to Align:
// a reservation of anonymous memory with the file mapped over its start.
// The file's last partial page reads as zeros past its end, and nothing in
// the region is past the end of the file's mapping (which would be a
// SIGBUS on the guest's access).
func mapFile(f *os.File, size uint64, readOnly bool) ([]byte, uint64, error) {
	region := (size + Align - 1) &^ (Align - 1)
	prot, share := unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED
	if readOnly {
		share = unix.MAP_PRIVATE
	}
	m, err := unix.Mmap(-1, 0, int(region), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		return nil, 0, fmt.Errorf("reserve %d bytes: %w", region, err)
	}
	page := uint64(unix.Getpagesize())
	fileLen := (size + page - 1) &^ (page - 1)
	if err := mmapFixed(m, int(f.Fd()), fileLen, prot, share); err != nil {
		_ = unix.Munmap(m)
		return nil, 0, err
	}
	if readOnly {
		// Map the file's pages (host page cache, shared by every VM) into
		// this process now: a guest's first access of each page is a
		// nested-paging exit either way, but KVM then finds the page
		// mapped instead of taking a host page fault for it. Read only,
		// so nothing is copied. Measured in the lab: the first runc create
		// of a VM 1.07 -> 0.88 s (docs/performance.md). Best effort: old
		// kernels lack MADV_POPULATE_READ (5.14).
		if err := unix.Madvise(m[:fileLen], unix.MADV_POPULATE_READ); err != nil {
			log.L.WithError(err).Debug("virtio-pmem: populate the file mapping")
		}
	}
	return m, fileLen, nil
}

// Mapping is the host memory of the region, Align-aligned in size: what
// the VM registers as the device's memory slot.
func (p *Pmem) Mapping() []byte { return p.mapping }

// ReadOnly reports whether the guest's writes stay private to the VM.
func (p *Pmem) ReadOnly() bool { return p.cfg.ReadOnly }

// SetAddress records the guest-physical address of the region, which the
// configuration space reports. It must be called before the guest boots.
func (p *Pmem) SetAddress(gpa uint64) { p.start = gpa }

// Flushes is how many flush requests the guest made (read on the loop or
// after Reset).
func (p *Pmem) Flushes() uint64 { return p.flushes }

// Close resets the device and releases the mapping and the file. The VM
// must have removed the memory slot first.
func (p *Pmem) Close() error {
	p.Reset()
	return p.release()
}

func (p *Pmem) release() error {
	var errs []error
	if p.mapping != nil {
		errs = append(errs, unix.Munmap(p.mapping))
		p.mapping = nil
	}
	if p.file != nil {
		errs = append(errs, p.file.Close())
		p.file = nil
	}
	return errors.Join(errs...)
}

// DeviceID implements virtio.Device.
func (p *Pmem) DeviceID() uint32 { return virtio.IDPmem }

// Features implements virtio.Device.
func (p *Pmem) Features() uint64 { return 1<<virtio.FIndirectDesc | 1<<virtio.FEventIdx }

// QueueMaxSizes implements virtio.Device.
func (p *Pmem) QueueMaxSizes() []uint16 { return []uint16{QueueSize} }

// ReadConfig implements virtio.Device: le64 start, le64 size.
func (p *Pmem) ReadConfig(offset uint64, data []byte) {
	var cfg [ConfigSize]byte
	binary.LittleEndian.PutUint64(cfg[0:], p.start)
	binary.LittleEndian.PutUint64(cfg[8:], uint64(len(p.mapping)))
	clear(data)
	if offset < ConfigSize {
		copy(data, cfg[offset:])
	}
}

// WriteConfig implements virtio.Device: the configuration is read-only.
func (p *Pmem) WriteConfig(offset uint64, data []byte) {}

// Activate implements virtio.Device.
func (p *Pmem) Activate(a virtio.Activation) error {
	if len(a.Queues) != 1 || len(a.Kicks) != 1 {
		return fmt.Errorf("virtio-pmem: %d queues, want 1", len(a.Queues))
	}
	var err error
	p.loop.Call(func() {
		p.act, p.q, p.kick, p.stopped = &a, a.Queues[0], a.Kicks[0], false
		if err = p.loop.Add(p.kick, p.onKick); err != nil {
			p.act, p.q, p.kick = nil, nil, -1
		}
	})
	if err != nil {
		return fmt.Errorf("virtio-pmem: %w", err)
	}
	return nil
}

// Reset implements virtio.Device.
func (p *Pmem) Reset() {
	p.loop.Call(func() {
		if p.act == nil {
			return
		}
		_ = p.loop.Remove(p.kick)
		p.act, p.q, p.kick = nil, nil, -1
	})
}

func (p *Pmem) onKick() {
	_ = rawsys.Drain(p.kick)
	p.process()
}

func (p *Pmem) fail(err error) {
	p.stopped = true
	if p.act != nil {
		p.act.Broken(err)
	}
}

func (p *Pmem) process() {
	if p.act == nil || p.stopped {
		return
	}
	q := p.q
	for {
		ok, err := q.Pop(&p.chain)
		if err != nil {
			p.fail(err)
			return
		}
		if !ok {
			more, err := q.ArmNotify()
			if err != nil {
				p.fail(err)
				return
			}
			if more {
				continue
			}
			break
		}
		written, err := p.serve()
		if err != nil {
			p.fail(err)
			return
		}
		if err := q.Push(p.chain.Head, written); err != nil {
			p.fail(err)
			return
		}
	}
	need, err := q.Flush()
	if err != nil {
		p.fail(err)
		return
	}
	if need {
		if err := p.act.Interrupt.Signal(virtio.InterruptVring); err != nil {
			log.L.Errorf("virtio-pmem %q: %v", p.cfg.ID, err)
		}
	}
}

// serve handles one request and returns the bytes written.
func (p *Pmem) serve() (uint32, error) {
	typ, resp, err := ParseRequest(p.act.Mem, &p.chain)
	if err != nil {
		return 0, err
	}
	ret := uint32(RespOK)
	switch typ {
	case ReqTypeFlush:
		p.flushes++
		if err := p.flush(); err != nil {
			log.L.Errorf("virtio-pmem %q: flush: %v", p.cfg.ID, err)
			ret = RespEIO
		}
	default:
		log.L.Warnf("virtio-pmem %q: request type %d is not supported", p.cfg.ID, typ)
		ret = RespEIO
	}
	binary.LittleEndian.PutUint32(resp, ret)
	return 4, nil
}

// ParseRequest reads a request chain: the first driver-readable buffer of
// at least 4 bytes holds the le32 type, the first device-writable one of
// at least 4 bytes takes the le32 response (returned, 4 bytes long).
func ParseRequest(mem *guestmem.Memory, c *virtio.Chain) (typ uint32, resp []byte, err error) {
	var req []byte
	for _, d := range c.Descs {
		if d.Len < 4 || (d.Write && resp != nil) || (!d.Write && req != nil) {
			continue
		}
		b, err := mem.Slice(d.Addr, 4)
		if err != nil {
			return 0, nil, fmt.Errorf("%w: pmem buffer: %v", virtio.ErrBroken, err)
		}
		if d.Write {
			resp = b
		} else {
			req = b
		}
	}
	if req == nil || resp == nil {
		return 0, nil, fmt.Errorf("%w: pmem request without a 4-byte type and a 4-byte response buffer", virtio.ErrBroken)
	}
	return binary.LittleEndian.Uint32(req), resp, nil
}

// flush makes the guest's writes to a shared mapping durable; a read-only
// device has nothing to write back.
func (p *Pmem) flush() error {
	if p.cfg.ReadOnly {
		return nil
	}
	if err := unix.Msync(p.mapping[:p.fileLen], unix.MS_SYNC); err != nil {
		return fmt.Errorf("msync: %w", err)
	}
	return p.file.Sync()
}
