package sandbox

import (
	"fmt"
	"os"
	"time"

	"github.com/stratovirt-go/stratovirt/vmm/seccomp"
)

// EnvSeccompAction overrides the default action of the vCPU seccomp
// filter in the shim, as in cmd/stratovirt: "kill" (default), "trap" or
// "log" (allow and audit-log what the list misses).
const EnvSeccompAction = "STRATOVIRT_SECCOMP_ACTION"

// VCPUSeccomp returns the vmm.Options.OnVCPUThread hook the shim runs on
// every vCPU thread: the same vCPU allow-list as the standalone VMM
// (vmm/seccomp.VCPU, docs/seccomp.md), installed on that thread only,
// right before it first enters the guest. The shim itself forks mkfs,
// mounts and serves containerd, so there is no process-wide filter; the
// threads that execute guest exits (MMIO and port I/O handlers) are the
// ones confined. The action comes from $STRATOVIRT_SECCOMP_ACTION; an
// invalid value is an error, never a silently unfiltered VM.
func VCPUSeccomp() (func(id int) error, error) {
	action, err := seccomp.ParseAction(os.Getenv(EnvSeccompAction))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", EnvSeccompAction, err)
	}
	// Load the local time zone now (it opens /etc/localtime once): the
	// guest console is logged, with timestamps, from the vCPU threads,
	// where openat is not allowed.
	time.Now().Zone()
	return vcpuSeccompHook(action), nil
}

func vcpuSeccompHook(action seccomp.Action) func(id int) error {
	return func(id int) error {
		if err := seccomp.Install(seccomp.VCPU(action), false); err != nil {
			return fmt.Errorf("vCPU %d seccomp filter: %w", id, err)
		}
		return nil
	}
}
