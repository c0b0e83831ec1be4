package legacy

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/containerd/log"
)

// 16550A register offsets (relative to the base, e.g. PortCOM1).
const (
	regData = 0 // RBR (read) / THR (write); DLL when LCR.DLAB
	regIER  = 1 // interrupt enable; DLM when LCR.DLAB
	regIIR  = 2 // interrupt identification (read) / FCR (write)
	regLCR  = 3
	regMCR  = 4
	regLSR  = 5
	regMSR  = 6
	regSCR  = 7
)

// Register bits.
const (
	ierRDI  = 0x01 // received data available
	ierTHRI = 0x02 // transmitter holding register empty
	ierRLSI = 0x04 // receiver line status
	ierMSI  = 0x08 // modem status
	ierMask = 0x0f

	iirNoInt    = 0x01
	iirMSI      = 0x00
	iirTHRI     = 0x02
	iirRDI      = 0x04
	iirRLSI     = 0x06
	iirFIFOBits = 0xc0 // both set: 16550A with FIFOs enabled

	fcrEnable  = 0x01
	fcrClearRx = 0x02
	fcrTrigger = 0xc0

	lcrDLAB = 0x80

	mcrDTR  = 0x01
	mcrRTS  = 0x02
	mcrOUT1 = 0x04
	mcrOUT2 = 0x08
	mcrLoop = 0x10
	mcrMask = 0x1f

	lsrDR   = 0x01
	lsrOE   = 0x02
	lsrTHRE = 0x20
	lsrTEMT = 0x40

	msrDCTS = 0x01
	msrDDSR = 0x02
	msrTERI = 0x04
	msrDDCD = 0x08
	msrCTS  = 0x10
	msrDSR  = 0x20
	msrRI   = 0x40
	msrDCD  = 0x80

	// Modem lines as seen with nothing attached but a happy host: carrier,
	// data set ready and clear to send.
	msrDefault = msrDCD | msrDSR | msrCTS
)

// Reset values.
const (
	defaultLCR     = 0x03 // 8N1
	defaultMCR     = mcrOUT2
	defaultDivisor = 12 // 9600 baud from the 1.8432 MHz clock
)

// RxFIFOSize bounds the bytes buffered for the guest. A real 16550A holds 16;
// the guest drains up to 256 per interrupt, so 64 absorbs typing and short
// pastes while bounding memory. Bytes that do not fit are dropped and counted
// (and the guest sees an overrun in LSR).
const RxFIFOSize = 64

// SerialStats are Serial's counters.
type SerialStats struct {
	RxDropped uint64 // input bytes dropped: FIFO full or loopback mode
	TxDropped uint64 // output bytes lost to write errors or after Close
	IRQErrors uint64 // failed IRQ.Trigger calls
	IRQs      uint64 // interrupts triggered
}

// Serial is a 16550A UART. Guest writes to THR go to an io.Writer through a
// buffer drained by a goroutine owned by the Serial (so a vCPU never waits on
// the host terminal unless the buffer is full); host input arrives through
// Enqueue. The interrupt is modelled as the level of the UART's INTR pin and
// IRQ.Trigger is called on each rising edge, which suits an edge-triggered
// GSI (the 8250 driver's handler loops until IIR reads "no interrupt", so the
// line is always low again before it returns).
//
// Serial is safe for concurrent use. mu guards all register state; it is never
// held while calling IRQ.Trigger or the output buffer.
type Serial struct {
	irq IRQ
	out *outBuffer

	mu     sync.Mutex
	ier    uint8
	lcr    uint8
	mcr    uint8
	fcr    uint8 // enable and trigger bits as last written
	msr    uint8
	scr    uint8
	dll    uint8
	dlm    uint8
	oe     bool // overrun since the last LSR read
	thri   bool // THR-empty interrupt pending
	line   bool // INTR level after the last access
	rx     [RxFIFOSize]byte
	rxHead int
	rxLen  int

	rxDropped atomic.Uint64
	irqErrors atomic.Uint64
	irqs      atomic.Uint64
}

// NewSerial returns a UART in its reset state whose output goes to out (nil
// discards it) and whose interrupt goes to irq (nil: no interrupts, the guest
// must poll). Call Close to flush the output and stop its goroutine.
func NewSerial(out io.Writer, irq IRQ) *Serial {
	if out == nil {
		out = io.Discard
	}
	return &Serial{
		irq: irq,
		out: newOutBuffer(out),
		lcr: defaultLCR,
		mcr: defaultMCR,
		msr: msrDefault,
		dll: defaultDivisor,
	}
}

// Close writes any buffered output and stops the output goroutine. Output
// written by the guest after Close is dropped and counted. Close is
// idempotent and returns the first output write error, if any.
func (s *Serial) Close() error {
	return s.out.close()
}

// Stats returns a snapshot of the counters.
func (s *Serial) Stats() SerialStats {
	return SerialStats{
		RxDropped: s.rxDropped.Load(),
		TxDropped: s.out.dropped.Load(),
		IRQErrors: s.irqErrors.Load(),
		IRQs:      s.irqs.Load(),
	}
}

// Enqueue queues host input for the guest and returns how many bytes were
// accepted; the rest are dropped (FIFO full, or the UART is in loopback mode
// where the receiver is disconnected from the outside) and counted.
func (s *Serial) Enqueue(p []byte) int {
	if len(p) == 0 {
		return 0
	}
	s.mu.Lock()
	n := 0
	if s.mcr&mcrLoop == 0 {
		n = s.pushRx(p)
	}
	if n < len(p) {
		s.rxDropped.Add(uint64(len(p) - n))
	}
	raise := s.updateLine()
	s.mu.Unlock()
	s.raise(raise)
	return n
}

// pushRx appends what fits of p to the FIFO, flagging an overrun for the
// rest. Precondition: s.mu held.
func (s *Serial) pushRx(p []byte) int {
	n := 0
	for _, b := range p {
		if s.rxLen == len(s.rx) {
			s.oe = true
			break
		}
		s.rx[(s.rxHead+s.rxLen)%len(s.rx)] = b
		s.rxLen++
		n++
	}
	return n
}

// Read implements bus.Device. Only byte accesses are meaningful; wider reads
// return the register in the first byte and zeros in the rest.
func (s *Serial) Read(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	clear(data)
	if offset >= SerialSize {
		return
	}
	s.mu.Lock()
	data[0] = s.readReg(offset)
	raise := s.updateLine()
	s.mu.Unlock()
	s.raise(raise)
}

// Write implements bus.Device; only the first byte of data is used.
func (s *Serial) Write(offset uint64, data []byte) {
	if len(data) == 0 || offset >= SerialSize {
		return
	}
	s.mu.Lock()
	tx, send := s.writeReg(offset, data[0])
	raise := s.updateLine()
	s.mu.Unlock()
	if send {
		s.out.put(tx)
	}
	s.raise(raise)
}

// readReg returns a register value, applying read side effects.
// Precondition: s.mu held.
func (s *Serial) readReg(offset uint64) uint8 {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case regData:
		if dlab {
			return s.dll
		}
		if s.rxLen == 0 {
			return 0
		}
		b := s.rx[s.rxHead]
		s.rxHead = (s.rxHead + 1) % len(s.rx)
		s.rxLen--
		return b
	case regIER:
		if dlab {
			return s.dlm
		}
		return s.ier
	case regIIR:
		id := s.iirID()
		if id == iirTHRI {
			// Reading IIR while THRE is the reported source acknowledges it.
			s.thri = false
		}
		if s.fcr&fcrEnable != 0 {
			id |= iirFIFOBits
		}
		return id
	case regLCR:
		return s.lcr
	case regMCR:
		return s.mcr
	case regLSR:
		v := uint8(lsrTHRE | lsrTEMT) // output is sent instantly
		if s.rxLen > 0 {
			v |= lsrDR
		}
		if s.oe {
			v |= lsrOE
			s.oe = false
		}
		return v
	case regMSR:
		v := s.msr
		s.msr &^= msrDCTS | msrDDSR | msrTERI | msrDDCD
		return v
	case regSCR:
		return s.scr
	}
	return 0
}

// writeReg applies a register write. It reports a byte to send to the host
// when the guest wrote THR outside loopback mode. Precondition: s.mu held.
func (s *Serial) writeReg(offset uint64, v uint8) (tx uint8, send bool) {
	dlab := s.lcr&lcrDLAB != 0
	switch offset {
	case regData:
		if dlab {
			s.dll = v
			return 0, false
		}
		// The byte leaves immediately, so THR is empty again at once and a
		// new THRE interrupt becomes pending.
		s.thri = s.ier&ierTHRI != 0
		if s.mcr&mcrLoop != 0 {
			s.pushRx([]byte{v})
			return 0, false
		}
		return v, true
	case regIER:
		if dlab {
			s.dlm = v
			return 0, false
		}
		old := s.ier
		s.ier = v & ierMask
		if old&ierTHRI == 0 && s.ier&ierTHRI != 0 {
			s.thri = true // THR is always empty
		} else if s.ier&ierTHRI == 0 {
			s.thri = false
		}
	case regIIR: // FCR
		if (v^s.fcr)&fcrEnable != 0 || v&fcrClearRx != 0 {
			// Toggling the FIFO enable clears the FIFOs, as on hardware.
			s.rxHead, s.rxLen = 0, 0
		}
		s.fcr = v & (fcrEnable | fcrTrigger)
	case regLCR:
		s.lcr = v
	case regMCR:
		s.setMCR(v & mcrMask)
	case regLSR, regMSR:
		// Factory-test writes; ignored.
	case regSCR:
		s.scr = v
	}
	return 0, false
}

// setMCR updates MCR and, through loopback, the modem status lines and
// their delta bits. Precondition: s.mu held.
func (s *Serial) setMCR(v uint8) {
	s.mcr = v
	status := uint8(msrDefault)
	if v&mcrLoop != 0 {
		// Loopback wires RTS->CTS, DTR->DSR, OUT1->RI and OUT2->DCD; Linux's
		// 8250 probe checks this (MCR 0x1a must read back CTS|DCD).
		status = 0
		if v&mcrRTS != 0 {
			status |= msrCTS
		}
		if v&mcrDTR != 0 {
			status |= msrDSR
		}
		if v&mcrOUT1 != 0 {
			status |= msrRI
		}
		if v&mcrOUT2 != 0 {
			status |= msrDCD
		}
	}
	old := s.msr
	changed := old ^ status
	delta := old & (msrDCTS | msrDDSR | msrTERI | msrDDCD)
	if changed&msrCTS != 0 {
		delta |= msrDCTS
	}
	if changed&msrDSR != 0 {
		delta |= msrDDSR
	}
	if old&msrRI != 0 && status&msrRI == 0 {
		delta |= msrTERI // trailing edge of ring indicator
	}
	if changed&msrDCD != 0 {
		delta |= msrDDCD
	}
	s.msr = status | delta
}

// iirID is the highest-priority pending, enabled interrupt source.
// Precondition: s.mu held.
func (s *Serial) iirID() uint8 {
	switch {
	case s.ier&ierRLSI != 0 && s.oe:
		return iirRLSI
	case s.ier&ierRDI != 0 && s.rxLen > 0:
		return iirRDI
	case s.ier&ierTHRI != 0 && s.thri:
		return iirTHRI
	case s.ier&ierMSI != 0 && s.msr&(msrDCTS|msrDDSR|msrTERI|msrDDCD) != 0:
		return iirMSI
	}
	return iirNoInt
}

// updateLine recomputes the INTR level and reports a rising edge.
// Precondition: s.mu held.
func (s *Serial) updateLine() bool {
	level := s.iirID() != iirNoInt
	rose := level && !s.line
	s.line = level
	return rose
}

// raise triggers the interrupt when rose is set. Called without s.mu.
func (s *Serial) raise(rose bool) {
	if !rose || s.irq == nil {
		return
	}
	s.irqs.Add(1)
	if err := s.irq.Trigger(); err != nil {
		if s.irqErrors.Add(1) == 1 {
			log.L.WithError(err).Warn("serial: interrupt trigger failed")
		}
	}
}

// rxQueued returns the number of bytes waiting in the FIFO (tests, fuzzing).
func (s *Serial) rxQueued() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rxLen
}
