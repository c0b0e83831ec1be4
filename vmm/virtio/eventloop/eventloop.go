// Package eventloop owns the VMM's I/O threads: each Loop is one OS thread,
// named after the loop (the -iothread id, or the default loop's name) so
// that it shows up as such in /proc/<pid>/task/*/comm, blocking in
// epoll_wait on the file descriptors (eventfds, timerfds, taps) that
// devices register. There is no polling. Each running loop adds one to
// GOMAXPROCS (package threads) so that its thread does not wait for a P
// each time it comes back from a syscall, and a busy loop passes through
// the Go scheduler every few milliseconds (threads.Busy) so that sysmon
// leaves that P alone.
//
// Handlers run on the loop's thread, one at a time. Add, Remove and Call
// may be used from any goroutine; Call runs a function on the loop thread
// and waits for it, which is how devices stop their queue processing
// synchronously. Lock order: a Loop's mutex is innermost; handlers run
// without it.
package eventloop

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/internal/threads"
)

// Loop is one event-loop thread.
type Loop struct {
	name string
	epfd int
	wake int // eventfd: Call and Close

	mu       sync.Mutex
	handlers map[int32]func()
	calls    []func()
	closing  bool
	done     chan struct{}
	thread   int // tid of the loop thread
}

// New starts a loop thread called name (truncated to threads.MaxNameLen
// bytes for the kernel's thread name).
func New(name string) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("event loop %q: epoll_create1: %w", name, err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("event loop %q: eventfd: %w", name, err)
	}
	l := &Loop{name: name, epfd: epfd, wake: wake, handlers: map[int32]func(){}, done: make(chan struct{})}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(wake)
		unix.Close(epfd)
		return nil, fmt.Errorf("event loop %q: %w", name, err)
	}
	threads.AddP() // given back when the loop thread ends
	started := make(chan int)
	go l.run(started)
	l.thread = <-started
	return l, nil
}

// Name is the loop's name.
func (l *Loop) Name() string { return l.name }

// ThreadID is the Linux thread id of the loop.
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
	one := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if _, err := unix.Write(l.wake, one); err != nil && !errors.Is(err, unix.EAGAIN) {
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
	return errors.Join(unix.Close(l.wake), unix.Close(l.epfd))
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
		for _, ev := range events[:n] {
			if int(ev.Fd) == l.wake {
				var b [8]byte
				_, _ = unix.Read(l.wake, b[:])
				l.mu.Lock()
				calls, closing := l.calls, l.closing
				l.calls = nil
				l.mu.Unlock()
				for _, f := range calls {
					f()
				}
				if closing {
					return
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
		busy.Handled(n, time.Now())
	}
}
