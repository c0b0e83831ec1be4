package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync/atomic"

	"github.com/containerd/log"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm"
	"github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/qmp"
	"github.com/stratovirt-go/stratovirt/vmm/seccomp"
)

// Environment of the daemon child and knobs for debugging.
const (
	// envDaemonChild marks the re-executed daemon child.
	envDaemonChild = "STRATOVIRT_DAEMON_CHILD"
	// envSeccompAction overrides the seccomp default action: kill
	// (default), trap (Go traceback naming the call) or log (allow and
	// log: how the allow-lists are found).
	envSeccompAction = "STRATOVIRT_SECCOMP_ACTION"
	// readyLine is what the daemon child writes on its stderr pipe once
	// the VM runs; the parent then exits 0.
	readyLine = "\x00stratovirt-daemon-ready"
)

// testHookAfterSeccomp and testHookVCPU are set only in builds with the
// seccomptest tag (seccomp_testhook.go), to prove that a forbidden
// syscall kills the VMM.
var (
	testHookAfterSeccomp func()
	testHookVCPU         func(id int)
)

// process is the VMM process around the VM: daemon state, pid file, log,
// QMP server and seccomp.
type process struct {
	cfg     *config.VMConfig
	child   bool // we are the daemon child
	pidfile string
	action  seccomp.Action

	srv   *qmp.Server
	state *qmp.VMState
	quit  atomic.Bool
}

// daemonize re-executes the VMM detached: a new session (setsid), stdin
// and stdout on /dev/null and stderr on a pipe to this parent, which
// relays the child's start-up errors and exits 0 once the child reports
// that the VM runs (or with the child's status if it dies first). It
// returns only in the child, or with an error.
func daemonize() (exit bool, code int) {
	if os.Getenv(envDaemonChild) != "" {
		return false, 0
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: daemonize: %v\n", err)
		return true, 1
	}
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: daemonize: %v\n", err)
		return true, 1
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: daemonize: %v\n", err)
		return true, 1
	}
	cmd := exec.Command(self, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envDaemonChild+"=1")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, pw
	cmd.SysProcAttr = &unix.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: daemonize: %v\n", err)
		return true, 1
	}
	pw.Close()
	rd := bufio.NewReader(pr)
	for {
		line, err := rd.ReadString('\n')
		if line == readyLine+"\n" {
			// The child goes on alone; do not wait for it.
			cmd.Process.Release()
			return true, 0
		}
		os.Stderr.WriteString(line)
		if err != nil {
			break
		}
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ee.ExitCode() > 0 {
			return true, ee.ExitCode()
		}
		fmt.Fprintf(os.Stderr, "stratovirt: daemon child: %v\n", err)
		return true, 1
	}
	fmt.Fprintln(os.Stderr, "stratovirt: daemon child exited before the VM started")
	return true, 1
}

// newProcess sets up the process before the VM is built: daemonizing
// (which returns exit=true in the parent) and the log.
func newProcess(cfg *config.VMConfig) (p *process, exit bool, code int) {
	p = &process{cfg: cfg}
	pc := cfg.Process
	if pc.Daemonize {
		if exit, code := daemonize(); exit {
			return nil, true, code
		}
		p.child = true
	}
	if err := setupLog(pc); err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: %v\n", err)
		return nil, true, 1
	}
	action, err := seccomp.ParseAction(os.Getenv(envSeccompAction))
	if err != nil {
		fmt.Fprintf(os.Stderr, "stratovirt: %s: %v\n", envSeccompAction, err)
		return nil, true, 1
	}
	p.action = action
	return p, false, 0
}

// setupLog applies -D: the log goes to the file (append, created 0640) or
// to stderr, at STRATOVIRT_LOG_LEVEL or info.
func setupLog(pc config.Process) error {
	if !pc.Log {
		return nil
	}
	if os.Getenv("STRATOVIRT_LOG_LEVEL") == "" {
		if err := log.SetLevel("info"); err != nil {
			return err
		}
	}
	if pc.LogFile == "" {
		return nil
	}
	f, err := os.OpenFile(pc.LogFile, os.O_WRONLY|os.O_APPEND|os.O_CREATE|unix.O_CLOEXEC, 0o640)
	if err != nil {
		return fmt.Errorf("-D: open log file: %w", err)
	}
	log.L.Logger.SetOutput(f) // kept open for the life of the process
	return nil
}

// writePidFile writes pid atomically: into a temporary file in the same
// directory, then hard-linked to path, which fails if path exists.
func writePidFile(path string, pid int) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, ".stratovirt-pid-")
	if err != nil {
		return fmt.Errorf("-pidfile: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(strconv.Itoa(pid) + "\n")
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o600)); err != nil {
		return fmt.Errorf("-pidfile: write %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("-pidfile: pid file %q already exists", path)
		}
		return fmt.Errorf("-pidfile: %w", err)
	}
	return nil
}

// vcpuHook returns the vmm.Options.OnVCPUThread hook: the vCPU seccomp
// filter on each vCPU thread.
//
// Why a per-thread filter is safe under Go's runtime: package vcpu locks
// each vCPU goroutine to its OS thread for the goroutine's whole life
// and never unlocks it, so no other goroutine ever runs on that thread
// and, when the goroutine ends, the runtime destroys the thread instead
// of reusing it. A locked thread never creates threads either: the
// runtime's newm hands thread creation from a locked M to its template
// thread, so the vCPU filter is not inherited by unrelated threads. What
// the runtime itself may still do on the thread (grow stacks and the
// heap, GC assists, park on futexes, handle preemption signals) is in
// the vCPU allow-list.
func (p *process) vcpuHook() func(id int) error {
	if p.cfg.Process.DisableSeccomp {
		return nil
	}
	return func(id int) error {
		if err := seccomp.Install(seccomp.VCPU(p.action), false); err != nil {
			return fmt.Errorf("vCPU seccomp filter: %w", err)
		}
		if testHookVCPU != nil {
			testHookVCPU(id)
		}
		return nil
	}
}

// beforeStart writes the pid file (after vmm.New, whose validation
// requires that it does not exist yet), binds the QMP socket and installs
// the process-wide seccomp filter. The process filter must come before the vCPU threads get their
// own: TSYNC fails when another thread already has a filter that is not
// an ancestor of the caller's.
func (p *process) beforeStart(vm *vmm.VM) error {
	if path := p.cfg.Process.PidFile; path != "" {
		if err := writePidFile(path, os.Getpid()); err != nil {
			return err
		}
		p.pidfile = path
	}
	if path := p.cfg.Process.APIChannel; path != "" {
		srv, err := qmp.Listen(path, qmp.Options{Package: "StratoVirt-" + version})
		if err != nil {
			return err
		}
		p.srv = srv
		qmp.RegisterPlaceholders(srv)
		p.state = qmp.RegisterMachine(srv, &qmpMachine{vm: vm, quit: &p.quit})
		qmp.RegisterHotplug(srv, vm)
		if _, err := vm.BalloonInfo(); err == nil {
			qmp.RegisterBalloon(srv, qmpBalloon{vm})
		}
	}
	if p.cfg.Process.DisableSeccomp {
		log.L.Info("seccomp disabled (-disable-seccomp)")
		return nil
	}
	if err := seccomp.Install(seccomp.Process(p.action), true); err != nil {
		return fmt.Errorf("process seccomp filter: %w", err)
	}
	log.L.Infof("seccomp filters on (default action %s)", p.action)
	if testHookAfterSeccomp != nil {
		testHookAfterSeccomp()
	}
	return nil
}

// afterStart starts answering QMP and releases the daemon parent.
func (p *process) afterStart() {
	if p.srv != nil {
		p.srv.Serve()
	}
	if p.child {
		fmt.Fprintln(os.Stderr, readyLine)
		// From now on stderr goes nowhere, as for any daemon.
		if null, err := unix.Open(os.DevNull, unix.O_WRONLY|unix.O_CLOEXEC, 0); err == nil {
			unix.Dup3(null, 2, 0)
			unix.Close(null)
		}
	}
}

// finish reports the end of the VM on QMP (SHUTDOWN) and removes the
// socket and pid files.
func (p *process) finish(reason vmm.Reason, signaled bool) {
	if p.state != nil {
		guest, why := false, qmp.ReasonHostError
		switch {
		case p.quit.Load():
			why = qmp.ReasonHostQMPQuit
		case signaled:
			why = qmp.ReasonHostSignal
		case reason == vmm.PowerOff:
			guest, why = true, qmp.ReasonGuestShutdown
		case reason == vmm.Reset:
			guest, why = true, qmp.ReasonGuestReset
		}
		p.state.Shutdown(guest, why)
	}
	p.cleanup()
}

// cleanup removes what the process created; safe to call twice.
func (p *process) cleanup() {
	if p == nil {
		return
	}
	if p.srv != nil {
		p.srv.Close() // events already written stay readable

		p.srv = nil
	}
	if p.pidfile != "" {
		os.Remove(p.pidfile)
		p.pidfile = ""
	}
}

// qmpBalloon adapts *vmm.VM to qmp.Balloon.
type qmpBalloon struct{ vm *vmm.VM }

func (b qmpBalloon) SetBalloonTarget(v uint64) error { return b.vm.SetBalloonTarget(v) }
func (b qmpBalloon) BalloonActual() (uint64, error) {
	info, err := b.vm.BalloonInfo()
	return info.Actual, err
}

// qmpMachine adapts *vmm.VM to qmp.Machine.
type qmpMachine struct {
	vm   *vmm.VM
	quit *atomic.Bool
}

func (m *qmpMachine) Pause() error         { return m.vm.Pause() }
func (m *qmpMachine) Resume() error        { return m.vm.Resume() }
func (m *qmpMachine) VCPUThreadIDs() []int { return m.vm.VCPUThreadIDs() }
func (m *qmpMachine) Quit()                { m.quit.Store(true); m.vm.Stop(vmm.Stopped) }
