package container

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent/cgroups"
	"github.com/stratovirt-go/stratovirt/agent/holder"
	"github.com/stratovirt-go/stratovirt/agent/runc"
)

// holderReportWait bounds how long the holder may take to set itself up.
const holderReportWait = 10 * time.Second

// holderCloneFlags are the namespaces a sandbox holder can create.
var holderCloneFlags = map[specs.LinuxNamespaceType]uintptr{
	specs.IPCNamespace: unix.CLONE_NEWIPC, specs.UTSNamespace: unix.CLONE_NEWUTS, specs.PIDNamespace: unix.CLONE_NEWPID,
}

// holderPlan checks a sandbox spec for what a holder can give it and
// returns the clone flags and the holder's setup. A new mount or cgroup
// namespace is not created: the holder mounts nothing and reads no
// cgroup. The guest is the pod's network namespace.
func holderPlan(spec *specs.Spec) (uintptr, holder.Config, error) {
	var flags uintptr
	var cfg holder.Config
	if spec.Process.Terminal {
		return 0, cfg, fmt.Errorf("sandbox holder: a terminal: %w", ErrInvalid)
	}
	if spec.Linux != nil {
		for _, n := range spec.Linux.Namespaces {
			switch {
			case n.Type == specs.MountNamespace || n.Type == specs.CgroupNamespace || n.Type == specs.NetworkNamespace:
			case n.Path != "":
				return 0, cfg, fmt.Errorf("sandbox holder: joins the %s namespace %q: %w", n.Type, n.Path, ErrInvalid)
			case holderCloneFlags[n.Type] != 0:
				flags |= holderCloneFlags[n.Type]
			default:
				return 0, cfg, fmt.Errorf("sandbox holder: a new %s namespace: %w", n.Type, ErrInvalid)
			}
		}
	}
	if spec.Hostname != "" || spec.Domainname != "" {
		if flags&unix.CLONE_NEWUTS == 0 {
			return 0, cfg, fmt.Errorf("sandbox holder: a hostname without a UTS namespace of its own: %w", ErrInvalid)
		}
		valid := func(name string) bool { return name == "" || validLine(name) && len(name) <= 64 }
		if !valid(spec.Hostname) || !valid(spec.Domainname) {
			return 0, cfg, fmt.Errorf("sandbox holder: hostname %q, domain name %q: %w", spec.Hostname, spec.Domainname, ErrInvalid)
		}
		cfg.Hostname, cfg.Domainname = spec.Hostname, spec.Domainname
	}
	if spec.Linux != nil && len(spec.Linux.Sysctl) > 0 {
		cfg.Sysctls = map[string]string{}
		for k, v := range spec.Linux.Sysctl {
			p, err := SysctlPath(k)
			if err != nil {
				return 0, cfg, err
			}
			if need := sysctlNamespace(k); need != 0 && flags&need == 0 || need == 0 && !strings.HasPrefix(k, "net.") {
				// net.*: the guest is the pod's network namespace.
				return 0, cfg, fmt.Errorf("sandbox holder: sysctl %s is not in a namespace of the sandbox's own: %w", k, ErrInvalid)
			}
			if strings.ContainsAny(v, "\n\x00") {
				return 0, cfg, fmt.Errorf("sysctl %s value %q: %w", k, v, ErrInvalid)
			}
			cfg.Sysctls[p] = v
		}
	}
	cfg.OOMScoreAdj = spec.Process.OOMScoreAdj
	return flags, cfg, nil
}

// sysctlNamespace is the namespace (clone flag) whose own copy of sysctl
// name a writer changes, as runc's list has it; 0 for the others.
func sysctlNamespace(name string) uintptr {
	switch {
	case name == "kernel.msgmax" || name == "kernel.msgmnb" || name == "kernel.msgmni" || name == "kernel.sem" ||
		name == "kernel.shmall" || name == "kernel.shmmax" || name == "kernel.shmmni" || name == "kernel.shm_rmid_forced" ||
		strings.HasPrefix(name, "fs.mqueue."):
		return unix.CLONE_NEWIPC
	case name == "kernel.hostname" || name == "kernel.domainname":
		return unix.CLONE_NEWUTS
	}
	return 0
}

// startHolder starts the sandbox holder of c (the run step of
// startProcess): the agent's own binary with holder.Arg, in the new
// namespaces flags asks for and in c's cgroup, which it makes with
// resources. It returns once the holder reported its setup done, with
// the pid in the pid file.
func (m *Manager) startHolder(ctx context.Context, c *Container, flags uintptr, cfg holder.Config, resources *specs.LinuxResources, o runc.CreateOpts) (err error) {
	if err := cgroups.Make(m.cfg.CgroupRoot, c.cgroupDir); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			cgroups.Kill(ctx, c.cgroupDir)
			cgroups.Remove(c.cgroupDir)
		}
	}()
	if err := cgroups.Apply(c.cgroupDir, resources); err != nil {
		return fmt.Errorf("sandbox holder: %w: %w", err, ErrInvalid)
	}
	cg, err := unix.Open(c.cgroupDir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("sandbox holder: open cgroup %s: %w", c.cgroupDir, err)
	}
	defer unix.Close(cg)
	rd, wr, err := os.Pipe()
	if err != nil {
		return err
	}
	defer rd.Close()
	cmd := exec.Command("/proc/self/exe", cfg.Args()...)
	cmd.Args[0] = "stratovirt-sandbox"
	// One P is all a sleeping process needs: fewer threads and less memory.
	cmd.Env = []string{"GOMAXPROCS=1"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = o.Stdio.Stdin, o.Stdio.Stdout, o.Stdio.Stderr
	cmd.ExtraFiles = []*os.File{wr} // holder.ReportFD
	cmd.SysProcAttr = &unix.SysProcAttr{Cloneflags: flags, Setsid: true, UseCgroupFD: true, CgroupFD: cg}
	// Not waited on here: the reaper collects it, and startProcess
	// watches the pid it finds in the pid file.
	err = cmd.Start()
	wr.Close()
	if err != nil {
		return fmt.Errorf("sandbox holder: %w", err)
	}
	pid := cmd.Process.Pid
	cmd.Process.Release()
	rd.SetReadDeadline(time.Now().Add(holderReportWait))
	report, err := io.ReadAll(io.LimitReader(rd, 4096))
	if err != nil || len(report) > 0 {
		unix.Kill(pid, unix.SIGKILL)
		if err == nil {
			err = fmt.Errorf("%s: %w", report, ErrInvalid)
		}
		return fmt.Errorf("start sandbox holder: %w", err)
	}
	return os.WriteFile(o.PidFile, []byte(strconv.Itoa(pid)), 0o600)
}

// removeHolder kills a sandbox holder through its cgroup (the holder is
// PID 1 of a shared PID namespace, so the pod's processes die with it)
// and removes the cgroup; Remove then waits for the holder's exit.
func (m *Manager) removeHolder(ctx context.Context, c *Container) error {
	if err := cgroups.Kill(ctx, c.cgroupDir); err != nil {
		return fmt.Errorf("remove sandbox holder %s: %w", c.id, err)
	}
	return cgroups.Remove(c.cgroupDir)
}

// signalAll sends sig to every process in a holder's cgroup (`kill
// --all`).
func signalAll(dir string, sig int) error {
	pids, err := cgroups.Pids(dir)
	if err != nil {
		return err
	}
	for _, p := range pids {
		if err := unix.Kill(int(p), unix.Signal(sig)); err != nil && err != unix.ESRCH {
			return fmt.Errorf("signal pid %d in %s: %w", p, filepath.Base(dir), err)
		}
	}
	return nil
}

// createHolder creates c as the pod's sandbox held by the agent
// (CreateContainerRequest.sandbox_holder): no rootfs, no bundle, no runc.
func (m *Manager) createHolder(ctx context.Context, c *Container, spec *specs.Spec, stdio *agentv1.Stdio) (int, error) {
	t0 := time.Now()
	flags, cfg, err := holderPlan(spec)
	if err != nil {
		return 0, err
	}
	cgPath := "/stratovirt/" + c.id
	var resources *specs.LinuxResources
	if spec.Linux != nil {
		if spec.Linux.CgroupsPath != "" {
			cgPath = spec.Linux.CgroupsPath
		}
		resources = spec.Linux.Resources
	}
	c.mu.Lock()
	c.cgroupDir = cgroups.Dir(m.cfg.CgroupRoot, cgPath)
	c.sharedPIDs = flags&unix.CLONE_NEWPID == 0
	c.mu.Unlock()
	p, err := m.startProcess(ctx, c, "", false, stdio, func(o runc.CreateOpts) error {
		return m.startHolder(ctx, c, flags, cfg, resources, o)
	})
	if err != nil {
		return 0, err
	}
	if m.oomWatch != nil && m.oomWatch.add(c, c.cgroupDir) {
		m.checkOOM(c)
	}
	log.G(ctx).Debugf("sandbox %s held by pid %d, created in %v", c.id, p.pid, time.Since(t0).Round(time.Millisecond))
	return p.pid, nil
}
