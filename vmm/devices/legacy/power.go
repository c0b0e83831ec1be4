package legacy

import "github.com/containerd/log"

// PowerPort values. The FADT points its sleep-control, sleep-status and reset
// registers at this one port, with reset value 1, and the DSDT's _S5_ package
// gives sleep type 5: entering S5 writes SLP_TYP<<2 | SLP_EN (bit 5).
const (
	PowerResetValue = 0x01
	PowerS5Value    = 5<<2 | 1<<5 // 0x34
)

// PowerPort is a one-byte ACPI hardware-reduced sleep-control/status and
// reset register (Cloud Hypervisor's model, at PortPower). It is stateless
// and safe for concurrent use.
type PowerPort struct {
	reset    func()
	powerOff func()
}

// NewPowerPort returns the port; reset is called for a write of
// PowerResetValue and powerOff for PowerS5Value (either may be nil). They run
// on the vCPU thread and must not block.
func NewPowerPort(reset, powerOff func()) *PowerPort {
	return &PowerPort{reset: reset, powerOff: powerOff}
}

// Read implements bus.Device: the sleep status reads 0 (not waking).
func (p *PowerPort) Read(offset uint64, data []byte) { clear(data) }

// Write implements bus.Device; only the first byte is used.
func (p *PowerPort) Write(offset uint64, data []byte) {
	if len(data) == 0 || offset != 0 {
		return
	}
	switch data[0] {
	case PowerResetValue:
		log.L.Debug("acpi power port: guest requested reset")
		if p.reset != nil {
			p.reset()
		}
	case PowerS5Value:
		log.L.Debug("acpi power port: guest requested power-off (S5)")
		if p.powerOff != nil {
			p.powerOff()
		}
	default:
		// Wake-status clears (0x80) and other sleep states are ignored.
		log.L.Debugf("acpi power port: ignoring write %#x", data[0])
	}
}
