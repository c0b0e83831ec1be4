// Package server implements the agent's ttrpc services (agent-proto
// stratovirt.agent.v1 Health and Agent) over the container manager and
// the network configuration, mapping errors to status codes. It holds no
// state of its own beyond its configuration.
package server

import (
	"context"
	"errors"
	"os"
	"runtime"
	"strconv"
	"strings"

	"github.com/containerd/log"
	"github.com/containerd/ttrpc"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent/container"
	"github.com/stratovirt-go/stratovirt/agent/network"
	"github.com/stratovirt-go/stratovirt/agent/runc"
)

// Version is the agent's version string.
var Version = "0.1.0"

// Service serves both ttrpc services.
type Service struct {
	Containers *container.Manager
	Runc       *runc.Runc
	// Network, when its handle is nil, refuses network RPCs.
	Network network.Config
	// CgroupRoot is where cgroup v2 is mounted.
	CgroupRoot string
}

// Register adds the Health and Agent services to srv.
func (s *Service) Register(srv *ttrpc.Server) {
	agentv1.RegisterHealthService(srv, s)
	agentv1.RegisterAgentService(srv, s)
}

// toStatus maps manager errors to status codes.
func toStatus(ctx context.Context, method string, err error) error {
	if err == nil {
		return nil
	}
	code := codes.Internal
	switch {
	case errors.Is(err, container.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, container.ErrExists):
		code = codes.AlreadyExists
	case errors.Is(err, container.ErrInvalid):
		code = codes.InvalidArgument
	case errors.Is(err, container.ErrPrecondition):
		code = codes.FailedPrecondition
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	}
	if code == codes.Internal {
		log.G(ctx).Errorf("%s: %v", method, err)
	} else {
		log.G(ctx).Debugf("%s: %v", method, err)
	}
	return status.Error(code, err.Error())
}

// Check implements Health.
func (s *Service) Check(ctx context.Context, _ *agentv1.CheckRequest) (*agentv1.CheckResponse, error) {
	return &agentv1.CheckResponse{Status: agentv1.CheckResponse_SERVING, Version: Version}, nil
}

// GetGuestDetails describes the guest.
func (s *Service) GetGuestDetails(ctx context.Context, _ *agentv1.GetGuestDetailsRequest) (*agentv1.GuestDetails, error) {
	d := &agentv1.GuestDetails{
		AgentVersion: Version,
		OnlineCpus:   uint32(runtime.NumCPU()),
		Features:     []string{"oom-events", "tty", "stream-handshake-v1", "log-stream"},
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		d.KernelRelease = unix.ByteSliceToString(u.Release[:])
	}
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		d.MemTotalBytes = si.Totalram * uint64(si.Unit)
	}
	if b, err := os.ReadFile("/sys/devices/system/memory/block_size_bytes"); err == nil {
		d.MemBlockSizeBytes, _ = strconv.ParseUint(strings.TrimSpace(string(b)), 16, 64)
	}
	if v, err := s.Runc.Version(ctx); err == nil {
		d.RuncVersion = v
	}
	root := s.CgroupRoot
	if root == "" {
		root = "/sys/fs/cgroup"
	}
	if b, err := os.ReadFile(root + "/cgroup.controllers"); err == nil {
		d.CgroupControllers = strings.Fields(string(b))
	}
	return d, nil
}

// CreateSandbox applies sandbox-wide settings.
func (s *Service) CreateSandbox(ctx context.Context, req *agentv1.CreateSandboxRequest) (*agentv1.CreateSandboxResponse, error) {
	return &agentv1.CreateSandboxResponse{}, toStatus(ctx, "CreateSandbox", s.Containers.CreateSandbox(ctx, req))
}

// DestroySandbox removes all containers and sandbox mounts.
func (s *Service) DestroySandbox(ctx context.Context, _ *agentv1.DestroySandboxRequest) (*agentv1.DestroySandboxResponse, error) {
	return &agentv1.DestroySandboxResponse{}, toStatus(ctx, "DestroySandbox", s.Containers.DestroySandbox(ctx))
}

// CreateContainer creates a container.
func (s *Service) CreateContainer(ctx context.Context, req *agentv1.CreateContainerRequest) (*agentv1.CreateContainerResponse, error) {
	pid, err := s.Containers.Create(ctx, req)
	if err != nil {
		return nil, toStatus(ctx, "CreateContainer", err)
	}
	return &agentv1.CreateContainerResponse{Pid: uint32(pid)}, nil
}

// StartContainer starts a created container.
func (s *Service) StartContainer(ctx context.Context, req *agentv1.StartContainerRequest) (*agentv1.StartContainerResponse, error) {
	return &agentv1.StartContainerResponse{}, toStatus(ctx, "StartContainer", s.Containers.Start(ctx, req.GetContainerId()))
}

// ExecProcess starts a process in a running container.
func (s *Service) ExecProcess(ctx context.Context, req *agentv1.ExecProcessRequest) (*agentv1.ExecProcessResponse, error) {
	pid, err := s.Containers.Exec(ctx, req)
	if err != nil {
		return nil, toStatus(ctx, "ExecProcess", err)
	}
	return &agentv1.ExecProcessResponse{Pid: uint32(pid)}, nil
}

// SignalProcess signals a process or every process of a container.
func (s *Service) SignalProcess(ctx context.Context, req *agentv1.SignalProcessRequest) (*agentv1.SignalProcessResponse, error) {
	err := s.Containers.Signal(ctx, req.GetContainerId(), req.GetExecId(), int(req.GetSignal()), req.GetAll())
	return &agentv1.SignalProcessResponse{}, toStatus(ctx, "SignalProcess", err)
}

// WaitProcess waits for a process's exit and its output.
func (s *Service) WaitProcess(ctx context.Context, req *agentv1.WaitProcessRequest) (*agentv1.WaitProcessResponse, error) {
	e, err := s.Containers.Wait(ctx, req.GetContainerId(), req.GetExecId())
	if err != nil {
		return nil, toStatus(ctx, "WaitProcess", err)
	}
	return &agentv1.WaitProcessResponse{ExitStatus: int32(e.Status), ExitedAtUnixNano: e.Time.UnixNano(), Pid: uint32(e.Pid)}, nil
}

// DeleteProcess forgets an exited exec process.
func (s *Service) DeleteProcess(ctx context.Context, req *agentv1.DeleteProcessRequest) (*agentv1.DeleteProcessResponse, error) {
	if err := s.Containers.DeleteExec(req.GetContainerId(), req.GetExecId()); err != nil {
		return nil, toStatus(ctx, "DeleteProcess", err)
	}
	return &agentv1.DeleteProcessResponse{}, nil
}

// StatsContainer reads a container's statistics.
func (s *Service) StatsContainer(ctx context.Context, req *agentv1.StatsContainerRequest) (*agentv1.StatsContainerResponse, error) {
	st, err := s.Containers.Stats(req.GetContainerId())
	if err != nil {
		return nil, toStatus(ctx, "StatsContainer", err)
	}
	return st, nil
}

// UpdateContainer applies new resources.
func (s *Service) UpdateContainer(ctx context.Context, req *agentv1.UpdateContainerRequest) (*agentv1.UpdateContainerResponse, error) {
	return &agentv1.UpdateContainerResponse{}, toStatus(ctx, "UpdateContainer", s.Containers.Update(ctx, req.GetContainerId(), req.GetResources()))
}

// PauseContainer freezes a container.
func (s *Service) PauseContainer(ctx context.Context, req *agentv1.PauseContainerRequest) (*agentv1.PauseContainerResponse, error) {
	return &agentv1.PauseContainerResponse{}, toStatus(ctx, "PauseContainer", s.Containers.Pause(ctx, req.GetContainerId()))
}

// ResumeContainer thaws a container.
func (s *Service) ResumeContainer(ctx context.Context, req *agentv1.ResumeContainerRequest) (*agentv1.ResumeContainerResponse, error) {
	return &agentv1.ResumeContainerResponse{}, toStatus(ctx, "ResumeContainer", s.Containers.Resume(ctx, req.GetContainerId()))
}

// RemoveContainer deletes a container.
func (s *Service) RemoveContainer(ctx context.Context, req *agentv1.RemoveContainerRequest) (*agentv1.RemoveContainerResponse, error) {
	return &agentv1.RemoveContainerResponse{}, toStatus(ctx, "RemoveContainer", s.Containers.Remove(ctx, req.GetContainerId(), req.GetForce()))
}

// ListProcesses lists a container's pids.
func (s *Service) ListProcesses(ctx context.Context, req *agentv1.ListProcessesRequest) (*agentv1.ListProcessesResponse, error) {
	pids, err := s.Containers.Pids(ctx, req.GetContainerId())
	if err != nil {
		return nil, toStatus(ctx, "ListProcesses", err)
	}
	return &agentv1.ListProcessesResponse{Pids: pids}, nil
}

// TtyWinResize resizes a terminal.
func (s *Service) TtyWinResize(ctx context.Context, req *agentv1.TtyWinResizeRequest) (*agentv1.TtyWinResizeResponse, error) {
	err := s.Containers.Resize(req.GetContainerId(), req.GetExecId(), req.GetRows(), req.GetColumns())
	return &agentv1.TtyWinResizeResponse{}, toStatus(ctx, "TtyWinResize", err)
}

// CloseStdin ends a process's input.
func (s *Service) CloseStdin(ctx context.Context, req *agentv1.CloseStdinRequest) (*agentv1.CloseStdinResponse, error) {
	return &agentv1.CloseStdinResponse{}, toStatus(ctx, "CloseStdin", s.Containers.CloseStdin(req.GetContainerId(), req.GetExecId()))
}

// GetOOMEvent long-polls for the next OOM kill.
func (s *Service) GetOOMEvent(ctx context.Context, _ *agentv1.GetOOMEventRequest) (*agentv1.OOMEvent, error) {
	e, err := s.Containers.OOMEvent(ctx)
	if err != nil {
		return nil, toStatus(ctx, "GetOOMEvent", err)
	}
	return e, nil
}

func (s *Service) network() error {
	if s.Network.H == nil {
		return status.Error(codes.Unimplemented, "network configuration is disabled")
	}
	return nil
}

// UpdateInterface configures an interface found by MAC.
func (s *Service) UpdateInterface(ctx context.Context, req *agentv1.UpdateInterfaceRequest) (*agentv1.Interface, error) {
	if err := s.network(); err != nil {
		return nil, err
	}
	i, err := s.Network.UpdateInterface(req.GetInterface())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return i, nil
}

// UpdateRoutes replaces routes.
func (s *Service) UpdateRoutes(ctx context.Context, req *agentv1.UpdateRoutesRequest) (*agentv1.UpdateRoutesResponse, error) {
	if err := s.network(); err != nil {
		return nil, err
	}
	rs, err := s.Network.UpdateRoutes(req.GetRoutes())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &agentv1.UpdateRoutesResponse{Routes: rs}, nil
}

// AddARPNeighbors adds static neighbours.
func (s *Service) AddARPNeighbors(ctx context.Context, req *agentv1.AddARPNeighborsRequest) (*agentv1.AddARPNeighborsResponse, error) {
	if err := s.network(); err != nil {
		return nil, err
	}
	if err := s.Network.AddARPNeighbors(req.GetNeighbors()); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return &agentv1.AddARPNeighborsResponse{}, nil
}
