package container

import (
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// OOM kills are read off each container's memory.events (oom_kill).
// cgroup v2 reports a change of that file to inotify as a modification,
// so the agent waits for one instead of polling: a guest whose containers
// idle then makes no wake-ups for it (each wake-up of an idle microVM is
// a timer interrupt and a round of VM exits on the host). Where inotify
// cannot be had the agent polls every Config.OOMPoll.

// oomWatch is the inotify instance watching the containers'
// memory.events files.
type oomWatch struct {
	f  *os.File
	fd int // f's descriptor, for the watch calls; it stays non-blocking

	mu   sync.Mutex
	wds  map[int32]*Container // by watch descriptor
	done chan struct{}        // closed when run returns
}

// newOOMWatch creates the inotify instance (non-blocking, so that reads
// park in the Go runtime's poller and Close ends them).
func newOOMWatch() (*oomWatch, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	return &oomWatch{f: os.NewFile(uintptr(fd), "inotify"), fd: fd, wds: map[int32]*Container{}, done: make(chan struct{})}, nil
}

// add watches c's memory.events; false where it cannot (no memory
// controller, no cgroup).
func (w *oomWatch) add(c *Container, dir string) bool {
	wd, err := unix.InotifyAddWatch(w.fd, filepath.Join(dir, "memory.events"), unix.IN_MODIFY)
	if err != nil {
		log.L.Debugf("container %s: no OOM watch: %v", c.id, err)
		return false
	}
	w.mu.Lock()
	w.wds[int32(wd)] = c
	w.mu.Unlock()
	c.mu.Lock()
	c.oomWD = int32(wd)
	c.mu.Unlock()
	return true
}

// remove stops watching c (its cgroup may already be gone, which removed
// the watch).
func (w *oomWatch) remove(c *Container) {
	c.mu.Lock()
	wd := c.oomWD
	c.oomWD = -1
	c.mu.Unlock()
	if wd <= 0 {
		return
	}
	w.mu.Lock()
	if w.wds[wd] == c {
		delete(w.wds, wd)
	}
	w.mu.Unlock()
	_, _ = unix.InotifyRmWatch(w.fd, uint32(wd))
}

// run reads events until the instance is closed, calling check for the
// container whose memory.events changed, or for every watched container
// when the kernel's event queue overflowed.
func (w *oomWatch) run(check func(*Container)) {
	defer close(w.done)
	buf := make([]byte, 4096)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			if !errors.Is(err, os.ErrClosed) {
				log.L.Errorf("OOM watch: %v", err)
			}
			return
		}
		for _, ev := range parseInotify(buf[:n]) {
			var cs []*Container
			w.mu.Lock()
			switch {
			case ev.mask&unix.IN_Q_OVERFLOW != 0:
				for _, c := range w.wds {
					cs = append(cs, c)
				}
			case ev.mask&unix.IN_MODIFY != 0:
				if c := w.wds[ev.wd]; c != nil {
					cs = append(cs, c)
				}
			}
			w.mu.Unlock()
			for _, c := range cs {
				check(c)
			}
		}
	}
}

// close ends run (a read parked in the Go runtime's poller returns
// os.ErrClosed).
func (w *oomWatch) close() { w.f.Close() }

// inotifyEvent is the fixed part of struct inotify_event.
type inotifyEvent struct {
	wd   int32
	mask uint32
}

// parseInotify splits a read from an inotify instance into its events; a
// truncated event ends the list.
func parseInotify(b []byte) []inotifyEvent {
	var evs []inotifyEvent
	for len(b) >= unix.SizeofInotifyEvent {
		ev := inotifyEvent{wd: int32(binary.NativeEndian.Uint32(b)), mask: binary.NativeEndian.Uint32(b[4:])}
		size := unix.SizeofInotifyEvent + int(binary.NativeEndian.Uint32(b[12:]))
		if size > len(b) || size < unix.SizeofInotifyEvent {
			break
		}
		evs = append(evs, ev)
		b = b[size:]
	}
	return evs
}

// pollOOM checks every container each period until stop closes; the
// fallback where inotify is not available.
func (m *Manager) pollOOM(period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		cs := make([]*Container, 0, len(m.containers))
		for _, c := range m.containers {
			cs = append(cs, c)
		}
		m.mu.Unlock()
		for _, c := range cs {
			m.checkOOM(c)
		}
	}
}
