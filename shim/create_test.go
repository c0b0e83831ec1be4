package shim

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/errdefs"
	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	"github.com/stratovirt-go/stratovirt/runtime/oci"
	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

// fakeAgent is an in-process agent: containers are records, an init
// runs until it is signalled.
type fakeAgent struct {
	agentv1.AgentService // methods the tests do not use (nil: they would panic)

	mu      sync.Mutex
	created map[string]bool
	reqs    map[string]*agentv1.CreateContainerRequest
	exits   map[string]chan int32
}

func (a *fakeAgent) Check(context.Context, *agentv1.CheckRequest) (*agentv1.CheckResponse, error) {
	return &agentv1.CheckResponse{Status: agentv1.CheckResponse_SERVING}, nil
}
func (a *fakeAgent) GetGuestDetails(context.Context, *agentv1.GetGuestDetailsRequest) (*agentv1.GuestDetails, error) {
	return &agentv1.GuestDetails{AgentVersion: "fake", OnlineCpus: 1}, nil
}
func (a *fakeAgent) CreateSandbox(context.Context, *agentv1.CreateSandboxRequest) (*agentv1.CreateSandboxResponse, error) {
	return &agentv1.CreateSandboxResponse{}, nil
}
func (a *fakeAgent) CreateContainer(_ context.Context, r *agentv1.CreateContainerRequest) (*agentv1.CreateContainerResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.created[r.ContainerId] = true
	if a.reqs != nil {
		a.reqs[r.ContainerId] = r
	}
	a.exits[r.ContainerId] = make(chan int32, 1)
	return &agentv1.CreateContainerResponse{Pid: 42}, nil
}
func (a *fakeAgent) StartContainer(context.Context, *agentv1.StartContainerRequest) (*agentv1.StartContainerResponse, error) {
	return &agentv1.StartContainerResponse{}, nil
}
func (a *fakeAgent) exit(id string) chan int32 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.exits[id]
}
func (a *fakeAgent) SignalProcess(_ context.Context, r *agentv1.SignalProcessRequest) (*agentv1.SignalProcessResponse, error) {
	if ch := a.exit(r.ContainerId); ch != nil {
		select {
		case ch <- 128 + int32(r.Signal):
		default:
		}
	}
	return &agentv1.SignalProcessResponse{}, nil
}
func (a *fakeAgent) WaitProcess(ctx context.Context, r *agentv1.WaitProcessRequest) (*agentv1.WaitProcessResponse, error) {
	select {
	case st := <-a.exit(r.ContainerId):
		return &agentv1.WaitProcessResponse{ExitStatus: st, ExitedAtUnixNano: time.Now().UnixNano()}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
func (a *fakeAgent) RemoveContainer(_ context.Context, r *agentv1.RemoveContainerRequest) (*agentv1.RemoveContainerResponse, error) {
	return &agentv1.RemoveContainerResponse{}, nil
}
func (a *fakeAgent) ListProcesses(context.Context, *agentv1.ListProcessesRequest) (*agentv1.ListProcessesResponse, error) {
	return &agentv1.ListProcessesResponse{Pids: []uint32{42}}, nil
}
func (a *fakeAgent) GetOOMEvent(ctx context.Context, _ *agentv1.GetOOMEventRequest) (*agentv1.OOMEvent, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// fakeMachine serves a fakeAgent on unix sockets; its boot (Start)
// blocks until boot is closed.
type fakeMachine struct {
	dir   string
	boot  chan struct{}
	agent *fakeAgent
	srv   *ttrpc.Server
	ls    []net.Listener
	done  chan struct{}
	once  sync.Once
}

func (m *fakeMachine) Start() error {
	<-m.boot
	srv, err := ttrpc.NewServer()
	if err != nil {
		return err
	}
	m.srv = srv
	agentv1.RegisterAgentService(srv, m.agent)
	agentv1.RegisterHealthService(srv, m.agent)
	ctl, err := net.Listen("unix", filepath.Join(m.dir, "agent.sock"))
	if err != nil {
		return err
	}
	strm, err := net.Listen("unix", filepath.Join(m.dir, "stream.sock"))
	if err != nil {
		ctl.Close()
		return err
	}
	m.ls = []net.Listener{ctl, strm}
	go srv.Serve(context.Background(), ctl)
	go func() {
		for {
			c, err := strm.Accept()
			if err != nil {
				return
			}
			go func() {
				if _, err := stream.ReadHeader(c); err == nil {
					stream.WriteReply(c, nil)
				}
				c.Close() // no output
			}()
		}
	}()
	return nil
}
func (m *fakeMachine) Wait() error { <-m.done; return nil }
func (m *fakeMachine) Stop() {
	m.once.Do(func() {
		if m.srv != nil {
			m.srv.Close()
		}
		for _, l := range m.ls {
			l.Close()
		}
		close(m.done)
	})
}
func (m *fakeMachine) Pause() error     { return nil }
func (m *fakeMachine) Resume() error    { return nil }
func (m *fakeMachine) Close() error     { return nil }
func (m *fakeMachine) HostRootfs() bool { return true }
func (m *fakeMachine) Dial(ctx context.Context, port uint32) (net.Conn, error) {
	name := "agent.sock"
	if port == stream.StreamPort {
		name = "stream.sock"
	}
	var d net.Dialer
	return d.DialContext(ctx, "unix", filepath.Join(m.dir, name))
}

// newFakeShim returns a Service whose VMs are fakeMachines that boot when
// boot is closed, a configuration and a bundle maker.
func newFakeShim(t *testing.T, boot chan struct{}) (*Service, func(id string) string) {
	t.Helper()
	s, bundle, _ := newFakeShimWith(t, boot, "")
	return s, bundle
}

// fakeVMs records the VMs a fake shim built: their configurations and
// agents.
type fakeVMs struct {
	mu     sync.Mutex
	vms    []*vmconfig.VMConfig
	agents []*fakeAgent
}

// newFakeShimWith is newFakeShim with extra configuration lines for the
// [runtime] table, recording the VMs it builds.
func newFakeShimWith(t *testing.T, boot chan struct{}, runtimeConf string) (*Service, func(id string) string, *fakeVMs) {
	t.Helper()
	vms := &fakeVMs{}
	if _, err := exec.LookPath("mkfs.ext4"); err != nil {
		t.Skip("needs mkfs.ext4 (the rootfs image)")
	}
	dir := t.TempDir()
	for _, f := range []string{"vmlinux", "initrd", "runc.erofs"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(dir, "configuration.toml")
	if err := os.WriteFile(conf, []byte("[hypervisor]\nkernel = \""+filepath.Join(dir, "vmlinux")+"\"\ninitrd = \""+
		filepath.Join(dir, "initrd")+"\"\nrunc_image = \""+filepath.Join(dir, "runc.erofs")+"\"\nboot_timeout = \"10s\"\n[runtime]\nwork_dir = \""+filepath.Join(dir, "work")+"\"\nsandbox_cgroup_only = false\n"+runtimeConf), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv(shimconfig.EnvPath, conf)
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	s := NewService(ctx, nil, nil, "test", func(_ context.Context, _ *shimconfig.Config, vmc *vmconfig.VMConfig, _ string) (sandbox.Machine, error) {
		n++
		md := filepath.Join(dir, "vm", string(rune('a'+n)))
		if err := os.MkdirAll(md, 0o700); err != nil {
			return nil, err
		}
		a := &fakeAgent{created: map[string]bool{}, reqs: map[string]*agentv1.CreateContainerRequest{}, exits: map[string]chan int32{}}
		vms.mu.Lock()
		vms.vms, vms.agents = append(vms.vms, vmc), append(vms.agents, a)
		vms.mu.Unlock()
		return &fakeMachine{dir: md, boot: boot, agent: a, done: make(chan struct{})}, nil
	})
	t.Cleanup(func() { s.stopVM(); cancel() })
	bundle := func(id string) string {
		b := filepath.Join(dir, "bundles", id)
		if err := os.MkdirAll(filepath.Join(b, "rootfs", "bin"), 0o755); err != nil {
			t.Fatal(err)
		}
		spec := specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"sleep", "1000"}, Cwd: "/"},
			Root: &specs.Root{Path: "rootfs"}, Linux: &specs.Linux{}}
		js, _ := json.Marshal(&spec)
		if err := os.WriteFile(filepath.Join(b, "config.json"), js, 0o644); err != nil {
			t.Fatal(err)
		}
		return b
	}
	return s, bundle, vms
}

// TestStateWhileCreating: while Create boots the VM (blocked here), State
// and Pids answer at once, a second Create of the same id is refused,
// Kill and Delete wait for the create; afterwards the lifecycle works.
func TestStateWhileCreating(t *testing.T) {
	boot := make(chan struct{})
	s, bundle := newFakeShim(t, boot)
	ctx := context.Background()
	created := make(chan error, 1)
	b := bundle("c1")
	go func() {
		_, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: b})
		created <- err
	}()
	// Wait until the container is registered.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := s.lookup("c1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c1 never registered")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sctx, cancel := context.WithTimeout(ctx, 500*time.Millisecond)
	defer cancel()
	st, err := s.State(sctx, &taskAPI.StateRequest{ID: "c1"})
	if err != nil || st.Status != task.Status_CREATED || st.Bundle != b {
		t.Fatalf("State while creating: %v %v", st, err)
	}
	if pr, err := s.Pids(sctx, &taskAPI.PidsRequest{ID: "c1"}); err != nil || len(pr.Processes) != 1 || pr.Processes[0].Pid != uint32(os.Getpid()) {
		t.Fatalf("Pids while creating: %v %v", pr, err)
	}
	if _, err := s.Create(sctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: b}); !errors.Is(err, errdefs.ErrAlreadyExists) {
		t.Fatalf("second Create of c1: %v", err)
	}
	if _, err := s.Create(sctx, &taskAPI.CreateTaskRequest{ID: "c2", Bundle: bundle("c2")}); !errors.Is(err, errdefs.ErrFailedPrecondition) {
		t.Fatalf("Create of another standalone container while c1 boots: %v", err)
	}
	kctx, kcancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer kcancel()
	if err := s.Kill(kctx, &taskAPI.KillRequest{ID: "c1", Signal: 9}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Kill while creating: %v, want it to wait for the create (deadline)", err)
	}
	select {
	case err := <-created:
		t.Fatalf("Create returned before the VM booted: %v", err)
	default:
	}

	close(boot)
	if err := <-created; err != nil {
		t.Fatal(err)
	}
	if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if st, err := s.State(ctx, &taskAPI.StateRequest{ID: "c1"}); err != nil || st.Status != task.Status_RUNNING {
		t.Fatalf("State after Start: %v %v", st, err)
	}
	if err := s.Kill(ctx, &taskAPI.KillRequest{ID: "c1", Signal: 9}); err != nil {
		t.Fatal(err)
	}
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	w, err := s.Wait(wctx, &taskAPI.WaitRequest{ID: "c1"})
	if err != nil || w.ExitStatus != 137 {
		t.Fatalf("Wait: %v %v", w, err)
	}
	if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "c1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.State(ctx, &taskAPI.StateRequest{ID: "c1"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("State after Delete: %v", err)
	}
}

// TestCreateFailureWhileWaiting: a Create that fails (the VM never
// boots) removes the container, and a Wait that arrived meanwhile ends
// with exit 255 instead of hanging.
func TestCreateFailureWhileWaiting(t *testing.T) {
	boot := make(chan struct{})
	s, bundle := newFakeShim(t, boot)
	ctx := context.Background()
	cctx, ccancel := context.WithCancel(ctx)
	created := make(chan error, 1)
	go func() {
		_, err := s.Create(cctx, &taskAPI.CreateTaskRequest{ID: "c1", Bundle: bundle("c1")})
		created <- err
	}()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if _, err := s.lookup("c1"); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("c1 never registered")
		}
	}
	waited := make(chan *taskAPI.WaitResponse, 1)
	go func() {
		w, _ := s.Wait(ctx, &taskAPI.WaitRequest{ID: "c1"})
		waited <- w
	}()
	// containerd gives up on the Create (its context ends) while the VM
	// boots: the agent calls after the boot fail.
	ccancel()
	close(boot)
	if err := <-created; err == nil {
		t.Fatal("Create succeeded with a cancelled context")
	}
	select {
	case w := <-waited:
		if w == nil || w.ExitStatus != 255 {
			t.Fatalf("Wait after a failed create: %v", w)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait still blocked after the create failed")
	}
	if _, err := s.State(ctx, &taskAPI.StateRequest{ID: "c1"}); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("State after a failed create: %v", err)
	}
	// The shim can boot a VM again.
	if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "c2", Bundle: bundle("c2")}); err != nil {
		t.Fatalf("Create after a failed create: %v", err)
	}
}

// A pod's sandbox is held by the agent: the VM gets no rootfs disk and
// the agent a holder request without a rootfs. With sandbox_pause_image
// the pause image runs from its disk, as any container.
func TestSandboxHeldByAgent(t *testing.T) {
	for _, pauseImage := range []bool{false, true} {
		t.Run(map[bool]string{false: "holder", true: "pause image"}[pauseImage], func(t *testing.T) {
			boot := make(chan struct{})
			close(boot)
			conf := ""
			if pauseImage {
				conf = "sandbox_pause_image = true\n"
			}
			s, bundle, vms := newFakeShimWith(t, boot, conf)
			b := bundle("sb")
			spec := specs.Spec{Version: specs.Version, Process: &specs.Process{Args: []string{"/pause"}, Cwd: "/"},
				Root: &specs.Root{Path: "rootfs"}, Hostname: "pod", Linux: &specs.Linux{},
				Annotations: map[string]string{oci.ContainerTypeAnnotation: "sandbox", oci.SandboxIDAnnotation: "sb"}}
			js, _ := json.Marshal(&spec)
			if err := os.WriteFile(filepath.Join(b, "config.json"), js, 0o644); err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "sb", Bundle: b}); err != nil {
				t.Fatal(err)
			}
			vms.mu.Lock()
			vm, a := vms.vms[0], vms.agents[0]
			vms.mu.Unlock()
			a.mu.Lock()
			r := a.reqs["sb"]
			a.mu.Unlock()
			if r == nil {
				t.Fatal("no CreateContainer for the sandbox")
			}
			if pauseImage {
				if r.SandboxHolder || r.Rootfs == nil || len(vm.Drives) != 1 {
					t.Errorf("pause image: holder %v, rootfs %v, %d drives; want a container on its rootfs drive", r.SandboxHolder, r.Rootfs, len(vm.Drives))
				}
			} else if !r.SandboxHolder || r.Rootfs != nil || len(vm.Drives) != 0 || !strings.Contains(string(r.OciSpec), `"hostname":"pod"`) {
				t.Errorf("holder: holder %v, rootfs %v, %d drives, spec %s; want a holder with the spec and no disk", r.SandboxHolder, r.Rootfs, len(vm.Drives), r.OciSpec)
			}
			if _, err := s.Start(ctx, &taskAPI.StartRequest{ID: "sb"}); err != nil {
				t.Fatal(err)
			}
			// An app container of the pod still gets its rootfs.
			ab := bundle("app")
			spec.Process.Args, spec.Hostname = []string{"sleep", "1000"}, ""
			spec.Annotations = map[string]string{oci.ContainerTypeAnnotation: "container", oci.SandboxIDAnnotation: "sb"}
			js, _ = json.Marshal(&spec)
			if err := os.WriteFile(filepath.Join(ab, "config.json"), js, 0o644); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Create(ctx, &taskAPI.CreateTaskRequest{ID: "app", Bundle: ab}); err != nil {
				t.Fatal(err)
			}
			a.mu.Lock()
			ar := a.reqs["app"]
			a.mu.Unlock()
			if ar == nil || ar.SandboxHolder || ar.Rootfs == nil {
				t.Errorf("app container request %v: want a rootfs and no holder", ar)
			}
			if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "app"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Kill(ctx, &taskAPI.KillRequest{ID: "sb", Signal: 9}); err != nil {
				t.Fatal(err)
			}
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if _, err := s.Wait(wctx, &taskAPI.WaitRequest{ID: "sb"}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Delete(ctx, &taskAPI.DeleteRequest{ID: "sb"}); err != nil {
				t.Fatal(err)
			}
		})
	}
}
