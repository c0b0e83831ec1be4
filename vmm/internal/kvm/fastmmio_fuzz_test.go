//go:build !race

package kvm

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// FuzzServeFast feeds arbitrary exit reasons and MMIO unions to serveFast,
// the code that completes exits without Go's scheduler: it must claim
// exactly the 4-byte MMIO accesses to a served register, do what the
// register does, and touch nothing in kvm_run but the read data.
func FuzzServeFast(f *testing.F) {
	f.Add(uint32(ExitMMIO), []byte{0x60, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0})
	f.Add(uint32(ExitMMIO), []byte{0x64, 0x10, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1})
	f.Add(uint32(ExitMMIO), []byte{0x60, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0})
	f.Add(uint32(ExitIO), []byte{0x60, 0x10})
	f.Fuzz(func(t *testing.T, reason uint32, union []byte) {
		status, latched := uint32(0x5), uint32(0x2)
		var fm FastMMIO
		if err := fm.Add(FastReg{Addr: 0x1060, Value: &status, Or: &latched},
			FastReg{Addr: 0x1064, Write: true, Value: &status}); err != nil {
			t.Fatal(err)
		}
		run := make([]byte, runHeaderSize)
		copy(run[unionOff:], union)
		hdr := overlayRun(run)
		hdr.ExitReason = reason
		before := bytes.Clone(run)

		served := serveFast(hdr, fm.current())

		u := before[unionOff:]
		addr, n, write := binary.LittleEndian.Uint64(u), binary.LittleEndian.Uint32(u[16:]), u[20] != 0
		data := binary.LittleEndian.Uint32(u[8:])
		want := reason == ExitMMIO && n == 4 && (addr == 0x1060 && !write || addr == 0x1064 && write)
		if served != want {
			t.Fatalf("served %v for reason %d addr %#x len %d write %v, want %v", served, reason, addr, n, write, want)
		}
		wantRun, wantStatus := bytes.Clone(before), uint32(0x5)
		switch {
		case want && write:
			wantStatus = 0x5 &^ data
		case want:
			binary.LittleEndian.PutUint32(wantRun[unionOff+8:], 0x7)
		}
		if !bytes.Equal(run, wantRun) || status != wantStatus || latched != 0x2 {
			t.Fatalf("after serveFast: status %#x latched %#x, kvm_run changed % x, want status %#x", status, latched, run, wantStatus)
		}
	})
}
