// Package sandbox owns one microVM and the connection to the guest agent
// inside it: it boots the VM (the vmm library, in this process), waits
// for the agent, and hands out the agent client and stdio stream
// connections. Replies from the guest are untrusted: they are checked
// before use (bounded lists, valid ids). A Sandbox is safe for concurrent
// use; the VM's end is observed by one goroutine that closes Done.
package sandbox

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
)

// Machine is the VM under a sandbox: the in-process VMM (NewVM) or, in
// tests, an agent running as a host process.
type Machine interface {
	// Start boots the machine.
	Start() error
	// Wait blocks until the machine has ended.
	Wait() error
	// Stop ends the machine; safe to call more than once.
	Stop()
	// Pause and Resume freeze and thaw every vCPU.
	Pause() error
	Resume() error
	// Dial connects to a guest vsock port.
	Dial(ctx context.Context, port uint32) (net.Conn, error)
	// Close releases host resources after the machine ended.
	Close() error
}

// MaxPids bounds the process list accepted from the guest.
const MaxPids = 1 << 16

// ErrVMGone is returned when the VM has ended.
var ErrVMGone = errors.New("sandbox: the VM has ended")

// Sandbox is one booted VM with a connected agent.
type Sandbox struct {
	m      Machine
	client *ttrpc.Client
	agent  agentv1.AgentService

	done     chan struct{}
	stopOnce sync.Once
	mu       sync.Mutex
	waitErr  error
	Details  *agentv1.GuestDetails
	BootTime time.Duration
}

// Start boots m and connects to its agent within timeout. On error the
// machine is stopped and closed.
func Start(ctx context.Context, m Machine, timeout time.Duration) (_ *Sandbox, err error) {
	t0 := time.Now()
	if err := m.Start(); err != nil {
		m.Close()
		return nil, fmt.Errorf("start VM: %w", err)
	}
	s := &Sandbox{m: m, done: make(chan struct{})}
	go func() {
		werr := m.Wait()
		s.mu.Lock()
		s.waitErr = werr
		c := s.client
		s.mu.Unlock()
		if c != nil {
			c.Close()
		}
		close(s.done)
	}()
	defer func() {
		if err != nil {
			ended := false
			select {
			case <-s.done:
				ended = true
			default:
			}
			s.Stop()
			err = vmError(err, "during boot", ended, s.Err(), m)
		}
	}()
	bctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	conn, err := s.dialRetry(bctx, stream.ControlPort)
	if err != nil {
		return nil, fmt.Errorf("connect to the guest agent: %w", err)
	}
	tConn := time.Now()
	s.mu.Lock()
	s.client = ttrpc.NewClient(conn)
	s.mu.Unlock()
	select {
	case <-s.done: // the VM ended while connecting: the client may have been missed
		s.client.Close()
		return nil, ErrVMGone
	default:
	}
	s.agent = agentv1.NewAgentClient(s.client)
	// The first call proves the agent serves; a separate health check
	// would only add a round trip to every boot.
	d, err := s.agent.GetGuestDetails(bctx, &agentv1.GetGuestDetailsRequest{})
	if err != nil {
		return nil, fmt.Errorf("agent guest details: %w", err)
	}
	s.Details = d
	s.BootTime = time.Since(t0)
	log.G(ctx).Debugf("sandbox: agent connected after %v, guest details %v",
		tConn.Sub(t0).Round(time.Millisecond), time.Since(tConn).Round(time.Millisecond))
	log.G(ctx).Infof("sandbox: agent %s on kernel %s (%d CPUs, %d MiB) after %v",
		trunc(d.AgentVersion), trunc(d.KernelRelease), d.OnlineCpus, d.MemTotalBytes>>20, s.BootTime.Round(time.Millisecond))
	return s, nil
}

// ConsoleTailer is a Machine that keeps the last lines of the guest
// console (VM does).
type ConsoleTailer interface {
	ConsoleTail() []string
}

// Explain adds to err, an agent call's failure, why the VM ended if it
// did (a closed agent connection is usually the VM's end: it is waited
// for briefly) and the last lines of the guest console. Call it before
// Stop.
func (s *Sandbox) Explain(err error) error {
	ended := false
	select {
	case <-s.done:
		ended = true
	case <-time.After(explainWait):
	}
	return vmError(err, "", ended, s.Err(), s.m)
}

// explainWait is how long Explain waits for a failing VM to end.
const explainWait = time.Second

// vmError adds to err why the VM ended (when it ended by itself; when
// says during what) and the last lines of the guest console, so that the
// user sees why.
func vmError(err error, when string, ended bool, waitErr error, m Machine) error {
	var b strings.Builder
	if when != "" {
		when = " " + when
	}
	if ended {
		if waitErr != nil {
			fmt.Fprintf(&b, "; the VM ended%s: %v", when, waitErr)
		} else {
			fmt.Fprintf(&b, "; the VM powered off%s", when)
		}
	}
	if ct, ok := m.(ConsoleTailer); ok {
		if lines := ct.ConsoleTail(); len(lines) > 0 {
			fmt.Fprintf(&b, "; guest console, last %d lines:\n%s", len(lines), strings.Join(lines, "\n"))
		} else {
			b.WriteString("; the guest printed nothing on its console")
		}
	}
	if b.Len() == 0 {
		return err
	}
	return fmt.Errorf("%w%s", err, b.String())
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64]
	}
	return s
}

// AgentReadier is a Machine that tells when its agent says it listens
// (VM: the agent's stream.ReadyMarker on the boot-marker port or its
// stream.ReadyLine on the console).
type AgentReadier interface {
	AgentReady() <-chan struct{}
}

// Dial pacing while the agent boots. Without a ready signal the machine
// is polled every dialPoll. With one, the first dial waits for the
// signal, or for readyFallback in case the signal never comes (a guest
// image whose agent gives neither the marker nor the console line);
// after a dial that failed despite the signal, polling goes on every
// dialPoll.
const (
	dialPoll      = 10 * time.Millisecond
	readyFallback = 250 * time.Millisecond
)

// dialRetry dials port until it connects, the VM ends or ctx ends; the
// agent is not listening yet while the guest boots.
func (s *Sandbox) dialRetry(ctx context.Context, port uint32) (net.Conn, error) {
	var ready <-chan struct{}
	if r, ok := s.m.(AgentReadier); ok {
		ready = r.AgentReady()
	}
	return DialWhenReady(ctx, ready, s.done, func() (net.Conn, error) { return s.m.Dial(ctx, port) })
}

// DialWhenReady calls dial, paced by ready (see dialPoll; nil: no ready
// signal), until it connects, done closes (ErrVMGone) or ctx ends. Both
// errors carry the last dial error.
func DialWhenReady(ctx context.Context, ready, done <-chan struct{}, dial func() (net.Conn, error)) (net.Conn, error) {
	var last error
	for first := true; ; first = false {
		wait := dialPoll
		if ready != nil {
			wait = readyFallback
		} else if first {
			wait = 0
		}
		select {
		case <-done:
			return nil, fmt.Errorf("%w (last dial error: %v)", ErrVMGone, last)
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (last dial error: %v)", ctx.Err(), last)
		case <-ready:
			ready = nil
		case <-time.After(wait):
		}
		c, err := dial()
		if err == nil {
			return c, nil
		}
		last = err
	}
}

// Agent is the agent API client.
func (s *Sandbox) Agent() agentv1.AgentService { return s.agent }

// OpenStream opens one stdio stream of a process (see agent-proto/stream);
// the agent waits for a process that does not exist yet.
func (s *Sandbox) OpenStream(ctx context.Context, kind stream.Kind, containerID, execID string) (net.Conn, error) {
	h, err := stream.Header{Kind: kind, ContainerID: containerID, ExecID: execID}.MarshalBinary()
	if err != nil {
		return nil, err
	}
	c, err := s.m.Dial(ctx, stream.StreamPort)
	if err != nil {
		return nil, fmt.Errorf("stream %s of %s/%s: %w", kind, containerID, execID, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		c.SetDeadline(dl)
	}
	// The agent's reply says whether it accepted the stream.
	if _, err = c.Write(h); err == nil {
		err = stream.ReadReply(c)
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("stream %s of %s/%s: %w", kind, containerID, execID, err)
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// ListProcesses returns the guest pids of a container, bounded.
func (s *Sandbox) ListProcesses(ctx context.Context, id string) ([]uint32, error) {
	r, err := s.agent.ListProcesses(ctx, &agentv1.ListProcessesRequest{ContainerId: id})
	if err != nil {
		return nil, err
	}
	if len(r.Pids) > MaxPids {
		return nil, fmt.Errorf("agent listed %d processes (limit %d)", len(r.Pids), MaxPids)
	}
	return r.Pids, nil
}

// Done is closed when the VM has ended.
func (s *Sandbox) Done() <-chan struct{} { return s.done }

// Err is why the VM ended (nil for a clean power-off), once Done is closed.
func (s *Sandbox) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitErr
}

// Pause freezes the whole VM; Resume thaws it.
func (s *Sandbox) Pause() error  { return s.m.Pause() }
func (s *Sandbox) Resume() error { return s.m.Resume() }

// Stop ends the VM, waits for it and releases it; safe to call more than
// once and from any goroutine.
func (s *Sandbox) Stop() {
	s.stopOnce.Do(func() {
		s.m.Stop()
		<-s.done
		s.mu.Lock()
		c := s.client
		s.mu.Unlock()
		if c != nil {
			c.Close()
		}
		if err := s.m.Close(); err != nil {
			log.L.WithError(err).Warn("sandbox: close VM")
		}
	})
}
