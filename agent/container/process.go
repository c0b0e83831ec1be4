package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/agent/cgroups"
	"github.com/stratovirt-go/stratovirt/agent/reaper"
	"github.com/stratovirt-go/stratovirt/agent/runc"
	"github.com/stratovirt-go/stratovirt/agent/stdio"
)

// Process is a container's init or exec process.
type Process struct {
	id    string // "" for init
	pid   int
	pidfd int // -1 when none
	io    *stdio.IO
	done  chan struct{}
	exit  reaper.Exit // valid once done is closed
}

func (p *Process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startProcess registers the process's stdio (so streams can attach while
// runc runs), runs the runc command given and watches the new pid.
func (m *Manager) startProcess(ctx context.Context, c *Container, eid string, terminal bool, cfg *agentv1.Stdio, run func(runc.CreateOpts) error) (*Process, error) {
	pio, err := stdio.New(stdio.Config{Stdin: cfg.GetStdin(), Stdout: cfg.GetStdout(), Stderr: cfg.GetStderr(), Terminal: terminal})
	if err != nil {
		return nil, err
	}
	p := &Process{id: eid, pidfd: -1, io: pio, done: make(chan struct{})}
	name := "init"
	if eid != "" {
		name = "exec-" + eid
	}
	opts := runc.CreateOpts{PidFile: filepath.Join(c.dir, name+".pid")}
	in, out, errf := pio.ChildFiles()
	opts.Stdio = &runc.Stdio{Stdin: in, Stdout: out, Stderr: errf}
	var console *stdio.ConsoleSocket
	if terminal {
		if console, err = stdio.NewConsoleSocket(consolePath(m.cfg.StateDir, c.id, name)); err != nil {
			pio.Close()
			return nil, err
		}
		defer console.Close()
		opts.ConsoleSocket = console.Path()
	}
	c.mu.Lock()
	if eid == "" {
		c.init = p
	} else {
		c.execs[eid] = p
	}
	c.mu.Unlock()
	fail := func(err error) (*Process, error) {
		c.mu.Lock()
		if eid == "" {
			c.init = nil
		} else {
			delete(c.execs, eid)
		}
		c.mu.Unlock()
		pio.Close()
		return nil, err
	}
	type got struct {
		f   *os.File
		err error
	}
	masterc := make(chan got, 1)
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if console != nil {
		go func() { f, err := console.Receive(cctx); masterc <- got{f, err} }()
	}
	err = run(opts)
	pio.CloseChild()
	if err != nil {
		cancel()
		if console != nil {
			if g := <-masterc; g.f != nil {
				g.f.Close()
			}
		}
		return fail(err)
	}
	if console != nil {
		tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
		var g got
		select {
		case g = <-masterc:
		case <-tctx.Done():
			cancel()
			g = <-masterc
		}
		tcancel()
		if g.err != nil {
			return fail(fmt.Errorf("receive pty master: %w", g.err))
		}
		pio.SetConsole(g.f)
	}
	pid, err := runc.ReadPidFile(opts.PidFile)
	if err != nil {
		return fail(err)
	}
	p.pid = pid
	exitc := m.cfg.Reaper.Watch(pid)
	// Not reaped before monitor runs (the reaper only reports it), so
	// the pid still names this process here.
	if fd, err := unix.PidfdOpen(pid, 0); err == nil {
		p.pidfd = fd
	}
	go m.monitor(c, p, exitc)
	return p, nil
}

// monitor publishes a process's exit once its output reached the host.
func (m *Manager) monitor(c *Container, p *Process, exitc <-chan reaper.Exit) {
	e := <-exitc
	if p.id == "" {
		m.checkOOM(c) // an OOM kill must be seen before the exit
	}
	if err := p.io.WaitOutput(context.Background(), m.cfg.OutputGrace); err != nil {
		log.L.Warnf("container %s process %q: output: %v", c.id, p.id, err)
	}
	c.mu.Lock()
	p.exit = e
	if p.pidfd >= 0 {
		unix.Close(p.pidfd)
		p.pidfd = -1
	}
	close(p.done)
	c.mu.Unlock()
	log.L.Debugf("container %s process %q (pid %d) exited with %d", c.id, p.id, e.Pid, e.Status)
}

// Exec starts a process (OCI process JSON) in a running container.
func (m *Manager) Exec(ctx context.Context, req *agentv1.ExecProcessRequest) (int, error) {
	eid := req.GetExecId()
	if !stream.ValidID(eid) {
		return 0, fmt.Errorf("exec id %q: %w", eid, ErrInvalid)
	}
	var proc specs.Process
	if err := json.Unmarshal(req.GetProcess(), &proc); err != nil {
		return 0, fmt.Errorf("process: %v: %w", err, ErrInvalid)
	}
	if len(proc.Args) == 0 {
		return 0, fmt.Errorf("process has no args: %w", ErrInvalid)
	}
	c, err := m.get(req.GetContainerId())
	if err != nil {
		return 0, err
	}
	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	running := c.init != nil && c.started && !c.init.exited()
	_, dup := c.execs[eid]
	c.mu.Unlock()
	if !running {
		return 0, fmt.Errorf("container %q is not running: %w", c.id, ErrPrecondition)
	}
	if c.holder {
		return 0, fmt.Errorf("container %q is the pod's sandbox, held by the agent: it has no filesystem to run a process in: %w", c.id, ErrPrecondition)
	}
	if dup {
		return 0, fmt.Errorf("exec %q: %w", eid, ErrExists)
	}
	b, err := json.Marshal(&proc)
	if err != nil {
		return 0, err
	}
	path := filepath.Join(c.dir, "exec-"+eid+".json")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return 0, err
	}
	logDir := filepath.Join(c.dir, "exec-"+eid+".log")
	if err := os.MkdirAll(logDir, 0o700); err != nil {
		return 0, err
	}
	p, err := m.startProcess(ctx, c, eid, proc.Terminal, req.GetStdio(), func(o runc.CreateOpts) error {
		return m.cfg.Runc.Exec(ctx, c.id, path, logDir, o)
	})
	if err != nil {
		os.Remove(path)
		os.RemoveAll(logDir)
		os.Remove(filepath.Join(c.dir, "exec-"+eid+".pid"))
		return 0, err
	}
	return p.pid, nil
}

// DeleteExec forgets an exited exec process: its entry, its streams and
// its state files; a running one is ErrPrecondition.
func (m *Manager) DeleteExec(cid, eid string) error {
	if eid == "" {
		return fmt.Errorf("delete process: no exec id (the init goes with RemoveContainer): %w", ErrInvalid)
	}
	c, p, err := m.process(cid, eid)
	if err != nil {
		return err
	}
	c.mu.Lock()
	if !p.exited() {
		c.mu.Unlock()
		return fmt.Errorf("exec %q of container %q is running: %w", eid, cid, ErrPrecondition)
	}
	delete(c.execs, eid)
	c.mu.Unlock()
	p.io.Close()
	base := filepath.Join(c.dir, "exec-"+eid)
	os.Remove(base + ".json")
	os.Remove(base + ".pid")
	os.RemoveAll(base + ".log")
	return nil
}

func (m *Manager) process(cid, eid string) (*Container, *Process, error) {
	c, err := m.get(cid)
	if err != nil {
		return nil, nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.init
	if eid != "" {
		p = c.execs[eid]
	}
	if p == nil {
		return nil, nil, fmt.Errorf("process %q of container %q: %w", eid, cid, ErrNotFound)
	}
	return c, p, nil
}

// Lookup finds a process's stdio for the stream server; a process not
// created yet is stdio.ErrNotYet so the stream waits for it.
func (m *Manager) Lookup(cid, eid string) (*stdio.IO, error) {
	_, p, err := m.process(cid, eid)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %v", stdio.ErrNotYet, err)
	}
	if err != nil {
		return nil, err
	}
	return p.io, nil
}

// Signal sends sig to a process, or to all processes of the container.
func (m *Manager) Signal(ctx context.Context, cid, eid string, sig int, all bool) error {
	if sig <= 0 || sig > 64 {
		return fmt.Errorf("signal %d: %w", sig, ErrInvalid)
	}
	c, p, err := m.process(cid, eid)
	if all {
		if c == nil {
			if c, err = m.get(cid); err != nil {
				return err
			}
		}
		if c.holder {
			return signalAll(c.cgroupDir, sig)
		}
		return m.cfg.Runc.Kill(ctx, c.id, sig, true)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	if p.exited() {
		c.mu.Unlock()
		return fmt.Errorf("process %q of container %q has exited: %w", eid, cid, ErrNotFound)
	}
	// The pidfd names this very process even if its pid was reused. For
	// the init this is what `runc kill` does without --all (signal the
	// init), without a runc process.
	var serr error
	switch {
	case p.pidfd >= 0:
		serr = unix.PidfdSendSignal(p.pidfd, unix.Signal(sig), nil, 0)
	case eid != "":
		serr = unix.Kill(p.pid, unix.Signal(sig))
	default:
		c.mu.Unlock()
		return m.cfg.Runc.Kill(ctx, c.id, sig, false)
	}
	c.mu.Unlock()
	if serr != nil && !errors.Is(serr, unix.ESRCH) {
		return fmt.Errorf("signal process %q of container %q: %w", eid, cid, serr)
	}
	return nil
}

// Wait blocks until the process exited and its output was delivered.
func (m *Manager) Wait(ctx context.Context, cid, eid string) (reaper.Exit, error) {
	c, p, err := m.process(cid, eid)
	if err != nil {
		return reaper.Exit{}, err
	}
	select {
	case <-p.done:
	case <-ctx.Done():
		return reaper.Exit{}, ctx.Err()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return p.exit, nil
}

// Resize sets a terminal process's window size.
func (m *Manager) Resize(cid, eid string, rows, cols uint32) error {
	_, p, err := m.process(cid, eid)
	if err != nil {
		return err
	}
	if rows > 0xffff || cols > 0xffff {
		return fmt.Errorf("window %dx%d: %w", cols, rows, ErrInvalid)
	}
	if !p.io.Terminal() {
		return fmt.Errorf("process %q has no terminal: %w", eid, ErrPrecondition)
	}
	return p.io.Resize(uint16(rows), uint16(cols))
}

// CloseStdin ends a process's input.
func (m *Manager) CloseStdin(cid, eid string) error {
	_, p, err := m.process(cid, eid)
	if err != nil {
		return err
	}
	p.io.CloseStdin()
	return nil
}

// OOMEvent returns the next OOM kill, waiting until ctx ends.
func (m *Manager) OOMEvent(ctx context.Context) (*agentv1.OOMEvent, error) {
	select {
	case e := <-m.oom:
		return e, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// checkOOM publishes an event when the container's oom_kill counter grew.
func (m *Manager) checkOOM(c *Container) {
	c.mu.Lock()
	dir := c.cgroupDir
	c.mu.Unlock()
	if dir == "" {
		return
	}
	n, err := cgroups.OOMKills(dir)
	if err != nil {
		return
	}
	c.mu.Lock()
	grew := n > c.oomKills
	c.oomKills = max(c.oomKills, n)
	c.mu.Unlock()
	if !grew {
		return
	}
	e := &agentv1.OOMEvent{ContainerId: c.id, OomKills: n, TimeUnixNano: time.Now().UnixNano()}
	log.L.Infof("container %s: OOM kill (%d in all)", c.id, n)
	select {
	case m.oom <- e:
	default:
		log.L.Warnf("container %s: OOM event queue full; event dropped", c.id)
	}
}
