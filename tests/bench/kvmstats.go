package bench

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// kvmDebugfs is where KVM keeps a directory of counters per VM, named
// "<tid>-<vm fd>" after the thread that created the VM (for a Go VMM
// rarely the main thread), each counter summed over the VM's vCPUs.
const kvmDebugfs = "/sys/kernel/debug/kvm"

// MountDebugfs mounts debugfs where it is not mounted yet (a lab boots
// without it). Errors are ignored: without it KVMStats reports nothing.
func MountDebugfs() {
	if _, err := os.Stat(kvmDebugfs); err == nil {
		return
	}
	syscall.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, "")
}

// KVMExitCounters are the counters the I/O benchmarks report: what a
// guest's I/O costs in exits to the host's KVM, the expensive unit under
// nested virtualization.
var KVMExitCounters = []string{"exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits", "irq_injections", "irq_window_exits", "halt_wakeup"}

// KVMStats reads names from the debugfs directories of the VMs that
// process pid's threads created, summed over them. A counter that cannot
// be read is left out.
func KVMStats(pid int, names []string) map[string]int64 {
	var dirs []string
	tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tid := range tids {
		d, _ := filepath.Glob(fmt.Sprintf("%s/%s-*", kvmDebugfs, tid.Name()))
		dirs = append(dirs, d...)
	}
	m := map[string]int64{}
	for _, d := range dirs {
		for _, n := range names {
			b, err := os.ReadFile(filepath.Join(d, n))
			if err != nil {
				continue
			}
			v, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
			if err != nil {
				continue
			}
			m[n] += v
		}
	}
	return m
}

// AddStatsDiff adds after-before, counter by counter, to sum.
func AddStatsDiff(sum, before, after map[string]int64) {
	for k, v := range after {
		if b, ok := before[k]; ok {
			sum[k] += v - b
		}
	}
}

// FormatStats writes counters (in KVMExitCounters' order) divided by per,
// as "exits 123.4, io_exits 5.6", leaving out counters never seen.
func FormatStats(m map[string]int64, per float64) string {
	if per <= 0 {
		per = 1
	}
	order := map[string]int{}
	for i, n := range KVMExitCounters {
		order[n] = i
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool {
		oa, aok := order[keys[a]]
		ob, bok := order[keys[b]]
		if aok != bok {
			return aok
		}
		if oa != ob {
			return oa < ob
		}
		return keys[a] < keys[b]
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.1f", k, float64(m[k])/per))
	}
	return strings.Join(parts, ", ")
}

// ProcCPU returns process pid's user+system time so far (all its
// threads) and the part of it spent running guest code (guest_time: a
// VMM's vCPU threads inside KVM_RUN).
func ProcCPU(pid int) (total, guest time.Duration, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseProcCPU(string(b))
}

// parseProcCPU reads utime, stime and guest_time (fields 14, 15 and 43
// of proc(5), in USER_HZ ticks) off a /proc/PID/stat line; the command
// name before them may hold spaces and parentheses.
func parseProcCPU(stat string) (total, guest time.Duration, err error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("proc stat: no command name in %q", stat)
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3
	if len(f) < 41 {
		return 0, 0, fmt.Errorf("proc stat: %d fields after the command name, want 41 or more", len(f))
	}
	var t [3]time.Duration
	for j, k := range []int{11, 12, 40} {
		n, err := strconv.ParseUint(f[k], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("proc stat: field %d: %w", k+3, err)
		}
		t[j] = time.Duration(n) * time.Second / 100
	}
	return t[0] + t[1], t[2], nil
}

// ThreadSwitches returns the context switches of process pid's threads
// so far, summed by thread name: how often the host's scheduler switched
// away from each kind of thread, which under nested virtualization costs
// the guest each time. Voluntary switches (the thread blocked) count
// under the name, involuntary ones (it was preempted) under
// "name (preempted)".
func ThreadSwitches(pid int) map[string]int64 {
	m := map[string]int64{}
	tids, _ := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	for _, tid := range tids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/status", pid, tid.Name()))
		if err != nil {
			continue
		}
		var name string
		var vol, invol int64
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			v = strings.TrimSpace(v)
			switch k {
			case "Name":
				name = v
			case "voluntary_ctxt_switches":
				vol, _ = strconv.ParseInt(v, 10, 64)
			case "nonvoluntary_ctxt_switches":
				invol, _ = strconv.ParseInt(v, 10, 64)
			}
		}
		m[name] += vol
		m[name+" (preempted)"] += invol
	}
	return m
}

// SignalOthers sends sig to every process of procs but keep: the I/O
// benchmarks stop (SIGSTOP) the VMMs not being measured and resume them
// (SIGCONT) after.
func SignalOthers(procs []*os.Process, keep *os.Process, sig os.Signal) error {
	for _, p := range procs {
		if p == keep {
			continue
		}
		if err := p.Signal(sig); err != nil {
			return fmt.Errorf("pid %d: %v: %w", p.Pid, sig, err)
		}
	}
	return nil
}
