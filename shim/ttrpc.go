package shim

import (
	"context"
	"fmt"

	taskv2 "github.com/containerd/containerd/api/runtime/task/v2"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"github.com/containerd/ttrpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/emptypb"
)

// TaskV3 serves the Service as containerd.task.v3.Task; every error
// leaves through errgrpc.
type TaskV3 struct{ S *Service }

var empty = &emptypb.Empty{}

func grpcErr(err error) error {
	if err == nil {
		return nil
	}
	return errgrpc.ToGRPC(err)
}

func unit(err error) (*emptypb.Empty, error) {
	if err != nil {
		return nil, grpcErr(err)
	}
	return empty, nil
}

func ret[T any](r T, err error) (T, error) {
	if err != nil {
		var zero T
		return zero, grpcErr(err)
	}
	return r, nil
}

func (t TaskV3) State(ctx context.Context, r *taskAPI.StateRequest) (*taskAPI.StateResponse, error) {
	return ret(t.S.State(ctx, r))
}
func (t TaskV3) Create(ctx context.Context, r *taskAPI.CreateTaskRequest) (*taskAPI.CreateTaskResponse, error) {
	return ret(t.S.Create(ctx, r))
}
func (t TaskV3) Start(ctx context.Context, r *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	return ret(t.S.Start(ctx, r))
}
func (t TaskV3) Delete(ctx context.Context, r *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	return ret(t.S.Delete(ctx, r))
}
func (t TaskV3) Pids(ctx context.Context, r *taskAPI.PidsRequest) (*taskAPI.PidsResponse, error) {
	return ret(t.S.Pids(ctx, r))
}
func (t TaskV3) Pause(ctx context.Context, r *taskAPI.PauseRequest) (*emptypb.Empty, error) {
	return unit(t.S.Pause(ctx, r))
}
func (t TaskV3) Resume(ctx context.Context, r *taskAPI.ResumeRequest) (*emptypb.Empty, error) {
	return unit(t.S.Resume(ctx, r))
}
func (t TaskV3) Checkpoint(ctx context.Context, r *taskAPI.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return unit(fmt.Errorf("checkpoint: %w", errdefs.ErrNotImplemented))
}
func (t TaskV3) Kill(ctx context.Context, r *taskAPI.KillRequest) (*emptypb.Empty, error) {
	return unit(t.S.Kill(ctx, r))
}
func (t TaskV3) Exec(ctx context.Context, r *taskAPI.ExecProcessRequest) (*emptypb.Empty, error) {
	return unit(t.S.Exec(ctx, r))
}
func (t TaskV3) ResizePty(ctx context.Context, r *taskAPI.ResizePtyRequest) (*emptypb.Empty, error) {
	return unit(t.S.ResizePty(ctx, r))
}
func (t TaskV3) CloseIO(ctx context.Context, r *taskAPI.CloseIORequest) (*emptypb.Empty, error) {
	return unit(t.S.CloseIO(ctx, r))
}
func (t TaskV3) Update(ctx context.Context, r *taskAPI.UpdateTaskRequest) (*emptypb.Empty, error) {
	return unit(t.S.Update(ctx, r))
}
func (t TaskV3) Wait(ctx context.Context, r *taskAPI.WaitRequest) (*taskAPI.WaitResponse, error) {
	return ret(t.S.Wait(ctx, r))
}
func (t TaskV3) Stats(ctx context.Context, r *taskAPI.StatsRequest) (*taskAPI.StatsResponse, error) {
	return ret(t.S.Stats(ctx, r))
}
func (t TaskV3) Connect(ctx context.Context, r *taskAPI.ConnectRequest) (*taskAPI.ConnectResponse, error) {
	return ret(t.S.Connect(ctx, r))
}
func (t TaskV3) Shutdown(ctx context.Context, r *taskAPI.ShutdownRequest) (*emptypb.Empty, error) {
	return unit(t.S.Shutdown(ctx, r))
}

// TaskV2 serves the same Service as containerd.task.v2.Task (containerd
// 1.6 and 1.7). The v2 and v3 messages are identical on the wire; each
// call is converted by re-encoding.
type TaskV2 struct{ V3 TaskV3 }

// conv re-encodes a message of one API version as the other.
func conv[Out proto.Message](in proto.Message, out Out) (Out, error) {
	b, err := proto.Marshal(in)
	if err != nil {
		return out, grpcErr(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err))
	}
	if err := proto.Unmarshal(b, out); err != nil {
		return out, grpcErr(fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err))
	}
	return out, nil
}

// call converts a v2 request to v3, calls f, and converts the response back.
func call[In2, In3, Out3, Out2 proto.Message](ctx context.Context, in In2, in3 In3, out2 Out2, f func(context.Context, In3) (Out3, error)) (Out2, error) {
	var zero Out2
	r3, err := conv(in, in3)
	if err != nil {
		return zero, err
	}
	o3, err := f(ctx, r3)
	if err != nil {
		return zero, err
	}
	return conv(o3, out2)
}

func (t TaskV2) State(ctx context.Context, r *taskv2.StateRequest) (*taskv2.StateResponse, error) {
	return call(ctx, r, &taskAPI.StateRequest{}, &taskv2.StateResponse{}, t.V3.State)
}
func (t TaskV2) Create(ctx context.Context, r *taskv2.CreateTaskRequest) (*taskv2.CreateTaskResponse, error) {
	return call(ctx, r, &taskAPI.CreateTaskRequest{}, &taskv2.CreateTaskResponse{}, t.V3.Create)
}
func (t TaskV2) Start(ctx context.Context, r *taskv2.StartRequest) (*taskv2.StartResponse, error) {
	return call(ctx, r, &taskAPI.StartRequest{}, &taskv2.StartResponse{}, t.V3.Start)
}
func (t TaskV2) Delete(ctx context.Context, r *taskv2.DeleteRequest) (*taskv2.DeleteResponse, error) {
	return call(ctx, r, &taskAPI.DeleteRequest{}, &taskv2.DeleteResponse{}, t.V3.Delete)
}
func (t TaskV2) Pids(ctx context.Context, r *taskv2.PidsRequest) (*taskv2.PidsResponse, error) {
	return call(ctx, r, &taskAPI.PidsRequest{}, &taskv2.PidsResponse{}, t.V3.Pids)
}
func (t TaskV2) Pause(ctx context.Context, r *taskv2.PauseRequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.PauseRequest{}, &emptypb.Empty{}, t.V3.Pause)
}
func (t TaskV2) Resume(ctx context.Context, r *taskv2.ResumeRequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.ResumeRequest{}, &emptypb.Empty{}, t.V3.Resume)
}
func (t TaskV2) Checkpoint(ctx context.Context, r *taskv2.CheckpointTaskRequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.CheckpointTaskRequest{}, &emptypb.Empty{}, t.V3.Checkpoint)
}
func (t TaskV2) Kill(ctx context.Context, r *taskv2.KillRequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.KillRequest{}, &emptypb.Empty{}, t.V3.Kill)
}
func (t TaskV2) Exec(ctx context.Context, r *taskv2.ExecProcessRequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.ExecProcessRequest{}, &emptypb.Empty{}, t.V3.Exec)
}
func (t TaskV2) ResizePty(ctx context.Context, r *taskv2.ResizePtyRequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.ResizePtyRequest{}, &emptypb.Empty{}, t.V3.ResizePty)
}
func (t TaskV2) CloseIO(ctx context.Context, r *taskv2.CloseIORequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.CloseIORequest{}, &emptypb.Empty{}, t.V3.CloseIO)
}
func (t TaskV2) Update(ctx context.Context, r *taskv2.UpdateTaskRequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.UpdateTaskRequest{}, &emptypb.Empty{}, t.V3.Update)
}
func (t TaskV2) Wait(ctx context.Context, r *taskv2.WaitRequest) (*taskv2.WaitResponse, error) {
	return call(ctx, r, &taskAPI.WaitRequest{}, &taskv2.WaitResponse{}, t.V3.Wait)
}
func (t TaskV2) Stats(ctx context.Context, r *taskv2.StatsRequest) (*taskv2.StatsResponse, error) {
	return call(ctx, r, &taskAPI.StatsRequest{}, &taskv2.StatsResponse{}, t.V3.Stats)
}
func (t TaskV2) Connect(ctx context.Context, r *taskv2.ConnectRequest) (*taskv2.ConnectResponse, error) {
	return call(ctx, r, &taskAPI.ConnectRequest{}, &taskv2.ConnectResponse{}, t.V3.Connect)
}
func (t TaskV2) Shutdown(ctx context.Context, r *taskv2.ShutdownRequest) (*emptypb.Empty, error) {
	return call(ctx, r, &taskAPI.ShutdownRequest{}, &emptypb.Empty{}, t.V3.Shutdown)
}

// RegisterTTRPC registers both task API versions on server.
func (s *Service) RegisterTTRPC(server *ttrpc.Server) error {
	v3 := TaskV3{S: s}
	taskAPI.RegisterTTRPCTaskService(server, v3)
	taskv2.RegisterTTRPCTaskService(server, TaskV2{V3: v3})
	return nil
}
