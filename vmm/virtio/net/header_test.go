package net

import (
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/virtio"
)

func TestHeaderRoundTrip(t *testing.T) {
	h := Header{Flags: 1, GSOType: 4, HdrLen: 0x1234, GSOSize: 1448, CsumStart: 54, CsumOffset: 16, NumBuffers: 3}
	var b [HeaderSize]byte
	h.Put(b[:])
	want := [HeaderSize]byte{1, 4, 0x34, 0x12, 0xa8, 0x05, 54, 0, 16, 0, 3, 0}
	if b != want {
		t.Errorf("Put = % x, want % x", b, want)
	}
	got, err := ParseHeader(b[:])
	if err != nil || got != h {
		t.Errorf("ParseHeader = %+v, %v; want %+v", got, err, h)
	}
	if _, err := ParseHeader(b[:11]); err == nil {
		t.Error("ParseHeader accepted 11 bytes")
	}
}

func TestCheckTx(t *testing.T) {
	all := uint64(1<<FCsum | 1<<FHostTSO4 | 1<<FHostTSO6 | 1<<FHostUFO)
	for _, c := range []struct {
		name     string
		h        Header
		features uint64
		n        int
		ok       bool
	}{
		{"plain", Header{}, 0, 60, true},
		{"csum", Header{Flags: HdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}, all, 60, true},
		{"csum without feature", Header{Flags: HdrFNeedsCsum, CsumStart: 34, CsumOffset: 16}, 0, 60, false},
		{"csum past end", Header{Flags: HdrFNeedsCsum, CsumStart: 50, CsumOffset: 16}, all, 60, false},
		{"csum at the end", Header{Flags: HdrFNeedsCsum, CsumStart: 42, CsumOffset: 16}, all, 60, true},
		{"data valid on tx", Header{Flags: HdrFDataValid}, all, 60, false},
		{"unknown flag", Header{Flags: 8}, all, 60, false},
		{"tso4", Header{Flags: 1, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, all, 9000, true},
		{"tso4 not negotiated", Header{Flags: 1, GSOType: GSOTCPv4, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, 1 << FCsum, 9000, false},
		{"tso6", Header{Flags: 1, GSOType: GSOTCPv6, GSOSize: 1428, CsumStart: 54, CsumOffset: 16}, all, 9000, true},
		{"ufo", Header{Flags: 1, GSOType: GSOUDP, GSOSize: 1472, CsumStart: 34, CsumOffset: 6}, all, 9000, true},
		{"gso size 0", Header{Flags: 1, GSOType: GSOTCPv4, CsumStart: 34, CsumOffset: 16}, all, 9000, false},
		{"ecn not offered", Header{Flags: 1, GSOType: GSOTCPv4 | GSOECN, GSOSize: 1448, CsumStart: 34, CsumOffset: 16}, all, 9000, false},
		{"ecn alone", Header{GSOType: GSOECN}, all | 1<<FHostECN, 60, false},
		{"udp l4", Header{Flags: 1, GSOType: 5, GSOSize: 1472}, all, 9000, false},
	} {
		err := c.h.CheckTx(c.features, c.n)
		if (err == nil) != c.ok {
			t.Errorf("%s: CheckTx = %v, want ok %v", c.name, err, c.ok)
		}
	}
}

// FuzzHeader feeds arbitrary header bytes, features and lengths to the
// parser and the checker: they never panic, accepted headers survive a
// round trip and never ask for an offload that was not negotiated.
func FuzzHeader(f *testing.F) {
	f.Add([]byte{1, 1, 0, 0, 0xa8, 5, 34, 0, 16, 0, 0, 0}, uint64(1<<FCsum|1<<FHostTSO4), 9000)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, uint64(0), 60)
	f.Add([]byte{0xff}, uint64(0), -1)
	f.Fuzz(func(t *testing.T, b []byte, features uint64, n int) {
		h, err := ParseHeader(b)
		if err != nil {
			if len(b) >= HeaderSize {
				t.Fatalf("ParseHeader rejected %d bytes: %v", len(b), err)
			}
			return
		}
		var out [HeaderSize]byte
		h.Put(out[:])
		if string(out[:]) != string(b[:HeaderSize]) {
			t.Fatalf("round trip % x -> % x", b[:HeaderSize], out)
		}
		if h.CheckTx(features, n) != nil {
			return
		}
		if h.Flags&HdrFNeedsCsum != 0 && (!virtio.HasFeature(features, FCsum) || int(h.CsumStart)+int(h.CsumOffset)+2 > n) {
			t.Fatalf("accepted a bad checksum request %+v (features %#x, %d bytes)", h, features, n)
		}
		if h.GSOType != GSONone && h.GSOSize == 0 {
			t.Fatalf("accepted GSO with size 0: %+v", h)
		}
	})
}
