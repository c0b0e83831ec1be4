package vcpu

import (
	"fmt"

	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// handleExit acts on the exit of the last successful KVM_RUN. It returns
// errHalted when the vCPU halted, an *ExitError when the exit is fatal,
// and nil to run again.
func (g *Group) handleExit(st *vcpuState) error {
	cpu := st.cpu
	switch r := cpu.ExitReason(); r {
	case kvm.ExitIO:
		return g.handleIO(cpu)
	case kvm.ExitMMIO:
		return g.handleMMIO(cpu)
	case kvm.ExitIntr:
		return nil
	case kvm.ExitHLT:
		// With the in-kernel irqchip HLT never reaches userspace. Without
		// it nothing can wake this vCPU, so it ends instead of spinning.
		log.L.Debugf("vcpu %d: HLT exit (if=%v); vCPU halted", st.id, cpu.IFFlag())
		return errHalted
	case kvm.ExitShutdown:
		return newExitError(cpu, r, ErrTripleFault, "guest triple fault")
	case kvm.ExitFailEntry:
		hw, hostCPU := cpu.FailEntry()
		return newExitError(cpu, r, nil, "VM entry failed: hardware reason %#x on host cpu %d", hw, hostCPU)
	case kvm.ExitInternalError:
		ie := cpu.InternalError()
		msg := fmt.Sprintf("KVM internal error: suberror %d (%s), data %#x", ie.Suberror, suberrorName(ie.Suberror), ie.Data)
		if len(ie.Insn) > 0 {
			msg += fmt.Sprintf(", instruction bytes % x", ie.Insn)
		}
		return newExitError(cpu, r, nil, "%s", msg)
	case kvm.ExitSystemEvent:
		typ, data := cpu.SystemEvent()
		switch typ {
		case kvm.SystemEventShutdown:
			g.Stop(PowerOff)
			return nil
		case kvm.SystemEventReset:
			g.Stop(Reset)
			return nil
		case kvm.SystemEventCrash:
			return newExitError(cpu, r, nil, "guest crash system event, data %#x", data)
		default:
			return newExitError(cpu, r, nil, "unhandled system event type %d, data %#x", typ, data)
		}
	case kvm.ExitUnknown:
		return newExitError(cpu, r, nil, "unknown exit, hardware reason %#x", cpu.HardwareExitReason())
	default:
		return newExitError(cpu, r, nil, "unhandled exit")
	}
}

func suberrorName(s uint32) string {
	switch s {
	case kvm.InternalErrorEmulation:
		return "emulation failure"
	case kvm.InternalErrorSimulEx:
		return "simultaneous exceptions"
	case kvm.InternalErrorDeliveryEv:
		return "event delivery failure"
	case kvm.InternalErrorUnexpectedExitReason:
		return "unexpected exit reason"
	}
	return "unknown"
}

// handleIO dispatches one port-I/O exit; string I/O (count > 1) becomes
// count accesses to the same port.
func (g *Group) handleIO(cpu *kvm.VCPU) error {
	io, err := cpu.IO()
	if err != nil {
		return newExitError(cpu, kvm.ExitIO, nil, "%v", err)
	}
	size := int(io.Size)
	for i := 0; i < int(io.Count); i++ {
		data := io.Data[i*size : (i+1)*size]
		port := uint64(io.Port)
		if io.Dir == kvm.IODirOut {
			if (g.cfg.PIO == nil || !g.cfg.PIO.Write(port, data)) && log.GetLevel() >= log.DebugLevel {
				log.L.Debugf("vcpu %d: unclaimed port write %#x size %d data % x", cpu.ID(), port, size, data)
			}
			continue
		}
		if g.cfg.PIO == nil || !g.cfg.PIO.Read(port, data) {
			for j := range data {
				data[j] = 0xff
			}
			if log.GetLevel() >= log.DebugLevel {
				log.L.Debugf("vcpu %d: unclaimed port read %#x size %d", cpu.ID(), port, size)
			}
		}
	}
	return nil
}

// handleMMIO dispatches one MMIO exit; read data is left in kvm_run for
// the next KVM_RUN to complete the instruction.
func (g *Group) handleMMIO(cpu *kvm.VCPU) error {
	m, err := cpu.MMIO()
	if err != nil {
		return newExitError(cpu, kvm.ExitMMIO, nil, "%v", err)
	}
	if m.IsWrite {
		if g.cfg.MMIO == nil || !g.cfg.MMIO.Write(m.Addr, m.Data) {
			log.L.Debugf("vcpu %d: unclaimed MMIO write %#x len %d data % x", cpu.ID(), m.Addr, len(m.Data), m.Data)
		}
		return nil
	}
	if g.cfg.MMIO == nil || !g.cfg.MMIO.Read(m.Addr, m.Data) {
		for j := range m.Data {
			m.Data[j] = 0xff
		}
		log.L.Debugf("vcpu %d: unclaimed MMIO read %#x len %d", cpu.ID(), m.Addr, len(m.Data))
	}
	return nil
}
