package threads

import (
	"runtime"
	"time"
)

// Busy keeps the Go runtime's sysmon thread from taking a busy locked
// thread's P at every system call; an event loop calls Woke each time it
// comes back from epoll_wait.
//
// Why: a goroutine locked to its thread never goes through the scheduler,
// so its P's scheduling tick stops moving. Once sysmon has seen the same
// tick for 10 ms it takes the P away whenever it finds the thread in a
// system call (epoll_wait), however short; the thread, back from the
// kernel, must then take an idle P, which wakes a sleeping sysmon, which
// polls every 20 µs and takes the P again. Measured on a small program
// (an epoll loop fed by another process, docs/performance.md, fifteenth
// session): 2.8-3.8 context switches of other threads per wake-up, at
// any rate from 50 to 50,000 a second.
//
// runtime.Gosched moves the tick, at the cost of about four switches
// (another thread hands the locked goroutine its P back). Woke calls it
// when a window of BusyWindow to 2×BusyWindow has seen at least BusyWakes
// wake-ups: a steadily busy thread (a disk or network transfer) does it
// every few milliseconds instead of paying on each event, and one that
// wakes rarely never does. The upper bound matters: after a Gosched,
// sysmon no longer takes the P at once, so a thread that then blocks for
// more than 10 ms keeps sysmon polling (from 20 µs, backing off) until it
// takes the P for the long system call, about 60 wake-ups. Measured with
// the same program (switches of all threads per event, plain loop against
// Busy): 4.8 against 1.1 at 10,000 wake-ups a second, 4.9 against 1.7 at
// 1,000, 4.9 against 2.2 at 500, 5.0 against 3.1 at 250, and the same
// (3.8–5.1) at 170 a second and fewer, where no window is busy; yielding
// on every wake-up at 20 to 80 a second would cost 63.
type Busy struct {
	start time.Time
	wakes int
	// yield is runtime.Gosched; tests replace it.
	yield func()
}

// The window: a Gosched at most every BusyWindow, and only after
// BusyWakes wake-ups within 2×BusyWindow. 2×BusyWindow must not exceed
// sysmon's 10 ms.
const (
	BusyWindow = 5 * time.Millisecond
	BusyWakes  = 2
)

// Woke counts a wake-up at time now and yields to the scheduler when the
// window is over and was busy.
func (b *Busy) Woke(now time.Time) {
	b.wakes++
	elapsed := now.Sub(b.start)
	if elapsed < BusyWindow {
		return
	}
	if b.wakes >= BusyWakes && elapsed < 2*BusyWindow {
		if b.yield != nil {
			b.yield()
		} else {
			runtime.Gosched()
		}
	}
	b.start, b.wakes = now, 0
}
