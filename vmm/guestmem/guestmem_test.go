package guestmem

import (
	"errors"
	"sync"
	"testing"
)

func TestAccessBounds(t *testing.T) {
	m, err := FromBytes([]uint64{0, 0x10000}, [][]byte{make([]byte, 0x1000), make([]byte, 0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		gpa, n uint64
		ok     bool
	}{
		{0, 0x1000, true}, {0xfff, 1, true}, {0xfff, 2, false}, {0x1000, 1, false},
		{0x10000, 0x1000, true}, {0x8000, 1, false}, {^uint64(0), 2, false}, {0x10, ^uint64(0), false},
	} {
		_, err := m.Slice(tc.gpa, tc.n)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrOutOfRange)) {
			t.Errorf("Slice(%#x, %#x) = %v, want ok=%v", tc.gpa, tc.n, err, tc.ok)
		}
	}
	if err := m.WriteAt([]byte{1, 2, 3}, 0xffe); err == nil {
		t.Error("write across the end of a region accepted")
	}
}

func TestUint16(t *testing.T) {
	m, err := FromBytes([]uint64{0x1000}, [][]byte{make([]byte, 0x1000)})
	if err != nil {
		t.Fatal(err)
	}
	for _, gpa := range []uint64{0x1000, 0x1002, 0x1ffe} {
		if err := m.StoreUint16(gpa, uint16(gpa)); err != nil {
			t.Fatal(err)
		}
	}
	for _, gpa := range []uint64{0x1000, 0x1002, 0x1ffe} {
		if v, err := m.LoadUint16(gpa); err != nil || v != uint16(gpa) {
			t.Errorf("LoadUint16(%#x) = %#x, %v", gpa, v, err)
		}
	}
	b := make([]byte, 4)
	m.ReadAt(b, 0x1000)
	if b[0] != 0x00 || b[1] != 0x10 || b[2] != 0x02 || b[3] != 0x10 {
		t.Errorf("little-endian layout: % x", b)
	}
	for _, gpa := range []uint64{0x1001, 0x2000, 0xffe} {
		if _, err := m.LoadUint16(gpa); err == nil {
			t.Errorf("LoadUint16(%#x) accepted", gpa)
		}
		if err := m.StoreUint16(gpa, 1); err == nil {
			t.Errorf("StoreUint16(%#x) accepted", gpa)
		}
	}
}

// TestUint16Concurrent stores both halves of one word from two goroutines:
// neither may lose the other's writes (run with -race too).
func TestUint16Concurrent(t *testing.T) {
	m, _ := FromBytes([]uint64{0}, [][]byte{make([]byte, 0x1000)})
	var wg sync.WaitGroup
	for _, gpa := range []uint64{0x100, 0x102} {
		wg.Add(1)
		go func(gpa uint64) {
			defer wg.Done()
			for i := 0; i < 10000; i++ {
				m.StoreUint16(gpa, uint16(i))
				if v, _ := m.LoadUint16(gpa); v != uint16(i) {
					t.Errorf("%#x: read %d after writing %d", gpa, v, i)
					return
				}
			}
		}(gpa)
	}
	wg.Wait()
}
