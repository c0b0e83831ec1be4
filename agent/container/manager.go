// Package container runs the sandbox's containers inside the guest: it
// mounts their storage, writes their OCI bundles, drives runc through
// their life cycle, tracks their processes and exit statuses, watches for
// OOM kills and applies sandbox-wide settings.
//
// Concurrency: Manager.mu guards the container map and sandbox mounts;
// Container.mu guards one container's processes and flags. Lock order:
// Manager.mu before Container.mu; neither is held while runc runs, except
// Container.op, which serialises the runc operations of one container.
package container

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/agent/cgroups"
	"github.com/stratovirt-go/stratovirt/agent/mount"
	"github.com/stratovirt-go/stratovirt/agent/reaper"
	"github.com/stratovirt-go/stratovirt/agent/runc"
)

// Errors the server maps to status codes (returned wrapped).
var (
	ErrNotFound     = errors.New("not found")
	ErrExists       = errors.New("already exists")
	ErrInvalid      = errors.New("invalid argument")
	ErrPrecondition = errors.New("failed precondition")
)

// Config configures a Manager.
type Config struct {
	// StateDir holds bundles and mount points (e.g. /run/stratovirt).
	StateDir string
	Runc     *runc.Runc
	Reaper   *reaper.Reaper
	// SysBlock is /sys/block (tests point it elsewhere).
	SysBlock string
	// CgroupRoot is the cgroup v2 mount (/sys/fs/cgroup).
	CgroupRoot string
	// OutputGrace is how long after a process's exit its output may still
	// be open (held by surviving children) before it is cut (default 2 s).
	OutputGrace time.Duration
	// OOMPoll is the OOM check period where inotify is not available
	// (default 250 ms; oom.go).
	OOMPoll time.Duration
	// Guest enables the settings that change the whole machine: hostname,
	// sysctls and /etc/resolv.conf (off when the agent runs on a host).
	Guest bool
	// ResolvConf is written by CreateSandbox (default /etc/resolv.conf).
	ResolvConf string
}

// Manager owns the containers.
type Manager struct {
	cfg        Config
	mu         sync.Mutex
	containers map[string]*Container
	sandbox    []string // sandbox mount points, mount order
	sandboxID  string   // CreateSandbox's id: whose namespaces "sandbox:" joins
	oom        chan *agentv1.OOMEvent
	oomWatch   *oomWatch // nil: polling
	stop       chan struct{}
	stopOnce   sync.Once
}

// Container is one container.
type Container struct {
	id        string
	dir       string
	cgroupDir string
	mounts    []string // mount order
	// From the spec, for deleting it without runc: the container joins
	// a PID namespace or has none of its own; it has poststop hooks.
	sharedPIDs, poststop bool
	// holder: the pod's sandbox held by the agent (holder.go), not runc.
	holder bool

	op sync.Mutex // serialises runc operations of this container

	mu       sync.Mutex
	init     *Process
	execs    map[string]*Process
	started  bool
	oomKills uint64
	oomWD    int32 // inotify watch on memory.events; 0 or -1: none
}

// NewManager creates the state directory and starts the OOM watcher.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.SysBlock == "" {
		cfg.SysBlock = mount.SysBlock
	}
	if cfg.CgroupRoot == "" {
		cfg.CgroupRoot = cgroups.Root
	}
	if cfg.OutputGrace <= 0 {
		cfg.OutputGrace = 2 * time.Second
	}
	if cfg.OOMPoll <= 0 {
		cfg.OOMPoll = 250 * time.Millisecond
	}
	if cfg.ResolvConf == "" {
		cfg.ResolvConf = "/etc/resolv.conf"
	}
	for _, d := range []string{cfg.StateDir, cfg.Runc.Root, filepath.Join(cfg.StateDir, "containers"), filepath.Join(cfg.StateDir, "tty")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("state dir: %w", err)
		}
	}
	m := &Manager{cfg: cfg, containers: map[string]*Container{}, oom: make(chan *agentv1.OOMEvent, 256), stop: make(chan struct{})}
	w, err := newOOMWatch()
	if err != nil {
		log.L.Warnf("OOM events: no inotify (%v); polling every %v", err, cfg.OOMPoll)
		go m.pollOOM(cfg.OOMPoll)
	} else {
		m.oomWatch = w
		go w.run(m.checkOOM)
	}
	return m, nil
}

// Close stops the OOM watcher.
func (m *Manager) Close() {
	m.stopOnce.Do(func() {
		close(m.stop)
		if m.oomWatch != nil {
			m.oomWatch.close()
		}
	})
}

func (m *Manager) get(id string) (*Container, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.containers[id]
	if c == nil {
		return nil, fmt.Errorf("container %q: %w", id, ErrNotFound)
	}
	return c, nil
}

// Create mounts the container's storage, writes its bundle and runs
// `runc create`; the init process waits for Start.
func (m *Manager) Create(ctx context.Context, req *agentv1.CreateContainerRequest) (pid int, err error) {
	id := req.GetContainerId()
	if !stream.ValidID(id) {
		return 0, fmt.Errorf("container id %q: %w", id, ErrInvalid)
	}
	var spec specs.Spec
	if err := json.Unmarshal(req.GetOciSpec(), &spec); err != nil {
		return 0, fmt.Errorf("OCI spec: %v: %w", err, ErrInvalid)
	}
	if spec.Process == nil || len(spec.Process.Args) == 0 {
		return 0, fmt.Errorf("OCI spec has no process args: %w", ErrInvalid)
	}
	if req.GetSandboxHolder() {
		if req.GetRootfs() != nil || len(req.GetVolumes()) > 0 || len(req.GetFiles()) > 0 {
			return 0, fmt.Errorf("sandbox holder: it takes no rootfs, volumes or files: %w", ErrInvalid)
		}
	} else if req.GetRootfs() == nil {
		return 0, fmt.Errorf("no rootfs: %w", ErrInvalid)
	}
	c := &Container{id: id, dir: filepath.Join(m.cfg.StateDir, "containers", id), execs: map[string]*Process{}, oomWD: -1,
		holder: req.GetSandboxHolder()}
	m.mu.Lock()
	if m.containers[id] != nil {
		m.mu.Unlock()
		return 0, fmt.Errorf("container %q: %w", id, ErrExists)
	}
	m.containers[id] = c // reserved; Lookup finds no init until set
	m.mu.Unlock()
	c.op.Lock()
	defer c.op.Unlock()
	defer func() {
		if err != nil {
			m.cleanup(c)
			m.mu.Lock()
			delete(m.containers, id)
			m.mu.Unlock()
		}
	}()
	if err := os.MkdirAll(c.dir, 0o711); err != nil {
		return 0, err
	}
	files, err := writeFiles(filepath.Join(c.dir, "files"), req.GetFiles())
	if err != nil {
		return 0, err
	}
	if c.holder {
		return m.createHolder(ctx, c, &spec, req.GetStdio())
	}
	if err := m.joinSandboxNamespaces(id, &spec); err != nil {
		return 0, err
	}
	var counters guestCounters
	if log.GetLevel() >= log.DebugLevel {
		counters = readGuestCounters()
	}
	t0 := time.Now()
	rootfs := filepath.Join(c.dir, "rootfs")
	if err := m.mountStorage(ctx, c, req.GetRootfs(), rootfs); err != nil {
		return 0, fmt.Errorf("rootfs: %w", err)
	}
	tRootfs := time.Now()
	volumes := map[string]string{}
	for _, v := range req.GetVolumes() {
		if !stream.ValidID(v.GetName()) || volumes[v.GetName()] != "" {
			return 0, fmt.Errorf("volume name %q: %w", v.GetName(), ErrInvalid)
		}
		p := filepath.Join(c.dir, "volumes", v.GetName())
		if err := m.mountStorage(ctx, c, v, p); err != nil {
			return 0, fmt.Errorf("volume %s: %w", v.GetName(), err)
		}
		volumes[v.GetName()] = p
	}
	if err := m.rewriteMounts(&spec, volumes, files); err != nil {
		return 0, err
	}
	if spec.Root == nil {
		spec.Root = &specs.Root{}
	}
	spec.Root.Path = "rootfs"
	if spec.Linux == nil {
		spec.Linux = &specs.Linux{}
	}
	if spec.Linux.CgroupsPath == "" {
		spec.Linux.CgroupsPath = "/stratovirt/" + id
	}
	c.mu.Lock()
	c.cgroupDir = cgroups.Dir(m.cfg.CgroupRoot, spec.Linux.CgroupsPath)
	c.sharedPIDs = !ownPIDNamespace(spec.Linux.Namespaces)
	c.poststop = spec.Hooks != nil && len(spec.Hooks.Poststop) > 0
	c.mu.Unlock()
	b, err := json.Marshal(&spec)
	if err != nil {
		return 0, err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "config.json"), b, 0o600); err != nil {
		return 0, err
	}
	tSpec := time.Now()
	p, err := m.startProcess(ctx, c, "", spec.Process.Terminal, req.GetStdio(), func(o runc.CreateOpts) error {
		return m.cfg.Runc.Create(ctx, id, c.dir, o)
	})
	if err != nil {
		return 0, err
	}
	// runc create made the cgroup. A kill before the watch was in place
	// is caught by the check right after.
	if m.oomWatch != nil && m.oomWatch.add(c, c.cgroupDir) {
		m.checkOOM(c)
	}
	end := time.Now()
	log.G(ctx).Debugf("container %s created in %v: rootfs mounted in %v, volumes and bundle %v, runc create with stdio %v",
		id, end.Sub(t0).Round(time.Millisecond), tRootfs.Sub(t0).Round(time.Millisecond),
		tSpec.Sub(tRootfs).Round(time.Millisecond), end.Sub(tSpec).Round(time.Millisecond))
	if counters != nil {
		log.G(ctx).Debugf("container %s create moved: %s", id, counters.diff(readGuestCounters()))
	}
	return p.pid, nil
}

func (m *Manager) mountStorage(ctx context.Context, c *Container, s *agentv1.Storage, target string) error {
	if err := mount.Mount(ctx, m.cfg.SysBlock, s, target); err != nil {
		return err
	}
	c.mounts = append(c.mounts, target)
	return nil
}

// rewriteMounts resolves "volume:<name>", "file:<name>" and
// "sandbox:<name>" sources.
func (m *Manager) rewriteMounts(spec *specs.Spec, volumes, files map[string]string) error {
	for i := range spec.Mounts {
		src := spec.Mounts[i].Source
		if name, ok := strings.CutPrefix(src, "file:"); ok {
			p, ok := files[name]
			if !ok {
				return fmt.Errorf("mount %s: no file %q: %w", spec.Mounts[i].Destination, name, ErrInvalid)
			}
			spec.Mounts[i].Source = p
		} else if name, ok := strings.CutPrefix(src, "volume:"); ok {
			p, ok := volumes[name]
			if !ok {
				return fmt.Errorf("mount %s: no volume %q: %w", spec.Mounts[i].Destination, name, ErrInvalid)
			}
			spec.Mounts[i].Source = p
		} else if name, ok := strings.CutPrefix(src, "sandbox:"); ok {
			p := filepath.Join(m.cfg.StateDir, "sandbox", name)
			m.mu.Lock()
			found := false
			for _, s := range m.sandbox {
				found = found || s == p
			}
			m.mu.Unlock()
			if !stream.ValidID(name) || !found {
				return fmt.Errorf("mount %s: no sandbox storage %q: %w", spec.Mounts[i].Destination, name, ErrInvalid)
			}
			spec.Mounts[i].Source = p
		}
	}
	return nil
}

// Start starts the container's init.
func (m *Manager) Start(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	init, started := c.init, c.started
	c.mu.Unlock()
	if init == nil || started {
		return fmt.Errorf("container %q is not in the created state: %w", id, ErrPrecondition)
	}
	// A holder runs from its create on; it has nothing to start.
	if !c.holder {
		if err := m.cfg.Runc.Start(ctx, id, init.done); err != nil {
			return err
		}
	}
	c.mu.Lock()
	c.started = true
	c.mu.Unlock()
	return nil
}

// Pause freezes the container.
func (m *Manager) Pause(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	if c.holder {
		return cgroups.Freeze(ctx, c.cgroupDir, true)
	}
	return m.cfg.Runc.Pause(ctx, id)
}

// Resume thaws the container.
func (m *Manager) Resume(ctx context.Context, id string) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	if c.holder {
		return cgroups.Freeze(ctx, c.cgroupDir, false)
	}
	return m.cfg.Runc.Resume(ctx, id)
}

// Update applies new OCI linux.resources (JSON).
func (m *Manager) Update(ctx context.Context, id string, resources []byte) error {
	var r specs.LinuxResources
	if err := json.Unmarshal(resources, &r); err != nil {
		return fmt.Errorf("resources: %v: %w", err, ErrInvalid)
	}
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	if c.holder {
		if err := cgroups.Apply(c.cgroupDir, &r); err != nil {
			return fmt.Errorf("update sandbox %s: %w: %w", id, err, ErrInvalid)
		}
		return nil
	}
	return m.cfg.Runc.Update(ctx, id, resources)
}

// Stats reads the container's cgroup and network counters.
func (m *Manager) Stats(id string) (*agentv1.StatsContainerResponse, error) {
	c, err := m.get(id)
	if err != nil {
		return nil, err
	}
	pid := 0
	c.mu.Lock()
	if c.init != nil && !c.init.exited() {
		pid = c.init.pid
	}
	dir := c.cgroupDir
	c.mu.Unlock()
	s, err := cgroups.Stats(dir, pid)
	if err != nil {
		return nil, err
	}
	s.TimestampUnixNano = time.Now().UnixNano()
	return s, nil
}

// Pids lists the processes in the container's cgroup.
func (m *Manager) Pids(ctx context.Context, id string) ([]uint32, error) {
	c, err := m.get(id)
	if err != nil {
		return nil, err
	}
	if c.holder {
		return cgroups.Pids(c.cgroupDir)
	}
	pids, err := m.cfg.Runc.Ps(ctx, id)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, 0, len(pids))
	for _, p := range pids {
		out = append(out, uint32(p))
	}
	return out, nil
}

// Remove deletes a stopped container (force: kills it first), closes its
// streams and unmounts its storage.
func (m *Manager) Remove(ctx context.Context, id string, force bool) error {
	c, err := m.get(id)
	if err != nil {
		return err
	}
	c.op.Lock()
	defer c.op.Unlock()
	c.mu.Lock()
	init := c.init
	c.mu.Unlock()
	if init != nil && !init.exited() {
		if !force {
			return fmt.Errorf("container %q is running: %w", id, ErrPrecondition)
		}
	}
	if c.holder {
		err = m.removeHolder(ctx, c)
	} else if init != nil && init.exited() {
		c.mu.Lock()
		stopped := runc.Stopped{CgroupDir: c.cgroupDir, SharedPIDs: c.sharedPIDs}
		hooks := c.poststop
		c.mu.Unlock()
		err = m.cfg.Runc.DeleteStopped(ctx, id, stopped, hooks)
	} else {
		err = m.cfg.Runc.Delete(ctx, id, force)
	}
	if err != nil && !runc.IsNotExist(err) {
		return err
	}
	if init != nil {
		select {
		case <-init.done:
		case <-time.After(10 * time.Second):
			log.G(ctx).Warnf("container %s: init did not exit after delete", id)
		}
	}
	m.mu.Lock()
	delete(m.containers, id)
	m.mu.Unlock()
	return m.cleanup(c)
}

// ownPIDNamespace reports whether a spec gives the container a new PID
// namespace of its own (rather than joining one by path, or sharing the
// agent's).
func ownPIDNamespace(nss []specs.LinuxNamespace) bool {
	for _, ns := range nss {
		if ns.Type == specs.PIDNamespace {
			return ns.Path == ""
		}
	}
	return false
}

// cleanup releases a container's OOM watch, its processes' streams and
// its mounts.
func (m *Manager) cleanup(c *Container) error {
	if m.oomWatch != nil {
		m.oomWatch.remove(c)
	}
	c.mu.Lock()
	procs := []*Process{c.init}
	for _, p := range c.execs {
		procs = append(procs, p)
	}
	c.mu.Unlock()
	for _, p := range procs {
		if p != nil {
			p.io.Close()
		}
	}
	var first error
	for i := len(c.mounts) - 1; i >= 0; i-- {
		if err := mount.Unmount(c.mounts[i]); err != nil && first == nil {
			first = err
		}
	}
	if first == nil {
		os.RemoveAll(c.dir)
	}
	return first
}

// RemoveAll force-removes every container (DestroySandbox, shutdown).
func (m *Manager) RemoveAll(ctx context.Context) error {
	m.mu.Lock()
	ids := make([]string, 0, len(m.containers))
	for id := range m.containers {
		ids = append(ids, id)
	}
	m.mu.Unlock()
	var first error
	for _, id := range ids {
		if err := m.Remove(ctx, id, true); err != nil && first == nil {
			first = err
		}
	}
	return first
}
