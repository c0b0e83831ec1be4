package acpi

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestPkgLength(t *testing.T) {
	tests := []struct {
		body int
		want []byte
	}{
		{0, []byte{0x01}},
		{62, []byte{0x3F}},                                 // total 63: last 1-byte form
		{63, []byte{0x41, 0x04}},                           // total 65 (64 cannot be 1 byte)
		{4093, []byte{0x4F, 0xFF}},                         // total 4095: last 2-byte form
		{4094, []byte{0x81, 0x00, 0x01}},                   // total 4097
		{1048572, []byte{0x8F, 0xFF, 0xFF}},                // total 0xFFFFF
		{1048573, []byte{0xC1, 0x00, 0x00, 0x01}},          // total 0x100001
		{MaxPkgLength - 4, []byte{0xCF, 0xFF, 0xFF, 0xFF}}, // largest
		{300, []byte{0x40 | (302 & 0xF), byte(302 >> 4)}},  // 0x12E
		{5000, []byte{0x80 | (5003 & 0xF), 0x38, 0x01}},    // 0x138B
		{70000, []byte{0x80 | (70003 & 0xF), 0x17, 0x11}},  // 0x11173
		{2000000, []byte{0xC4, 0x48, 0xE8, 0x01}},          // 0x1E8484
	}
	for _, tc := range tests {
		got, err := AppendPkgLength(nil, tc.body)
		if err != nil {
			t.Fatalf("body %d: %v", tc.body, err)
		}
		if !bytes.Equal(got, tc.want) {
			t.Errorf("body %d: got % X, want % X", tc.body, got, tc.want)
		}
		if tc.body > 1<<21 {
			continue
		}
		// Round trip through the decoder's PkgLength reader.
		d := amlDecoder{b: append(got, make([]byte, tc.body)...)}
		end, err := d.pkgEnd(len(d.b))
		if err != nil || end != len(d.b) {
			t.Errorf("body %d: decoded end %d, err %v, want %d", tc.body, end, err, len(d.b))
		}
	}
	for _, bad := range []int{-1, MaxPkgLength - 3} {
		if _, err := AppendPkgLength(nil, bad); !errors.Is(err, ErrAML) {
			t.Errorf("body %d: err %v, want ErrAML", bad, err)
		}
	}
}

func TestIntegerEncoding(t *testing.T) {
	tests := []struct {
		v    uint64
		want []byte
	}{
		{0, []byte{0x00}},
		{1, []byte{0x01}},
		{2, []byte{0x0A, 0x02}},
		{0xFF, []byte{0x0A, 0xFF}},
		{0x100, []byte{0x0B, 0x00, 0x01}},
		{0xFFFF, []byte{0x0B, 0xFF, 0xFF}},
		{0x10000, []byte{0x0C, 0x00, 0x00, 0x01, 0x00}},
		{0xFFFFFFFF, []byte{0x0C, 0xFF, 0xFF, 0xFF, 0xFF}},
		{1 << 32, []byte{0x0E, 0, 0, 0, 0, 1, 0, 0, 0}},
		{0x0102030405060708, []byte{0x0E, 8, 7, 6, 5, 4, 3, 2, 1}},
	}
	for _, tc := range tests {
		got, err := Integer(tc.v).AppendAML(nil)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("Integer(%#x) = % X, %v; want % X", tc.v, got, err, tc.want)
		}
		n, err := DecodeAML(append([]byte{opReturn}, got...))
		if err != nil || len(n) != 1 || n[0].Children[0].Int != tc.v {
			t.Errorf("Integer(%#x): decode %+v, %v", tc.v, n, err)
		}
	}
}

func TestEISAID(t *testing.T) {
	tests := []struct {
		id   string
		want uint32
	}{
		{"PNP0501", 0x0105D041},
		{"PNP0303", 0x0303D041},
		{"PNP0A03", 0x030AD041},
		{"ABC1234", 0x34124304}, // A=1,B=2,C=3: 0000 0100 0100 0011 -> 0x0443 then 0x1234
	}
	for _, tc := range tests {
		got, err := CompressEISAID(tc.id)
		if err != nil || got != tc.want {
			t.Errorf("CompressEISAID(%q) = %#08x, %v; want %#08x", tc.id, got, err, tc.want)
		}
	}
	enc, err := EISAID("PNP0501").AppendAML(nil)
	if want := []byte{0x0C, 0x41, 0xD0, 0x05, 0x01}; err != nil || !bytes.Equal(enc, want) {
		t.Errorf("EISAID(PNP0501) AML = % X, %v; want % X", enc, err, want)
	}
	for _, bad := range []string{"", "PNP050", "PNP05011", "pnp0501", "PNP050g", "P1P0501", "PNP05 1"} {
		if _, err := CompressEISAID(bad); !errors.Is(err, ErrAML) {
			t.Errorf("CompressEISAID(%q): err %v, want ErrAML", bad, err)
		}
	}
}

func TestNamePath(t *testing.T) {
	tests := []struct {
		path string
		want string // bytes as a string
	}{
		{"_HID", "_HID"},
		{"COM", "COM_"},
		{"\\_SB_", "\\_SB_"},
		{"\\_SB_.COM1", "\\\x2E_SB_COM1"},
		{"_SB_.PCI0.LPC_", "\x2F\x03_SB_PCI0LPC_"},
		{"^PS2_", "^PS2_"},
		{"^^V000", "^^V000"},
		{"\\", "\\\x00"},
	}
	for _, tc := range tests {
		got, err := AppendNamePath(nil, tc.path)
		if err != nil || string(got) != tc.want {
			t.Errorf("AppendNamePath(%q) = %q, %v; want %q", tc.path, got, err, tc.want)
		}
	}
	for _, bad := range []string{"1ABC", "abcd", "TOOLONG", "A..B", "\\_SB_.", "A-B"} {
		if _, err := AppendNamePath(nil, bad); !errors.Is(err, ErrAML) {
			t.Errorf("AppendNamePath(%q): err %v, want ErrAML", bad, err)
		}
	}
}

func TestTermEncodings(t *testing.T) {
	tests := []struct {
		name string
		term Term
		want []byte
	}{
		{"device with name", Device{Path: "COM1", Body: []Term{Name{"_UID", Integer(0)}}},
			[]byte{0x5B, 0x82, 0x0B, 'C', 'O', 'M', '1', 0x08, '_', 'U', 'I', 'D', 0x00}},
		{"method _STA", Method{Path: "_STA", Body: []Term{Return{Integer(0x0F)}}},
			[]byte{0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xA4, 0x0A, 0x0F}},
		{"serialized method 2 args", Method{Path: "M", Args: 2, Serialized: true, Body: []Term{Return{Integer(1)}}},
			[]byte{0x14, 0x08, 'M', '_', '_', '_', 0x0A, 0xA4, 0x01}},
		{"_S5_ package", Name{"_S5_", Package{Integer(5), Integer(5), Integer(0), Integer(0)}},
			[]byte{0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0A, 0x05, 0x0A, 0x05, 0x00, 0x00}},
		{"string", Name{"_HID", String("LNRO0005")},
			append(append([]byte{0x08, '_', 'H', 'I', 'D', 0x0D}, "LNRO0005"...), 0)},
		{"scope", Scope{Path: "\\_SB_"}, []byte{0x10, 0x06, 0x5C, '_', 'S', 'B', '_'}},
		{"resource template", ResourceTemplate{
			Memory32Fixed{ReadWrite: true, Base: 0xD0000000, Length: 0x1000},
			Interrupt{Consumer: true, Edge: true, GSIs: []uint32{5}},
		}, []byte{
			0x11, 0x1A, 0x0A, 0x17,
			0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xD0, 0x00, 0x10, 0x00, 0x00,
			0x89, 0x06, 0x00, 0x03, 0x01, 0x05, 0x00, 0x00, 0x00,
			0x79, 0x00,
		}},
		{"io and shared low level irq", ResourceTemplate{
			IO{Decode16: true, Min: 0x3F8, Max: 0x3F8, Align: 1, Length: 8},
			Interrupt{Consumer: true, ActiveLow: true, Shared: true, GSIs: []uint32{4, 0x12345678}},
		}, []byte{
			0x11, 0x1A, 0x0A, 0x17,
			0x47, 0x01, 0xF8, 0x03, 0xF8, 0x03, 0x01, 0x08,
			0x89, 0x0A, 0x00, 0x0D, 0x02, 0x04, 0x00, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12,
			0x79, 0x00,
		}},
	}
	for _, tc := range tests {
		got, err := tc.term.AppendAML(nil)
		if err != nil || !bytes.Equal(got, tc.want) {
			t.Errorf("%s:\n got % X (%v)\nwant % X", tc.name, got, err, tc.want)
		}
	}
}

func TestTermErrors(t *testing.T) {
	for name, term := range map[string]Term{
		"bad name":          Name{"bad!", Integer(0)},
		"nil value":         Name{"_UID", nil},
		"non-ascii string":  String("é"),
		"nul in string":     String("a\x00b"),
		"method args":       Method{Path: "M", Args: 8},
		"return nil":        Return{},
		"nil in device":     Device{Path: "DEV", Body: []Term{nil}},
		"big package":       make(Package, 256),
		"empty interrupt":   ResourceTemplate{Interrupt{}},
		"io max below min":  ResourceTemplate{IO{Min: 2, Max: 1}},
		"nil resource":      ResourceTemplate{nil},
		"bad eisa in scope": Scope{Path: "X", Body: []Term{Name{"_HID", EISAID("XYZ")}}},
	} {
		if _, err := term.AppendAML(nil); !errors.Is(err, ErrAML) {
			t.Errorf("%s: err %v, want ErrAML", name, err)
		}
	}
}

func TestDecodeAMLRoundTrip(t *testing.T) {
	big := make(Buffer, 5000)
	for i := range big {
		big[i] = byte(i)
	}
	aml, err := Encode(
		Name{"_S5_", Package{Integer(5), Integer(5), Integer(0), Integer(0)}},
		Scope{Path: "\\_SB_", Body: []Term{
			Device{Path: "DEV0", Body: []Term{
				Name{"_HID", String("LNRO0005")},
				Name{"BIG_", big},
				Name{"NEST", Package{Package{String("x"), Integer(1 << 40)}}},
				Method{Path: "_STA", Args: 1, Body: []Term{Return{Integer(0x0F)}}},
			}},
		}},
	)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := DecodeAML(aml)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 2 || nodes[0].Name != "_S5_" || nodes[1].Op != "Scope" || nodes[1].Name != "\\_SB_" {
		t.Fatalf("top level: %+v", nodes)
	}
	dev := nodes[1].Find("Device", "DEV0")
	if dev == nil {
		t.Fatal("DEV0 not found")
	}
	if n := dev.Find("Name", "_HID"); n == nil || n.Children[0].Str != "LNRO0005" {
		t.Errorf("_HID = %+v", n)
	}
	if n := dev.Find("Name", "BIG_"); n == nil || !bytes.Equal(n.Children[0].Bytes, big) {
		t.Errorf("BIG_ buffer did not round trip")
	}
	want := Node{Op: "Package", Children: []Node{{Op: "Package", Children: []Node{{Op: "String", Str: "x"}, {Op: "Integer", Int: 1 << 40}}}}}
	if n := dev.Find("Name", "NEST"); n == nil || !reflect.DeepEqual(n.Children[0], want) {
		t.Errorf("NEST = %+v", n)
	}
	if m := dev.Find("Method", "_STA"); m == nil || m.Flags != 1 || m.Children[0].Op != "Return" || m.Children[0].Children[0].Int != 0x0F {
		t.Errorf("_STA = %+v", m)
	}
}

func TestDecodeAMLRejects(t *testing.T) {
	good, err := Encode(Device{Path: "DEV0", Body: []Term{Name{"_UID", Integer(3)}, Name{"_CRS", ResourceTemplate{}}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeAML(good); err != nil {
		t.Fatalf("good AML rejected: %v", err)
	}
	for i := 1; i < len(good); i++ {
		if _, err := DecodeAML(good[:i]); !errors.Is(err, ErrAML) {
			t.Errorf("truncated to %d bytes: err %v, want ErrAML", i, err)
		}
	}
	cases := map[string][]byte{
		"unknown opcode":         {0x70, 0x00, 0x00},
		"pkg overruns":           {0x10, 0x3F, '_', 'S', 'B', '_'},
		"pkg shorter than name":  {0x10, 0x02, '_', 'S', 'B', '_'},
		"reserved pkglen bits":   {0x10, 0x76, 0x00, '_', 'S', 'B', '_'},
		"package count mismatch": {0x08, 'P', 'K', 'G', '_', 0x12, 0x04, 0x03, 0x01, 0x01},
		"buffer size mismatch":   {0x08, 'B', 'U', 'F', '_', 0x11, 0x04, 0x0A, 0x05, 0x79, 0x00},
		"bad name char":          {0x08, 'a', 'b', 'c', 'd', 0x00},
		"unterminated string":    {0x08, 'S', 'T', 'R', '_', 0x0D, 'a', 'b'},
		"ext op not device":      {0x5B, 0x80, 0x00},
		"method no flags":        {0x14, 0x05, 'M', '_', '_', '_'},
	}
	for name, b := range cases {
		if _, err := DecodeAML(b); !errors.Is(err, ErrAML) {
			t.Errorf("%s: err %v, want ErrAML", name, err)
		}
	}
	// Deep nesting is bounded, not recursed without limit.
	deep := []Term{Integer(1)}
	var pkg Term = Package(deep)
	for i := 0; i < 100; i++ {
		pkg = Package{pkg}
	}
	b, err := Name{"DEEP", pkg}.AppendAML(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeAML(b); err == nil || !strings.Contains(err.Error(), "nesting") {
		t.Errorf("deep nesting: err %v", err)
	}
}

func TestDecodeResources(t *testing.T) {
	rt := ResourceTemplate{
		IO{Decode16: true, Min: 0x60, Max: 0x60, Align: 1, Length: 1},
		Memory32Fixed{ReadWrite: true, Base: 0xD0001000, Length: 0x1000},
		Interrupt{Consumer: true, Edge: true, GSIs: []uint32{7}},
	}
	b, err := rt.AppendAML(nil)
	if err != nil {
		t.Fatal(err)
	}
	nodes, err := DecodeAML(append([]byte{opReturn}, b...))
	if err != nil {
		t.Fatal(err)
	}
	raw := nodes[0].Children[0].Bytes
	got, err := DecodeResources(raw)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, []Resource(rt)) {
		t.Errorf("got %+v, want %+v", got, rt)
	}
	for i := 0; i < len(raw); i++ {
		if _, err := DecodeResources(raw[:i]); err == nil {
			t.Errorf("truncated to %d bytes accepted", i)
		}
	}
	for name, b := range map[string][]byte{
		"end not last":       {0x79, 0x00, 0x79, 0x00},
		"unknown small item": {0x22, 0x01, 0x00, 0x79, 0x00},
		"mem32 wrong length": {0x86, 0x08, 0x00, 1, 0, 0, 0, 0, 0, 0, 0, 0x79, 0x00},
		"irq count mismatch": {0x89, 0x06, 0x00, 0x03, 0x02, 5, 0, 0, 0, 0x79, 0x00},
		"large overruns":     {0x89, 0xFF, 0x00, 0x03},
		"io reserved bits":   {0x47, 0x02, 0, 0, 0, 0, 1, 1, 0x79, 0x00},
	} {
		if _, err := DecodeResources(b); !errors.Is(err, ErrAML) {
			t.Errorf("%s: err %v, want ErrAML", name, err)
		}
	}
}
