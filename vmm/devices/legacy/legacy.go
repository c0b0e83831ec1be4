// Package legacy owns the PC port-I/O devices a Linux microVM guest expects:
// a 16550A UART (Serial), an i8042 controller stub used for reset (I8042),
// a Cloud Hypervisor style ACPI sleep/reset port (PowerPort), a boot-time
// marker and debug-exit port for benchmarks (BootMarker, DebugExit), a CMOS
// RTC (CMOS) and do-nothing ports (Noop).
//
// Every device implements bus.Device with offsets relative to the base it is
// inserted at (the Port* constants below are the conventional bases). The
// devices are called from vCPU threads, and Serial also from the input
// goroutine owned by the integrator; each device guards its own state with a
// single mutex and never calls out (interrupts, callbacks, output writes)
// while holding it, so there is no lock order to respect between devices.
package legacy

// Conventional port-I/O bases and sizes.
const (
	PortCOM1       = 0x3f8 // Serial (ttyS0), GSI 4
	PortCOM2       = 0x2f8 // Serial (ttyS1), GSI 3
	SerialSize     = 8
	PortI8042      = 0x60 // I8042 covers 0x60..0x64
	I8042Size      = 5
	PortPower      = 0x600 // PowerPort, referenced by the FADT sleep/reset registers
	PowerSize      = 1
	PortBootMarker = 0x3f0 // BootMarker, Firecracker's boot-timer ABI
	BootMarkerSize = 1
	PortDebugExit  = 0xf4 // DebugExit, QEMU isa-debug-exit style
	DebugExitSize  = 1
	PortPOST       = 0x80 // Noop, POST codes / io_delay
	PortCMOS       = 0x70 // CMOS covers 0x70 (index) and 0x71 (data)
	CMOSSize       = 2
)

// BootCompleteMarker is the value a guest writes to PortBootMarker when its
// init has been reached (Firecracker's MAGIC_VALUE_SIGNAL_GUEST_BOOT_COMPLETE).
const BootCompleteMarker = 123

// IRQ delivers an edge-triggered interrupt to the guest. The integrator backs
// it with a KVM irqfd (a write of 1 pulses the GSI). Trigger is called
// without any device lock held and must be safe for concurrent use.
type IRQ interface {
	Trigger() error
}

// IRQFunc adapts a function to IRQ.
type IRQFunc func() error

// Trigger calls f.
func (f IRQFunc) Trigger() error { return f() }
