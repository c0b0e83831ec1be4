package agentvm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

// syncBuf collects the VMM's console and log output.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// stopGrace is how long Stop waits after SIGTERM before killing the VMM.
const stopGrace = 15 * time.Second

// procVM is a cmd/stratovirt process as a sandbox.Machine: the same
// contract as the shim's in-process VM, with the VMM binary under test.
type procVM struct {
	cmd    *exec.Cmd
	target vsockdial.Target
	out    *syncBuf

	done   chan struct{}
	err    error
	killed atomic.Bool
	stop   sync.Once
}

var _ sandbox.Machine = (*procVM)(nil)

func newProcVM(vmm string, args []string, target vsockdial.Target) *procVM {
	cmd := exec.Command(vmm, args...)
	out := &syncBuf{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(cmd.Environ(), "STRATOVIRT_LOG_LEVEL=info")
	// The VMM must not outlive the test binary.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	return &procVM{cmd: cmd, target: target, out: out, done: make(chan struct{})}
}

func (p *procVM) Start() error {
	if err := p.cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", p.cmd.Path, err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	return nil
}

// Wait returns nil only when the VMM exited with status 0 by itself or
// after SIGTERM; being killed after stopGrace is an error.
func (p *procVM) Wait() error {
	<-p.done
	if p.killed.Load() {
		return fmt.Errorf("VMM ignored SIGTERM for %v and was killed (%v)", stopGrace, p.err)
	}
	if p.err != nil {
		return fmt.Errorf("VMM: %w", p.err)
	}
	return nil
}

// Stop asks the VMM to shut down (SIGTERM, as a runtime would) and kills
// it if it has not exited within stopGrace.
func (p *procVM) Stop() {
	p.stop.Do(func() {
		if p.cmd.Process == nil {
			return
		}
		select {
		case <-p.done:
			return
		default:
		}
		p.cmd.Process.Signal(syscall.SIGTERM)
		go func() {
			select {
			case <-p.done:
			case <-time.After(stopGrace):
				p.killed.Store(true)
				p.cmd.Process.Kill()
			}
		}()
	})
}

var errNoPause = errors.New("agentvm: pause is not used by this test")

func (p *procVM) Pause() error  { return errNoPause }
func (p *procVM) Resume() error { return errNoPause }
func (p *procVM) Close() error  { return nil }

func (p *procVM) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	return vsockdial.DialOnce(ctx, p.target, port)
}

// Pid is the VMM's process id (0 before Start).
func (p *procVM) Pid() int {
	if p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}
