package threads

import (
	"runtime"
	"time"
)

// Busy keeps the Go runtime's sysmon thread from taking a busy locked
// thread's P at every system call; an event loop calls Handled after each
// batch of events.
//
// Why: a goroutine locked to its thread never goes through the scheduler,
// so its P's scheduling tick stops moving. Once sysmon has seen the same
// tick for 10 ms it takes the P away whenever it finds the thread in a
// system call (epoll_wait), however short; the thread, back from the
// kernel, must then take an idle P, which wakes a sleeping sysmon, which
// polls every 20 µs and takes the P again. Measured on a small program
// (an epoll loop fed by another process, docs/performance.md, fifteenth
// session): 2.8-3.8 context switches of other threads per event, at any
// rate from 50 to 50,000 events a second.
//
// runtime.Gosched moves the tick, at the cost of about four switches
// (another thread hands the locked goroutine its P back). Handled calls it
// when a window of at least BusyWindow has seen at least BusyEvents
// events, so a steadily busy thread (a disk or network transfer) does it
// every few milliseconds instead of paying on each event, and one that
// wakes rarely never does: there, the Gosched would keep sysmon polling
// for the next 10 ms instead of letting it sleep again at once. Measured
// with the same program: 0.07-0.7 switches per event at 1,000 to 50,000
// events a second, and unchanged below.
type Busy struct {
	start  time.Time
	events int
	// yield is runtime.Gosched; tests replace it.
	yield func()
}

// The window: a Gosched at most every BusyWindow, and only after
// BusyEvents events in it. BusyWindow must stay under sysmon's 10 ms.
const (
	BusyWindow = 5 * time.Millisecond
	BusyEvents = 4
)

// Handled counts n handled events at time now and yields to the
// scheduler when the window is over and was busy.
func (b *Busy) Handled(n int, now time.Time) {
	b.events += n
	if now.Sub(b.start) < BusyWindow {
		return
	}
	if b.events >= BusyEvents {
		if b.yield != nil {
			b.yield()
		} else {
			runtime.Gosched()
		}
	}
	b.start, b.events = now, 0
}
