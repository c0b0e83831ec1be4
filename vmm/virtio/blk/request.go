package blk

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/guestmem"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

// Request types (virtio spec 5.2.6).
const (
	TypeIn          = 0
	TypeOut         = 1
	TypeFlush       = 4
	TypeGetID       = 8
	TypeDiscard     = 11
	TypeWriteZeroes = 13
)

// Request status values.
const (
	StatusOK     = 0
	StatusIOErr  = 1
	StatusUnsupp = 2
)

// SectorSize is the unit of sector numbers and capacity.
const SectorSize = 512

// IDBytes is the length of a GET_ID answer.
const IDBytes = 20

const headerSize = 16

// segmentSize is the size of one discard/write-zeroes segment.
const segmentSize = 16

// errMalformed is a chain that cannot carry a request at all (no header or
// no status byte).
var errMalformed = errors.New("malformed virtio-blk request")

// Request is a parsed virtio-blk request. Data aliases guest memory: for
// TypeIn and TypeGetID the device-writable buffers (without the status
// byte), for TypeOut the device-readable buffers after the header, for
// TypeDiscard and TypeWriteZeroes the segment list. Status is the
// one-byte status buffer.
type Request struct {
	Type   uint32
	Sector uint64
	Data   [][]byte
	Status []byte
	// Len is the total length of Data.
	Len uint64
}

// ParseRequest parses a descriptor chain without assuming how the driver
// split it into buffers: the 16-byte header is the first device-readable
// bytes, the status is the last device-writable byte, and the data is
// what lies between. Device-readable buffers must precede device-writable
// ones. Buffers are resolved through mem (each already lies in one RAM
// region); data is reused for the Data slice headers.
func ParseRequest(mem *guestmem.Memory, c *virtio.Chain, data [][]byte) (Request, error) {
	r := Request{Data: data[:0]}
	// Split into readable and writable runs.
	nr := 0
	for nr < len(c.Descs) && !c.Descs[nr].Write {
		nr++
	}
	for _, d := range c.Descs[nr:] {
		if !d.Write {
			return r, fmt.Errorf("%w: device-readable buffer after a writable one", errMalformed)
		}
	}
	rd, wr := c.Descs[:nr], c.Descs[nr:]

	// Status: the last byte of the writable run.
	last := -1
	for i := len(wr) - 1; i >= 0; i-- {
		if wr[i].Len > 0 {
			last = i
			break
		}
	}
	if last < 0 {
		return r, fmt.Errorf("%w: no status byte", errMalformed)
	}
	sd := wr[last]
	st, err := mem.Slice(sd.Addr+uint64(sd.Len)-1, 1)
	if err != nil {
		return r, fmt.Errorf("%w: status: %v", errMalformed, err)
	}
	r.Status = st

	// Header: the first 16 readable bytes, possibly across buffers.
	var hdr [headerSize]byte
	got := 0
	i, skip := 0, uint32(0) // position after the header in rd
	for ; i < len(rd) && got < headerSize; i++ {
		n := min(int(rd[i].Len), headerSize-got)
		if err := mem.ReadAt(hdr[got:got+n], rd[i].Addr); err != nil {
			return r, fmt.Errorf("%w: header: %v", errMalformed, err)
		}
		got += n
		if uint32(n) < rd[i].Len {
			skip = uint32(n)
			break
		}
	}
	if got < headerSize {
		return r, fmt.Errorf("%w: header is %d bytes", errMalformed, got)
	}
	r.Type = binary.LittleEndian.Uint32(hdr[0:])
	r.Sector = binary.LittleEndian.Uint64(hdr[8:])

	add := func(addr uint64, n uint32) error {
		if n == 0 {
			return nil
		}
		s, err := mem.Slice(addr, uint64(n))
		if err != nil {
			return fmt.Errorf("%w: data: %v", errMalformed, err)
		}
		r.Data = append(r.Data, s)
		r.Len += uint64(n)
		return nil
	}
	switch r.Type {
	case TypeIn, TypeGetID:
		for j, d := range wr[:last+1] {
			n := d.Len
			if j == last {
				n--
			}
			if err := add(d.Addr, n); err != nil {
				return r, err
			}
		}
	case TypeOut, TypeDiscard, TypeWriteZeroes:
		for j := i; j < len(rd); j++ {
			off := uint32(0)
			if j == i {
				off = skip
			}
			if err := add(rd[j].Addr+uint64(off), rd[j].Len-off); err != nil {
				return r, err
			}
		}
	}
	return r, nil
}

// Segment is one discard or write-zeroes range.
type Segment struct {
	Sector  uint64
	Sectors uint32
	Unmap   bool
}

// Segments decodes the segment list of a discard or write-zeroes request;
// at most max segments.
func (r *Request) Segments(max int) ([]Segment, error) {
	if r.Len%segmentSize != 0 || r.Len == 0 {
		return nil, fmt.Errorf("segment list of %d bytes", r.Len)
	}
	n := r.Len / segmentSize
	if n > uint64(max) {
		return nil, fmt.Errorf("%d segments, at most %d", n, max)
	}
	buf := make([]byte, 0, r.Len)
	for _, d := range r.Data {
		buf = append(buf, d...)
	}
	segs := make([]Segment, n)
	for k := range segs {
		b := buf[k*segmentSize:]
		flags := binary.LittleEndian.Uint32(b[12:])
		segs[k] = Segment{Sector: binary.LittleEndian.Uint64(b), Sectors: binary.LittleEndian.Uint32(b[8:]), Unmap: flags&1 != 0}
	}
	return segs, nil
}
