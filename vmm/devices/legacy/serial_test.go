package legacy

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
)

type countIRQ struct{ n atomic.Int64 }

func (c *countIRQ) Trigger() error { c.n.Add(1); return nil }

// safeBuf is a bytes.Buffer safe for the output goroutine and the test.
type safeBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *safeBuf) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *safeBuf) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

func newTestSerial(t *testing.T) (*Serial, *countIRQ, *safeBuf) {
	t.Helper()
	irq := &countIRQ{}
	out := &safeBuf{}
	s := NewSerial(out, irq)
	t.Cleanup(func() { _ = s.Close() })
	return s, irq, out
}

func rd(s *Serial, off uint64) uint8 {
	b := []byte{0xaa}
	s.Read(off, b)
	return b[0]
}

func wr(s *Serial, off uint64, v uint8) { s.Write(off, []byte{v}) }

func TestSerialResetValues(t *testing.T) {
	s, _, _ := newTestSerial(t)
	tests := []struct {
		name string
		off  uint64
		want uint8
	}{
		{"RBR empty", regData, 0},
		{"IER", regIER, 0},
		{"IIR", regIIR, iirNoInt},
		{"LCR", regLCR, 0x03},
		{"MCR", regMCR, mcrOUT2},
		{"LSR", regLSR, lsrTHRE | lsrTEMT},
		{"MSR", regMSR, msrDCD | msrDSR | msrCTS},
		{"SCR", regSCR, 0},
		{"beyond", 8, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := rd(s, tt.off); got != tt.want {
				t.Errorf("read %d = %#x, want %#x", tt.off, got, tt.want)
			}
		})
	}
}

func TestSerialRegisterRoundTrip(t *testing.T) {
	tests := []struct {
		name       string
		dlab       bool
		off        uint64
		write      uint8
		want       uint8
		wantOthers map[uint64]uint8 // other registers after the write (DLAB off)
	}{
		{name: "SCR", off: regSCR, write: 0x5a, want: 0x5a},
		{name: "LCR", off: regLCR, write: 0x1b, want: 0x1b},
		{name: "IER masks high bits", off: regIER, write: 0xff, want: 0x0f},
		{name: "MCR masks high bits", off: regMCR, write: 0xe3, want: 0x03},
		{name: "DLL", dlab: true, off: regData, write: 0x01, want: 0x01,
			wantOthers: map[uint64]uint8{regIER: 0, regLSR: lsrTHRE | lsrTEMT}},
		{name: "DLM", dlab: true, off: regIER, write: 0x02, want: 0x02,
			wantOthers: map[uint64]uint8{regIER: 0}},
		{name: "LSR write ignored", off: regLSR, write: 0x00, want: lsrTHRE | lsrTEMT},
		{name: "MSR write ignored", off: regMSR, write: 0x00, want: msrDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, out := newTestSerial(t)
			if tt.dlab {
				wr(s, regLCR, 0x83)
			}
			wr(s, tt.off, tt.write)
			if got := rd(s, tt.off); got != tt.want {
				t.Errorf("read back %#x, want %#x", got, tt.want)
			}
			if tt.dlab {
				wr(s, regLCR, 0x03)
			}
			for off, want := range tt.wantOthers {
				if got := rd(s, off); got != want {
					t.Errorf("register %d = %#x, want %#x", off, got, want)
				}
			}
			_ = s.Close()
			if out.String() != "" {
				t.Errorf("unexpected output %q", out.String())
			}
		})
	}
}

func TestSerialDivisorLatchPreservesIER(t *testing.T) {
	s, _, _ := newTestSerial(t)
	wr(s, regIER, ierRDI)
	wr(s, regLCR, lcrDLAB|0x03)
	if got := rd(s, regData); got != defaultDivisor {
		t.Errorf("DLL = %d, want %d", got, defaultDivisor)
	}
	wr(s, regData, 0x01)
	wr(s, regIER, 0x00)
	wr(s, regLCR, 0x03)
	if got := rd(s, regIER); got != ierRDI {
		t.Errorf("IER after DLAB = %#x, want %#x", got, ierRDI)
	}
	wr(s, regLCR, lcrDLAB)
	if dll, dlm := rd(s, regData), rd(s, regIER); dll != 1 || dlm != 0 {
		t.Errorf("divisor = %d/%d, want 1/0", dll, dlm)
	}
}

// TestSerialLinuxProbe follows drivers/tty/serial/8250/8250_port.c
// autoconfig() and autoconfig_16550a() and checks every value the driver
// compares against.
func TestSerialLinuxProbe(t *testing.T) {
	s, irq, out := newTestSerial(t)

	// IER test: writable low nibble.
	saved := rd(s, regIER)
	wr(s, regIER, 0)
	if v := rd(s, regIER) & 0x0f; v != 0 {
		t.Fatalf("IER after 0 = %#x", v)
	}
	wr(s, regIER, 0x0f)
	if v := rd(s, regIER) & 0x0f; v != 0x0f {
		t.Fatalf("IER after 0x0f = %#x", v)
	}
	wr(s, regIER, saved)

	// Loopback test: MCR = LOOP|OUT2|RTS must show DCD|CTS.
	saveMCR, saveLCR := rd(s, regMCR), rd(s, regLCR)
	wr(s, regMCR, mcrLoop|0x0a)
	if v := rd(s, regMSR) & 0xf0; v != msrDCD|msrCTS {
		t.Fatalf("loopback MSR = %#x, want %#x", v, msrDCD|msrCTS)
	}
	wr(s, regMCR, saveMCR)

	// FIFO detection.
	wr(s, regLCR, 0xbf)
	wr(s, regIIR, 0) // EFR on a 16650, FCR here
	wr(s, regLCR, 0)
	wr(s, regIIR, fcrEnable)
	if v := rd(s, regIIR) >> 6; v != 3 {
		t.Fatalf("IIR>>6 = %d, want 3 (16550A)", v)
	}

	// autoconfig_16550a: EFR probes must read non-zero (IIR) so the port is
	// not taken for a 16650.
	wr(s, regLCR, 0x80)
	if v := rd(s, regIIR); v == 0 {
		t.Fatalf("EFR probe with LCR 0x80 read 0")
	}
	wr(s, regLCR, 0xbf)
	if v := rd(s, regIIR); v == 0 {
		t.Fatalf("EFR probe with LCR 0xbf read 0")
	}
	// 16750 test: 64-byte FIFO bit must not appear.
	wr(s, regLCR, 0)
	wr(s, regIIR, fcrEnable)
	st1 := rd(s, regIIR) & 0xe0
	wr(s, regIIR, 0)
	wr(s, regLCR, 0x80)
	wr(s, regIIR, fcrEnable|0x20)
	st2 := rd(s, regIIR) & 0xe0
	wr(s, regIIR, 0)
	wr(s, regLCR, 0)
	if st1 != 0xc0 || st2 != 0xc0 {
		t.Fatalf("16750 test IIR = %#x/%#x, want 0xc0/0xc0", st1, st2)
	}
	wr(s, regLCR, saveLCR)

	// serial8250_do_startup: LSR must not read 0xff.
	if v := rd(s, regLSR); v == 0xff {
		t.Fatal("LSR reads 0xff")
	}
	// THRE test: enabling THRI raises IIR=THRI, re-enabling raises it again.
	wr(s, regIER, ierTHRI)
	iir1 := rd(s, regIIR)
	wr(s, regIER, 0)
	wr(s, regIER, ierTHRI)
	iir2 := rd(s, regIIR)
	wr(s, regIER, 0)
	if iir1&0x0f != iirTHRI || iir2&0x0f != iirTHRI {
		t.Fatalf("THRE test IIR = %#x/%#x", iir1, iir2)
	}
	// One edge from the IER test writing 0x0f, two from the THRE test.
	if got := irq.n.Load(); got != 3 {
		t.Errorf("interrupts = %d, want 3", got)
	}
	_ = s.Close()
	if out.String() != "" {
		t.Errorf("probe produced output %q", out.String())
	}
}

func TestSerialTHREInterrupt(t *testing.T) {
	s, irq, out := newTestSerial(t)
	wr(s, regIER, ierTHRI)
	if got := irq.n.Load(); got != 1 {
		t.Fatalf("after enabling THRI: %d interrupts, want 1", got)
	}
	if v := rd(s, regIIR); v != iirTHRI {
		t.Fatalf("IIR = %#x, want THRI", v)
	}
	if v := rd(s, regIIR); v != iirNoInt {
		t.Fatalf("IIR after ack = %#x, want no interrupt", v)
	}
	for _, c := range []byte("hi\n") {
		wr(s, regData, c)
		if v := rd(s, regIIR); v != iirTHRI {
			t.Fatalf("IIR after THR write = %#x, want THRI", v)
		}
	}
	if got := irq.n.Load(); got != 4 {
		t.Errorf("interrupts = %d, want 4", got)
	}
	// Writing THR with THRI still pending is no new edge.
	wr(s, regData, 'a')
	wr(s, regData, 'b')
	if got := irq.n.Load(); got != 5 {
		t.Errorf("interrupts = %d, want 5", got)
	}
	// Disabling THRI drops the pending interrupt.
	wr(s, regIER, 0)
	if v := rd(s, regIIR); v != iirNoInt {
		t.Errorf("IIR after disabling = %#x", v)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); got != "hi\nab" {
		t.Errorf("output %q, want %q", got, "hi\nab")
	}
}

func TestSerialReceive(t *testing.T) {
	s, irq, _ := newTestSerial(t)
	if n := s.Enqueue([]byte("ab")); n != 2 {
		t.Fatalf("Enqueue = %d", n)
	}
	if got := irq.n.Load(); got != 0 {
		t.Fatalf("interrupt with RDI disabled")
	}
	wr(s, regIER, ierRDI|ierRLSI)
	if got := irq.n.Load(); got != 1 {
		t.Fatalf("enabling RDI with data: %d interrupts, want 1", got)
	}
	steps := []struct {
		off  uint64
		want uint8
	}{
		{regIIR, iirRDI},
		{regLSR, lsrDR | lsrTHRE | lsrTEMT},
		{regData, 'a'},
		{regIIR, iirRDI},
		{regData, 'b'},
		{regLSR, lsrTHRE | lsrTEMT},
		{regIIR, iirNoInt},
		{regData, 0},
	}
	for i, st := range steps {
		if got := rd(s, st.off); got != st.want {
			t.Errorf("step %d: read %d = %#x, want %#x", i, st.off, got, st.want)
		}
	}
	s.Enqueue([]byte("c"))
	s.Enqueue([]byte("d")) // line already high: no second edge
	if got := irq.n.Load(); got != 2 {
		t.Errorf("interrupts = %d, want 2", got)
	}
}

func TestSerialFIFOBoundAndOverrun(t *testing.T) {
	s, irq, _ := newTestSerial(t)
	wr(s, regIER, ierRDI|ierRLSI)
	in := make([]byte, RxFIFOSize+36)
	for i := range in {
		in[i] = byte(i)
	}
	if n := s.Enqueue(in); n != RxFIFOSize {
		t.Fatalf("Enqueue accepted %d, want %d", n, RxFIFOSize)
	}
	if st := s.Stats(); st.RxDropped != 36 {
		t.Errorf("RxDropped = %d, want 36", st.RxDropped)
	}
	if got := irq.n.Load(); got != 1 {
		t.Errorf("interrupts = %d, want 1", got)
	}
	if v := rd(s, regIIR); v != iirRLSI {
		t.Errorf("IIR = %#x, want RLSI", v)
	}
	if v := rd(s, regLSR); v != lsrDR|lsrOE|lsrTHRE|lsrTEMT {
		t.Errorf("LSR = %#x, want DR|OE|THRE|TEMT", v)
	}
	if v := rd(s, regLSR); v&lsrOE != 0 {
		t.Errorf("OE not cleared by LSR read")
	}
	for i := 0; i < RxFIFOSize; i++ {
		if v := rd(s, regData); v != byte(i) {
			t.Fatalf("byte %d = %d", i, v)
		}
	}
	if v := rd(s, regLSR); v&lsrDR != 0 {
		t.Errorf("DR still set")
	}
}

func TestSerialFCRClearsRx(t *testing.T) {
	tests := []struct {
		name    string
		fcr     uint8
		wantLen int
	}{
		{"clear rx", fcrEnable | fcrClearRx, 0},
		{"enable toggles", fcrEnable, 0},
		{"no change", 0, 3},
		{"clear tx only", 0x04, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newTestSerial(t)
			s.Enqueue([]byte("xyz"))
			wr(s, regIIR, tt.fcr)
			if got := s.rxQueued(); got != tt.wantLen {
				t.Errorf("rx len = %d, want %d", got, tt.wantLen)
			}
			wantIIR := uint8(iirNoInt)
			if tt.fcr&fcrEnable != 0 {
				wantIIR |= iirFIFOBits
			}
			if got := rd(s, regIIR); got != wantIIR {
				t.Errorf("IIR = %#x, want %#x", got, wantIIR)
			}
		})
	}
}

func TestSerialInterruptPriority(t *testing.T) {
	tests := []struct {
		name string
		ier  uint8
		rx   bool
		oe   bool
		msd  bool // modem status delta
		want uint8
	}{
		{"none", ierMask, false, false, false, iirNoInt},
		{"line status beats all", ierMask, true, true, true, iirRLSI},
		{"rx beats thre", ierMask, true, false, true, iirRDI},
		{"modem lowest", ierMSI, false, false, true, iirMSI},
		{"disabled sources hidden", ierTHRI, true, true, true, iirNoInt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newTestSerial(t)
			wr(s, regIER, tt.ier)
			if got := rd(s, regIIR); tt.ier&ierTHRI != 0 && got != iirTHRI {
				t.Fatalf("IIR after enabling THRI = %#x", got) // lowest but RLS/RDA/THRE order
			}
			if tt.rx {
				s.Enqueue([]byte{1})
			}
			if tt.oe {
				s.Enqueue(make([]byte, RxFIFOSize+1))
			}
			if tt.msd {
				wr(s, regMCR, mcrLoop) // all modem lines drop: deltas
			}
			if got := rd(s, regIIR); got != tt.want {
				t.Errorf("IIR = %#x, want %#x", got, tt.want)
			}
		})
	}
}

func TestSerialLoopback(t *testing.T) {
	s, irq, out := newTestSerial(t)
	wr(s, regIER, ierRDI)
	wr(s, regMCR, mcrLoop|mcrRTS|mcrDTR|mcrOUT1|mcrOUT2)
	if v := rd(s, regMSR); v&0xf0 != 0xf0 {
		t.Errorf("MSR in loopback with all outputs = %#x", v)
	}
	wr(s, regData, 'L')
	if got := irq.n.Load(); got != 1 {
		t.Errorf("interrupts = %d, want 1", got)
	}
	if v := rd(s, regData); v != 'L' {
		t.Errorf("looped byte = %q", v)
	}
	if n := s.Enqueue([]byte("x")); n != 0 {
		t.Errorf("Enqueue in loopback accepted %d", n)
	}
	if st := s.Stats(); st.RxDropped != 1 {
		t.Errorf("RxDropped = %d, want 1", st.RxDropped)
	}
	wr(s, regMCR, mcrOUT2)
	_ = s.Close()
	if out.String() != "" {
		t.Errorf("loopback leaked output %q", out.String())
	}
}

func TestSerialModemStatusDeltas(t *testing.T) {
	tests := []struct {
		name string
		mcr  []uint8
		want uint8
	}{
		{"loop with nothing: all drop", []uint8{mcrLoop}, msrDCTS | msrDDSR | msrDDCD},
		{"loop with RTS keeps CTS", []uint8{mcrLoop | mcrRTS}, msrCTS | msrDDSR | msrDDCD},
		{"ring trailing edge", []uint8{mcrLoop | mcrOUT1 | mcrRTS | mcrDTR | mcrOUT2, mcrLoop | mcrRTS | mcrDTR | mcrOUT2},
			msrCTS | msrDSR | msrDCD | msrTERI},
		{"back to normal", []uint8{mcrLoop | mcrRTS | mcrDTR | mcrOUT2, mcrOUT2}, msrDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _, _ := newTestSerial(t)
			for _, v := range tt.mcr {
				wr(s, regMCR, v)
			}
			if got := rd(s, regMSR); got != tt.want {
				t.Errorf("MSR = %#x, want %#x", got, tt.want)
			}
			if got := rd(s, regMSR); got&0x0f != 0 {
				t.Errorf("deltas not cleared: %#x", got)
			}
		})
	}
}

func TestSerialWideAccess(t *testing.T) {
	s, _, _ := newTestSerial(t)
	wr(s, regSCR, 0x11)
	b := []byte{0xff, 0xff, 0xff, 0xff}
	s.Read(regSCR, b)
	if !bytes.Equal(b, []byte{0x11, 0, 0, 0}) {
		t.Errorf("wide read = %x", b)
	}
	s.Read(regSCR, nil) // must not panic
	s.Write(regSCR, nil)
}

type errWriter struct{}

func (errWriter) Write(p []byte) (int, error) { return 0, errors.New("broken pipe") }

func TestSerialOutputErrorCounted(t *testing.T) {
	s := NewSerial(errWriter{}, nil)
	for _, c := range []byte("abc") {
		wr(s, regData, c)
	}
	if err := s.Close(); err == nil {
		t.Fatal("Close returned no error")
	}
	if st := s.Stats(); st.TxDropped != 3 {
		t.Errorf("TxDropped = %d, want 3", st.TxDropped)
	}
	wr(s, regData, 'z') // after Close
	if st := s.Stats(); st.TxDropped != 4 {
		t.Errorf("TxDropped after Close = %d, want 4", st.TxDropped)
	}
}

// slowWriter blocks until released, to exercise back-pressure.
type slowWriter struct {
	release chan struct{}
	safeBuf
}

func (w *slowWriter) Write(p []byte) (int, error) {
	<-w.release
	return w.safeBuf.Write(p)
}

func TestSerialOutputBackpressureLosesNothing(t *testing.T) {
	w := &slowWriter{release: make(chan struct{})}
	s := NewSerial(w, nil)
	var want bytes.Buffer
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 3*outLimit; i++ {
			c := byte('a' + i%26)
			want.WriteByte(c)
			wr(s, regData, c)
		}
	}()
	close(w.release)
	<-done
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if w.String() != want.String() {
		t.Errorf("output differs: got %d bytes, want %d", len(w.String()), want.Len())
	}
	if st := s.Stats(); st.TxDropped != 0 {
		t.Errorf("TxDropped = %d", st.TxDropped)
	}
}

func TestSerialConcurrent(t *testing.T) {
	s, _, out := newTestSerial(t)
	wr(s, regIER, ierRDI|ierTHRI)
	var wg sync.WaitGroup
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				wr(s, regData, byte('0'+g))
				rd(s, regIIR)
				rd(s, regData)
			}
		}(g)
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < 500; i++ {
			s.Enqueue([]byte("in"))
		}
	}()
	wg.Wait()
	_ = s.Close()
	if n := len(out.String()); n != 2000 {
		t.Errorf("output %d bytes, want 2000", n)
	}
	if q := s.rxQueued(); q > RxFIFOSize {
		t.Errorf("FIFO holds %d", q)
	}
}

func TestIRQFunc(t *testing.T) {
	want := errors.New("x")
	calls := 0
	s := NewSerial(nil, IRQFunc(func() error { calls++; return want }))
	defer s.Close()
	wr(s, regIER, ierTHRI)
	if st := s.Stats(); calls != 1 || st.IRQErrors != 1 || st.IRQs != 1 {
		t.Errorf("calls=%d stats=%+v", calls, st)
	}
}

func ExampleSerial() {
	var out bytes.Buffer
	s := NewSerial(&out, nil)
	for _, c := range []byte("ok") {
		s.Write(0, []byte{c})
	}
	_ = s.Close()
	fmt.Println(out.String())
	// Output: ok
}
