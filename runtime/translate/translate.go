// Package translate maps an OCI spec, the runtime options and the shim
// configuration onto what the shim hands on: the VM configuration
// (vmm/config.VMConfig) and the guest agent's requests. It does no I/O
// beyond what vmm/config's validation does and owns no state.
//
// Annotations under AnnotationPrefix override [hypervisor] options by name
// (io.stratovirt.hypervisor.default_vcpus=2), only when the name matches
// the configuration's enable_annotations and, for kernel and initrd, the
// path matches valid_kernel_paths / valid_initrd_paths. Any other
// io.stratovirt. key is an error, never ignored.
package translate

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	"github.com/stratovirt-go/stratovirt/runtime/oci"
	"github.com/stratovirt-go/stratovirt/runtime/rootfs"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

// AnnotationPrefix is the documented prefix of the shim's annotations.
const AnnotationPrefix = "io.stratovirt."

// HypervisorPrefix selects [hypervisor] options.
const HypervisorPrefix = AnnotationPrefix + "hypervisor."

// BaseCmdline is what every guest kernel command line starts with: the
// agent logs to ttyS0, a panic resets the VM (through the i8042), and
// nothing probes or checks hardware a microVM lacks or that KVM already
// guarantees: no PCI (devices are virtio-mmio), one UART, the i8042 only
// as the reset line, a reliable TSC with no timer check, no crypto
// self-tests, no SMP alternatives patching on the way, and expedited RCU
// grace periods (namespace and mount set-up wait on them). Measured in
// the lab: 3.49 s to the agent against 4.11 s with the first four
// options alone (docs/performance.md). No proactive compaction either:
// kcompactd would wake every 500 ms to look for huge pages a microVM's
// guest does not use, most of an idle guest's timer interrupts. Percpu
// memory in page-sized units: the default allocator embeds the first
// chunk in 2 MiB pages and, with one vCPU, makes every unit 2 MiB, so
// each later chunk (the first container's cgroup makes one) zero-fills a
// 4 MiB map of memory cgroup owners, a pointer for every 4 bytes of its
// unit; that was 4 MiB of guest RAM per VM, for good.
const BaseCmdline = "console=ttyS0 reboot=k panic=1 quiet pci=off 8250.nr_uarts=1 " +
	"i8042.direct=1 i8042.dumbkbd=1 i8042.nopnp=1 i8042.noaux=1 " +
	"tsc=reliable no_timer_check cryptomgr.notests noreplace-smp rcupdate.rcu_expedited=1 " +
	"sysctl.vm.compaction_proactiveness=0 percpu_alloc=page"

// RootCmdline boots from the root image (Hypervisor.Image), the VM's
// first virtio-pmem device: erofs, read-only, with DAX (its pages are the
// host's page cache, never copied into guest RAM), the agent as init.
// rootwait: the pmem namespace is probed asynchronously.
const RootCmdline = "root=/dev/pmem0 rootfstype=erofs rootflags=dax=always ro rootwait init=/init"

// RootPmemID is the device id of the root image (Hypervisor.Image).
const RootPmemID = "root"

// RuncPmemID is the device id of the runc image (Hypervisor.RuncImage),
// the VM's first virtio-pmem device and so the guest's
// agentv1.RuncDevice.
const RuncPmemID = "runc"

// Drive is a disk for the VM: a block device or an image file.
type Drive struct {
	// ID is the drive id in the VM config; Serial what the guest sees in
	// /sys/block/*/serial (at most 20 bytes).
	ID, Serial string
	Path       string
	ReadOnly   bool
	// Direct opens with O_DIRECT (block devices); image files in the
	// page cache are faster without.
	Direct bool
	// Backing is the shared base image under Path, a copy-on-write
	// overlay (rootfs.Disk.Backing).
	Backing string
}

// VMConfig builds the VM for a sandbox or standalone container: the
// configured defaults, plus the CRI sandbox resources (pod sandbox) or
// the container's own limits (standalone), then allowed annotation
// overrides, capped by the configured maxima.
func VMConfig(cfg *shimconfig.Config, spec *specs.Spec, name string, drives []Drive) (*vmconfig.VMConfig, error) {
	h := cfg.Hypervisor
	if err := applyAnnotations(cfg, &h, spec.Annotations); err != nil {
		return nil, err
	}
	vcpus, memMiB := h.DefaultVCPUs, h.DefaultMemoryMiB
	typ, err := oci.TypeOf(spec)
	if err != nil {
		return nil, err
	}
	var addCPU float64
	var addMem uint64
	switch typ {
	case oci.PodSandbox:
		addCPU, addMem, err = sandboxResources(spec.Annotations)
		if err != nil {
			return nil, err
		}
	case oci.Single:
		addCPU, addMem = containerResources(spec)
	}
	vcpus += int(math.Ceil(addCPU))
	memMiB += (addMem + (1<<20 - 1)) >> 20
	maxCPU := h.MaxVCPUs
	if maxCPU == 0 {
		maxCPU = min(runtime.NumCPU(), vmconfig.MaxVCPUs)
	}
	vcpus = max(min(vcpus, maxCPU), 1)
	maxMem := h.MaxMemoryMiB
	if maxMem == 0 {
		maxMem = vmconfig.MaxMemSize >> 20
	}
	memMiB = min(memMiB, maxMem)

	c := vmconfig.Default()
	c.Name = name
	if len(c.Name) > vmconfig.MaxNameLen {
		c.Name = c.Name[:vmconfig.MaxNameLen]
	}
	c.Machine.VCPUs = vcpus
	c.Machine.MemSize = memMiB << 20
	c.Machine.DumpGuestCore = false
	c.Machine.MemMerge = h.MemMerge
	c.Boot.Kernel = h.Kernel
	c.Boot.Initrd = h.Initrd
	c.Boot.Cmdline = strings.TrimSpace(BaseCmdline + " " + h.KernelParams)
	rootImage := h.Initrd == "" && h.Image != ""
	if rootImage {
		// Before kernel_params: they may end with "-- agent flags".
		c.Boot.Cmdline = strings.TrimSpace(BaseCmdline + " " + RootCmdline + " " + h.KernelParams)
		// Shared by every VM through the host's page cache, like the
		// runc image; the first pmem device, so the guest's /dev/pmem0.
		c.Pmems = append(c.Pmems, vmconfig.Pmem{ID: RootPmemID, File: h.Image, ReadOnly: true})
	}
	c.Serial.Stdio = true
	for i := 0; i < h.IOThreads; i++ {
		c.IOThreads = append(c.IOThreads, vmconfig.IOThread{ID: "iothread" + strconv.Itoa(i)})
	}
	for i, d := range drives {
		vd := vmconfig.DefaultDrive(d.ID, d.Path)
		vd.ReadOnly, vd.Direct, vd.Serial, vd.IOPS, vd.Backing = d.ReadOnly, d.Direct, d.Serial, h.DiskIOPS, d.Backing
		if h.IOThreads > 0 {
			vd.IOThread = c.IOThreads[i%h.IOThreads].ID
		}
		c.Drives = append(c.Drives, vd)
	}
	if h.RuncImage != "" && !rootImage {
		// Shared by every VM through the host's page cache; the guest's
		// writes, if any, stay in its own pages.
		c.Pmems = append(c.Pmems, vmconfig.Pmem{ID: RuncPmemID, File: h.RuncImage, ReadOnly: true})
	}
	if h.FreePageReporting {
		c.Balloon = &vmconfig.Balloon{FreePageReporting: true}
	}
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("vm config: %w", err)
	}
	return &c, nil
}

// applyAnnotations applies io.stratovirt.hypervisor.* overrides to h.
func applyAnnotations(cfg *shimconfig.Config, h *shimconfig.Hypervisor, ann map[string]string) error {
	keys := make([]string, 0, len(ann))
	for k := range ann {
		if strings.HasPrefix(k, AnnotationPrefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	var errs []error
	for _, k := range keys {
		v := ann[k]
		name, ok := strings.CutPrefix(k, HypervisorPrefix)
		if !ok {
			errs = append(errs, fmt.Errorf("annotation %s: unknown (supported: %s<option>)", k, HypervisorPrefix))
			continue
		}
		if !cfg.AnnotationEnabled(name) {
			errs = append(errs, fmt.Errorf("annotation %s: not allowed by hypervisor.enable_annotations", k))
			continue
		}
		bad := func(what string) { errs = append(errs, fmt.Errorf("annotation %s=%q: %s", k, v, what)) }
		if opt, ok := map[string]*bool{"free_page_reporting": &h.FreePageReporting, "mem_merge": &h.MemMerge}[name]; ok {
			b, err := strconv.ParseBool(v)
			if err != nil {
				bad("not true or false")
				continue
			}
			*opt = b
			continue
		}
		switch name {
		case "default_vcpus":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > vmconfig.MaxVCPUs {
				bad("not a CPU count in [1, 254]")
				continue
			}
			h.DefaultVCPUs = n
		case "default_memory":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n < vmconfig.MinMemSize>>20 || n > vmconfig.MaxMemSize>>20 {
				bad("not a size in MiB in [256, 524288]")
				continue
			}
			h.DefaultMemoryMiB = n
		case "kernel":
			if !shimconfig.PathAllowed(v, cfg.Hypervisor.ValidKernelPaths) {
				bad("path not allowed by hypervisor.valid_kernel_paths")
				continue
			}
			h.Kernel = v
		case "initrd":
			if !shimconfig.PathAllowed(v, cfg.Hypervisor.ValidInitrdPaths) {
				bad("path not allowed by hypervisor.valid_initrd_paths")
				continue
			}
			h.Initrd = v
		case "kernel_params":
			if len(v) > 1024 || strings.ContainsAny(v, "\x00\n") {
				bad("longer than 1024 bytes or has control characters")
				continue
			}
			h.KernelParams = strings.TrimSpace(h.KernelParams + " " + v)
		case "disk_iops":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil || n > vmconfig.MaxIOPS {
				bad("not an IOPS limit in [0, 1000000]")
				continue
			}
			h.DiskIOPS = n
		case "iothreads":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > vmconfig.MaxIOThreads {
				bad("not an iothread count in [0, 8]")
				continue
			}
			h.IOThreads = n
		default:
			bad("unknown hypervisor option (default_vcpus, default_memory, kernel, initrd, kernel_params, disk_iops, iothreads, free_page_reporting, mem_merge)")
		}
	}
	return errors.Join(errs...)
}

// sandboxResources reads the CRI sandbox CPU and memory annotations:
// CPUs = quota/period (0 without a quota), memory in bytes.
func sandboxResources(ann map[string]string) (cpus float64, mem uint64, err error) {
	num := func(k string) (int64, error) {
		v, ok := ann[k]
		if !ok || v == "" {
			return 0, nil
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("annotation %s=%q: %w", k, v, err)
		}
		return n, nil
	}
	quota, err1 := num(oci.SandboxCPUQuota)
	period, err2 := num(oci.SandboxCPUPeriod)
	m, err3 := num(oci.SandboxMemory)
	if err := errors.Join(err1, err2, err3); err != nil {
		return 0, 0, err
	}
	if quota > 0 && period > 0 {
		cpus = float64(quota) / float64(period)
	}
	if m > 0 {
		mem = uint64(m)
	}
	return cpus, mem, nil
}

// containerResources reads a standalone container's CPU quota and memory
// limit from its spec.
func containerResources(spec *specs.Spec) (cpus float64, mem uint64) {
	if spec.Linux == nil || spec.Linux.Resources == nil {
		return 0, 0
	}
	r := spec.Linux.Resources
	if r.CPU != nil && r.CPU.Quota != nil && r.CPU.Period != nil && *r.CPU.Quota > 0 && *r.CPU.Period > 0 {
		cpus = float64(*r.CPU.Quota) / float64(*r.CPU.Period)
	}
	if r.Memory != nil && r.Memory.Limit != nil && *r.Memory.Limit > 0 {
		mem = uint64(*r.Memory.Limit)
	}
	return cpus, mem
}

// SandboxNamespace is the namespace path the agent resolves to the
// sandbox (pause) container's namespace of that type.
const SandboxNamespace = "sandbox:"

// podShared are the namespaces a pod container joins from its sandbox.
var podShared = map[specs.LinuxNamespaceType]bool{specs.IPCNamespace: true, specs.UTSNamespace: true, specs.PIDNamespace: true}

// MountPoints lists the paths the container's mounts need in its root
// filesystem (files for binds of files, directories otherwise), in mount
// order, leaving out those inside an earlier mount (/dev/shm in /dev):
// runc creates missing mount points, but not on a read-only image, so
// the shim creates them before packing a read-only root.
func MountPoints(spec *specs.Spec) []rootfs.MountPoint {
	var out []rootfs.MountPoint
	var done []string
	for _, m := range spec.Mounts {
		d := filepath.Clean(m.Destination)
		if !filepath.IsAbs(d) || d == "/" {
			continue
		}
		inside := false
		for _, p := range done {
			inside = inside || strings.HasPrefix(d, p+"/") || p == "/"
		}
		done = append(done, d)
		if inside {
			continue
		}
		_, guestFile := guestBind(m)
		out = append(out, rootfs.MountPoint{Path: d, File: guestFile || fileBind(m)})
	}
	return out
}

// guestMountTypes are filesystems the guest kernel provides itself.
var guestMountTypes = map[string]bool{
	"proc": true, "sysfs": true, "tmpfs": true, "devpts": true, "mqueue": true,
	"cgroup": true, "cgroup2": true, "shm": true,
}

// GuestSpec returns the spec the agent receives, as JSON: host-only
// parts are removed (root path, host cgroup path, namespace paths, the
// AppArmor profile), and what cannot work inside the VM is refused with
// one error per item: host bind mounts and block volumes, host devices,
// and OCI hooks (which would run host binaries in the guest).
func GuestSpec(spec *specs.Spec) ([]byte, error) {
	b, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	var s specs.Spec
	if err := json.Unmarshal(b, &s); err != nil {
		return nil, err
	}
	var errs []error
	// Every hook kind, the deprecated prestart included, by its JSON name.
	var hooks struct {
		Hooks map[string][]json.RawMessage `json:"hooks"`
	}
	if err := json.Unmarshal(b, &hooks); err != nil {
		return nil, err
	}
	for _, h := range hooks.Hooks {
		if len(h) > 0 {
			errs = append(errs, errors.New("OCI hooks are not supported (they name host binaries; the VM cannot run them)"))
			break
		}
	}
	s.Hooks = nil
	var mounts []specs.Mount
	for _, m := range s.Mounts {
		if guestMountTypes[m.Type] {
			mounts = append(mounts, m)
			continue
		}
		if p, ok := guestBind(m); ok {
			m.Source, m.Type = p, "bind"
			mounts = append(mounts, m)
			continue
		}
		if fileBind(m) || m.Source == SandboxShm && (m.Type == "bind" || m.Type == "") {
			m.Type = "bind" // the agent resolves the source
			mounts = append(mounts, m)
			continue
		}
		errs = append(errs, fmt.Errorf("mount %s (type %q, source %q): host filesystems are not shared with the microVM", m.Destination, m.Type, m.Source))
	}
	s.Mounts = mounts
	s.Root = &specs.Root{Path: "rootfs", Readonly: spec.Root != nil && spec.Root.Readonly}
	if s.Linux != nil {
		s.Linux.CgroupsPath = ""
		if len(s.Linux.Devices) > 0 {
			errs = append(errs, fmt.Errorf("linux.devices: %d host device(s) requested; device passthrough is not supported", len(s.Linux.Devices)))
		}
		typ, _ := oci.TypeOf(spec)
		var ns []specs.LinuxNamespace
		for _, n := range s.Linux.Namespaces {
			if n.Type == specs.NetworkNamespace {
				// The VM is the container's network namespace: its NICs
				// are the ones of the host netns the spec names, and a
				// spec asking for a new one gets a VM without NICs, so
				// the guest's own namespace holds just lo, as a new one
				// would. A second one inside the guest would only cost
				// the container start (about 100 ms in the lab).
				continue
			}
			if n.Path != "" {
				if typ == oci.PodContainer && podShared[n.Type] {
					// The pod's IPC, UTS (and shared PID) namespace are the
					// pause container's inside the guest.
					n.Path = SandboxNamespace
					ns = append(ns, n)
				}
				// Any other host namespace (CNI's netns) is the VM
				// itself: share the guest's.
				continue
			}
			ns = append(ns, n)
		}
		s.Linux.Namespaces = ns
	}
	if s.Process != nil {
		s.Process.ApparmorProfile = ""
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return json.Marshal(&s)
}

// StdioOf says which streams the host attaches for the given containerd
// stdio paths; with a terminal there is no stderr.
func StdioOf(stdin, stdout, stderr string, terminal bool) *agentv1.Stdio {
	return &agentv1.Stdio{Stdin: stdin != "", Stdout: stdout != "", Stderr: stderr != "" && !terminal}
}

// CreateSandboxHolder returns the agent request that has the guest agent
// hold a pod's sandbox itself (CreateContainerRequest.sandbox_holder):
// the spec's namespaces, hostname, sysctls and cgroup, with no rootfs.
func CreateSandboxHolder(id string, spec *specs.Spec, stdio *agentv1.Stdio) (*agentv1.CreateContainerRequest, error) {
	js, err := GuestSpec(spec)
	if err != nil {
		return nil, err
	}
	return &agentv1.CreateContainerRequest{ContainerId: id, OciSpec: js, Stdio: stdio, SandboxHolder: true}, nil
}

// CreateContainer is the agent request for a container whose rootfs is
// the drive with the given serial.
func CreateContainer(id string, spec *specs.Spec, rootSerial, fstype string, readOnly bool, stdio *agentv1.Stdio) (*agentv1.CreateContainerRequest, error) {
	js, err := GuestSpec(spec)
	if err != nil {
		return nil, err
	}
	var opts []string
	if readOnly {
		opts = append(opts, "ro")
	}
	return &agentv1.CreateContainerRequest{
		ContainerId: id,
		OciSpec:     js,
		Rootfs:      &agentv1.Storage{Name: "rootfs", Serial: rootSerial, Fstype: fstype, Options: opts},
		Stdio:       stdio,
	}, nil
}
