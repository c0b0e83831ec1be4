package legacy

import "testing"

// FuzzSerial drives the UART with arbitrary register accesses and input and
// checks that it never panics and the receive FIFO stays bounded.
func FuzzSerial(f *testing.F) {
	f.Add([]byte{1, 1, 0x0f, 0, 4, 0x1a, 2, 0, 'x', 3, 0, 0})
	f.Add([]byte{1, 3, 0x80, 1, 0, 5, 0, 0, 0, 2, 5, 0})
	f.Fuzz(func(t *testing.T, ops []byte) {
		s := NewSerial(nil, IRQFunc(func() error { return nil }))
		defer s.Close()
		for i := 0; i+2 < len(ops); i += 3 {
			kind, off, v := ops[i]%4, uint64(ops[i+1]%10), ops[i+2]
			switch kind {
			case 0:
				s.Read(off, make([]byte, 1+int(v%4)))
			case 1:
				s.Write(off, []byte{v})
			case 2:
				s.Enqueue(make([]byte, int(v)))
			case 3:
				s.Write(off, nil)
			}
			if q := s.rxQueued(); q < 0 || q > RxFIFOSize {
				t.Fatalf("FIFO holds %d bytes", q)
			}
		}
	})
}
