package vsock

import (
	"bytes"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{SrcCID: 3, DstCID: 2, SrcPort: 1024, DstPort: 1 << 30, Len: 100, Type: TypeStream, Op: OpRW,
		Flags: 0, BufAlloc: 65536, FwdCnt: 12345}
	var b [HeaderSize]byte
	h.Encode(b[:])
	want := []byte{3, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0x40, 100, 0, 0, 0, 1, 0, 5, 0,
		0, 0, 0, 0, 0, 0, 1, 0, 0x39, 0x30, 0, 0}
	if !bytes.Equal(b[:], want) {
		t.Fatalf("encoded %x\nwant    %x", b, want)
	}
	got, err := ParseHeader(b[:])
	if err != nil || got != h {
		t.Fatalf("parse: %+v, %v", got, err)
	}
}

func TestParseHeaderRejects(t *testing.T) {
	base := Header{SrcCID: 3, DstCID: 2, Type: TypeStream, Op: OpRequest}
	for _, tc := range []struct {
		name string
		mod  func(*Header)
	}{
		{"seqpacket", func(h *Header) { h.Type = 2 }},
		{"op 0", func(h *Header) { h.Op = OpInvalid }},
		{"op 8", func(h *Header) { h.Op = 8 }},
		{"payload on REQUEST", func(h *Header) { h.Len = 1 }},
		{"payload too large", func(h *Header) { h.Op, h.Len = OpRW, MaxPayload+1 }},
	} {
		h := base
		tc.mod(&h)
		var b [HeaderSize]byte
		h.Encode(b[:])
		if _, err := ParseHeader(b[:]); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
	if _, err := ParseHeader(make([]byte, HeaderSize-1)); err == nil {
		t.Error("short header accepted")
	}
}

func TestParseConnect(t *testing.T) {
	for _, tc := range []struct {
		in   string
		port uint32
		ok   bool
	}{
		{"CONNECT 1024", 1024, true},
		{"connect 0", 0, true},
		{"Connect 4294967295", 4294967295, true},
		{"CONNECT 4294967296", 0, false},
		{"CONNECT ", 0, false},
		{"CONNECT -1", 0, false},
		{"CONNECT 12 ", 0, false},
		{"CONNEC 12", 0, false},
		{"CONNECT 000000000000000000000000000001", 0, false}, // longer than MaxConnectLine
	} {
		p, err := ParseConnect([]byte(tc.in))
		if (err == nil) != tc.ok || p != tc.port {
			t.Errorf("ParseConnect(%q) = %d, %v; want %d ok=%v", tc.in, p, err, tc.port, tc.ok)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	var b [HeaderSize]byte
	h := Header{SrcCID: 3, DstCID: 2, Type: TypeStream, Op: OpRW, Len: 10}
	h.Encode(b[:])
	f.Add(b[:])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ParseHeader(data)
		if err != nil {
			return
		}
		if h.Len > MaxPayload || (h.Op != OpRW && h.Len != 0) || h.Type != TypeStream {
			t.Fatalf("accepted %+v", h)
		}
		var out [HeaderSize]byte
		h.Encode(out[:])
		if !bytes.Equal(out[:], data[:HeaderSize]) {
			t.Fatalf("round trip differs")
		}
	})
}

func FuzzParseConnect(f *testing.F) {
	f.Add([]byte("CONNECT 1024"))
	f.Add([]byte("connect 99999999999"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := ParseConnect(data)
		if err != nil {
			return
		}
		if len(data) > MaxConnectLine {
			t.Fatalf("accepted %d-byte line", len(data))
		}
		_ = p
	})
}
