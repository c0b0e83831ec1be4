// Package threads owns what the VMM sets on its long-lived locked OS
// threads, the event loops (epoll_wait, then reads, preadv/pwritev and
// irqfd writes) and the vCPUs (KVM_RUN): their names (SetName), and one P
// each added to GOMAXPROCS (AddP, RemoveP).
//
// Why a P each: such a thread is locked to its goroutine, and a thread leaving a
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
