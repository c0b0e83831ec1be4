package legacy

import (
	"sync"

	"github.com/containerd/log"
)

// I8042 offsets relative to PortI8042: the data port 0x60 and the
// status/command port 0x64. Offsets 1..3 (ports 0x61..0x63) read as zero and
// ignore writes; port 0x61 is handled inside KVM when the PIT is created with
// KVM_PIT_SPEAKER_DUMMY, so the guest never reaches this device there.
const (
	i8042Data    = 0
	i8042Command = 4
)

// Controller commands (written to the command port).
const (
	i8042CmdReadCTR    = 0x20
	i8042CmdWriteCTR   = 0x60
	i8042CmdDisableAux = 0xa7
	i8042CmdEnableAux  = 0xa8
	i8042CmdTestAux    = 0xa9
	i8042CmdSelfTest   = 0xaa
	i8042CmdTestKbd    = 0xab
	i8042CmdDisableKbd = 0xad
	i8042CmdEnableKbd  = 0xae
	i8042CmdReadOutP   = 0xd0
	i8042CmdWriteOutP  = 0xd1
	i8042CmdWriteKbdOB = 0xd2
	i8042CmdWriteAuxOB = 0xd3
	i8042CmdWriteAux   = 0xd4
	i8042CmdReset      = 0xfe
)

// Status register bits.
const (
	i8042StatusOBF = 0x01 // output buffer full
	i8042StatusSys = 0x04 // system flag: self-test passed
	i8042StatusCmd = 0x08 // last write was to the command port
)

// Controller configuration byte bits and reset value (keyboard interrupt,
// system flag, translation; aux disabled).
const (
	i8042CTRKbdDisable = 0x10
	i8042CTRAuxDisable = 0x20
	i8042CTRDefault    = 0x01 | 0x04 | 0x40 | i8042CTRAuxDisable

	i8042SelfTestOK  = 0x55
	i8042PortTestOK  = 0x00
	i8042AuxClockLow = 0x01 // "aux clock line stuck low": no aux port
)

// I8042 is a PS/2 controller with a keyboard port that never sends scancodes
// and no aux (mouse) port. It exists so the guest can reboot through it
// (reboot=k writes 0xFE to port 0x64) and so Linux's i8042 driver gets an
// immediate answer to every command it polls for, instead of 0.5 s timeouts.
// It raises no interrupts. Safe for concurrent use.
type I8042 struct {
	reset func()

	mu      sync.Mutex
	ctr     uint8
	outp    uint8 // output port; bit 0 is the CPU reset line (active low)
	ob      uint8 // output buffer
	obFull  bool
	lastCmd bool  // status bit 3
	pending uint8 // command waiting for its data byte, 0 if none
}

// NewI8042 returns a controller whose 0xFE command (and an output-port
// write that pulls the reset line low) calls reset, if not nil. reset runs
// on the vCPU thread without locks held and must not block.
func NewI8042(reset func()) *I8042 {
	return &I8042{reset: reset, ctr: i8042CTRDefault, outp: 0x01}
}

// Read implements bus.Device.
func (k *I8042) Read(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	clear(data)
	k.mu.Lock()
	defer k.mu.Unlock()
	switch offset {
	case i8042Data:
		data[0] = k.ob
		k.obFull = false
	case i8042Command:
		v := uint8(i8042StatusSys)
		if k.obFull {
			v |= i8042StatusOBF
		}
		if k.lastCmd {
			v |= i8042StatusCmd
		}
		data[0] = v
	}
}

// Write implements bus.Device; only the first byte is used.
func (k *I8042) Write(offset uint64, data []byte) {
	if len(data) == 0 {
		return
	}
	k.mu.Lock()
	var doReset bool
	switch offset {
	case i8042Data:
		k.lastCmd = false
		doReset = k.writeData(data[0])
	case i8042Command:
		k.lastCmd = true
		doReset = k.command(data[0])
	}
	k.mu.Unlock()
	if doReset {
		log.L.Debug("i8042: guest requested reset")
		if k.reset != nil {
			k.reset()
		}
	}
}

// output places one byte in the output buffer, replacing an unread one.
// Precondition: k.mu held.
func (k *I8042) output(v uint8) {
	k.ob = v
	k.obFull = true
}

// command runs a controller command and reports whether it resets the CPU.
// Precondition: k.mu held.
func (k *I8042) command(c uint8) bool {
	k.pending = 0
	switch c {
	case i8042CmdReadCTR:
		k.output(k.ctr)
	case i8042CmdWriteCTR, i8042CmdWriteOutP, i8042CmdWriteKbdOB, i8042CmdWriteAuxOB, i8042CmdWriteAux:
		k.pending = c
	case i8042CmdDisableAux:
		k.ctr |= i8042CTRAuxDisable
	case i8042CmdEnableAux:
		k.ctr &^= i8042CTRAuxDisable
	case i8042CmdTestAux:
		k.output(i8042AuxClockLow)
	case i8042CmdSelfTest:
		k.output(i8042SelfTestOK)
	case i8042CmdTestKbd:
		k.output(i8042PortTestOK)
	case i8042CmdDisableKbd:
		k.ctr |= i8042CTRKbdDisable
	case i8042CmdEnableKbd:
		k.ctr &^= i8042CTRKbdDisable
	case i8042CmdReadOutP:
		k.output(k.outp)
	case i8042CmdReset:
		return true
	default:
		log.L.Debugf("i8042: ignoring command %#x", c)
	}
	return false
}

// writeData consumes a data-port byte and reports whether it resets the CPU.
// Precondition: k.mu held.
func (k *I8042) writeData(v uint8) bool {
	c := k.pending
	k.pending = 0
	switch c {
	case i8042CmdWriteCTR:
		k.ctr = v
	case i8042CmdWriteOutP:
		k.outp = v
		return v&0x01 == 0
	case i8042CmdWriteKbdOB:
		k.output(v)
	case i8042CmdWriteAuxOB:
		// Echoed without the aux-data status bit, which tells Linux's
		// AUX_LOOP probe that there is no aux port.
		k.output(v)
	case i8042CmdWriteAux:
		// No aux device: dropped.
	default:
		// A byte for the keyboard; there is none to answer.
	}
	return false
}
