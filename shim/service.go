// Package shim is containerd-shim-stratovirt-v2: the pkg/shim manager
// (start, delete, -info, with a plain-address start for containerd 1.6)
// and the TTRPC task service (task API v3, and v2 for older containerd)
// that runs each container in a microVM through runtime/sandbox. Errors
// leave the service through errgrpc, here and nowhere else.
//
// Concurrency: Service.mu guards the container table and the sandbox and
// is only ever held briefly: Create registers the container under it (in
// the "creating" state, which State and Wait answer at once and other
// calls wait out), boots the VM, builds the rootfs and talks to the agent
// without it, and finishes under it again. Each process has its own lock
// for its state. One goroutine per started process waits for its exit;
// one goroutine publishes events in order.
package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/api/types"
	"github.com/containerd/containerd/api/types/task"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/containerd/v2/pkg/protobuf"
	"github.com/containerd/containerd/v2/pkg/shutdown"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	"github.com/stratovirt-go/stratovirt/runtime/network"
	"github.com/stratovirt-go/stratovirt/runtime/oci"
	"github.com/stratovirt-go/stratovirt/runtime/rootfs"
	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
	"github.com/stratovirt-go/stratovirt/runtime/translate"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

// MachineFactory builds the VM for a sandbox: NewVMMachine in the shim,
// a host agent in tests. stateDir is private to this VM.
type MachineFactory func(ctx context.Context, cfg *shimconfig.Config, vmc *vmconfig.VMConfig, stateDir string) (sandbox.Machine, error)

// Service is the task service of one shim (one VM).
type Service struct {
	ctx        context.Context
	events     *eventQueue
	sd         shutdown.Service
	newMachine MachineFactory
	namespace  string

	mu         sync.Mutex
	cfg        *shimconfig.Config
	sb         *sandbox.Sandbox
	booting    bool // a Create is booting the VM (sb is still nil)
	stopped    bool // the shim is shutting down: no new VM
	vmOwner    string
	stateDir   string
	cgroup     *hostCgroup
	containers map[string]*container
	net        *network.Pod // taps of the pod network (network.go)
	guestDNS   bool         // the guest has the pod's resolv.conf
	plug       drivePlugger // disk hot-plug of the VM (podcontainer.go); nil without one
	diskSlots  int          // empty disk slots reserved for pod containers
	plugs      uint64       // disks plugged so far (unique serials)
	hostBind   bool         // the machine sees the host's rootfs (test double)
	podShm     bool         // the guest has the pod's shared /dev/shm (translate.SandboxShm)
}

type container struct {
	id, bundle string
	spec       *specs.Spec
	rootfs     []*types.Mount // for the TaskCreate event
	disk       *rootfs.Disk
	init       *process
	execs      map[string]*process
	hostBind   bool
	holder     bool            // a pod's sandbox held by the guest agent (no rootfs, no runc)
	serial     string          // rootfs serial of a hot-plugged pod container ("": serial(id))
	driveID    string          // its drive in the VM while plugged
	files      []*agentv1.File // host files copied into the guest (/etc/hosts, /etc/hostname)
	slot       bool            // holds one of the pod VM's disk slots (set under Service.mu)

	// ready is closed when Create has finished, either way; createErr
	// (set before) says why it failed. Until then only id, bundle, spec,
	// rootfs and init's pid, paths and state may be read by others.
	ready     chan struct{}
	createErr error
}

// waitReady waits until c's Create has finished.
func (c *container) waitReady(ctx context.Context) error {
	select {
	case <-c.ready:
	case <-ctx.Done():
		return fmt.Errorf("container %q is still being created: %w", c.id, ctx.Err())
	}
	if c.createErr != nil {
		return fmt.Errorf("container %q: its create failed: %w", c.id, errdefs.ErrNotFound)
	}
	return nil
}

// creating reports whether c's Create is still in progress.
func (c *container) creating() bool {
	select {
	case <-c.ready:
		return false
	default:
		return true
	}
}

type process struct {
	cid, eid string
	pid      uint32 // reported to containerd: the shim's (VMM's) pid
	guestPid uint32
	paths    stdioPaths
	spec     []byte // exec: OCI process JSON
	io       *processIO

	mu         sync.Mutex
	status     task.Status
	exitStatus uint32
	exitedAt   time.Time
	exited     chan struct{}
}

func (p *process) state() (task.Status, uint32, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.status, p.exitStatus, p.exitedAt
}

// NewService returns the task service; pub may be nil (tests).
func NewService(ctx context.Context, pub publisherFunc, sd shutdown.Service, ns string, f MachineFactory) *Service {
	s := &Service{
		ctx: ctx, sd: sd, newMachine: f, namespace: ns,
		containers: map[string]*container{},
	}
	s.events = newEventQueue(ctx, pub)
	if sd != nil {
		sd.RegisterCallback(func(context.Context) error {
			s.mu.Lock()
			s.stopped = true
			s.mu.Unlock()
			s.stopVM()
			s.events.close(5 * time.Second)
			return nil
		})
	}
	return s
}

func (s *Service) send(topic string, ev any) { s.events.send(topic, ev) }

// lookup returns a container, even one still being created.
func (s *Service) lookup(id string) (*container, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.containers[id]
	if !ok {
		return nil, fmt.Errorf("container %q: %w", id, errdefs.ErrNotFound)
	}
	return c, nil
}

// get returns a container once its Create has finished (waiting for it
// within ctx).
func (s *Service) get(ctx context.Context, id string) (*container, error) {
	c, err := s.lookup(id)
	if err != nil {
		return nil, err
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// lookupProcess returns a process without waiting for its container's
// Create: for State and Wait, which only read the init's state.
func (s *Service) lookupProcess(id, eid string) (*container, *process, error) {
	c, err := s.lookup(id)
	if err != nil {
		return nil, nil, err
	}
	return s.execOf(c, eid)
}

// getProcess returns a process once its container's Create has finished.
func (s *Service) getProcess(ctx context.Context, id, eid string) (*container, *process, error) {
	c, err := s.get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	return s.execOf(c, eid)
}

func (s *Service) execOf(c *container, eid string) (*container, *process, error) {
	if eid == "" {
		return c, c.init, nil
	}
	id := c.id
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := c.execs[eid]
	if !ok {
		return nil, nil, fmt.Errorf("process %q of container %q: %w", eid, id, errdefs.ErrNotFound)
	}
	return c, p, nil
}

func (s *Service) sandbox() (*sandbox.Sandbox, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sb == nil {
		return nil, fmt.Errorf("no VM: %w", errdefs.ErrFailedPrecondition)
	}
	return s.sb, nil
}

// serial names a container's rootfs disk inside the guest (virtio serial,
// at most 20 bytes).
func serial(id string) string {
	h := sha256.Sum256([]byte(id))
	return "r" + hex.EncodeToString(h[:])[:19]
}

// loadConfig reads the configuration named by the runtime options.
func loadConfig(req *taskAPI.CreateTaskRequest) (*shimconfig.Config, error) {
	path, err := configPathFromOptions(req.Options)
	if err != nil {
		return nil, err
	}
	return shimconfig.Load(shimconfig.Path(path))
}

// rootfsFormat resolves "auto": erofs is read-only, so only a read-only
// root can use it; ext4 otherwise.
func rootfsFormat(cfg *shimconfig.Config, readOnly bool) string {
	switch cfg.Runtime.RootfsFormat {
	case shimconfig.FormatExt4:
		return rootfs.Ext4
	case shimconfig.FormatErofs:
		return rootfs.Erofs
	}
	if readOnly {
		if _, err := exec.LookPath("mkfs.erofs"); err == nil {
			return rootfs.Erofs
		}
	}
	return rootfs.Ext4
}

// Create boots the VM (for a standalone container or a pod sandbox) and
// creates the container in it. The container is registered first, in the
// creating state; the slow work (rootfs image, VM boot, agent calls,
// hot-plug) runs without Service.mu so that State, Pids, Wait and the
// other containers of a pod are answered meanwhile.
func (s *Service) Create(ctx context.Context, req *taskAPI.CreateTaskRequest) (_ *taskAPI.CreateTaskResponse, err error) {
	if req.Checkpoint != "" || req.ParentCheckpoint != "" {
		return nil, fmt.Errorf("checkpoint/restore: %w", errdefs.ErrNotImplemented)
	}
	spec, err := oci.Load(req.Bundle)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	typ, _ := oci.TypeOf(spec)
	criFiles := translate.RewriteCRIMounts(spec)
	netSysctls := translate.TakeNetSysctls(spec)
	gfiles, err := guestFiles(criFiles)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	if typ == oci.PodSandbox {
		dropGuestResolvConf(spec) // the pause container only carries it for the runtime
	}

	paths := stdioPaths{stdin: req.Stdin, stdout: req.Stdout, stderr: req.Stderr, terminal: req.Terminal}
	c := &container{id: req.ID, bundle: req.Bundle, spec: spec, rootfs: req.Rootfs, execs: map[string]*process{},
		files: gfiles, ready: make(chan struct{})}
	c.init = &process{cid: req.ID, pid: uint32(os.Getpid()), paths: paths, status: task.Status_CREATED, exited: make(chan struct{})}

	s.mu.Lock()
	if _, ok := s.containers[req.ID]; ok {
		s.mu.Unlock()
		return nil, fmt.Errorf("container %q: %w", req.ID, errdefs.ErrAlreadyExists)
	}
	if s.sb != nil || s.booting {
		if typ != oci.PodContainer {
			s.mu.Unlock()
			return nil, fmt.Errorf("this shim's VM already runs %q; a %s container needs its own VM: %w", s.vmOwner, typ, errdefs.ErrFailedPrecondition)
		}
		if s.sb == nil {
			s.mu.Unlock()
			return nil, fmt.Errorf("pod container %q: the pod's sandbox %q is still being created: %w", req.ID, s.vmOwner, errdefs.ErrFailedPrecondition)
		}
		var pod podPlan
		if pod, err = s.reservePodContainer(c); err != nil {
			s.mu.Unlock()
			return nil, err
		}
		s.containers[req.ID] = c
		s.mu.Unlock()
		defer func() { s.finishCreate(c, err) }()
		return s.createPodContainer(ctx, req, c, pod)
	}
	if typ == oci.PodContainer {
		s.mu.Unlock()
		return nil, fmt.Errorf("pod container %q arrived before its sandbox: %w", req.ID, errdefs.ErrFailedPrecondition)
	}
	s.booting, s.vmOwner = true, req.ID
	s.containers[req.ID] = c
	s.mu.Unlock()
	defer func() { s.finishCreate(c, err) }()

	cfg, err := loadConfig(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	if err := log.SetLevel(cfg.Runtime.LogLevel); err != nil {
		log.G(ctx).WithError(err).Warn("log level")
	}
	t0 := time.Now()

	stateDir := filepath.Join(cfg.Runtime.WorkDir, s.namespace, req.ID)
	if err := os.MkdirAll(stateDir, 0o700); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	defer func() {
		if err != nil {
			os.RemoveAll(stateDir)
		}
	}()
	if err := os.WriteFile(filepath.Join(req.Bundle, stateFile), []byte(stateDir), 0o600); err != nil {
		return nil, fmt.Errorf("bundle: %w", err)
	}

	// A pod's sandbox held by the agent needs no disk: the pause image
	// would only hold the pause binary.
	c.holder = typ == oci.PodSandbox && !cfg.Runtime.SandboxPauseImage
	var drives []translate.Drive
	how := "none (sandbox held by the agent)"
	if !c.holder {
		disk, err := prepareRootfs(ctx, cfg, req, spec, stateDir)
		if err != nil {
			return nil, err
		}
		c.disk, how = disk, disk.How
		defer func() {
			if err != nil {
				disk.Remove()
			}
		}()
		drives = []translate.Drive{{ID: "rootfs", Serial: serial(req.ID), Path: disk.Path, ReadOnly: disk.ReadOnly, Direct: disk.Direct,
			Backing: disk.Backing}}
	}
	tDisk := time.Since(t0)

	vmc, err := translate.VMConfig(cfg, spec, "stratovirt-"+req.ID, drives)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	var cg *hostCgroup
	if cfg.Runtime.SandboxCgroupOnly && spec.Linux != nil && spec.Linux.CgroupsPath != "" {
		var cerr error
		if cg, cerr = joinCgroup(spec.Linux.CgroupsPath, stateDir); cerr != nil {
			log.G(ctx).WithError(cerr).Warnf("host cgroup %s: staying in the shim's cgroup", spec.Linux.CgroupsPath)
		}
		defer func() {
			if err != nil && cg != nil {
				cg.leave()
			}
		}()
	}
	tNet := time.Now()
	pn, err := attachNetwork(ctx, spec, vmc, cfg.Hypervisor.NetBackend)
	if err != nil {
		return nil, err
	}
	diskSlots := 0
	if typ == oci.PodSandbox {
		diskSlots = reserveDiskSlots(vmc)
	}
	defer func() {
		if err != nil {
			pn.Close()
		}
	}()
	tBuild := time.Now()
	m, err := s.newMachine(s.ctx, cfg, vmc, stateDir)
	if err != nil {
		return nil, fmt.Errorf("build VM: %w", err)
	}
	tBoot := time.Now()
	boot, _ := cfg.BootTimeout()
	sb, err := sandbox.Start(s.ctx, m, boot)
	if err != nil {
		return nil, fmt.Errorf("boot VM: %w", err)
	}
	defer func() {
		if err != nil {
			err = sb.Explain(err)
			sb.Stop()
		}
	}()
	if cfg.Hypervisor.ConsoleLog || cfg.Runtime.Debug {
		go followAgentLog(s.ctx, sb, vmc.Name)
	}
	if hb, ok := m.(interface{ HostRootfs() bool }); ok && hb.HostRootfs() {
		c.hostBind = true
	}
	tGuest := time.Now()
	if err := configureGuestNetwork(ctx, sb, pn); err != nil {
		return nil, err
	}
	sbReq, guestDNS := sandboxRequest(ctx, oci.GroupID(spec.Annotations, req.ID), spec, criFiles)
	sbReq.Sysctls = netSysctls
	if criFiles.Shm {
		sbReq.Storages = append(sbReq.Storages, translate.ShmStorage())
	}
	if _, err := sb.Agent().CreateSandbox(ctx, sbReq); err != nil {
		return nil, fmt.Errorf("agent create sandbox: %w", err)
	}
	if !guestDNS {
		dropGuestResolvConf(spec)
	}

	tInit := time.Now()
	if err := s.createInit(ctx, sb, c); err != nil {
		return nil, err
	}
	tDone := time.Now()
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return nil, fmt.Errorf("create %s: the shim is shutting down: %w", req.ID, errdefs.ErrUnavailable)
	}
	s.cfg, s.sb, s.stateDir, s.cgroup = cfg, sb, stateDir, cg
	s.net, s.guestDNS = pn, guestDNS
	s.plug, s.diskSlots, s.hostBind = plugger(m), diskSlots, c.hostBind
	s.podShm = criFiles.Shm
	s.booting = false
	s.mu.Unlock()
	go s.watchOOM(sb)
	ms := func(a, b time.Time) time.Duration { return b.Sub(a).Round(time.Millisecond) }
	log.G(ctx).Infof("create %s: rootfs %s in %v, VM with agent in %v, total %v (host network %v, VM build %v, boot %v, guest network and sandbox %v, container %v)",
		req.ID, how, tDisk.Round(time.Millisecond), sb.BootTime.Round(time.Millisecond), ms(t0, tDone),
		ms(tNet, tBuild), ms(tBuild, tBoot), ms(tBoot, tGuest), ms(tGuest, tInit), ms(tInit, tDone))

	s.send(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: req.ID, Bundle: req.Bundle, Rootfs: req.Rootfs,
		IO:  &eventstypes.TaskIO{Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, Terminal: req.Terminal},
		Pid: c.init.pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: c.init.pid}, nil
}

// prepareRootfs makes the disk of a container's rootfs (the snapshot
// mounts containerd passed, or the bundle's rootfs directory).
func prepareRootfs(ctx context.Context, cfg *shimconfig.Config, req *taskAPI.CreateTaskRequest, spec *specs.Spec, stateDir string) (*rootfs.Disk, error) {
	mounts := make([]rootfs.Mount, len(req.Rootfs))
	for i, m := range req.Rootfs {
		mounts[i] = rootfs.Mount{Type: m.Type, Source: m.Source, Options: m.Options}
	}
	imageDir := filepath.Join(req.Bundle, "work")
	if fi, err := os.Stat(imageDir); err != nil || !fi.IsDir() {
		imageDir = stateDir
	}
	readOnly := spec.Root != nil && spec.Root.Readonly
	disk, err := rootfs.Prepare(ctx, mounts, rootfs.Options{
		Target: filepath.Join(req.Bundle, "rootfs"), ImageDir: imageDir, Name: "rootfs-" + req.ID,
		Format: rootfsFormat(cfg, readOnly), ReadOnly: readOnly, MountPoints: translate.MountPoints(spec),
		CacheDir: cfg.Runtime.RootfsCacheDir,
	})
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	return disk, nil
}

// finishCreate ends the creating state of c: on success it is ready for
// every call; on failure it leaves the table (and a VM boot it owned is
// no longer under way), and a Wait on its init returns exit 255.
func (s *Service) finishCreate(c *container, err error) {
	s.mu.Lock()
	if err != nil {
		c.createErr = err
		if s.containers[c.id] == c {
			delete(s.containers, c.id)
		}
		if s.booting && s.vmOwner == c.id {
			s.booting, s.vmOwner = false, ""
		}
	}
	close(c.ready)
	s.mu.Unlock()
	if err != nil {
		p := c.init
		p.mu.Lock()
		p.status, p.exitStatus, p.exitedAt = task.Status_STOPPED, 255, time.Now()
		close(p.exited)
		p.mu.Unlock()
	}
}

// createInit creates the container's init process (c.init) in the guest
// and connects its stdio; c is still being created.
func (s *Service) createInit(ctx context.Context, sb *sandbox.Sandbox, c *container) (err error) {
	paths := c.init.paths
	stdio := translate.StdioOf(paths.stdin, paths.stdout, paths.stderr, paths.terminal)
	var r *agentv1.CreateContainerRequest
	if c.holder {
		r, err = translate.CreateSandboxHolder(c.id, c.spec, stdio)
	} else {
		ser := c.serial
		if ser == "" {
			ser = serial(c.id)
		}
		r, err = translate.CreateContainer(c.id, c.spec, ser, c.disk.FSType, c.disk.ReadOnly, stdio)
	}
	if err != nil {
		return fmt.Errorf("%w: %w", errdefs.ErrInvalidArgument, err)
	}
	if c.hostBind && !c.holder {
		r.Rootfs = &agentv1.Storage{Name: "rootfs", Source: filepath.Join(c.bundle, "rootfs"), Fstype: "bind"}
	}
	r.Files = c.files
	pio, err := openHostIO(ctx, c.id, s.namespace, paths)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			pio.closeHost()
		}
	}()
	var resp *agentv1.CreateContainerResponse
	conns, err, serr := s.streamsDuring(ctx, sb, c.id, "", stdio, func() (err error) {
		resp, err = sb.Agent().CreateContainer(ctx, r)
		return err
	})
	if err != nil {
		return fmt.Errorf("agent create container: %w", err)
	}
	if serr != nil {
		sb.Agent().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: c.id, Force: true})
		return serr
	}
	pio.attach(conns[0], conns[1], conns[2])
	c.init.guestPid, c.init.io = resp.Pid, pio
	return nil
}

// streamsDuring opens the streams of a process while call (the agent
// RPC that creates the process) runs: the agent holds a stream until its
// process exists, so the handshakes overlap the guest's work instead of
// following it. When call fails the streams are closed and its error is
// returned; otherwise serr is the streams' error.
func (s *Service) streamsDuring(ctx context.Context, sb *sandbox.Sandbox, cid, eid string, stdio *agentv1.Stdio, call func() error) (conns [3]netConn, err, serr error) {
	type streams struct {
		c   [3]netConn
		err error
	}
	ch := make(chan streams, 1)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		c, err := s.openStreams(sctx, sb, cid, eid, stdio)
		ch <- streams{c, err}
	}()
	if err := call(); err != nil {
		cancel()
		if st := <-ch; st.err == nil {
			for _, c := range st.c {
				if c != nil {
					c.Close()
				}
			}
		}
		return conns, err, nil
	}
	st := <-ch
	return st.c, nil, st.err
}

// openStreams dials the requested streams of a process concurrently.
func (s *Service) openStreams(ctx context.Context, sb *sandbox.Sandbox, cid, eid string, stdio *agentv1.Stdio) ([3]netConn, error) {
	var conns [3]netConn
	want := [3]bool{stdio.Stdin, stdio.Stdout, stdio.Stderr}
	errs := make([]error, 3)
	var wg sync.WaitGroup
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for i := range 3 {
		if !want[i] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			conns[i], errs[i] = sb.OpenStream(dctx, stream.Kind(i), cid, eid)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return conns, err
	}
	return conns, nil
}

// Start starts the init process or an exec process.
func (s *Service) Start(ctx context.Context, req *taskAPI.StartRequest) (*taskAPI.StartResponse, error) {
	c, p, err := s.getProcess(ctx, req.ID, req.ExecID)
	if err != nil {
		return nil, err
	}
	sb, err := s.sandbox()
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	if p.status != task.Status_CREATED {
		p.mu.Unlock()
		return nil, fmt.Errorf("process %s/%s is %v: %w", req.ID, req.ExecID, p.status, errdefs.ErrFailedPrecondition)
	}
	p.mu.Unlock()
	if req.ExecID == "" {
		if _, err := sb.Agent().StartContainer(ctx, &agentv1.StartContainerRequest{ContainerId: c.id}); err != nil {
			return nil, fmt.Errorf("agent start container: %w", err)
		}
		p.mu.Lock()
		p.status = task.Status_RUNNING
		p.mu.Unlock()
		s.send(runtime.TaskStartEventTopic, &eventstypes.TaskStart{ContainerID: c.id, Pid: p.pid})
		go s.wait(sb, c, p)
		return &taskAPI.StartResponse{Pid: p.pid}, nil
	}

	stdio := translate.StdioOf(p.paths.stdin, p.paths.stdout, p.paths.stderr, p.paths.terminal)
	var resp *agentv1.ExecProcessResponse
	conns, err, serr := s.streamsDuring(ctx, sb, c.id, p.eid, stdio, func() (err error) {
		resp, err = sb.Agent().ExecProcess(ctx, &agentv1.ExecProcessRequest{ContainerId: c.id, ExecId: p.eid, Process: p.spec, Stdio: stdio})
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("agent exec: %w", err)
	}
	if serr != nil {
		sb.Agent().SignalProcess(ctx, &agentv1.SignalProcessRequest{ContainerId: c.id, ExecId: p.eid, Signal: 9})
		return nil, serr
	}
	p.io.attach(conns[0], conns[1], conns[2])
	p.mu.Lock()
	p.status = task.Status_RUNNING
	p.guestPid = resp.Pid
	p.mu.Unlock()
	s.send(runtime.TaskExecStartedEventTopic, &eventstypes.TaskExecStarted{ContainerID: c.id, ExecID: p.eid, Pid: p.pid})
	go s.wait(sb, c, p)
	return &taskAPI.StartResponse{Pid: p.pid}, nil
}

// wait waits for a process to exit in the guest, then for its output to
// reach containerd, then (for an init) for the container's execs, and
// only then reports the exit.
func (s *Service) wait(sb *sandbox.Sandbox, c *container, p *process) {
	status := uint32(255)
	at := time.Now()
	ioWait := 10 * time.Second
	r, err := sb.Agent().WaitProcess(s.ctx, &agentv1.WaitProcessRequest{ContainerId: c.id, ExecId: p.eid})
	if err != nil {
		// The agent is unreachable: most often the VM itself ended (guest
		// panic, agent death, reboot). No more output can come from a
		// dead VM, so do not hold the exit for the output streams.
		select {
		case <-sb.Done():
			ioWait = time.Second
			log.G(s.ctx).WithError(err).Warnf("wait %s/%s: the VM ended (%v); reporting exit 255", c.id, p.eid, vmEndReason(sb))
		case <-time.After(time.Second):
			log.G(s.ctx).WithError(err).Warnf("wait %s/%s: reporting exit 255", c.id, p.eid)
		}
	} else {
		if r.ExitStatus >= 0 && r.ExitStatus <= 255 {
			status = uint32(r.ExitStatus)
		}
		if r.ExitedAtUnixNano > 0 {
			if t := time.Unix(0, r.ExitedAtUnixNano); t.Before(time.Now().Add(time.Minute)) {
				at = t
			}
		}
	}
	if !p.io.wait(ioWait) {
		log.G(s.ctx).Warnf("%s/%s: output still open %v after exit; cutting it", c.id, p.eid, ioWait)
		p.io.closeHost()
	}
	if p.eid == "" {
		s.mu.Lock()
		var execs []*process
		for _, e := range c.execs {
			execs = append(execs, e)
		}
		s.mu.Unlock()
		deadline := time.After(10 * time.Second)
		for _, e := range execs {
			if st, _, _ := e.state(); st != task.Status_RUNNING {
				continue
			}
			select {
			case <-e.exited:
			case <-deadline:
			}
		}
	}
	p.mu.Lock()
	p.status, p.exitStatus, p.exitedAt = task.Status_STOPPED, status, at
	close(p.exited)
	p.mu.Unlock()
	id := p.eid
	if id == "" {
		id = c.id
	}
	s.send(runtime.TaskExitEventTopic, &eventstypes.TaskExit{
		ContainerID: c.id, ID: id, Pid: p.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	})
}

// vmEndReason says why a VM that has ended did.
func vmEndReason(sb *sandbox.Sandbox) string {
	if err := sb.Err(); err != nil {
		return err.Error()
	}
	return "powered off"
}

// watchOOM republishes the guest's OOM kills until the agent is gone.
func (s *Service) watchOOM(sb *sandbox.Sandbox) {
	for {
		ev, err := sb.Agent().GetOOMEvent(s.ctx, &agentv1.GetOOMEventRequest{})
		if err != nil {
			select {
			case <-sb.Done():
				return
			case <-s.ctx.Done():
				return
			case <-time.After(time.Second):
				continue
			}
		}
		if _, err := s.lookup(ev.ContainerId); err != nil {
			log.G(s.ctx).Warnf("OOM event for unknown container %q", ev.ContainerId)
			continue
		}
		s.send(runtime.TaskOOMEventTopic, &eventstypes.TaskOOM{ContainerID: ev.ContainerId})
	}
}

// Delete deletes an exited process, or the container with its VM.
func (s *Service) Delete(ctx context.Context, req *taskAPI.DeleteRequest) (*taskAPI.DeleteResponse, error) {
	c, p, err := s.getProcess(ctx, req.ID, req.ExecID)
	if err != nil {
		return nil, err
	}
	st, status, at := p.state()
	if st == task.Status_RUNNING || st == task.Status_PAUSED {
		return nil, fmt.Errorf("process %s/%s is %v: %w", req.ID, req.ExecID, st, errdefs.ErrFailedPrecondition)
	}
	if req.ExecID != "" {
		s.mu.Lock()
		delete(c.execs, req.ExecID)
		s.mu.Unlock()
		p.io.closeHost()
		if st != task.Status_CREATED {
			if sb, err := s.sandbox(); err == nil {
				if _, err := sb.Agent().DeleteProcess(ctx, &agentv1.DeleteProcessRequest{ContainerId: c.id, ExecId: req.ExecID}); err != nil {
					log.G(ctx).WithError(err).Debugf("agent delete exec %s/%s", c.id, req.ExecID)
				}
			}
		}
		return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
	}
	if st == task.Status_CREATED {
		// Never started: the exit is now.
		status, at = 255, time.Now()
		if sb, err := s.sandbox(); err == nil {
			sb.Agent().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: c.id, Force: true})
		}
	} else if sb, err := s.sandbox(); err == nil {
		select {
		case <-sb.Done():
		default:
			if _, err := sb.Agent().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: c.id, Force: true}); err != nil {
				log.G(ctx).WithError(err).Warnf("agent remove %s", c.id)
			}
		}
	}
	p.io.closeHost()
	s.mu.Lock()
	delete(s.containers, c.id)
	owner := s.vmOwner == c.id
	plug := s.plug
	s.mu.Unlock()
	unplug(ctx, plug, c)
	if owner {
		s.stopVM()
	}
	if err := c.disk.Remove(); err != nil {
		log.G(ctx).WithError(err).Warn("remove rootfs image")
	}
	if err := rootfs.Unmount(filepath.Join(c.bundle, "rootfs")); err != nil {
		log.G(ctx).WithError(err).Warn("unmount rootfs")
	}
	s.send(runtime.TaskDeleteEventTopic, &eventstypes.TaskDelete{
		ContainerID: c.id, ID: c.id, Pid: p.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at),
	})
	return &taskAPI.DeleteResponse{Pid: p.pid, ExitStatus: status, ExitedAt: protobuf.ToTimestamp(at)}, nil
}

// stopVM stops the VM and releases what the shim set up for it.
func (s *Service) stopVM() {
	s.mu.Lock()
	sb, cg, dir, pn := s.sb, s.cgroup, s.stateDir, s.net
	s.sb, s.cgroup, s.net, s.plug = nil, nil, nil, nil
	s.mu.Unlock()
	if sb != nil {
		sb.Stop()
	}
	if err := pn.Close(); err != nil {
		log.L.WithError(err).Warn("release pod network")
	}
	if cg != nil {
		cg.leave()
	}
	if dir != "" && sb != nil {
		os.RemoveAll(dir)
	}
}

// Exec records an exec process; Start runs it.
func (s *Service) Exec(ctx context.Context, req *taskAPI.ExecProcessRequest) error {
	c, err := s.get(ctx, req.ID)
	if err != nil {
		return err
	}
	if st, _, _ := c.init.state(); st != task.Status_RUNNING {
		return fmt.Errorf("container %s is %v: %w", req.ID, st, errdefs.ErrFailedPrecondition)
	}
	if req.Spec == nil {
		return fmt.Errorf("exec %s: no process spec: %w", req.ExecID, errdefs.ErrInvalidArgument)
	}
	var ps specs.Process
	if err := json.Unmarshal(req.Spec.Value, &ps); err != nil || len(ps.Args) == 0 {
		return fmt.Errorf("exec %s: process spec: %v: %w", req.ExecID, err, errdefs.ErrInvalidArgument)
	}
	ps.ApparmorProfile = ""
	js, _ := json.Marshal(&ps)
	paths := stdioPaths{stdin: req.Stdin, stdout: req.Stdout, stderr: req.Stderr, terminal: req.Terminal}
	s.mu.Lock()
	_, dup := c.execs[req.ExecID]
	s.mu.Unlock()
	if dup {
		return fmt.Errorf("exec %s: %w", req.ExecID, errdefs.ErrAlreadyExists)
	}
	pio, err := openHostIO(ctx, c.id, s.namespace, paths)
	if err != nil {
		return err
	}
	p := &process{cid: c.id, eid: req.ExecID, pid: uint32(os.Getpid()), spec: js, status: task.Status_CREATED,
		exited: make(chan struct{}), paths: paths, io: pio}
	s.mu.Lock()
	if _, dup := c.execs[req.ExecID]; dup {
		s.mu.Unlock()
		pio.closeHost()
		return fmt.Errorf("exec %s: %w", req.ExecID, errdefs.ErrAlreadyExists)
	}
	c.execs[req.ExecID] = p
	s.mu.Unlock()
	s.send(runtime.TaskExecAddedEventTopic, &eventstypes.TaskExecAdded{ContainerID: c.id, ExecID: req.ExecID})
	return nil
}
