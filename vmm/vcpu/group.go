// Package vcpu owns the vCPU threads of a VM: it creates each vCPU on its
// own locked OS thread, runs the KVM_RUN loop, routes port-I/O and MMIO
// exits to the device buses, and turns fatal exits and guest power
// events into a Group stop reason.
//
// Goroutines: one per vCPU (locked to its OS thread for its whole life);
// Stop, Fail, Pause, Resume and Wait may be called from any other
// goroutine, and Stop/Fail also from device code running on a vCPU
// goroutine. Group state is guarded by Group.mu, the only lock here; bus
// handlers are called without it held.
package vcpu

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm/bus"
	"github.com/stratovirt-go/stratovirt/vmm/internal/kvm"
	"github.com/stratovirt-go/stratovirt/vmm/internal/threads"
)

// kickSignal interrupts a vCPU thread blocked in KVM_RUN. SIGURG is the Go
// runtime's own preemption signal: the runtime always has a handler for it
// and ignores unexpected deliveries, so sending it is harmless, and a
// pending signal makes KVM_RUN return EINTR.
const kickSignal = unix.SIGURG

// Config describes the vCPUs of a Group.
type Config struct {
	VM    *kvm.VM
	Count int      // number of vCPUs, ids 0..Count-1
	PIO   *bus.Bus // port I/O; nil means nothing claims any port
	MMIO  *bus.Bus // MMIO; nil means nothing claims any address
	// FastMMIO lists MMIO registers the vCPU threads serve without
	// leaving KVM_RUN's system call (kvm.FastMMIO); nil means none. An
	// access to one never reaches MMIO.
	FastMMIO *kvm.FastMMIO
	// Setup runs on the vCPU's own locked thread right after
	// KVM_CREATE_VCPU and before the first KVM_RUN; it sets CPUID, MSRs,
	// registers, FPU and LAPIC. No vCPU runs until every Setup returned.
	Setup func(*kvm.VCPU) error
}

type vcpuState struct {
	id  int
	tid int
	cpu *kvm.VCPU
	// Guarded by Group.mu.
	alive  bool // cpu open and thread inside the run loop: may be kicked
	parked bool
}

// Group is a set of running vCPUs.
type Group struct {
	cfg Config
	pid int

	mu       sync.Mutex
	cond     sync.Cond
	vcpus    []*vcpuState
	stopping bool
	reason   Reason
	err      error
	pauseReq bool
	parked   int
	exited   int
	halted   int
	done     chan struct{}
}

// Start creates cfg.Count vCPUs, each on its own goroutine locked to an OS
// thread, runs Setup on each, and then lets them all enter the guest. If
// any creation or Setup fails, every vCPU is closed and the error returned.
// The in-kernel irqchip, if any, must exist before Start (x86 rule).
func Start(cfg Config) (*Group, error) {
	if cfg.VM == nil || cfg.Count < 1 {
		return nil, fmt.Errorf("vcpu: need a VM and at least one vCPU (count %d)", cfg.Count)
	}
	g := &Group{cfg: cfg, pid: os.Getpid(), done: make(chan struct{})}
	g.cond.L = &g.mu
	g.vcpus = make([]*vcpuState, cfg.Count)
	ready := make(chan error, cfg.Count)
	gate := make(chan bool)
	for i := range cfg.Count {
		g.vcpus[i] = &vcpuState{id: i}
	}
	for _, st := range g.vcpus {
		go g.thread(st, ready, gate)
	}
	var errs []error
	for range cfg.Count {
		if err := <-ready; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		g.mu.Lock()
		g.stopping, g.reason = true, Error
		g.mu.Unlock()
		close(gate)
		<-g.done
		return nil, errors.Join(errs...)
	}
	close(gate)
	return g, nil
}

// thread is one vCPU's goroutine.
func (g *Group) thread(st *vcpuState, ready chan<- error, gate <-chan bool) {
	// KVM documents that a vCPU's ioctls should come from the thread that
	// created it (Documentation/virt/kvm/api.rst, "General description"),
	// and kicking it needs a stable thread id for tgkill. The thread is
	// never unlocked, so the runtime discards it when this goroutine ends.
	runtime.LockOSThread()
	st.tid = unix.Gettid()
	// Named as QEMU and StratoVirt name theirs, for top -H and perf. No
	// P of its own (package threads says why).
	_ = threads.SetName(fmt.Sprintf("CPU %d/KVM", st.id))

	cpu, err := g.cfg.VM.CreateVCPU(st.id)
	if err == nil && g.cfg.Setup != nil {
		if err = g.cfg.Setup(cpu); err != nil {
			err = fmt.Errorf("vcpu %d setup: %w", st.id, err)
			cpu.Close()
		}
	}
	if err != nil {
		g.finish(st, err)
		ready <- err
		return
	}
	cpu.ServeFast(g.cfg.FastMMIO)
	st.cpu = cpu
	g.mu.Lock()
	st.alive = true
	g.mu.Unlock()
	ready <- nil
	<-gate

	err = g.loop(st)
	g.mu.Lock()
	st.alive = false
	g.mu.Unlock()
	if cerr := cpu.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("vcpu %d close: %w", st.id, cerr)
	}
	g.finish(st, err)
}

// errHalted ends one vCPU's loop after an HLT exit.
var errHalted = errors.New("halted")

// finish records that a vCPU thread ended, with err (nil: a stop request;
// errHalted: HLT reached userspace).
func (g *Group) finish(st *vcpuState, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case errors.Is(err, errHalted):
		g.halted++
	case err != nil:
		g.stopLocked(Error, err)
	}
	g.exited++
	if g.exited == len(g.vcpus) {
		if !g.stopping {
			g.stopping, g.reason = true, Halted
		}
		close(g.done)
	}
	g.cond.Broadcast()
}

// loop runs KVM_RUN until a stop request, a fatal exit or HLT.
func (g *Group) loop(st *vcpuState) error {
	cpu := st.cpu
	for {
		if g.parkOrStop(st) {
			return nil
		}
		if err := cpu.Run(); err != nil {
			if errors.Is(err, kvm.ErrInterrupted) {
				// Clear before re-checking requests under the lock; a
				// request made after this point sets it again.
				cpu.SetImmediateExit(false)
				continue
			}
			return newExitError(cpu, cpu.ExitReason(), err, "KVM_RUN failed: %v", err)
		}
		if err := g.handleExit(st); err != nil {
			return err
		}
	}
}

// parkOrStop parks the vCPU while a pause is requested and reports whether
// it must stop.
func (g *Group) parkOrStop(st *vcpuState) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	for g.pauseReq && !g.stopping {
		if !st.parked {
			st.parked = true
			g.parked++
			g.cond.Broadcast()
		}
		g.cond.Wait()
	}
	if st.parked {
		st.parked = false
		g.parked--
	}
	return g.stopping
}

// kickLocked makes every running vCPU leave KVM_RUN soon: immediate_exit
// covers a vCPU about to enter, the signal one already inside.
func (g *Group) kickLocked() {
	self := unix.Gettid()
	for _, st := range g.vcpus {
		if !st.alive {
			continue
		}
		st.cpu.SetImmediateExit(true)
		if st.tid != self {
			unix.Tgkill(g.pid, st.tid, kickSignal)
		}
	}
}

func (g *Group) stopLocked(r Reason, err error) {
	if g.stopping {
		return
	}
	g.stopping, g.reason, g.err = true, r, err
	g.kickLocked()
	g.cond.Broadcast()
}

// Stop ends the Group with reason r (the first reason wins) and kicks
// every vCPU out of the guest. It returns at once; use Wait to wait for
// the vCPU threads. Safe from any goroutine, including device code on a
// vCPU goroutine.
func (g *Group) Stop(r Reason) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopLocked(r, nil)
}

// Fail ends the Group with reason Error and err, unless it is already
// stopping.
func (g *Group) Fail(err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopLocked(Error, err)
}

// Pause kicks every vCPU out of KVM_RUN and returns once all of them are
// parked (or have ended). It must not be called from a vCPU goroutine
// (device code), which could never park while waiting.
func (g *Group) Pause() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	self := unix.Gettid()
	for _, st := range g.vcpus {
		if st.alive && st.tid == self {
			return fmt.Errorf("vcpu: Pause called from vCPU %d's own thread", st.id)
		}
	}
	g.pauseReq = true
	g.kickLocked()
	for g.parked+g.exited < len(g.vcpus) {
		g.cond.Wait()
	}
	return nil
}

// Resume lets paused vCPUs run again.
func (g *Group) Resume() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pauseReq = false
	g.cond.Broadcast()
}

// Done is closed when every vCPU thread has ended.
func (g *Group) Done() <-chan struct{} { return g.done }

// Wait blocks until every vCPU thread has ended and returns why, with the
// first error for reason Error.
func (g *Group) Wait() (Reason, error) {
	<-g.done
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.reason, g.err
}
