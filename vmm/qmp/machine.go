package qmp

import (
	"fmt"
	"sync"
)

// Machine is what the VM commands act on; *vmm.VM provides it through a
// small adapter in the VMM (see cmd/stratovirt).
type Machine interface {
	// Pause parks every vCPU; Resume lets them run again.
	Pause() error
	Resume() error
	// Quit ends the VM; it returns at once and the VMM then shuts down
	// (emitting SHUTDOWN, removing the socket and exiting).
	Quit()
	// VCPUThreadIDs returns the host thread id of each vCPU, by index;
	// 0 for a vCPU whose thread is not known.
	VCPUThreadIDs() []int
}

// Status values of query-status.
const (
	StatusRunning  = "running"
	StatusPaused   = "paused"
	StatusShutdown = "shutdown"
)

// Shutdown reasons of the SHUTDOWN event (QEMU's names).
const (
	ReasonHostQMPQuit   = "host-qmp-quit"
	ReasonHostSignal    = "host-signal"
	ReasonGuestShutdown = "guest-shutdown"
	ReasonGuestReset    = "guest-reset"
	ReasonGuestPanic    = "guest-panic"
	ReasonHostError     = "host-error"
)

// VMState tracks the run state that query-status reports and emits STOP,
// RESUME and SHUTDOWN. Its methods are safe from any goroutine.
type VMState struct {
	s *Server
	m Machine

	mu     sync.Mutex
	status string
}

// RegisterMachine adds quit, stop, cont, query-status, query-cpus and
// query-hotpluggable-cpus for m to s, and returns the state object the
// VMM uses to report the end of the VM (Shutdown).
func RegisterMachine(s *Server, m Machine) *VMState {
	st := &VMState{s: s, m: m, status: StatusRunning}
	s.Handle("quit", st.quit)
	s.Handle("stop", st.stop)
	s.Handle("cont", st.cont)
	s.Handle("query-status", st.queryStatus)
	s.Handle("query-cpus", st.queryCPUs)
	s.Handle("query-hotpluggable-cpus", st.queryHotpluggableCPUs)
	return st
}

// Status returns the current query-status status.
func (st *VMState) Status() string {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.status
}

// Shutdown records that the VM ended and emits SHUTDOWN once, with guest
// saying whether the guest asked for it and reason one of the Reason
// constants.
func (st *VMState) Shutdown(guest bool, reason string) {
	st.mu.Lock()
	already := st.status == StatusShutdown
	st.status = StatusShutdown
	st.mu.Unlock()
	if !already {
		st.s.Event("SHUTDOWN", map[string]any{"guest": guest, "reason": reason})
	}
}

func (st *VMState) quit(r *Request) (any, error) {
	if err := r.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	// The reply goes out first; SHUTDOWN follows when the VMM has
	// stopped the vCPUs (the VMM calls Shutdown with host-qmp-quit).
	st.m.Quit()
	return nil, nil
}

// stop pauses the VM. As in QEMU, STOP is emitted before the reply and
// stopping a paused VM is a no-op without an event.
func (st *VMState) stop(r *Request) (any, error) {
	if err := r.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch st.status {
	case StatusPaused:
		return nil, nil
	case StatusShutdown:
		return nil, Errorf(ClassGeneric, "the VM has shut down")
	}
	if err := st.m.Pause(); err != nil {
		return nil, Errorf(ClassGeneric, "pause: %v", err)
	}
	st.status = StatusPaused
	st.s.Event("STOP", nil)
	return nil, nil
}

// cont resumes a paused VM, emitting RESUME before the reply.
func (st *VMState) cont(r *Request) (any, error) {
	if err := r.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch st.status {
	case StatusRunning:
		return nil, nil
	case StatusShutdown:
		return nil, Errorf(ClassGeneric, "the VM has shut down")
	}
	if err := st.m.Resume(); err != nil {
		return nil, Errorf(ClassGeneric, "resume: %v", err)
	}
	st.status = StatusRunning
	st.s.Event("RESUME", nil)
	return nil, nil
}

func (st *VMState) queryStatus(r *Request) (any, error) {
	if err := r.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	status := st.Status()
	return map[string]any{"running": status == StatusRunning, "singlestep": false, "status": status}, nil
}

func qomPath(i int) string { return fmt.Sprintf("/machine/unattached/device[%d]", i) }

func cpuProps(i int) map[string]int {
	return map[string]int{"socket-id": i, "core-id": 0, "thread-id": 0}
}

// queryCPUs answers in QEMU's (and StratoVirt's) query-cpus shape; Kata
// reads CPU and thread_id to pin vCPU threads.
func (st *VMState) queryCPUs(r *Request) (any, error) {
	if err := r.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	tids := st.m.VCPUThreadIDs()
	out := make([]map[string]any, len(tids))
	for i, tid := range tids {
		out[i] = map[string]any{
			"CPU": i, "current": i == 0, "halted": false, "arch": "x86",
			"qom_path": qomPath(i), "thread_id": tid, "props": cpuProps(i),
		}
	}
	return out, nil
}

// queryHotpluggableCPUs lists every vCPU as plugged (the microVM has no
// CPU hot-plug, so there are no empty slots).
func (st *VMState) queryHotpluggableCPUs(r *Request) (any, error) {
	if err := r.Decode(&struct{}{}); err != nil {
		return nil, err
	}
	n := len(st.m.VCPUThreadIDs())
	out := make([]map[string]any, n)
	for i := range n {
		out[i] = map[string]any{
			"type": "host-x86-cpu", "vcpus-count": 1, "props": cpuProps(i), "qom-path": qomPath(i),
		}
	}
	return out, nil
}

// RegisterPlaceholders answers the device commands of StratoVirt's QMP
// that this build has no device for yet. Device code replaces them with
// Handle when it adds the device.
func RegisterPlaceholders(s *Server) {
	for _, name := range []string{"blockdev-add", "blockdev-del", "device_add", "device_del", "netdev_add", "netdev_del"} {
		name := name
		s.Handle(name, func(*Request) (any, error) {
			return nil, Errorf(ClassGeneric, "%s is not supported yet: this build has no hot-pluggable devices", name)
		})
	}
	noBalloon := func(*Request) (any, error) {
		return nil, Errorf(ClassDeviceNotActive, "No balloon device has been activated")
	}
	s.Handle("balloon", noBalloon)
	s.Handle("query-balloon", noBalloon)
}
