package acpi

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// AML opcodes used by the encoder and the decoder (ACPI 6.5, section 20).
const (
	opZero     = 0x00
	opOne      = 0x01
	opName     = 0x08
	opByte     = 0x0A
	opWord     = 0x0B
	opDWord    = 0x0C
	opString   = 0x0D
	opQWord    = 0x0E
	opScope    = 0x10
	opBuffer   = 0x11
	opPackage  = 0x12
	opMethod   = 0x14
	opDualName = 0x2E
	opMultName = 0x2F
	opExtPfx   = 0x5B
	opDevice   = 0x82 // after opExtPfx
	opRoot     = 0x5C // '\'
	opParent   = 0x5E // '^'
	opReturn   = 0xA4
)

// MaxPkgLength is the largest value a 4-byte PkgLength can encode.
const MaxPkgLength = 1<<28 - 1

// ErrAML is wrapped by every AML encoding or decoding error.
var ErrAML = errors.New("aml")

// Term is one AML term (a named object, an opcode or a data object) that
// can append its byte encoding to dst.
type Term interface {
	AppendAML(dst []byte) ([]byte, error)
}

// Encode concatenates the encodings of terms (a TermList).
func Encode(terms ...Term) ([]byte, error) {
	return appendTerms(nil, terms)
}

func appendTerms(dst []byte, terms []Term) ([]byte, error) {
	var err error
	for _, t := range terms {
		if t == nil {
			return nil, fmt.Errorf("%w: nil term", ErrAML)
		}
		if dst, err = t.AppendAML(dst); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// AppendPkgLength appends the PkgLength encoding for a package whose body
// (everything after the PkgLength) is bodyLen bytes. The encoded length
// counts the PkgLength bytes themselves, so the number of lead bytes
// depends on the total: 1 byte up to 63, 2 bytes up to 4095, 3 bytes up
// to 1048575 and 4 bytes up to MaxPkgLength.
func AppendPkgLength(dst []byte, bodyLen int) ([]byte, error) {
	if bodyLen < 0 {
		return nil, fmt.Errorf("%w: negative package length", ErrAML)
	}
	switch {
	case bodyLen+1 <= 0x3F:
		return append(dst, byte(bodyLen+1)), nil
	case bodyLen+2 <= 0xFFF:
		return appendPkgLengthN(dst, bodyLen+2, 1), nil
	case bodyLen+3 <= 0xFFFFF:
		return appendPkgLengthN(dst, bodyLen+3, 2), nil
	case bodyLen+4 <= MaxPkgLength:
		return appendPkgLengthN(dst, bodyLen+4, 3), nil
	}
	return nil, fmt.Errorf("%w: package body of %d bytes exceeds PkgLength range", ErrAML, bodyLen)
}

// appendPkgLengthN writes total as a lead byte (count in bits 6-7, length
// bits 0-3 in the low nibble) and extra following bytes.
func appendPkgLengthN(dst []byte, total, extra int) []byte {
	dst = append(dst, byte(extra)<<6|byte(total&0x0F))
	total >>= 4
	for i := 0; i < extra; i++ {
		dst = append(dst, byte(total))
		total >>= 8
	}
	return dst
}

// appendPkg appends PkgLength(body) followed by body.
func appendPkg(dst, body []byte) ([]byte, error) {
	dst, err := AppendPkgLength(dst, len(body))
	if err != nil {
		return nil, err
	}
	return append(dst, body...), nil
}

// NameSeg validates and encodes one 4-character name segment. Shorter
// names are padded with '_' as ASL does. The lead character must be A-Z
// or '_', the others A-Z, 0-9 or '_'.
func NameSeg(s string) ([4]byte, error) {
	var seg [4]byte
	if len(s) == 0 || len(s) > 4 {
		return seg, fmt.Errorf("%w: name segment %q must be 1-4 characters", ErrAML, s)
	}
	for i := 0; i < 4; i++ {
		c := byte('_')
		if i < len(s) {
			c = s[i]
		}
		ok := c == '_' || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return seg, fmt.Errorf("%w: invalid character %q in name segment %q", ErrAML, c, s)
		}
		seg[i] = c
	}
	return seg, nil
}

// AppendNamePath appends the NameString encoding of an ASL path such as
// "_HID", "\\_SB_.COM1" or "^PS2_": optional root or parent prefixes, then
// zero, one, two (DualNamePrefix) or more (MultiNamePrefix) segments.
func AppendNamePath(dst []byte, path string) ([]byte, error) {
	rest := path
	if strings.HasPrefix(rest, "\\") {
		dst = append(dst, opRoot)
		rest = rest[1:]
	} else {
		for strings.HasPrefix(rest, "^") {
			dst = append(dst, opParent)
			rest = rest[1:]
		}
	}
	if rest == "" {
		return append(dst, 0x00), nil // NullName
	}
	parts := strings.Split(rest, ".")
	if len(parts) > 255 {
		return nil, fmt.Errorf("%w: name path %q has too many segments", ErrAML, path)
	}
	switch len(parts) {
	case 1:
	case 2:
		dst = append(dst, opDualName)
	default:
		dst = append(dst, opMultName, byte(len(parts)))
	}
	for _, p := range parts {
		seg, err := NameSeg(p)
		if err != nil {
			return nil, fmt.Errorf("name path %q: %w", path, err)
		}
		dst = append(dst, seg[:]...)
	}
	return dst, nil
}

// Integer is an AML integer, encoded in the smallest form: ZeroOp, OneOp,
// then Byte, Word, DWord or QWord prefixes.
type Integer uint64

// AppendAML implements Term.
func (v Integer) AppendAML(dst []byte) ([]byte, error) {
	switch {
	case v == 0:
		return append(dst, opZero), nil
	case v == 1:
		return append(dst, opOne), nil
	case v <= 0xFF:
		return append(dst, opByte, byte(v)), nil
	case v <= 0xFFFF:
		return binary.LittleEndian.AppendUint16(append(dst, opWord), uint16(v)), nil
	case v <= 0xFFFFFFFF:
		return binary.LittleEndian.AppendUint32(append(dst, opDWord), uint32(v)), nil
	}
	return binary.LittleEndian.AppendUint64(append(dst, opQWord), uint64(v)), nil
}

// String is an AML string constant: ASCII characters 0x01-0x7F, no NUL.
type String string

// AppendAML implements Term.
func (s String) AppendAML(dst []byte) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if s[i] == 0 || s[i] > 0x7F {
			return nil, fmt.Errorf("%w: string %q: byte %#x is not allowed", ErrAML, string(s), s[i])
		}
	}
	dst = append(dst, opString)
	dst = append(dst, s...)
	return append(dst, 0), nil
}

// CompressEISAID compresses a 7-character EISA id ("PNP0501": three
// upper-case letters and four hex digits) into the 32-bit value that ASL's
// EISAID() produces, as stored little-endian in AML.
func CompressEISAID(id string) (uint32, error) {
	if len(id) != 7 {
		return 0, fmt.Errorf("%w: EISA id %q must be 7 characters", ErrAML, id)
	}
	var v uint32
	for i := 0; i < 3; i++ {
		c := id[i]
		if c < 'A' || c > 'Z' {
			return 0, fmt.Errorf("%w: EISA id %q: vendor character %q not A-Z", ErrAML, id, c)
		}
		v = v<<5 | uint32(c-0x40)
	}
	for i := 3; i < 7; i++ {
		c := id[i]
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, fmt.Errorf("%w: EISA id %q: %q is not an upper-case hex digit", ErrAML, id, c)
		}
		v = v<<4 | uint32(d)
	}
	// The compressed id is big-endian in the spec; AML stores the integer
	// little-endian, so the value is byte-swapped.
	return v>>24 | (v>>8)&0xFF00 | (v<<8)&0xFF0000 | v<<24, nil
}

// EISAID is an EISA id such as "PNP0501", encoded as a DWord integer.
type EISAID string

// AppendAML implements Term.
func (id EISAID) AppendAML(dst []byte) ([]byte, error) {
	v, err := CompressEISAID(string(id))
	if err != nil {
		return nil, err
	}
	return binary.LittleEndian.AppendUint32(append(dst, opDWord), v), nil
}

// Name is DefName: Name(Path, Value).
type Name struct {
	Path  string
	Value Term
}

// AppendAML implements Term.
func (n Name) AppendAML(dst []byte) ([]byte, error) {
	if n.Value == nil {
		return nil, fmt.Errorf("%w: Name(%s) has no value", ErrAML, n.Path)
	}
	dst, err := AppendNamePath(append(dst, opName), n.Path)
	if err != nil {
		return nil, err
	}
	return n.Value.AppendAML(dst)
}

// appendNamedPkg encodes prefix + PkgLength + NameString + extra + terms.
func appendNamedPkg(dst, prefix []byte, path string, extra []byte, terms []Term) ([]byte, error) {
	body, err := AppendNamePath(nil, path)
	if err != nil {
		return nil, err
	}
	body = append(body, extra...)
	if body, err = appendTerms(body, terms); err != nil {
		return nil, err
	}
	return appendPkg(append(dst, prefix...), body)
}

// Device is DefDevice: Device(Path) { Body }.
type Device struct {
	Path string
	Body []Term
}

// AppendAML implements Term.
func (d Device) AppendAML(dst []byte) ([]byte, error) {
	return appendNamedPkg(dst, []byte{opExtPfx, opDevice}, d.Path, nil, d.Body)
}

// Scope is DefScope: Scope(Path) { Body }.
type Scope struct {
	Path string
	Body []Term
}

// AppendAML implements Term.
func (s Scope) AppendAML(dst []byte) ([]byte, error) {
	return appendNamedPkg(dst, []byte{opScope}, s.Path, nil, s.Body)
}

// Method is DefMethod: Method(Path, Args, Serialized/NotSerialized) { Body }
// with sync level 0.
type Method struct {
	Path       string
	Args       uint8 // 0-7
	Serialized bool
	Body       []Term
}

// AppendAML implements Term.
func (m Method) AppendAML(dst []byte) ([]byte, error) {
	if m.Args > 7 {
		return nil, fmt.Errorf("%w: method %s: %d arguments (max 7)", ErrAML, m.Path, m.Args)
	}
	flags := m.Args
	if m.Serialized {
		flags |= 1 << 3
	}
	return appendNamedPkg(dst, []byte{opMethod}, m.Path, []byte{flags}, m.Body)
}

// Return is DefReturn: Return(Value).
type Return struct{ Value Term }

// AppendAML implements Term.
func (r Return) AppendAML(dst []byte) ([]byte, error) {
	if r.Value == nil {
		return nil, fmt.Errorf("%w: Return without value", ErrAML)
	}
	return r.Value.AppendAML(append(dst, opReturn))
}

// Package is DefPackage with at most 255 elements.
type Package []Term

// AppendAML implements Term.
func (p Package) AppendAML(dst []byte) ([]byte, error) {
	if len(p) > 255 {
		return nil, fmt.Errorf("%w: package of %d elements (max 255)", ErrAML, len(p))
	}
	body, err := appendTerms([]byte{byte(len(p))}, p)
	if err != nil {
		return nil, err
	}
	return appendPkg(append(dst, opPackage), body)
}

// Buffer is DefBuffer with the given bytes; BufferSize is len(Buffer).
type Buffer []byte

// AppendAML implements Term.
func (b Buffer) AppendAML(dst []byte) ([]byte, error) {
	body, err := Integer(len(b)).AppendAML(nil)
	if err != nil {
		return nil, err
	}
	return appendPkg(append(dst, opBuffer), append(body, b...))
}
