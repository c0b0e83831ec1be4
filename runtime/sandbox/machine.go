package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/vmm"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

// Dialer connects to a guest vsock port.
type Dialer func(ctx context.Context, port uint32) (net.Conn, error)

// VM is the in-process microVM as a Machine.
type VM struct {
	vm      *vmm.VM
	dial    Dialer
	stop    sync.Once
	console *ConsoleRing
	ready   <-chan struct{}
}

// NewVM builds (but does not start) the VM described by cfg, which must
// have a vsock device; connections to the guest go through vmm/vsockdial
// (either backend). The last ConsoleLines lines of the serial console are
// kept (ConsoleTail) even where opts.SerialOut is io.Discard.
func NewVM(cfg *vmconfig.VMConfig, opts vmm.Options) (*VM, error) {
	ring := NewConsoleRing(ConsoleLines)
	switch opts.SerialOut {
	case nil: // no serial device
	case io.Discard:
		opts.SerialOut = ring
	default:
		opts.SerialOut = io.MultiWriter(ring, opts.SerialOut)
	}
	ready := watchAgentReady(&opts, ring)
	v, err := vmm.New(cfg, opts)
	if err != nil {
		return nil, err
	}
	info, err := v.Vsock()
	if err != nil {
		v.Close()
		return nil, fmt.Errorf("VM vsock: %w", err)
	}
	t := vsockdial.TargetOf(info)
	return &VM{vm: v, console: ring, ready: ready, dial: func(ctx context.Context, port uint32) (net.Conn, error) {
		return vsockdial.DialOnce(ctx, t, port)
	}}, nil
}

// watchAgentReady returns a channel closed when the agent writes
// stream.ReadyMarker to the boot-marker port (opts.OnBootMarker, which it
// wraps) or, with a serial device, when ring sees its stream.ReadyLine.
// The marker is one port exit; the console line behind it costs the
// guest two exits a byte. Either one will do.
func watchAgentReady(opts *vmm.Options, ring *ConsoleRing) <-chan struct{} {
	ready := make(chan struct{})
	signal := sync.OnceFunc(func() { close(ready) })
	onMark := opts.OnBootMarker
	opts.OnBootMarker = func(value uint8, since time.Duration) {
		if onMark != nil {
			onMark(value, since)
		}
		if value == stream.ReadyMarker {
			signal()
		}
	}
	if opts.SerialOut != nil {
		ring.WatchFunc(stream.ReadyLine, signal)
	}
	return ready
}

// AgentReady is closed when the agent writes stream.ReadyMarker to the
// boot-marker port or the guest console shows its stream.ReadyLine.
func (v *VM) AgentReady() <-chan struct{} { return v.ready }

// ConsoleTail returns the last lines of the guest's serial console.
func (v *VM) ConsoleTail() []string { return v.console.Tail() }

// VMM returns the library VM (thread ids, boot marks).
func (v *VM) VMM() *vmm.VM { return v.vm }

func (v *VM) Start() error { return v.vm.Start() }

func (v *VM) Wait() error {
	r, err := v.vm.Wait()
	if err != nil {
		return err
	}
	switch r {
	case vmm.PowerOff, vmm.Stopped:
		return nil
	}
	return fmt.Errorf("VM ended: %v", r)
}

func (v *VM) Stop()         { v.stop.Do(func() { v.vm.Stop(vmm.Stopped) }) }
func (v *VM) Pause() error  { return v.vm.Pause() }
func (v *VM) Resume() error { return v.vm.Resume() }
func (v *VM) Close() error  { return v.vm.Close() }

func (v *VM) Dial(ctx context.Context, port uint32) (net.Conn, error) { return v.dial(ctx, port) }

// HostAgent runs the guest agent as a host process serving unix sockets
// instead of vsock ports: the test double of a VM (no isolation; the
// agent sees the host's filesystem).
type HostAgent struct {
	cmd  *exec.Cmd
	dir  string
	stop sync.Once
	done chan struct{}
	err  error
}

// NewHostAgent prepares agent (the stratovirt-agent binary) with its
// sockets and state under dir; extra arguments are appended.
func NewHostAgent(agent, dir string, extra ...string) *HostAgent {
	args := []string{
		"-listen", "unix://" + filepath.Join(dir, "agent.sock"),
		"-stream-listen", "unix://" + filepath.Join(dir, "stream.sock"),
		"-state-dir", filepath.Join(dir, "state"), "-guest=false", "-network=false",
	}
	cmd := exec.Command(agent, append(args, extra...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	return &HostAgent{cmd: cmd, dir: dir, done: make(chan struct{})}
}

// Cmd exposes the process (to set its output before Start).
func (h *HostAgent) Cmd() *exec.Cmd { return h.cmd }

func (h *HostAgent) Start() error {
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return err
	}
	if err := h.cmd.Start(); err != nil {
		return err
	}
	go func() { h.err = h.cmd.Wait(); close(h.done) }()
	return nil
}

func (h *HostAgent) Wait() error {
	<-h.done
	var ee *exec.ExitError
	if errors.As(h.err, &ee) && !ee.Exited() {
		return nil // killed by Stop
	}
	return h.err
}

func (h *HostAgent) Stop() {
	h.stop.Do(func() {
		if h.cmd.Process != nil {
			syscall.Kill(-h.cmd.Process.Pid, syscall.SIGKILL)
		}
	})
}

func (h *HostAgent) Pause() error  { return h.cmd.Process.Signal(syscall.SIGSTOP) }
func (h *HostAgent) Resume() error { return h.cmd.Process.Signal(syscall.SIGCONT) }
func (h *HostAgent) Close() error  { return nil }

func (h *HostAgent) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	name := "agent.sock"
	if port == stream.StreamPort {
		name = "stream.sock"
	} else if port != stream.ControlPort {
		return nil, fmt.Errorf("host agent: no port %d", port)
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", filepath.Join(h.dir, name))
}
