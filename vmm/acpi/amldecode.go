package acpi

import (
	"fmt"
	"strings"
)

// maxAMLDepth bounds nesting in DecodeAML so hostile input cannot recurse
// without limit.
const maxAMLDepth = 64

// Node is one decoded AML object. Only the subset the encoder emits is
// understood; see DecodeAML.
type Node struct {
	Op       string // "Scope", "Device", "Method", "Name", "Return", "Package", "Integer", "String", "Buffer"
	Name     string // ASL form of the NameString (Scope, Device, Method, Name)
	Int      uint64 // Integer value
	Str      string // String value
	Bytes    []byte // Buffer contents
	Flags    byte   // Method flags
	Children []Node // body, package elements, or the single value of Name/Return
}

// Find returns the first direct child with the given Op and Name.
func (n *Node) Find(op, name string) *Node {
	for i := range n.Children {
		if n.Children[i].Op == op && n.Children[i].Name == name {
			return &n.Children[i]
		}
	}
	return nil
}

// DecodeAML decodes a TermList made of Scope, Device, Method, Name,
// Return, Package, Buffer, String and integer terms. Any other opcode,
// a PkgLength that overruns its parent, a Package whose element count
// differs from NumElements, or a Buffer whose size differs from its
// contents is an error. It never panics.
func DecodeAML(b []byte) ([]Node, error) {
	d := amlDecoder{b: b}
	return d.termList(len(b), 0)
}

type amlDecoder struct {
	b   []byte
	off int
}

func (d *amlDecoder) errf(format string, args ...any) error {
	return fmt.Errorf("%w: offset %d: %s", ErrAML, d.off, fmt.Sprintf(format, args...))
}

func (d *amlDecoder) byte() (byte, error) {
	if d.off >= len(d.b) {
		return 0, d.errf("unexpected end of data")
	}
	c := d.b[d.off]
	d.off++
	return c, nil
}

func (d *amlDecoder) take(n int) ([]byte, error) {
	if n < 0 || n > len(d.b)-d.off {
		return nil, d.errf("need %d bytes, have %d", n, len(d.b)-d.off)
	}
	s := d.b[d.off : d.off+n]
	d.off += n
	return s, nil
}

// pkgEnd decodes a PkgLength and returns the absolute end of the package,
// checked against the parent's end.
func (d *amlDecoder) pkgEnd(parentEnd int) (int, error) {
	start := d.off
	lead, err := d.byte()
	if err != nil {
		return 0, err
	}
	extra := int(lead >> 6)
	length := int(lead & 0x3F)
	if extra > 0 {
		if lead&0x30 != 0 {
			return 0, d.errf("PkgLength lead byte %#x has reserved bits set", lead)
		}
		length = int(lead & 0x0F)
		for i := 0; i < extra; i++ {
			c, err := d.byte()
			if err != nil {
				return 0, err
			}
			length |= int(c) << (4 + 8*i)
		}
	}
	end := start + length
	if length < extra+1 || end > parentEnd {
		return 0, d.errf("PkgLength %d out of range", length)
	}
	return end, nil
}

func (d *amlDecoder) nameString() (string, error) {
	var sb strings.Builder
	c, err := d.byte()
	if err != nil {
		return "", err
	}
	if c == opRoot {
		sb.WriteByte('\\')
		if c, err = d.byte(); err != nil {
			return "", err
		}
	} else {
		for c == opParent {
			sb.WriteByte('^')
			if c, err = d.byte(); err != nil {
				return "", err
			}
		}
	}
	segs := 1
	switch c {
	case 0x00:
		return sb.String(), nil
	case opDualName:
		segs = 2
	case opMultName:
		n, err := d.byte()
		if err != nil {
			return "", err
		}
		if n == 0 {
			return "", d.errf("MultiNamePrefix with zero segments")
		}
		segs = int(n)
	default:
		d.off-- // c is the first character of a single NameSeg
	}
	for i := 0; i < segs; i++ {
		raw, err := d.take(4)
		if err != nil {
			return "", err
		}
		if _, err := NameSeg(string(raw)); err != nil {
			return "", d.errf("bad name segment: %v", err)
		}
		if i > 0 {
			sb.WriteByte('.')
		}
		sb.Write(raw)
	}
	return sb.String(), nil
}

func (d *amlDecoder) termList(end, depth int) ([]Node, error) {
	if depth > maxAMLDepth {
		return nil, d.errf("nesting deeper than %d", maxAMLDepth)
	}
	var out []Node
	for d.off < end {
		n, err := d.term(end, depth)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if d.off != end {
		return nil, d.errf("term overran its package end %d", end)
	}
	return out, nil
}

func (d *amlDecoder) term(end, depth int) (Node, error) {
	op, err := d.byte()
	if err != nil {
		return Node{}, err
	}
	switch op {
	case opScope, opMethod:
		return d.namedPkg(op, end, depth)
	case opExtPfx:
		op2, err := d.byte()
		if err != nil {
			return Node{}, err
		}
		if op2 != opDevice {
			return Node{}, d.errf("unsupported extended opcode 5B %02X", op2)
		}
		return d.namedPkg(opDevice, end, depth)
	case opName:
		name, err := d.nameString()
		if err != nil {
			return Node{}, err
		}
		v, err := d.dataObject(end, depth)
		if err != nil {
			return Node{}, err
		}
		return Node{Op: "Name", Name: name, Children: []Node{v}}, nil
	case opReturn:
		v, err := d.dataObject(end, depth)
		if err != nil {
			return Node{}, err
		}
		return Node{Op: "Return", Children: []Node{v}}, nil
	}
	d.off--
	return Node{}, d.errf("unsupported opcode %#x in term list", op)
}

func (d *amlDecoder) namedPkg(op byte, parentEnd, depth int) (Node, error) {
	end, err := d.pkgEnd(parentEnd)
	if err != nil {
		return Node{}, err
	}
	name, err := d.nameString()
	if err != nil {
		return Node{}, err
	}
	n := Node{Name: name}
	switch op {
	case opScope:
		n.Op = "Scope"
	case opDevice:
		n.Op = "Device"
	case opMethod:
		n.Op = "Method"
		if d.off >= end {
			return Node{}, d.errf("method %s has no flags byte", name)
		}
		n.Flags = d.b[d.off]
		d.off++
	}
	if d.off > end {
		return Node{}, d.errf("%s %s: name overruns package", n.Op, name)
	}
	if n.Children, err = d.termList(end, depth+1); err != nil {
		return Node{}, err
	}
	return n, nil
}

func (d *amlDecoder) dataObject(end, depth int) (Node, error) {
	if depth > maxAMLDepth {
		return Node{}, d.errf("nesting deeper than %d", maxAMLDepth)
	}
	op, err := d.byte()
	if err != nil {
		return Node{}, err
	}
	if d.off > end {
		return Node{}, d.errf("data object outside its package")
	}
	intOf := func(n int) (Node, error) {
		if d.off+n > end {
			return Node{}, d.errf("integer overruns package")
		}
		raw, err := d.take(n)
		if err != nil {
			return Node{}, err
		}
		var v uint64
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uint64(raw[i])
		}
		return Node{Op: "Integer", Int: v}, nil
	}
	switch op {
	case opZero:
		return Node{Op: "Integer", Int: 0}, nil
	case opOne:
		return Node{Op: "Integer", Int: 1}, nil
	case opByte:
		return intOf(1)
	case opWord:
		return intOf(2)
	case opDWord:
		return intOf(4)
	case opQWord:
		return intOf(8)
	case opString:
		for i := d.off; i < end; i++ {
			if d.b[i] == 0 {
				s := string(d.b[d.off:i])
				d.off = i + 1
				return Node{Op: "String", Str: s}, nil
			}
			if d.b[i] > 0x7F {
				return Node{}, d.errf("non-ASCII byte in string")
			}
		}
		return Node{}, d.errf("unterminated string")
	case opBuffer:
		pend, err := d.pkgEnd(end)
		if err != nil {
			return Node{}, err
		}
		size, err := d.dataObject(pend, depth+1)
		if err != nil {
			return Node{}, err
		}
		if size.Op != "Integer" {
			return Node{}, d.errf("buffer size is a %s", size.Op)
		}
		if d.off > pend || size.Int != uint64(pend-d.off) {
			return Node{}, d.errf("buffer size %d does not match its %d content bytes", size.Int, pend-d.off)
		}
		content := append([]byte(nil), d.b[d.off:pend]...)
		d.off = pend
		return Node{Op: "Buffer", Bytes: content}, nil
	case opPackage:
		pend, err := d.pkgEnd(end)
		if err != nil {
			return Node{}, err
		}
		if d.off >= pend {
			return Node{}, d.errf("package without NumElements")
		}
		count := int(d.b[d.off])
		d.off++
		n := Node{Op: "Package"}
		for d.off < pend {
			e, err := d.dataObject(pend, depth+1)
			if err != nil {
				return Node{}, err
			}
			n.Children = append(n.Children, e)
		}
		if len(n.Children) != count {
			return Node{}, d.errf("package declares %d elements, holds %d", count, len(n.Children))
		}
		return n, nil
	}
	d.off--
	return Node{}, d.errf("unsupported data object opcode %#x", op)
}
