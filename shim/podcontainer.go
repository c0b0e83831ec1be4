package shim

// A pod's app containers join the running pod VM: each container's
// rootfs image is hot-plugged into one of the empty disk slots the
// sandbox reserved at boot, found in the guest by a serial unique to
// this plug, and unplugged when the container is deleted.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/runtime/rootfs"
	"github.com/stratovirt-go/stratovirt/runtime/translate"
	"github.com/stratovirt-go/stratovirt/vmm"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

// MaxPodContainers is how many app containers one pod VM holds at a
// time: the VM's disk limit (vmconfig.MaxDrives) less the sandbox's own
// rootfs.
const MaxPodContainers = vmconfig.MaxDrives - 1

// drivePlugger is the VM's disk hot-plug (*vmm.VM).
type drivePlugger interface {
	PlugDrive(d vmconfig.Drive) (int, error)
	UnplugDrive(id string) error
}

// plugger returns the hot-plug API of a machine built by NewVMMachine,
// or nil (the host-agent test double).
func plugger(m any) drivePlugger {
	if v, ok := m.(interface{ VMM() *vmm.VM }); ok && v.VMM() != nil {
		return v.VMM()
	}
	return nil
}

// reserveDiskSlots gives a pod sandbox's VM as many empty disk slots as
// the disk and virtio-mmio limits leave (counting the vsock device the
// machine factory adds), at most MaxPodContainers, and returns the count.
func reserveDiskSlots(vmc *vmconfig.VMConfig) int {
	probe := *vmc
	if probe.Vsock == nil {
		probe.Vsock = &vmconfig.Vsock{ID: "vsock0", GuestCID: 3, Backend: vmconfig.VsockBackendVhost}
	}
	for n := min(MaxPodContainers, vmconfig.MaxDrives-len(vmc.Drives)); n > 0; n-- {
		probe.Hotplug = &vmconfig.Hotplug{Drives: n}
		if probe.Validate() == nil {
			vmc.Hotplug = &vmconfig.Hotplug{Drives: n}
			return n
		}
	}
	vmc.Hotplug = &vmconfig.Hotplug{}
	return 0
}

// plugSerial is the virtio serial (and drive id) of the n-th disk
// plugged into this VM for container id: unique per plug, so a container
// re-created under the same id never matches its predecessor's slot.
func plugSerial(id string, n uint64) string {
	return serial(id + "#" + strconv.FormatUint(n, 10))
}

// createPodContainer adds an app container to the running pod VM.
// Called with s.mu held and s.sb set.
func (s *Service) createPodContainer(ctx context.Context, req *taskAPI.CreateTaskRequest, spec *specs.Spec, files []*agentv1.File) (_ *taskAPI.CreateTaskResponse, err error) {
	if !s.guestDNS {
		dropGuestResolvConf(spec)
	}
	if !s.podShm {
		translate.PrivateShm(spec)
	}
	c := &container{id: req.ID, bundle: req.Bundle, spec: spec, rootfs: req.Rootfs, execs: map[string]*process{}, files: files}
	if s.plug == nil && !s.hostBind {
		return nil, fmt.Errorf("container %q: the pod VM has no disk hot-plug: %w", req.ID, errdefs.ErrNotImplemented)
	}
	if !s.hostBind {
		used := 0
		for _, o := range s.containers {
			if o.driveID != "" {
				used++
			}
		}
		if used >= s.diskSlots {
			return nil, fmt.Errorf("container %q: the pod VM already holds %d app containers, its limit (%d disk slots; at most %d per pod): %w",
				req.ID, used, s.diskSlots, MaxPodContainers, errdefs.ErrResourceExhausted)
		}
	}

	mounts := make([]rootfs.Mount, len(req.Rootfs))
	for i, m := range req.Rootfs {
		mounts[i] = rootfs.Mount{Type: m.Type, Source: m.Source, Options: m.Options}
	}
	imageDir := filepath.Join(req.Bundle, "work")
	if fi, err := os.Stat(imageDir); err != nil || !fi.IsDir() {
		imageDir = s.stateDir
	}
	readOnly := spec.Root != nil && spec.Root.Readonly
	disk, err := rootfs.Prepare(ctx, mounts, rootfs.Options{
		Target: filepath.Join(req.Bundle, "rootfs"), ImageDir: imageDir, Name: "rootfs-" + req.ID,
		Format: rootfsFormat(s.cfg, readOnly), ReadOnly: readOnly, MountPoints: translate.MountPoints(spec),
	})
	if err != nil {
		return nil, fmt.Errorf("rootfs: %w", err)
	}
	c.disk = disk
	defer func() {
		if err != nil {
			disk.Remove()
		}
	}()

	if s.hostBind {
		c.hostBind = true
	} else {
		s.plugs++
		c.serial = plugSerial(req.ID, s.plugs)
		d := vmconfig.DefaultDrive(c.serial, disk.Path)
		d.ReadOnly, d.Direct, d.Serial, d.IOPS = disk.ReadOnly, disk.Direct, c.serial, s.cfg.Hypervisor.DiskIOPS
		slot, err := s.plug.PlugDrive(d)
		if err != nil {
			return nil, fmt.Errorf("hot-plug the rootfs of %q: %w", req.ID, err)
		}
		c.driveID = c.serial
		defer func() {
			if err != nil {
				unplug(ctx, s.plug, c)
			}
		}()
		log.G(ctx).Debugf("create %s: rootfs %s (%s) in disk slot %d, serial %s", req.ID, disk.Path, disk.How, slot, c.serial)
	}

	paths := stdioPaths{stdin: req.Stdin, stdout: req.Stdout, stderr: req.Stderr, terminal: req.Terminal}
	p, err := s.createInit(ctx, s.sb, c, paths)
	if err != nil {
		return nil, err
	}
	c.init = p
	s.containers[req.ID] = c
	s.send(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: req.ID, Bundle: req.Bundle, Rootfs: req.Rootfs,
		IO:  &eventstypes.TaskIO{Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, Terminal: req.Terminal},
		Pid: p.pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: p.pid}, nil
}

// unplug empties the disk slot of a pod container (after the guest
// removed the container and unmounted its rootfs); p is nil once the VM
// is gone.
func unplug(ctx context.Context, p drivePlugger, c *container) {
	if c.driveID == "" || p == nil {
		return
	}
	if err := p.UnplugDrive(c.driveID); err != nil {
		log.G(ctx).WithError(err).Warnf("unplug the rootfs of %s", c.id)
	}
	c.driveID = ""
}
