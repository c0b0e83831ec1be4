// Package virtiotest is a fake virtio guest driver for tests: it lays out
// split rings in a guestmem.Memory, posts descriptor chains (direct and
// indirect) and reads completions, and can write arbitrary (malicious)
// ring contents. It is used only by tests.
package virtiotest

import (
	"encoding/binary"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

// Descriptor flags as the driver writes them.
const (
	FlagNext     = 1
	FlagWrite    = 2
	FlagIndirect = 4
)

// NewMemory returns size bytes of zeroed guest RAM at guest address 0.
func NewMemory(size int) *guestmem.Memory {
	m, err := guestmem.FromBytes([]uint64{0}, [][]byte{make([]byte, size)})
	if err != nil {
		panic(err) // test helper: cannot happen for a single region
	}
	return m
}

// Buf is one buffer of a chain.
type Buf struct {
	Addr  uint64
	Len   uint32
	Write bool
}

// Used is one used-ring element.
type Used struct {
	ID  uint32
	Len uint32
}

// Driver drives one queue.
type Driver struct {
	Mem                   *guestmem.Memory
	Size                  uint16
	Desc, Avail, UsedRing uint64
	nextDesc              uint16
	availIdx              uint16
	usedSeen              uint16
	heap                  uint64
	heapEnd               uint64
}

// NewDriver places a queue of size entries at base (page aligned) and
// uses the memory after it, up to heapEnd, for buffers.
func NewDriver(mem *guestmem.Memory, base uint64, size uint16, heapEnd uint64) *Driver {
	n := uint64(size)
	d := &Driver{Mem: mem, Size: size, Desc: base}
	d.Avail = base + 16*n
	d.UsedRing = (d.Avail + 6 + 2*n + 4095) &^ 4095
	d.heap = (d.UsedRing + 6 + 8*n + 4095) &^ 4095
	d.heapEnd = heapEnd
	return d
}

// Configure fills q's registers as a driver would and marks it ready.
func (d *Driver) Configure(q *virtio.Queue) {
	q.Size, q.DescTable, q.AvailRing, q.UsedRing, q.Ready = d.Size, d.Desc, d.Avail, d.UsedRing, true
}

// Alloc returns n bytes of buffer space aligned to align.
func (d *Driver) Alloc(n, align uint64) uint64 {
	a := (d.heap + align - 1) &^ (align - 1)
	if a+n > d.heapEnd {
		panic(fmt.Sprintf("virtiotest: out of buffer memory (%d bytes)", n))
	}
	d.heap = a + n
	return a
}

// WriteDesc writes raw descriptor i of the table at table.
func (d *Driver) WriteDesc(table uint64, i uint16, addr uint64, length uint32, flags, next uint16) {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[0:], addr)
	binary.LittleEndian.PutUint32(b[8:], length)
	binary.LittleEndian.PutUint16(b[12:], flags)
	binary.LittleEndian.PutUint16(b[14:], next)
	if err := d.Mem.WriteAt(b[:], table+16*uint64(i)); err != nil {
		panic(err)
	}
}

// PublishHead puts head in the next avail slot and bumps avail.idx.
func (d *Driver) PublishHead(head uint16) {
	// The device reads ring slots atomically; so does a real guest's
	// store, as far as the race detector is concerned.
	if err := d.Mem.StoreUint16(d.Avail+4+2*uint64(d.availIdx%d.Size), head); err != nil {
		panic(err)
	}
	d.availIdx++
	d.SetAvailIdx(d.availIdx)
}

// SetAvailIdx writes avail.idx directly.
func (d *Driver) SetAvailIdx(v uint16) {
	if err := d.Mem.StoreUint16(d.Avail+2, v); err != nil {
		panic(err)
	}
}

// AddChain writes bufs as a direct chain and publishes it.
func (d *Driver) AddChain(bufs ...Buf) uint16 {
	head := d.nextDesc
	for i, b := range bufs {
		idx := (head + uint16(i)) % d.Size
		flags := uint16(0)
		if b.Write {
			flags |= FlagWrite
		}
		next := uint16(0)
		if i+1 < len(bufs) {
			flags |= FlagNext
			next = (idx + 1) % d.Size
		}
		d.WriteDesc(d.Desc, idx, b.Addr, b.Len, flags, next)
	}
	d.nextDesc = (head + uint16(len(bufs))) % d.Size
	d.PublishHead(head)
	return head
}

// AddIndirect writes bufs into an indirect table referenced by one
// descriptor and publishes it.
func (d *Driver) AddIndirect(bufs ...Buf) uint16 {
	table := d.Alloc(16*uint64(len(bufs)), 16)
	for i, b := range bufs {
		flags := uint16(0)
		if b.Write {
			flags |= FlagWrite
		}
		next := uint16(0)
		if i+1 < len(bufs) {
			flags |= FlagNext
			next = uint16(i + 1)
		}
		d.WriteDesc(table, uint16(i), b.Addr, b.Len, flags, next)
	}
	head := d.nextDesc
	d.WriteDesc(d.Desc, head, table, uint32(16*len(bufs)), FlagIndirect, 0)
	d.nextDesc = (head + 1) % d.Size
	d.PublishHead(head)
	return head
}

// TakeUsed returns the used elements the device published since the last
// call.
func (d *Driver) TakeUsed() []Used {
	idx, err := d.Mem.LoadUint16(d.UsedRing + 2)
	if err != nil {
		panic(err)
	}
	var out []Used
	for ; d.usedSeen != idx; d.usedSeen++ {
		var b [8]byte
		if err := d.Mem.ReadAt(b[:], d.UsedRing+4+8*uint64(d.usedSeen%d.Size)); err != nil {
			panic(err)
		}
		out = append(out, Used{ID: binary.LittleEndian.Uint32(b[0:]), Len: binary.LittleEndian.Uint32(b[4:])})
	}
	return out
}

// UsedSeen is the used index up to which TakeUsed has returned elements.
func (d *Driver) UsedSeen() uint16 { return d.usedSeen }

// SetUsedEvent writes used_event (the driver's interrupt threshold).
func (d *Driver) SetUsedEvent(v uint16) {
	if err := d.Mem.StoreUint16(d.Avail+4+2*uint64(d.Size), v); err != nil {
		panic(err)
	}
}

// AvailEvent reads avail_event (the device's kick threshold).
func (d *Driver) AvailEvent() uint16 {
	v, err := d.Mem.LoadUint16(d.UsedRing + 4 + 8*uint64(d.Size))
	if err != nil {
		panic(err)
	}
	return v
}

// SetAvailFlags writes avail.flags.
func (d *Driver) SetAvailFlags(v uint16) {
	if err := d.Mem.StoreUint16(d.Avail, v); err != nil {
		panic(err)
	}
}
