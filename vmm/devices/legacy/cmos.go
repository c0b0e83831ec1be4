package legacy

import (
	"sync"
	"time"
)

// CMOS register indexes.
const (
	cmosSeconds = 0x00
	cmosMinutes = 0x02
	cmosHours   = 0x04
	cmosWeekday = 0x06
	cmosDay     = 0x07
	cmosMonth   = 0x08
	cmosYear    = 0x09
	cmosRegA    = 0x0a
	cmosRegB    = 0x0b
	cmosRegC    = 0x0c
	cmosRegD    = 0x0d
	cmosCentury = 0x32

	cmosRegADefault = 0x26 // 32.768 kHz time base, 1024 Hz rate; UIP (bit 7) never set
	cmosRegBDefault = 0x02 // 24-hour mode, BCD
	cmosRegB24h     = 0x02
	cmosRegBBinary  = 0x04
	cmosRegDVRT     = 0x80 // valid RAM and time
)

// CMOS is an MC146818 RTC with 128 bytes of CMOS RAM at PortCMOS: offset 0
// selects a register (bit 7 is the NMI mask, ignored), offset 1 reads or
// writes it. The clock registers always show the host's current UTC time in
// the format register B asks for (BCD by default, or binary; 24- or 12-hour);
// guest writes to them are ignored, the update-in-progress flag is never set
// and no RTC interrupts are generated. Safe for concurrent use.
type CMOS struct {
	now func() time.Time

	mu    sync.Mutex
	index uint8
	ram   [128]byte
}

// NewCMOS returns an RTC reading time from now (nil means time.Now).
func NewCMOS(now func() time.Time) *CMOS {
	if now == nil {
		now = time.Now
	}
	c := &CMOS{now: now}
	c.ram[cmosRegA] = cmosRegADefault
	c.ram[cmosRegB] = cmosRegBDefault
	return c
}

// Read implements bus.Device.
func (c *CMOS) Read(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	clear(data)
	c.mu.Lock()
	defer c.mu.Unlock()
	switch offset {
	case 0:
		data[0] = c.index
	case 1:
		data[0] = c.readReg(c.index)
	}
}

// Write implements bus.Device; only the first byte is used.
func (c *CMOS) Write(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	switch offset {
	case 0:
		c.index = data[0] & 0x7f
	case 1:
		switch c.index {
		case cmosSeconds, cmosMinutes, cmosHours, cmosWeekday, cmosDay, cmosMonth, cmosYear, cmosCentury:
			// The clock follows the host.
		case cmosRegA:
			c.ram[cmosRegA] = data[0] & 0x7f // UIP is read-only
		case cmosRegC, cmosRegD:
			// Read-only.
		default:
			c.ram[c.index] = data[0]
		}
	}
}

// readReg returns register i. Precondition: c.mu held; i < 128.
func (c *CMOS) readReg(i uint8) uint8 {
	regB := c.ram[cmosRegB]
	enc := func(v int) uint8 {
		if regB&cmosRegBBinary != 0 {
			return uint8(v)
		}
		return uint8(v/10<<4 | v%10)
	}
	var t time.Time
	switch i {
	case cmosSeconds, cmosMinutes, cmosHours, cmosWeekday, cmosDay, cmosMonth, cmosYear, cmosCentury:
		t = c.now().UTC()
	}
	switch i {
	case cmosSeconds:
		return enc(t.Second())
	case cmosMinutes:
		return enc(t.Minute())
	case cmosHours:
		h := t.Hour()
		if regB&cmosRegB24h != 0 {
			return enc(h)
		}
		pm := h >= 12
		h %= 12
		if h == 0 {
			h = 12
		}
		v := enc(h)
		if pm {
			v |= 0x80
		}
		return v
	case cmosWeekday:
		return enc(int(t.Weekday()) + 1) // Sunday is 1
	case cmosDay:
		return enc(t.Day())
	case cmosMonth:
		return enc(int(t.Month()))
	case cmosYear:
		return enc(t.Year() % 100)
	case cmosCentury:
		return enc(t.Year() / 100 % 100)
	case cmosRegC:
		return 0 // no interrupt flags
	case cmosRegD:
		return cmosRegDVRT
	}
	return c.ram[i]
}
