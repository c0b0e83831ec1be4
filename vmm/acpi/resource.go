package acpi

import (
	"encoding/binary"
	"fmt"
)

// Resource descriptor tags (ACPI 6.5, section 6.4).
const (
	tagIO            = 0x47 // small item 0x08, length 7
	tagEnd           = 0x79 // small item 0x0F, length 1
	tagMemory32Fixed = 0x86 // large item 0x06
	tagExtInterrupt  = 0x89 // large item 0x09
)

// Resource is one resource descriptor inside a ResourceTemplate.
type Resource interface {
	AppendResource(dst []byte) ([]byte, error)
}

// ResourceTemplate is a Buffer holding resource descriptors followed by an
// EndTag (checksum byte 0, meaning "treat as valid").
type ResourceTemplate []Resource

// AppendAML implements Term.
func (rt ResourceTemplate) AppendAML(dst []byte) ([]byte, error) {
	var buf []byte
	var err error
	for _, r := range rt {
		if r == nil {
			return nil, fmt.Errorf("%w: nil resource", ErrAML)
		}
		if buf, err = r.AppendResource(buf); err != nil {
			return nil, err
		}
	}
	buf = append(buf, tagEnd, 0x00)
	return Buffer(buf).AppendAML(dst)
}

// Memory32Fixed is the 32-bit fixed memory range descriptor.
type Memory32Fixed struct {
	ReadWrite bool
	Base      uint32
	Length    uint32
}

// AppendResource implements Resource.
func (m Memory32Fixed) AppendResource(dst []byte) ([]byte, error) {
	info := byte(0)
	if m.ReadWrite {
		info = 1
	}
	dst = append(dst, tagMemory32Fixed, 9, 0, info)
	dst = binary.LittleEndian.AppendUint32(dst, m.Base)
	return binary.LittleEndian.AppendUint32(dst, m.Length), nil
}

// Interrupt is the extended interrupt descriptor with one or more GSIs.
type Interrupt struct {
	Consumer  bool // bit 0: consumes (rather than produces) the interrupt
	Edge      bool // bit 1: edge (rather than level) triggered
	ActiveLow bool // bit 2
	Shared    bool // bit 3
	GSIs      []uint32
}

// AppendResource implements Resource.
func (in Interrupt) AppendResource(dst []byte) ([]byte, error) {
	if len(in.GSIs) == 0 || len(in.GSIs) > 255 {
		return nil, fmt.Errorf("%w: interrupt descriptor with %d interrupts (1-255)", ErrAML, len(in.GSIs))
	}
	var flags byte
	for i, b := range []bool{in.Consumer, in.Edge, in.ActiveLow, in.Shared} {
		if b {
			flags |= 1 << i
		}
	}
	dst = binary.LittleEndian.AppendUint16(append(dst, tagExtInterrupt), uint16(2+4*len(in.GSIs)))
	dst = append(dst, flags, byte(len(in.GSIs)))
	for _, g := range in.GSIs {
		dst = binary.LittleEndian.AppendUint32(dst, g)
	}
	return dst, nil
}

// IO is the small I/O port descriptor.
type IO struct {
	Decode16 bool // decodes 16 address bits (else 10)
	Min, Max uint16
	Align    uint8
	Length   uint8
}

// AppendResource implements Resource.
func (io IO) AppendResource(dst []byte) ([]byte, error) {
	if io.Max < io.Min {
		return nil, fmt.Errorf("%w: IO descriptor max %#x below min %#x", ErrAML, io.Max, io.Min)
	}
	info := byte(0)
	if io.Decode16 {
		info = 1
	}
	dst = binary.LittleEndian.AppendUint16(append(dst, tagIO, info), io.Min)
	dst = binary.LittleEndian.AppendUint16(dst, io.Max)
	return append(dst, io.Align, io.Length), nil
}

// DecodeResources decodes a resource template buffer produced by
// ResourceTemplate (Memory32Fixed, extended Interrupt, IO, then EndTag).
// Any other descriptor, a truncated one or missing EndTag is an error.
func DecodeResources(b []byte) ([]Resource, error) {
	var out []Resource
	for off := 0; off < len(b); {
		tag := b[off]
		switch tag {
		case tagEnd:
			if off+2 != len(b) {
				return nil, fmt.Errorf("%w: EndTag at %d is not the last descriptor", ErrAML, off)
			}
			return out, nil
		case tagIO:
			if len(b)-off < 8 {
				return nil, fmt.Errorf("%w: truncated IO descriptor at %d", ErrAML, off)
			}
			d := b[off:]
			if d[1]&^1 != 0 {
				return nil, fmt.Errorf("%w: IO descriptor at %d: reserved info bits %#x", ErrAML, off, d[1])
			}
			out = append(out, IO{
				Decode16: d[1]&1 != 0,
				Min:      binary.LittleEndian.Uint16(d[2:]),
				Max:      binary.LittleEndian.Uint16(d[4:]),
				Align:    d[6],
				Length:   d[7],
			})
			off += 8
		case tagMemory32Fixed, tagExtInterrupt:
			if len(b)-off < 3 {
				return nil, fmt.Errorf("%w: truncated large descriptor at %d", ErrAML, off)
			}
			n := int(binary.LittleEndian.Uint16(b[off+1:]))
			if n > len(b)-off-3 {
				return nil, fmt.Errorf("%w: descriptor at %d: length %d overruns buffer", ErrAML, off, n)
			}
			d := b[off+3 : off+3+n]
			r, err := decodeLarge(tag, d)
			if err != nil {
				return nil, fmt.Errorf("descriptor at %d: %w", off, err)
			}
			out = append(out, r)
			off += 3 + n
		default:
			return nil, fmt.Errorf("%w: unsupported resource descriptor %#x at %d", ErrAML, tag, off)
		}
	}
	return nil, fmt.Errorf("%w: resource template has no EndTag", ErrAML)
}

func decodeLarge(tag byte, d []byte) (Resource, error) {
	if tag == tagMemory32Fixed {
		if len(d) != 9 {
			return nil, fmt.Errorf("%w: Memory32Fixed length %d, want 9", ErrAML, len(d))
		}
		return Memory32Fixed{
			ReadWrite: d[0]&1 != 0,
			Base:      binary.LittleEndian.Uint32(d[1:]),
			Length:    binary.LittleEndian.Uint32(d[5:]),
		}, nil
	}
	if len(d) < 6 || d[1] == 0 || len(d) != 2+4*int(d[1]) {
		return nil, fmt.Errorf("%w: extended interrupt descriptor of %d bytes is malformed", ErrAML, len(d))
	}
	in := Interrupt{
		Consumer:  d[0]&1 != 0,
		Edge:      d[0]&2 != 0,
		ActiveLow: d[0]&4 != 0,
		Shared:    d[0]&8 != 0,
	}
	for i := 0; i < int(d[1]); i++ {
		in.GSIs = append(in.GSIs, binary.LittleEndian.Uint32(d[2+4*i:]))
	}
	return in, nil
}
