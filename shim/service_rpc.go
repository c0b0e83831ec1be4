package shim

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/cgroups/v3/cgroup2/stats"
	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/runtimeoptions/v1"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/events"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/errdefs"
	"github.com/containerd/typeurl/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
)

type netConn = net.Conn

// publisherFunc is what the shim's event plugin offers.
type publisherFunc = events.Publisher

// configPathFromOptions reads ConfigPath from the runtime options (CRI's
// runtimeoptions.v1.Options, or ctr --runtime-config-path).
func configPathFromOptions(opts *anypb.Any) (string, error) {
	if opts == nil || len(opts.GetValue()) == 0 {
		return "", nil
	}
	if !strings.HasSuffix(opts.GetTypeUrl(), "runtimeoptions.v1.Options") {
		return "", nil
	}
	var o runtimeoptions.Options
	if err := proto.Unmarshal(opts.GetValue(), &o); err != nil {
		return "", fmt.Errorf("runtime options: %w", err)
	}
	return o.ConfigPath, nil
}

// State reports a process.
// A container still being created is CREATED (as runc's shim reports
// it once runc create ran); State never waits for Create.
func (s *Service) State(ctx context.Context, req *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	c, p, err := s.lookupProcess(req.ID, req.ExecID)
	if err != nil {
		return nil, err
	}
	st, status, at := p.state()
	r := &taskAPI.StateResponse{
		ID: req.ID, ExecID: req.ExecID, Bundle: c.bundle, Pid: p.pid, Status: st,
		Stdin: p.paths.stdin, Stdout: p.paths.stdout, Stderr: p.paths.stderr, Terminal: p.paths.terminal,
		ExitStatus: status,
	}
	if !at.IsZero() {
		r.ExitedAt = protobuf.ToTimestamp(at)
	}
	return r, nil
}

// Pids lists the guest processes of a container (guest pids).
func (s *Service) Pids(ctx context.Context, req *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	c, err := s.lookup(req.ID)
	if err != nil {
		return nil, err
	}
	if c.creating() {
		// Nothing runs in the guest yet: the shim (VMM) is the task.
		return &taskAPI.PidsResponse{Processes: []*task.ProcessInfo{{Pid: uint32(os.Getpid())}}}, nil
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	sb, err := s.sandbox()
	if err != nil {
		return nil, err
	}
	pids, err := sb.ListProcesses(ctx, c.id)
	if err != nil {
		return nil, fmt.Errorf("agent list processes: %w", err)
	}
	r := &taskAPI.PidsResponse{}
	for _, pid := range pids {
		r.Processes = append(r.Processes, &task.ProcessInfo{Pid: pid})
	}
	if len(r.Processes) == 0 {
		r.Processes = append(r.Processes, &task.ProcessInfo{Pid: uint32(os.Getpid())})
	}
	return r, nil
}

// Kill signals a process (or, with All, every process of the container).
func (s *Service) Kill(ctx context.Context, req *taskAPI.KillRequest) error {
	_, p, err := s.getProcess(ctx, req.ID, req.ExecID)
	if err != nil {
		return err
	}
	if st, _, _ := p.state(); st == task.Status_STOPPED {
		return fmt.Errorf("process %s/%s already finished: %w", req.ID, req.ExecID, errdefs.ErrNotFound)
	}
	if req.Signal == 0 || req.Signal > 64 {
		return fmt.Errorf("signal %d: %w", req.Signal, errdefs.ErrInvalidArgument)
	}
	sb, err := s.sandbox()
	if err != nil {
		return err
	}
	if _, err := sb.Agent().SignalProcess(ctx, &agentv1.SignalProcessRequest{
		ContainerId: req.ID, ExecId: req.ExecID, Signal: req.Signal, All: req.All,
	}); err != nil {
		if st, _, _ := p.state(); st == task.Status_STOPPED {
			return fmt.Errorf("process %s/%s already finished: %w", req.ID, req.ExecID, errdefs.ErrNotFound)
		}
		return fmt.Errorf("agent signal: %w", err)
	}
	return nil
}

func (s *Service) Pause(ctx context.Context, req *taskAPI.PauseRequest) error {
	c, err := s.get(ctx, req.ID)
	if err != nil {
		return err
	}
	sb, err := s.sandbox()
	if err != nil {
		return err
	}
	if _, err := sb.Agent().PauseContainer(ctx, &agentv1.PauseContainerRequest{ContainerId: c.id}); err != nil {
		return fmt.Errorf("agent pause: %w", err)
	}
	c.init.mu.Lock()
	if c.init.status == task.Status_RUNNING {
		c.init.status = task.Status_PAUSED
	}
	c.init.mu.Unlock()
	s.send(runtime.TaskPausedEventTopic, &eventstypes.TaskPaused{ContainerID: c.id})
	return nil
}

func (s *Service) Resume(ctx context.Context, req *taskAPI.ResumeRequest) error {
	c, err := s.get(ctx, req.ID)
	if err != nil {
		return err
	}
	sb, err := s.sandbox()
	if err != nil {
		return err
	}
	if _, err := sb.Agent().ResumeContainer(ctx, &agentv1.ResumeContainerRequest{ContainerId: c.id}); err != nil {
		return fmt.Errorf("agent resume: %w", err)
	}
	c.init.mu.Lock()
	if c.init.status == task.Status_PAUSED {
		c.init.status = task.Status_RUNNING
	}
	c.init.mu.Unlock()
	s.send(runtime.TaskResumedEventTopic, &eventstypes.TaskResumed{ContainerID: c.id})
	return nil
}

func (s *Service) ResizePty(ctx context.Context, req *taskAPI.ResizePtyRequest) error {
	_, p, err := s.getProcess(ctx, req.ID, req.ExecID)
	if err != nil {
		return err
	}
	if !p.paths.terminal {
		return fmt.Errorf("process %s/%s has no terminal: %w", req.ID, req.ExecID, errdefs.ErrFailedPrecondition)
	}
	sb, err := s.sandbox()
	if err != nil {
		return err
	}
	_, err = sb.Agent().TtyWinResize(ctx, &agentv1.TtyWinResizeRequest{ContainerId: req.ID, ExecId: req.ExecID, Rows: req.Height, Columns: req.Width})
	return err
}

func (s *Service) CloseIO(ctx context.Context, req *taskAPI.CloseIORequest) error {
	_, p, err := s.getProcess(ctx, req.ID, req.ExecID)
	if err != nil {
		return err
	}
	if req.Stdin && p.io != nil {
		p.io.closeIO()
	}
	return nil
}

// Update changes a container's resources (OCI linux.resources).
func (s *Service) Update(ctx context.Context, req *taskAPI.UpdateTaskRequest) error {
	c, err := s.get(ctx, req.ID)
	if err != nil {
		return err
	}
	if req.Resources == nil || !json.Valid(req.Resources.Value) {
		return fmt.Errorf("update %s: resources are not OCI linux.resources JSON: %w", req.ID, errdefs.ErrInvalidArgument)
	}
	sb, err := s.sandbox()
	if err != nil {
		return err
	}
	_, err = sb.Agent().UpdateContainer(ctx, &agentv1.UpdateContainerRequest{ContainerId: c.id, Resources: req.Resources.Value})
	return err
}

func (s *Service) Wait(ctx context.Context, req *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	_, p, err := s.lookupProcess(req.ID, req.ExecID)
	if err != nil {
		return nil, err
	}
	select {
	case <-p.exited:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	_, status, at := p.state()
	return &taskAPI.WaitResponse{ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// Stats returns the container's guest cgroup v2 metrics.
func (s *Service) Stats(ctx context.Context, req *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	c, err := s.get(ctx, req.ID)
	if err != nil {
		return nil, err
	}
	sb, err := s.sandbox()
	if err != nil {
		return nil, err
	}
	r, err := sb.Agent().StatsContainer(ctx, &agentv1.StatsContainerRequest{ContainerId: c.id})
	if err != nil {
		return nil, fmt.Errorf("agent stats: %w", err)
	}
	a, err := typeurl.MarshalAnyToProto(Metrics(r))
	if err != nil {
		return nil, err
	}
	return &taskAPI.StatsResponse{Stats: a}, nil
}

// Metrics converts the agent's stats to containerd's cgroup v2 metrics.
func Metrics(r *agentv1.StatsContainerResponse) *stats.Metrics {
	m := &stats.Metrics{}
	if c := r.GetCpu(); c != nil {
		m.CPU = &stats.CPUStat{UsageUsec: c.UsageUsec, UserUsec: c.UserUsec, SystemUsec: c.SystemUsec,
			NrPeriods: c.NrPeriods, NrThrottled: c.NrThrottled, ThrottledUsec: c.ThrottledUsec}
	}
	if mem := r.GetMemory(); mem != nil {
		st := mem.GetStat()
		m.Memory = &stats.MemoryStat{Usage: mem.UsageBytes, UsageLimit: mem.LimitBytes, MaxUsage: mem.PeakBytes,
			SwapUsage: mem.SwapUsageBytes, Anon: mem.AnonBytes, File: mem.FileBytes,
			KernelStack: st["kernel_stack"], Slab: st["slab"], Sock: st["sock"], Shmem: st["shmem"],
			FileMapped: st["file_mapped"], FileDirty: st["file_dirty"], FileWriteback: st["file_writeback"],
			InactiveAnon: st["inactive_anon"], ActiveAnon: st["active_anon"], InactiveFile: st["inactive_file"],
			ActiveFile: st["active_file"], Unevictable: st["unevictable"], Pgfault: st["pgfault"], Pgmajfault: st["pgmajfault"]}
		if m.Memory.UsageLimit == 0 {
			m.Memory.UsageLimit = ^uint64(0)
		}
		m.MemoryEvents = &stats.MemoryEvents{Oom: mem.OomEvents, OomKill: mem.OomKills}
	}
	if p := r.GetPids(); p != nil {
		m.Pids = &stats.PidsStat{Current: p.Current, Limit: p.Limit}
	}
	if io := r.GetIo(); io != nil {
		m.Io = &stats.IOStat{}
		for i, d := range io.Devices {
			if i >= 256 {
				break
			}
			m.Io.Usage = append(m.Io.Usage, &stats.IOEntry{Major: uint64(d.Major), Minor: uint64(d.Minor),
				Rbytes: d.ReadBytes, Wbytes: d.WriteBytes, Rios: d.ReadIos, Wios: d.WriteIos})
		}
	}
	for i, n := range r.GetNetwork() {
		if i >= 64 {
			break
		}
		m.Network = append(m.Network, &stats.NetworkStat{Name: n.Name, RxBytes: n.RxBytes, RxPackets: n.RxPackets,
			RxErrors: n.RxErrors, RxDropped: n.RxDropped, TxBytes: n.TxBytes, TxPackets: n.TxPackets,
			TxErrors: n.TxErrors, TxDropped: n.TxDropped})
	}
	return m
}

func (s *Service) Connect(ctx context.Context, req *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	pid := uint32(os.Getpid())
	return &taskAPI.ConnectResponse{ShimPid: pid, TaskPid: pid, Version: "stratovirt"}, nil
}

// Shutdown ends the shim once no container is left.
func (s *Service) Shutdown(ctx context.Context, req *taskAPI.ShutdownRequest) error {
	s.mu.Lock()
	n := len(s.containers)
	s.mu.Unlock()
	if n > 0 && !req.Now {
		return nil
	}
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	s.stopVM()
	if s.sd != nil {
		s.sd.Shutdown()
	}
	return nil
}

var _ = syscall.SIGKILL
var _ = time.Second

func protoUnmarshal(b []byte, m proto.Message) error { return proto.Unmarshal(b, m) }
