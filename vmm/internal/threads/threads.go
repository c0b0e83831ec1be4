// Package threads owns what the VMM sets on its long-lived locked OS
// threads: their names (SetName: the event loops by their id, the vCPUs
// "CPU N/KVM" as QEMU's and StratoVirt's), one P added to GOMAXPROCS
// for each event loop (AddP, RemoveP), and when a busy loop passes through
// the scheduler (Busy).
//
// Why a P for each loop: a loop thread is locked to its goroutine and
// spends its life in syscalls (epoll_wait, then reads, preadv/pwritev and
// irqfd writes), and a thread leaving a syscall needs a P (a GOMAXPROCS
// slot) to run Go code again. It gets one at once only if one is idle or
// still its own. With GOMAXPROCS at the CPU count (1 in a one-CPU host or
// VM) a loop thread and the vCPUs keep finding the Ps taken: the loser
// parks until sysmon takes a P back from a thread in a long syscall (20 µs
// to 10 ms later), at the cost of futex wake-ups, context switches and
// latency on every request. Measured in the nested lab with one CPU
// (tests/bench/blk): a P for the loop raised queue-depth-1 IOPS by
// 15-40%. A P only runs Go code: it adds no thread, and no CPU time while
// its thread waits in the kernel.
//
// The vCPU threads (in KVM_RUN) get none: tried in the thirteenth session
// (docs/performance.md), a P per vCPU made the VMM's threads switch more
// often, not less (with vhost-net, 24-29 context switches per TCP round
// trip against 19 without, the vCPU threads' own 11-14 against 7-8), with
// no throughput gain in the lab. What helped instead is needing a P less
// often: a vCPU thread serves the virtio-mmio interrupt registers without
// leaving KVM_RUN's system call (kvm.FastMMIO).
package threads

import (
	"runtime"
	"sync"
)

var procs struct {
	sync.Mutex
	added int
}

// AddP raises GOMAXPROCS by one for a new syscall-bound thread.
func AddP() {
	procs.Lock()
	defer procs.Unlock()
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	procs.added++
}

// RemoveP undoes one AddP; without a matching AddP it does nothing.
func RemoveP() {
	procs.Lock()
	defer procs.Unlock()
	if procs.added == 0 {
		return
	}
	procs.added--
	if n := runtime.GOMAXPROCS(0); n > 1 {
		runtime.GOMAXPROCS(n - 1)
	}
}
