package shim

// A pod's app containers join the running pod VM: each container's
// rootfs image is hot-plugged into one of the empty disk slots the
// sandbox reserved at boot, found in the guest by a serial unique to
// this plug, and unplugged when the container is deleted.

import (
	"context"
	"fmt"
	"strconv"
	"time"

	eventstypes "github.com/containerd/containerd/api/events"
	taskAPI "github.com/containerd/containerd/api/runtime/task/v3"
	"github.com/containerd/containerd/v2/core/runtime"
	"github.com/containerd/errdefs"
	"github.com/containerd/log"

	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
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

// podPlan is what createPodContainer needs of the pod VM, read under
// Service.mu when the container is registered.
type podPlan struct {
	sb                         *sandbox.Sandbox
	cfg                        *shimconfig.Config
	plug                       drivePlugger
	stateDir                   string
	hostBind, guestDNS, podShm bool
}

// reservePodContainer takes a disk slot of the running pod VM for c (and
// its unique serial). Called with s.mu held and s.sb set.
func (s *Service) reservePodContainer(c *container) (podPlan, error) {
	pod := podPlan{sb: s.sb, cfg: s.cfg, plug: s.plug, stateDir: s.stateDir, hostBind: s.hostBind, guestDNS: s.guestDNS, podShm: s.podShm}
	if s.plug == nil && !s.hostBind {
		return pod, fmt.Errorf("container %q: the pod VM has no disk hot-plug: %w", c.id, errdefs.ErrNotImplemented)
	}
	if s.hostBind {
		return pod, nil
	}
	used := 0
	for _, o := range s.containers {
		if o.slot {
			used++
		}
	}
	if used >= s.diskSlots {
		return pod, fmt.Errorf("container %q: the pod VM already holds %d app containers, its limit (%d disk slots; at most %d per pod): %w",
			c.id, used, s.diskSlots, MaxPodContainers, errdefs.ErrResourceExhausted)
	}
	s.plugs++
	c.serial = plugSerial(c.id, s.plugs)
	c.slot = true
	return pod, nil
}

// createPodContainer adds an app container to the running pod VM: builds
// its rootfs image, hot-plugs it and creates the container in the guest.
// c is registered (creating) and holds its disk slot; runs without s.mu.
func (s *Service) createPodContainer(ctx context.Context, req *taskAPI.CreateTaskRequest, c *container, pod podPlan) (_ *taskAPI.CreateTaskResponse, err error) {
	spec := c.spec
	if !pod.guestDNS {
		dropGuestResolvConf(spec)
	}
	if !pod.podShm {
		translate.PrivateShm(spec)
	}

	t0 := time.Now()
	disk, err := prepareRootfs(ctx, pod.cfg, req, spec, pod.stateDir)
	if err != nil {
		return nil, err
	}
	c.disk = disk
	defer func() {
		if err != nil {
			disk.Remove()
		}
	}()

	if pod.hostBind {
		c.hostBind = true
	} else {
		d := vmconfig.DefaultDrive(c.serial, disk.Path)
		d.ReadOnly, d.Direct, d.Serial, d.IOPS, d.Backing = disk.ReadOnly, disk.Direct, c.serial, pod.cfg.Hypervisor.DiskIOPS, disk.Backing
		slot, err := pod.plug.PlugDrive(d)
		if err != nil {
			return nil, fmt.Errorf("hot-plug the rootfs of %q: %w", req.ID, err)
		}
		c.driveID = c.serial
		defer func() {
			if err != nil {
				unplug(ctx, pod.plug, c)
			}
		}()
		log.G(ctx).Debugf("create %s: rootfs %s (%s) in disk slot %d, serial %s", req.ID, disk.Path, disk.How, slot, c.serial)
	}

	tInit := time.Now()
	if err := s.createInit(ctx, pod.sb, c); err != nil {
		return nil, err
	}
	log.G(ctx).Infof("create %s in the pod: rootfs %s and hot-plug in %v, container %v",
		req.ID, disk.How, tInit.Sub(t0).Round(time.Millisecond), time.Since(tInit).Round(time.Millisecond))
	s.send(runtime.TaskCreateEventTopic, &eventstypes.TaskCreate{
		ContainerID: req.ID, Bundle: req.Bundle, Rootfs: req.Rootfs,
		IO:  &eventstypes.TaskIO{Stdin: req.Stdin, Stdout: req.Stdout, Stderr: req.Stderr, Terminal: req.Terminal},
		Pid: c.init.pid,
	})
	return &taskAPI.CreateTaskResponse{Pid: c.init.pid}, nil
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
