// Package eventloop owns the VMM's I/O event loops: each Loop waits on an
// epoll descriptor for the file descriptors (eventfds, timerfds, taps,
// sockets) that devices register and runs their handlers, one at a time.
// There is no polling. A loop waits in one of two ways (Mode):
//
//   - Thread: an OS thread of its own, named after the loop (the -iothread
//     id) so that it shows up as such in /proc/<pid>/task/*/comm, blocking
//     in epoll_wait. A busy loop passes through the Go scheduler every few
//     milliseconds (threads.Busy) so that sysmon leaves its P alone.
//   - Poller: a goroutine parked in the Go runtime's network poller on the
//     epoll descriptor. The thread that polls runs the handlers itself,
//     without waking the runtime's sysmon thread, as long as the handlers
//     make their system calls through package rawsys (bookkept ones wake
//     it). The default loop, which has no name users configure, is one.
//
// Each running loop adds one to GOMAXPROCS (package threads) so that it
// does not wait for a P each time it wakes up.
//
// Add, Remove and Call may be used from any goroutine; Call runs a
// function on the loop and waits for it, which is how devices stop their
// queue processing synchronously. Lock order: a Loop's mutex is
// innermost; handlers run without it.
package eventloop

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/rawsys"
	"github.com/stratovirt-go/stratovirt/vmm/internal/threads"
)

// Mode says how a Loop waits for events.
type Mode int

const (
	// Thread: an OS thread of the loop's own, named after it.
	Thread Mode = iota
	// Poller: parked in the Go runtime's network poller between events.
	Poller
)

// Loop is one event loop.
type Loop struct {
	name string
	mode Mode
	epfd int
	// epoll is epfd registered with the runtime's poller (Poller mode).
	epoll *os.File
	wake  int // eventfd: Call and Close

	mu       sync.Mutex
	handlers map[int32]func()
	calls    []func()
	closing  bool
	done     chan struct{}
	thread   int // tid of the loop thread (Thread mode)
}

// New starts a loop called name; a Thread loop's thread takes the name
// (truncated to threads.MaxNameLen bytes).
func New(name string, mode Mode) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("event loop %q: epoll_create1: %w", name, err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("event loop %q: eventfd: %w", name, err)
	}
	l := &Loop{name: name, mode: mode, epfd: epfd, wake: wake, handlers: map[int32]func(){}, done: make(chan struct{})}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("event loop %q: %w", name, err)
	}
	var epoll syscall.RawConn
	if mode == Poller {
		// The runtime's poller takes only non-blocking descriptors.
		err := unix.SetNonblock(epfd, true)
		if err == nil {
			l.epoll = os.NewFile(uintptr(epfd), "epoll "+name)
			epoll, err = l.epoll.SyscallConn()
		}
		if err != nil {
			unix.Close(wake)
			if l.epoll != nil {
				l.epoll.Close()
			} else {
				unix.Close(epfd)
			}
			return nil, fmt.Errorf("event loop %q: poll epoll descriptor: %w", name, err)
		}
	}
	threads.AddP() // given back when the loop ends
	if mode == Poller {
		go l.poll(epoll)
		return l, nil
	}
	started := make(chan int)
	go l.run(started)
	l.thread = <-started
	return l, nil
}

// Name is the loop's name.
func (l *Loop) Name() string { return l.name }

// Mode is how the loop waits.
func (l *Loop) Mode() Mode { return l.mode }

// ThreadID is the Linux thread id of a Thread loop, 0 for a Poller loop.
func (l *Loop) ThreadID() int { return l.thread }

// Add calls h on the loop thread whenever fd is readable (level
// triggered: h must consume what makes fd readable).
func (l *Loop) Add(fd int, h func()) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closing {
		return fmt.Errorf("event loop %q is closed", l.name)
	}
	if _, ok := l.handlers[int32(fd)]; ok {
		return fmt.Errorf("event loop %q: fd %d already registered", l.name, fd)
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
		return fmt.Errorf("event loop %q: add fd %d: %w", l.name, fd, err)
	}
	l.handlers[int32(fd)] = h
	return nil
}

// Remove unregisters fd. Called from the loop thread (a handler or Call),
// h is never called again once Remove returns; from elsewhere it may still
// be running, so use Call to remove synchronously.
func (l *Loop) Remove(fd int) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.handlers[int32(fd)]; !ok {
		return nil
	}
	delete(l.handlers, int32(fd))
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil && !errors.Is(err, unix.EBADF) {
		return fmt.Errorf("event loop %q: remove fd %d: %w", l.name, fd, err)
	}
	return nil
}

// Call runs f on the loop thread and returns when it has run. It must not
// be called from the loop thread itself. After Close, f runs on the
// caller's goroutine (the loop no longer touches anything).
func (l *Loop) Call(f func()) {
	ch := make(chan struct{})
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		<-l.done
		f()
		return
	}
	l.calls = append(l.calls, func() { f(); close(ch) })
	l.mu.Unlock()
	l.kick()
	select {
	case <-ch:
	case <-l.done:
		// The loop runs every call it takes before it ends, so if ch is
		// still open f was never taken: run it here.
		select {
		case <-ch:
		default:
			l.mu.Lock()
			l.calls = nil
			l.mu.Unlock()
			f()
		}
	}
}

func (l *Loop) kick() {
	if err := rawsys.Signal(l.wake); err != nil {
		log.L.Warnf("event loop %q: wake: %v", l.name, err)
	}
}

// Close stops the loop thread, waits for it and releases its descriptors.
// Registered fds are not closed (their owners do that).
func (l *Loop) Close() error {
	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		<-l.done
		return nil
	}
	l.closing = true
	l.mu.Unlock()
	l.kick()
	<-l.done
	closeEpoll := func() error { return unix.Close(l.epfd) }
	if l.epoll != nil {
		closeEpoll = l.epoll.Close
	}
	return errors.Join(unix.Close(l.wake), closeEpoll())
}

func (l *Loop) run(started chan<- int) {
	// The thread is never unlocked: when run returns, the Go runtime ends
	// it instead of reusing a thread with our name.
	runtime.LockOSThread()
	if err := threads.SetName(l.name); err != nil {
		log.L.Warnf("event loop %q: name thread: %v", l.name, err)
	}
	started <- unix.Gettid()
	defer close(l.done)
	defer threads.RemoveP()
	events := make([]unix.EpollEvent, 32)
	var busy threads.Busy
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			log.L.Errorf("event loop %q: epoll_wait: %v", l.name, err)
			return
		}
		if l.dispatch(events[:n]) {
			return
		}
		busy.Woke(time.Now())
	}
}

// poll is a Poller loop: it takes the ready events without blocking and
// otherwise parks in the runtime's poller until epfd is readable.
func (l *Loop) poll(epoll syscall.RawConn) {
	defer close(l.done)
	defer threads.RemoveP()
	events := make([]unix.EpollEvent, 32)
	for {
		var n int
		var werr error
		err := epoll.Read(func(uintptr) bool {
			n, werr = rawsys.EpollWaitNow(l.epfd, events)
			return n > 0 || (werr != nil && !errors.Is(werr, unix.EINTR))
		})
		if err == nil {
			err = werr
		}
		if err != nil {
			log.L.Errorf("event loop %q: epoll_wait: %v", l.name, err)
			return
		}
		if l.dispatch(events[:n]) {
			return
		}
	}
}

// dispatch runs the handlers of events and reports whether the loop must
// end (Close).
func (l *Loop) dispatch(events []unix.EpollEvent) (closing bool) {
	for _, ev := range events {
		if int(ev.Fd) == l.wake {
			_ = rawsys.Drain(l.wake)
			l.mu.Lock()
			calls, closing := l.calls, l.closing
			l.calls = nil
			l.mu.Unlock()
			for _, f := range calls {
				f()
			}
			if closing {
				return true
			}
			continue
		}
		l.mu.Lock()
		h := l.handlers[ev.Fd]
		l.mu.Unlock()
		if h != nil {
			h()
		}
	}
	return false
}
