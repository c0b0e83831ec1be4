package vmm

import (
	"fmt"
	"os"
	"time"

	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/vmm/arch/amd64"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
)

// A guest's first touch of a page the VMM has already filled (the kernel
// it copied, the boot tables, a virtio-pmem image it populated) still
// costs a stage-2 fault: an exit to KVM that maps the host page. Under
// nested virtualization each such exit is a round trip through the outer
// hypervisor, and a booting guest takes thousands of them. KVM 6.10+ can
// map a range ahead of time (KVM_PRE_FAULT_MEMORY), so the boot vCPU maps
// what is already resident before it first runs. Pages the host has not
// populated are left alone: mapping them now would only install the zero
// page, and a write would fault again.

// guestRange is guest-physical memory backed by host, to be pre-faulted
// where resident.
type guestRange struct {
	gpa  uint64
	host []byte
}

// preFaultDisabled turns the pre-fault off (STRATOVIRT_PREFAULT=0), for
// comparing boots with and without it.
func preFaultDisabled() bool { return os.Getenv("STRATOVIRT_PREFAULT") == "0" }

// bootRanges are the guest RAM ranges the loader wrote: low memory (boot
// tables, zero page, command line), the kernel and the initrd.
func (v *VM) bootRanges() []guestRange {
	spans := [][2]uint64{{0, amd64.MiB}}
	if v.boot != nil {
		spans = append(spans, [2]uint64{v.boot.KernelStart, v.boot.KernelEnd})
		if v.boot.InitrdSize > 0 {
			spans = append(spans, [2]uint64{v.boot.InitrdAddr, v.boot.InitrdAddr + v.boot.InitrdSize})
		}
	}
	var out []guestRange
	for _, s := range spans {
		start, end := s[0]&^(amd64.PageSize-1), (s[1]+amd64.PageSize-1)&^(amd64.PageSize-1)
		if end <= start {
			continue
		}
		host, err := v.mem.Slice(start, end-start)
		if err != nil {
			continue // spans a hole: leave it to fault in
		}
		out = append(out, guestRange{gpa: start, host: host})
	}
	return out
}

// planPreFault finds the resident pages of v's boot ranges and pmem
// images, as guest-physical runs for preFault. It runs while the VM is
// built, before the VMM's seccomp filter (which has no mincore) is on.
// Without KVM_CAP_PRE_FAULT_MEMORY there is nothing to plan.
func (v *VM) planPreFault() error {
	if preFaultDisabled() {
		return nil
	}
	if n, err := v.vm.CheckExtension(kvm.CapPreFaultMemory); err != nil || n == 0 {
		return nil
	}
	for _, r := range append(v.bootRanges(), v.preFaultRanges...) {
		runs, err := residentRuns(r.host)
		if err != nil {
			log.L.WithError(err).Debug("pre-fault plan")
			v.preFaultRuns = nil
			return nil // only the speed-up is lost
		}
		for _, run := range runs {
			v.preFaultRuns = append(v.preFaultRuns, [2]uint64{r.gpa + run[0], run[1]})
		}
	}
	return nil
}

// preFault maps the planned runs through c, the boot vCPU, before it
// first runs. A failure only costs the speed-up, so it is logged and the
// rest is left to fault in as usual.
func (v *VM) preFault(c *kvm.VCPU) {
	if len(v.preFaultRuns) == 0 {
		return
	}
	start := time.Now()
	var mapped uint64
	for _, run := range v.preFaultRuns {
		n, err := c.PreFaultMemory(run[0], run[1])
		mapped += n
		if err != nil {
			log.L.WithError(err).Debugf("pre-fault: guest range %#x+%#x", run[0], run[1])
			break
		}
	}
	log.L.Debugf("pre-faulted %d KiB of guest memory in %v", mapped>>10, time.Since(start).Round(time.Microsecond))
}

// residentRuns returns the [offset, length) runs of host's pages that are
// resident in the host (mincore).
func residentRuns(host []byte) ([][2]uint64, error) {
	if len(host) == 0 {
		return nil, nil
	}
	const page = amd64.PageSize
	vec := make([]byte, (uint64(len(host))+page-1)/page)
	if err := mincore(host, vec); err != nil {
		return nil, fmt.Errorf("mincore %d bytes: %w", len(host), err)
	}
	var runs [][2]uint64
	for i := 0; i < len(vec); {
		if vec[i]&1 == 0 {
			i++
			continue
		}
		j := i
		for j < len(vec) && vec[j]&1 != 0 {
			j++
		}
		off, n := uint64(i)*page, min(uint64(j-i)*page, uint64(len(host))-uint64(i)*page)
		runs = append(runs, [2]uint64{off, n})
		i = j
	}
	return runs, nil
}
