package sandbox

import (
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/seccomp"
)

// EnvSeccompAction overrides the default action of the vCPU seccomp
// filter in the shim, as in cmd/stratovirt: "kill" (default), "trap" or
// "log" (allow and audit-log what the list misses).
const EnvSeccompAction = "STRATOVIRT_SECCOMP_ACTION"

// VCPUSeccomp returns the vmm.Options.OnVCPUThread hook the shim runs on
// every vCPU thread: the same vCPU allow-list as the standalone VMM
// (vmm/seccomp.VCPU, docs/seccomp.md), installed on that thread only,
// right before it first enters the guest, plus what Go's runtime needs
// there (runtimeExtra). The shim itself forks mkfs,
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
	_ = time.Local.String()
	return vcpuSeccompHook(action), nil
}

// runtimeExtra are syscalls Go's runtime makes on any thread that the
// vCPU allow-list lacks: a garbage collection started by an allocation on
// a vCPU thread (device emulation, the console logger) polls the network
// poller from startTheWorld (netpoll(0): epoll_pwait, the only epoll wait
// of Go's runtime on amd64; epoll_wait for older runtimes). Without it the
// shim died of SIGSYS seconds after the guest started, whenever a GC
// happened to begin on a vCPU thread. Both only wait on an existing
// epoll fd.
var runtimeExtra = []seccomp.Rule{
	{Name: "epoll_pwait", Nr: unix.SYS_EPOLL_PWAIT},
	{Name: "epoll_wait", Nr: unix.SYS_EPOLL_WAIT},
}

// vcpuFilter is seccomp.VCPU plus runtimeExtra (those it does not list).
func vcpuFilter(action seccomp.Action) seccomp.Filter {
	f := seccomp.VCPU(action)
	have := make(map[uint32]bool, len(f.Rules))
	for _, r := range f.Rules {
		have[r.Nr] = true
	}
	for _, r := range runtimeExtra {
		if !have[r.Nr] {
			f.Rules = append(f.Rules, r)
		}
	}
	return f
}

func vcpuSeccompHook(action seccomp.Action) func(id int) error {
	return func(id int) error {
		if err := seccomp.Install(vcpuFilter(action), false); err != nil {
			return fmt.Errorf("vCPU %d seccomp filter: %w", id, err)
		}
		return nil
	}
}
