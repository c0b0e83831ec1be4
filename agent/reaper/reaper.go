// Package reaper owns the collection of child exit statuses in the agent.
// The agent is PID 1 in the guest (or a child subreaper on a host), so
// every orphaned container process becomes its child; one goroutine reaps
// them all with wait4(-1) and hands each status to whoever waits on that
// pid. Nothing else in the agent may call wait: exec.Cmd.Wait in
// particular would race with the reaper, so commands are started through
// Start and waited on through the returned channel.
//
// Only one Reaper may run in a process at a time: two wait4(-1) loops
// would take each other's children, and the waiter of a stolen pid would
// wait forever. New refuses a second one until the first is closed.
//
// Lock order: Reaper.mu only; it is never held while calling out.
package reaper

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Exit is the end of one child process.
type Exit struct {
	Pid int
	// Status is the exit code, or 128+signal when a signal killed it.
	Status int
	Time   time.Time
}

// How long an exit nobody waits for is kept for a late Watch (a process
// whose pid the agent learns from a pid file after it may have exited),
// and how many such exits are kept at most.
const (
	unclaimedTTL = time.Minute
	unclaimedMax = 4096
)

// Reaper collects child exits. The zero value is not usable; use New.
type Reaper struct {
	mu        sync.Mutex
	waiters   map[int][]chan Exit
	unclaimed map[int]Exit
	sig       chan os.Signal
	done      chan struct{}
	stopped   chan struct{} // closed when loop has returned
	closeOnce sync.Once
}

// running is set while a Reaper's loop may call wait4(-1).
var running atomic.Bool

// ErrRunning is returned by New while another Reaper runs in the process.
var ErrRunning = errors.New("a reaper already runs in this process")

// New starts reaping. Unless the process is PID 1 it makes itself a child
// subreaper so that orphans of its descendants come back to it.
func New() (*Reaper, error) {
	if !running.CompareAndSwap(false, true) {
		return nil, ErrRunning
	}
	if os.Getpid() != 1 {
		if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
			running.Store(false)
			return nil, fmt.Errorf("set child subreaper: %w", err)
		}
	}
	r := &Reaper{
		waiters:   map[int][]chan Exit{},
		unclaimed: map[int]Exit{},
		sig:       make(chan os.Signal, 1),
		done:      make(chan struct{}),
		stopped:   make(chan struct{}),
	}
	signal.Notify(r.sig, unix.SIGCHLD)
	go r.loop()
	return r, nil
}

// Close stops the reaping goroutine and returns once it can no longer
// reap, so that a new Reaper (or exec.Cmd.Wait) may take over.
func (r *Reaper) Close() {
	r.closeOnce.Do(func() {
		signal.Stop(r.sig)
		close(r.done)
		<-r.stopped
		running.Store(false)
	})
}

// backstop is how often the reaper looks for exits without a SIGCHLD.
// Coalesced signals lose nothing (each wakes one reapAll, which takes
// every exited child), so this only bounds the harm of a bug elsewhere;
// it is long because each wake-up of an idle guest costs the host a round
// of VM exits (docs/performance.md, eighteenth session).
const backstop = 30 * time.Second

func (r *Reaper) loop() {
	defer close(r.stopped)
	// Children that exited before Notify took effect sent no signal.
	r.reapAll()
	t := time.NewTicker(backstop)
	defer t.Stop()
	for {
		select {
		case <-r.done:
			return
		case <-r.sig:
		case <-t.C:
		}
		r.reapAll()
	}
}

func (r *Reaper) reapAll() {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		r.dispatch(Exit{Pid: pid, Status: StatusOf(ws), Time: time.Now()})
	}
}

// StatusOf maps a wait status to a shell-style exit status.
func StatusOf(ws unix.WaitStatus) int {
	switch {
	case ws.Exited():
		return ws.ExitStatus()
	case ws.Signaled():
		return 128 + int(ws.Signal())
	}
	return 255
}

func (r *Reaper) dispatch(e Exit) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ws := r.waiters[e.Pid]
	delete(r.waiters, e.Pid)
	if len(ws) == 0 {
		r.pruneLocked(e.Time)
		r.unclaimed[e.Pid] = e
		return
	}
	for _, c := range ws {
		c <- e // buffered, one send each
	}
}

func (r *Reaper) pruneLocked(now time.Time) {
	for pid, e := range r.unclaimed {
		if now.Sub(e.Time) > unclaimedTTL || len(r.unclaimed) >= unclaimedMax {
			delete(r.unclaimed, pid)
		}
	}
}

// Start starts cmd and returns a channel that receives its exit. The
// caller must not call cmd.Wait; cmd's stdio must be nil or *os.File so
// that os/exec starts no copying goroutines.
func (r *Reaper) Start(cmd *exec.Cmd) (<-chan Exit, error) {
	c := make(chan Exit, 1)
	// Holding mu across the fork makes the registration happen before the
	// reaper can look the pid up.
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	pid := cmd.Process.Pid
	delete(r.unclaimed, pid) // a stale exit of a reused pid
	r.waiters[pid] = append(r.waiters[pid], c)
	return c, nil
}

// Run starts cmd and waits for its exit.
func (r *Reaper) Run(cmd *exec.Cmd) (Exit, error) {
	c, err := r.Start(cmd)
	if err != nil {
		return Exit{}, err
	}
	return <-c, nil
}

// Watch returns a channel that receives the exit of pid, a child (or
// adopted orphan) not started through Start. An exit reaped in the last
// minute that nobody claimed is delivered at once.
func (r *Reaper) Watch(pid int) <-chan Exit {
	c := make(chan Exit, 1)
	r.mu.Lock()
	defer r.mu.Unlock()
	if e, ok := r.unclaimed[pid]; ok {
		delete(r.unclaimed, pid)
		c <- e
		return c
	}
	r.waiters[pid] = append(r.waiters[pid], c)
	return c
}
