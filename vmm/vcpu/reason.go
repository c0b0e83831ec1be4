package vcpu

import (
	"errors"
	"fmt"
	"strings"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// Reason says why a Group stopped.
type Reason int

// Reasons a Group stops. Running is the zero value, never returned by Wait.
const (
	Running  Reason = iota
	PowerOff        // the guest powered off (ACPI, i8042, KVM system event)
	Reset           // the guest asked for a reset/reboot
	Stopped         // Stop was called by the host (SIGTERM, API)
	Error           // a vCPU hit a fatal exit or a device called Fail
	Halted          // every vCPU executed HLT with no in-kernel irqchip to wake it
)

// String returns a lower-case name for r.
func (r Reason) String() string {
	switch r {
	case Running:
		return "running"
	case PowerOff:
		return "power-off"
	case Reset:
		return "reset"
	case Stopped:
		return "stopped"
	case Error:
		return "error"
	case Halted:
		return "halted"
	}
	return fmt.Sprintf("reason(%d)", int(r))
}

// ErrTripleFault is wrapped by the ExitError of a KVM_EXIT_SHUTDOWN.
var ErrTripleFault = errors.New("guest triple fault")

// ExitError is a fatal vCPU exit, with the register state at the exit.
type ExitError struct {
	VCPU       int
	ExitReason uint32
	Msg        string // what went wrong, e.g. "guest triple fault"
	Regs       kvm.Regs
	Sregs      kvm.Sregs
	StateErr   error // set when the registers could not be read
	cause      error
}

func (e *ExitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "vcpu %d: %s (exit reason %d %s)", e.VCPU, e.Msg, e.ExitReason, exitName(e.ExitReason))
	if e.StateErr != nil {
		fmt.Fprintf(&b, "; registers unavailable: %v", e.StateErr)
		return b.String()
	}
	fmt.Fprintf(&b, "; rip=%#x rsp=%#x rflags=%#x cs=%#x cr0=%#x cr2=%#x cr3=%#x cr4=%#x efer=%#x",
		e.Regs.RIP, e.Regs.RSP, e.Regs.RFLAGS, e.Sregs.CS.Selector,
		e.Sregs.CR0, e.Sregs.CR2, e.Sregs.CR3, e.Sregs.CR4, e.Sregs.EFER)
	return b.String()
}

// Unwrap returns ErrTripleFault for a triple fault, else nil.
func (e *ExitError) Unwrap() error { return e.cause }

func exitName(r uint32) string {
	switch r {
	case kvm.ExitUnknown:
		return "UNKNOWN"
	case kvm.ExitException:
		return "EXCEPTION"
	case kvm.ExitIO:
		return "IO"
	case kvm.ExitHypercall:
		return "HYPERCALL"
	case kvm.ExitDebug:
		return "DEBUG"
	case kvm.ExitHLT:
		return "HLT"
	case kvm.ExitMMIO:
		return "MMIO"
	case kvm.ExitIRQWindowOpen:
		return "IRQ_WINDOW_OPEN"
	case kvm.ExitShutdown:
		return "SHUTDOWN"
	case kvm.ExitFailEntry:
		return "FAIL_ENTRY"
	case kvm.ExitIntr:
		return "INTR"
	case kvm.ExitInternalError:
		return "INTERNAL_ERROR"
	case kvm.ExitSystemEvent:
		return "SYSTEM_EVENT"
	}
	return "?"
}

func newExitError(cpu *kvm.VCPU, reason uint32, cause error, format string, args ...any) *ExitError {
	e := &ExitError{VCPU: cpu.ID(), ExitReason: reason, Msg: fmt.Sprintf(format, args...), cause: cause}
	var err1, err2 error
	e.Regs, err1 = cpu.GetRegs()
	e.Sregs, err2 = cpu.GetSregs()
	e.StateErr = errors.Join(err1, err2)
	return e
}
