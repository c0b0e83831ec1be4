// Package procs owns the VMM's additions to GOMAXPROCS: one P for each
// thread that spends its life in blocking syscalls, the event loops
// (epoll_wait, then reads, preadv/pwritev and irqfd writes) and the vCPUs
// (KVM_RUN).
//
// Why: such a thread is locked to its goroutine, and a thread leaving a
// syscall needs a P (a GOMAXPROCS slot) to run Go code again. It gets one
// at once only if one is idle or still marked as in a syscall. With
// GOMAXPROCS at the CPU count (1 in a one-CPU host or VM) a loop thread
// and the vCPUs keep finding the Ps taken: the loser parks until sysmon
// takes a P back from a thread in a long syscall (20 µs to 10 ms later),
// at the cost of futex wake-ups, context switches and latency on every
// exit or request. Measured in the nested lab with one CPU
// (tests/bench/blk): a P for the loop raised queue-depth-1 IOPS by
// 15-40%; a guest with one vCPU did 2.5 times the IOPS of one with two
// while only the loop had its own P.
//
// A P only runs Go code: it adds no thread, and no CPU time while its
// thread waits in the kernel.
package procs

import (
	"runtime"
	"sync"
)

var procs struct {
	sync.Mutex
	added int
}

// Add raises GOMAXPROCS by one for a new syscall-bound thread.
func Add() {
	procs.Lock()
	defer procs.Unlock()
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	procs.added++
}

// Remove undoes one Add; without a matching Add it does nothing.
func Remove() {
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
