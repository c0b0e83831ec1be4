package eventloop

import (
	"runtime"
	"sync"
)

// A loop thread is locked to its goroutine and spends its life in
// syscalls: epoll_wait, then the handlers' reads, preadv/pwritev and
// irqfd writes. A thread leaving a syscall needs a P (a GOMAXPROCS slot)
// to run Go code again; it gets one at once only if one is idle or still
// marked as in a syscall. The vCPU threads are built the same way
// (locked, mostly in KVM_RUN), so with GOMAXPROCS at the CPU count (1 in
// a one-CPU host or VM) a loop thread and the vCPUs keep finding the one
// P taken: the loser parks until sysmon takes the P back from a thread
// that went into a long syscall (20 µs to 10 ms later), at the cost of
// futex wakeups, context switches and latency on every request. Measured
// in the nested lab with one CPU (tests/bench/blk): a second P raised
// queue-depth-1 IOPS by 15-40%.
//
// So each running loop adds one P for itself, and gives it back when it
// ends. A P only runs Go code; it adds no thread and no CPU time while
// the loop waits.
var procs struct {
	sync.Mutex
	added int
}

// addProc raises GOMAXPROCS by one for a new loop thread.
func addProc() {
	procs.Lock()
	defer procs.Unlock()
	runtime.GOMAXPROCS(runtime.GOMAXPROCS(0) + 1)
	procs.added++
}

// removeProc undoes one addProc.
func removeProc() {
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
