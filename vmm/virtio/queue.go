package virtio

import (
	"encoding/binary"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
)

// MaxQueueSize is the largest split-ring size the spec allows.
const MaxQueueSize = 32768

// Descriptor flags.
const (
	descNext     = 1
	descWrite    = 2
	descIndirect = 4
)

// Ring flags.
const (
	availNoInterrupt = 1
)

const descSize = 16

// Desc is one buffer of a descriptor chain, already checked to lie in
// guest RAM (a single region).
type Desc struct {
	Addr uint64
	Len  uint32
	// Write is set for device-writable buffers.
	Write bool
}

// Chain is a descriptor chain popped from the available ring. Descs
// follows the chain, indirect tables expanded in place.
type Chain struct {
	Head  uint16
	Descs []Desc
}

// Queue is one split virtqueue. The exported fields are the transport's
// configuration registers; the rest is the device-side ring state.
type Queue struct {
	MaxSize uint16
	Size    uint16
	Ready   bool
	// Guest-physical addresses of the descriptor table, the available
	// (driver) ring and the used (device) ring.
	DescTable uint64
	AvailRing uint64
	UsedRing  uint64

	mem       *guestmem.Memory
	eventIdx  bool
	indirect  bool
	nextAvail uint16
	nextUsed  uint16
	// signalled is used.idx as of the last Flush.
	signalled uint16
}

// NewQueue returns a queue with the given maximum size, not ready.
func NewQueue(maxSize uint16) *Queue {
	q := &Queue{MaxSize: maxSize}
	q.ResetConfig()
	return q
}

// ResetConfig returns the queue to its state after device reset.
func (q *Queue) ResetConfig() {
	*q = Queue{MaxSize: q.MaxSize, Size: q.MaxSize}
}

// Validate checks the driver's configuration of a ready queue against the
// spec and guest memory: size a power of two no larger than MaxSize,
// ring alignment (16, 2, 4) and every ring wholly inside RAM.
func (q *Queue) Validate(mem *guestmem.Memory) error {
	n := uint64(q.Size)
	switch {
	case !q.Ready:
		return fmt.Errorf("queue not ready")
	case q.Size == 0 || q.Size&(q.Size-1) != 0 || q.Size > q.MaxSize || q.Size > MaxQueueSize:
		return fmt.Errorf("queue size %d is not a power of two in [1, %d]", q.Size, q.MaxSize)
	case q.DescTable%16 != 0 || q.AvailRing%2 != 0 || q.UsedRing%4 != 0:
		return fmt.Errorf("queue rings misaligned: desc %#x avail %#x used %#x", q.DescTable, q.AvailRing, q.UsedRing)
	case !mem.Contains(q.DescTable, descSize*n):
		return fmt.Errorf("descriptor table %#x+%#x outside guest memory", q.DescTable, descSize*n)
	case !mem.Contains(q.AvailRing, 6+2*n):
		return fmt.Errorf("available ring %#x+%#x outside guest memory", q.AvailRing, 6+2*n)
	case !mem.Contains(q.UsedRing, 6+8*n):
		return fmt.Errorf("used ring %#x+%#x outside guest memory", q.UsedRing, 6+8*n)
	}
	return nil
}

// Activate validates the queue and binds it to mem with the negotiated
// features; ring indices start at 0.
func (q *Queue) Activate(mem *guestmem.Memory, features uint64) error {
	if err := q.Validate(mem); err != nil {
		return err
	}
	q.mem = mem
	q.eventIdx = HasFeature(features, FEventIdx)
	q.indirect = HasFeature(features, FIndirectDesc)
	q.nextAvail, q.nextUsed, q.signalled = 0, 0, 0
	return nil
}

func broken(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBroken, fmt.Sprintf(format, args...))
}

// availIdx reads avail.idx; the load is followed by a full fence so the
// ring entries and descriptors read afterwards are at least as new.
func (q *Queue) availIdx() (uint16, error) {
	return q.mem.LoadUint16(q.AvailRing + 2)
}

// Pop takes the next available chain into c (reusing c.Descs) and reports
// whether there was one. An error wraps ErrBroken.
func (q *Queue) Pop(c *Chain) (bool, error) {
	if q.mem == nil {
		return false, fmt.Errorf("virtio: queue not activated")
	}
	idx, err := q.availIdx()
	if err != nil {
		return false, broken("read avail.idx: %v", err)
	}
	if idx == q.nextAvail {
		return false, nil
	}
	if pending := idx - q.nextAvail; pending > q.Size {
		return false, broken("avail.idx %d is %d entries ahead of the device (queue size %d)", idx, pending, q.Size)
	}
	head, err := q.mem.LoadUint16(q.AvailRing + 4 + 2*uint64(q.nextAvail%q.Size))
	if err != nil {
		return false, broken("read avail.ring: %v", err)
	}
	if err := q.walk(c, head); err != nil {
		return false, err
	}
	q.nextAvail++
	return true, nil
}

// Undo puts the last popped chain back: the next Pop returns it again.
func (q *Queue) Undo() { q.nextAvail-- }

// readDesc reads descriptor i of the table at base.
func (q *Queue) readDesc(base uint64, i uint64) (addr uint64, length uint32, flags, next uint16, err error) {
	var b [descSize]byte
	if err := q.mem.ReadAt(b[:], base+i*descSize); err != nil {
		return 0, 0, 0, 0, broken("read descriptor %d at %#x: %v", i, base+i*descSize, err)
	}
	return binary.LittleEndian.Uint64(b[0:]), binary.LittleEndian.Uint32(b[8:]),
		binary.LittleEndian.Uint16(b[12:]), binary.LittleEndian.Uint16(b[14:]), nil
}

// walk follows the chain starting at head. The total number of buffers is
// bounded by the queue size (the spec's limit on chain length), which also
// ends any loop; indirect tables may appear only as the last direct
// descriptor, may not nest and must be a non-empty multiple of 16 bytes.
func (q *Queue) walk(c *Chain, head uint16) error {
	c.Head = head
	c.Descs = c.Descs[:0]
	if head >= q.Size {
		return broken("chain head %d out of range (queue size %d)", head, q.Size)
	}
	limit := int(q.Size)
	table, tableLen := q.DescTable, uint64(q.Size)
	i := uint64(head)
	inIndirect := false
	for {
		addr, length, flags, next, err := q.readDesc(table, i)
		if err != nil {
			return err
		}
		if flags&descIndirect != 0 {
			switch {
			case inIndirect:
				return broken("nested indirect descriptor")
			case !q.indirect:
				return broken("indirect descriptor without VIRTIO_F_INDIRECT_DESC")
			case flags&descNext != 0:
				return broken("indirect descriptor with NEXT set")
			case length == 0 || length%descSize != 0:
				return broken("indirect table length %d is not a non-zero multiple of 16", length)
			case uint64(length)/descSize > uint64(limit-len(c.Descs)):
				return broken("indirect table of %d descriptors exceeds the chain limit %d", length/descSize, limit)
			}
			if !q.mem.Contains(addr, uint64(length)) {
				return broken("indirect table %#x+%#x outside guest memory", addr, length)
			}
			table, tableLen, i, inIndirect = addr, uint64(length)/descSize, 0, true
			continue
		}
		if len(c.Descs) >= limit {
			return broken("descriptor chain longer than %d", limit)
		}
		if !q.mem.Contains(addr, uint64(length)) {
			return broken("descriptor %#x+%#x outside guest memory", addr, length)
		}
		c.Descs = append(c.Descs, Desc{Addr: addr, Len: length, Write: flags&descWrite != 0})
		if flags&descNext == 0 {
			return nil
		}
		if uint64(next) >= tableLen {
			return broken("descriptor next %d out of range %d", next, tableLen)
		}
		i = uint64(next)
	}
}

// Push puts a completed chain on the used ring; written is how many bytes
// the device wrote into it. The guest sees it after Flush.
func (q *Queue) Push(head uint16, written uint32) error {
	if q.mem == nil {
		return fmt.Errorf("virtio: queue not activated")
	}
	var b [8]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(head))
	binary.LittleEndian.PutUint32(b[4:], written)
	if err := q.mem.WriteAt(b[:], q.UsedRing+4+8*uint64(q.nextUsed%q.Size)); err != nil {
		return broken("write used ring: %v", err)
	}
	q.nextUsed++
	return nil
}

// Flush publishes the pushed elements (used.idx, after a full fence) and
// reports whether the driver wants an interrupt for them: with
// VIRTIO_F_EVENT_IDX when used_event was crossed, otherwise unless
// avail.flags has NO_INTERRUPT.
func (q *Queue) Flush() (bool, error) {
	if q.mem == nil || q.nextUsed == q.signalled {
		return false, nil
	}
	old, now := q.signalled, q.nextUsed
	if err := q.mem.StoreUint16(q.UsedRing+2, now); err != nil { // fenced before and after
		return false, broken("write used.idx: %v", err)
	}
	q.signalled = now
	if q.eventIdx {
		ev, err := q.mem.LoadUint16(q.AvailRing + 4 + 2*uint64(q.Size))
		if err != nil {
			return false, broken("read used_event: %v", err)
		}
		return now-ev-1 < now-old, nil
	}
	flags, err := q.mem.LoadUint16(q.AvailRing)
	if err != nil {
		return false, broken("read avail.flags: %v", err)
	}
	return flags&availNoInterrupt == 0, nil
}

// ArmNotify is called when Pop found the ring empty. With
// VIRTIO_F_EVENT_IDX it asks the driver to kick at the next entry
// (avail_event = next index) and then re-reads avail.idx, closing the race
// with a driver that added a buffer without kicking: true means more work
// arrived and the caller should Pop again.
func (q *Queue) ArmNotify() (bool, error) {
	if q.mem == nil || !q.eventIdx {
		return false, nil
	}
	if err := q.mem.StoreUint16(q.UsedRing+4+8*uint64(q.Size), q.nextAvail); err != nil {
		return false, broken("write avail_event: %v", err)
	}
	idx, err := q.availIdx()
	if err != nil {
		return false, broken("read avail.idx: %v", err)
	}
	return idx != q.nextAvail, nil
}

// NextAvail is the index of the next available entry the device will take.
func (q *Queue) NextAvail() uint16 { return q.nextAvail }
