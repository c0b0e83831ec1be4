package legacy

import (
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/vmm/bus"
)

// Compile-time checks that every device fits the bus.
var (
	_ bus.Device = (*Serial)(nil)
	_ bus.Device = (*I8042)(nil)
	_ bus.Device = (*PowerPort)(nil)
	_ bus.Device = (*BootMarker)(nil)
	_ bus.Device = (*DebugExit)(nil)
	_ bus.Device = Noop{}
	_ bus.Device = (*CMOS)(nil)
)

func read1(d bus.Device, off uint64) uint8 {
	b := []byte{0xaa}
	d.Read(off, b)
	return b[0]
}

func write1(d bus.Device, off uint64, v uint8) { d.Write(off, []byte{v}) }

func TestI8042(t *testing.T) {
	type access struct {
		write bool
		off   uint64
		val   uint8 // written, or expected on read
	}
	w := func(off uint64, v uint8) access { return access{true, off, v} }
	r := func(off uint64, v uint8) access { return access{false, off, v} }
	const st, data = i8042Command, i8042Data
	tests := []struct {
		name   string
		seq    []access
		resets int
	}{
		{"idle status", []access{r(st, i8042StatusSys)}, 0},
		{"self test", []access{w(st, 0xaa), r(st, i8042StatusSys|i8042StatusCmd|i8042StatusOBF), r(data, 0x55), r(st, i8042StatusSys|i8042StatusCmd)}, 0},
		{"kbd test", []access{w(st, 0xab), r(data, 0x00)}, 0},
		{"read ctr", []access{w(st, 0x20), r(data, i8042CTRDefault)}, 0},
		{"write ctr", []access{w(st, 0x60), w(data, 0x65), r(st, i8042StatusSys), w(st, 0x20), r(data, 0x65)}, 0},
		{"disable/enable kbd", []access{w(st, 0xad), w(st, 0x20), r(data, i8042CTRDefault|0x10), w(st, 0xae), w(st, 0x20), r(data, i8042CTRDefault)}, 0},
		{"enable/disable aux", []access{w(st, 0xa8), w(st, 0x20), r(data, i8042CTRDefault&^0x20), w(st, 0xa7), w(st, 0x20), r(data, i8042CTRDefault)}, 0},
		{"aux loop without aux bit", []access{w(st, 0xd3), w(data, 0x5a), r(st, i8042StatusSys|i8042StatusOBF), r(data, 0x5a)}, 0},
		{"aux test says absent", []access{w(st, 0xa9), r(data, i8042AuxClockLow)}, 0},
		{"kbd output buffer", []access{w(st, 0xd2), w(data, 0x1c), r(data, 0x1c)}, 0},
		{"aux write dropped", []access{w(st, 0xd4), w(data, 0xff), r(st, i8042StatusSys)}, 0},
		{"read output port", []access{w(st, 0xd0), r(data, 0x01)}, 0},
		{"output port keeps reset high", []access{w(st, 0xd1), w(data, 0x03)}, 0},
		{"output port reset low", []access{w(st, 0xd1), w(data, 0x02)}, 1},
		{"reset command", []access{w(st, 0xfe)}, 1},
		{"keyboard byte ignored", []access{w(data, 0xff), r(st, i8042StatusSys)}, 0},
		{"unknown command", []access{w(st, 0xc0), r(st, i8042StatusSys|i8042StatusCmd)}, 0},
		{"ports 0x61-0x63 quiet", []access{r(1, 0), w(1, 0xfe), r(3, 0)}, 0},
		{"new output replaces unread", []access{w(st, 0xaa), w(st, 0xab), r(data, 0x00)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resets := 0
			k := NewI8042(func() { resets++ })
			for i, a := range tt.seq {
				if a.write {
					write1(k, a.off, a.val)
				} else if got := read1(k, a.off); got != a.val {
					t.Errorf("step %d: read %d = %#x, want %#x", i, a.off, got, a.val)
				}
			}
			if resets != tt.resets {
				t.Errorf("resets = %d, want %d", resets, tt.resets)
			}
		})
	}
	NewI8042(nil).Write(i8042Command, []byte{0xfe}) // nil callback: no panic
}

func TestPowerPort(t *testing.T) {
	tests := []struct {
		val             uint8
		resets, powerOf int
	}{
		{0x01, 1, 0},
		{0x34, 0, 1},
		{0x80, 0, 0}, // wake status clear
		{0x0c, 0, 0}, // S3 type without enable
		{0x00, 0, 0},
	}
	for _, tt := range tests {
		resets, offs := 0, 0
		p := NewPowerPort(func() { resets++ }, func() { offs++ })
		write1(p, 0, tt.val)
		if resets != tt.resets || offs != tt.powerOf {
			t.Errorf("write %#x: resets=%d poweroffs=%d, want %d/%d", tt.val, resets, offs, tt.resets, tt.powerOf)
		}
		if v := read1(p, 0); v != 0 {
			t.Errorf("sleep status = %#x, want 0", v)
		}
	}
	NewPowerPort(nil, nil).Write(0, []byte{1, 0})
	NewPowerPort(nil, nil).Write(0, nil)
}

func TestBootMarker(t *testing.T) {
	start := time.Unix(1000, 0)
	clock := start
	type call struct {
		v uint8
		d time.Duration
	}
	var calls []call
	b := NewBootMarker(start, func(v uint8, d time.Duration) { calls = append(calls, call{v, d}) })
	b.now = func() time.Time { return clock }

	steps := []struct {
		at time.Duration
		v  uint8
	}{
		{10 * time.Millisecond, 1},
		{20 * time.Millisecond, BootCompleteMarker},
		{30 * time.Millisecond, BootCompleteMarker}, // repeat: ignored
		{40 * time.Millisecond, 1},
		{50 * time.Millisecond, 0},
	}
	for _, s := range steps {
		clock = start.Add(s.at)
		write1(b, 0, s.v)
	}
	want := []call{{1, 10 * time.Millisecond}, {BootCompleteMarker, 20 * time.Millisecond}, {0, 50 * time.Millisecond}}
	if len(calls) != len(want) {
		t.Fatalf("callbacks %v, want %v", calls, want)
	}
	for i := range want {
		if calls[i] != want[i] {
			t.Errorf("callback %d = %v, want %v", i, calls[i], want[i])
		}
	}
	if d, ok := b.Mark(BootCompleteMarker); !ok || d != 20*time.Millisecond {
		t.Errorf("Mark(123) = %v, %v", d, ok)
	}
	if _, ok := b.Mark(7); ok {
		t.Error("Mark(7) recorded")
	}
	m := b.Marks()
	if len(m) != 3 || m[0] != 50*time.Millisecond || m[1] != 10*time.Millisecond {
		t.Errorf("Marks = %v", m)
	}
	if v := read1(b, 0); v != 0 {
		t.Errorf("read = %d", v)
	}
	write1(b, 1, 9) // outside the port
	if _, ok := b.Mark(9); ok {
		t.Error("write at offset 1 recorded")
	}
}

func TestDebugExit(t *testing.T) {
	var got []uint8
	d := NewDebugExit(func(v uint8) { got = append(got, v) })
	write1(d, 0, 0)
	write1(d, 0, 3)
	d.Write(0, nil)
	if len(got) != 2 || got[0] != 0 || got[1] != 3 {
		t.Errorf("values %v, want [0 3]", got)
	}
	NewDebugExit(nil).Write(0, []byte{1})
}

func TestNoop(t *testing.T) {
	b := []byte{1, 2}
	Noop{}.Read(0, b)
	if b[0] != 0 || b[1] != 0 {
		t.Errorf("Noop read %v", b)
	}
	Noop{Fill: 0xff}.Read(0, b)
	if b[0] != 0xff || b[1] != 0xff {
		t.Errorf("Noop{0xff} read %v", b)
	}
	Noop{}.Write(0, b)
}

func TestCMOS(t *testing.T) {
	// Saturday 2026-01-31 23:59:58 UTC.
	now := time.Date(2026, 1, 31, 23, 59, 58, 0, time.UTC)
	tests := []struct {
		name string
		regB uint8
		reg  uint8
		want uint8
	}{
		{"seconds bcd", 0x02, cmosSeconds, 0x58},
		{"minutes bcd", 0x02, cmosMinutes, 0x59},
		{"hours bcd 24h", 0x02, cmosHours, 0x23},
		{"hours bcd 12h pm", 0x00, cmosHours, 0x80 | 0x11},
		{"weekday", 0x02, cmosWeekday, 7},
		{"day", 0x02, cmosDay, 0x31},
		{"month", 0x02, cmosMonth, 0x01},
		{"year", 0x02, cmosYear, 0x26},
		{"century", 0x02, cmosCentury, 0x20},
		{"seconds binary", 0x06, cmosSeconds, 58},
		{"day binary", 0x06, cmosDay, 31},
		{"hours binary 12h", 0x04, cmosHours, 0x80 | 11},
		{"reg A: no update in progress", 0x02, cmosRegA, cmosRegADefault},
		{"reg C", 0x02, cmosRegC, 0},
		{"reg D valid", 0x02, cmosRegD, 0x80},
		{"ram", 0x02, 0x40, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCMOS(func() time.Time { return now })
			write1(c, 0, cmosRegB)
			write1(c, 1, tt.regB)
			write1(c, 0, 0x80|tt.reg) // NMI-mask bit is ignored
			if got := read1(c, 1); got != tt.want {
				t.Errorf("reg %#x = %#x, want %#x", tt.reg, got, tt.want)
			}
		})
	}
}

func TestCMOSWrites(t *testing.T) {
	c := NewCMOS(func() time.Time { return time.Date(2026, 1, 1, 0, 0, 5, 0, time.UTC) })
	tests := []struct {
		reg, write, want uint8
	}{
		{0x40, 0xab, 0xab},        // RAM is writable
		{cmosSeconds, 0x30, 0x05}, // clock follows the host
		{cmosRegA, 0xff, 0x7f},    // UIP is read-only
		{cmosRegC, 0xff, 0x00},
		{cmosRegD, 0x00, 0x80},
	}
	for _, tt := range tests {
		write1(c, 0, tt.reg)
		write1(c, 1, tt.write)
		if got := read1(c, 1); got != tt.want {
			t.Errorf("reg %#x after write %#x = %#x, want %#x", tt.reg, tt.write, got, tt.want)
		}
		if got := read1(c, 0); got != tt.reg {
			t.Errorf("index reads %#x, want %#x", got, tt.reg)
		}
	}
	c.Read(1, nil)
	c.Write(1, nil)
}
