package agentvm

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
	"github.com/stratovirt-go/stratovirt/runtime/translate"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

// envCreateProfile turns on TestCreateProfile: a measurement, not a check.
const envCreateProfile = "AGENTVM_CREATE_PROFILE"

// TestCreateProfile times the agent's CreateContainer (runc create in the
// guest) for containerd's default spec and for that spec without one
// feature at a time, interleaved in one VM, with the lab KVM's counters
// (nested page faults, exits) for each, and logs the medians: where a
// container create spends its time. It is a measurement, off by default:
//
//	AGENTVM_CREATE_PROFILE=N   N rounds of every variant per VM
//	AGENTVM_CREATE_VMS=N       N VMs one after another (the first of a lab
//	                           boot also reads the image through 9p)
//	AGENTVM_CREATE_FIRST=i     variant i first (the first create of a VM
//	                           pays one-time costs)
//	AGENTVM_CREATE_CMDLINE=... appended to the kernel command line, e.g.
//	                           "-- -log-level trace -quiet-console" for the
//	                           agent's create phases and runc's own log
//	                           with the time each line appeared
//
// e.g. AGENTVM_CREATE_PROFILE=3 go test -v -run TestCreateProfile ./tests/agentvm
func TestCreateProfile(t *testing.T) {
	rounds := 0
	fmt.Sscan(os.Getenv(envCreateProfile), &rounds)
	if rounds <= 0 {
		t.Skipf("a measurement: set %s=rounds", envCreateProfile)
	}
	// The first VM of a lab boot also reads the guest image through the
	// lab's 9p share; AGENTVM_CREATE_VMS=2 shows a VM after it.
	vms := 1
	fmt.Sscan(os.Getenv("AGENTVM_CREATE_VMS"), &vms)
	for i := 0; i < vms; i++ {
		t.Run(fmt.Sprintf("vm%d", i), func(t *testing.T) { profileVM(t, rounds) })
	}
}

func profileVM(t *testing.T, rounds int) {
	dir := t.TempDir()
	args := append([]string{
		"-name", "createprofile",
		"-kernel", os.Getenv(envKernel),
		"-smp", "1", "-m", "256M", "-serial", "stdio",
		"-drive", "id=rootfs,file=" + os.Getenv(envRootfs) + ",direct=off,serial=" + rootSerial,
		"-device", fmt.Sprintf("vsock,id=vsock0,guest-cid=%d,backend=unix,uds-path=%s", vhostCID, filepath.Join(dir, "v.sock")),
	}, bootArgs(os.Getenv("AGENTVM_CREATE_ROOT") != "", os.Getenv("AGENTVM_CREATE_CMDLINE"))...)
	vm := newProcVM(os.Getenv(envVMM), args, vsockdial.Target{UDSPath: filepath.Join(dir, "v.sock")})
	ctx := context.Background()
	sb, err := sandbox.Start(ctx, vm, bootTimeout)
	if err != nil {
		t.Fatalf("boot: %v\n%s", err, vm.out.String())
	}
	defer sb.Stop()
	t.Logf("agent serving after %v", sb.BootTime.Round(time.Millisecond))
	// The agent's log (its create phases at debug level, with
	// AGENTVM_CREATE_CMDLINE="-- -log-level debug -quiet-console").
	var agentLog syncBuf
	if lc, err := sb.OpenStream(ctx, stream.Log, "", ""); err == nil {
		go func() { defer lc.Close(); io.Copy(&agentLog, lc) }()
	}

	variants := []struct {
		name string
		edit func(*specs.Spec)
	}{
		{"containerd default", func(*specs.Spec) {}},
		{"no cgroup path or resources", func(s *specs.Spec) { s.Linux.CgroupsPath, s.Linux.Resources = "", nil }},
		{"no masked or read-only paths", func(s *specs.Spec) { s.Linux.MaskedPaths, s.Linux.ReadonlyPaths = nil, nil }},
		{"only /proc and /dev mounts", func(s *specs.Spec) { s.Mounts = s.Mounts[:2] }},
		{"no pid, ipc, uts namespaces", func(s *specs.Spec) {
			s.Linux.Namespaces = slices.DeleteFunc(s.Linux.Namespaces, func(n specs.LinuxNamespace) bool { return n.Type != specs.MountNamespace })
			s.Hostname = ""
		}},
		{"no capabilities, rlimits, no_new_privs", func(s *specs.Spec) {
			s.Process.Capabilities, s.Process.Rlimits, s.Process.NoNewPrivileges = nil, nil, false
		}},
	}
	// AGENTVM_CREATE_FIRST=i moves variant i to the front: the first
	// create in a VM pays one-time costs.
	if first := os.Getenv("AGENTVM_CREATE_FIRST"); first != "" {
		var i int
		fmt.Sscan(first, &i)
		if i > 0 && i < len(variants) {
			v := variants[i]
			variants = append(variants[:i:i], variants[i+1:]...)
			variants = append(variants[:0:0], append(append(variants[:0:0], v), variants...)...)
		}
	}
	// The lab's KVM counts nested-paging faults and exits in debugfs.
	syscall.Mount("debugfs", "/sys/kernel/debug", "debugfs", 0, "")
	times := make([][]time.Duration, len(variants))
	for r := 0; r < rounds; r++ {
		for i, v := range variants {
			s := containerdSpec(fmt.Sprintf("p%d-%d", r, i))
			v.edit(s)
			pf0, ex0 := kvmCounter("pf_fixed"), kvmCounter("exits")
			all0 := kvmCounters()
			d, err := timeCreate(sb, fmt.Sprintf("p%d-%d", r, i), s)
			if err != nil {
				t.Fatalf("%s: %v\n%s", v.name, err, vm.out.String())
			}
			t.Logf("round %d, %s: %v, %d nested page faults, %d exits", r, v.name, d.Round(time.Millisecond),
				kvmCounter("pf_fixed")-pf0, kvmCounter("exits")-ex0)
			if r == 0 && i < 2 {
				t.Logf("  KVM counters that moved by 50 or more: %s", kvmCountersDiff(all0, kvmCounters()))
			}
			times[i] = append(times[i], d)
		}
	}
	var b strings.Builder
	for i, v := range variants {
		ts := slices.Clone(times[i])
		sort.Slice(ts, func(a, b int) bool { return ts[a] < ts[b] })
		fmt.Fprintf(&b, "\n  %-40s median %v (min %v, max %v)", v.name, ts[len(ts)/2].Round(time.Millisecond),
			ts[0].Round(time.Millisecond), ts[len(ts)-1].Round(time.Millisecond))
	}
	t.Logf("CreateContainer, %d rounds:%s", rounds, b.String())
	time.Sleep(time.Second) // the last lines of the log stream
	t.Logf("agent log:\n%s", agentLog.String())
}

// kvmCounter reads one of KVM's debugfs counters (-1 when unreadable).
func kvmCounter(name string) int64 {
	b, err := os.ReadFile("/sys/kernel/debug/kvm/" + name)
	if err != nil {
		return -1
	}
	var n int64
	fmt.Sscan(string(b), &n)
	return n
}

// kvmCounters reads every top-level counter of KVM's debugfs.
func kvmCounters() map[string]int64 {
	m := map[string]int64{}
	ents, _ := os.ReadDir("/sys/kernel/debug/kvm")
	for _, e := range ents {
		if e.Type().IsRegular() {
			m[e.Name()] = kvmCounter(e.Name())
		}
	}
	return m
}

func kvmCountersDiff(a, b map[string]int64) string {
	var out []string
	for k, v := range b {
		if d := v - a[k]; d >= 50 {
			out = append(out, fmt.Sprintf("%s +%d", k, d))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// timeCreate times CreateContainer of spec and removes the container.
func timeCreate(sb *sandbox.Sandbox, id string, spec *specs.Spec) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	req, err := translate.CreateContainer(id, spec, rootSerial, "ext4", false, &agentv1.Stdio{})
	if err != nil {
		return 0, err
	}
	t0 := time.Now()
	if _, err := sb.Agent().CreateContainer(ctx, req); err != nil {
		return 0, fmt.Errorf("create: %w", err)
	}
	d := time.Since(t0)
	if _, err := sb.Agent().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: id, Force: true}); err != nil {
		return 0, fmt.Errorf("remove: %w", err)
	}
	return d, nil
}

// containerdSpec is what containerd 2.x's default spec gives a container
// (pkg/oci populateDefaultUnixSpec), as `ctr run` sends it.
func containerdSpec(id string) *specs.Spec {
	caps := []string{"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
		"CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT",
		"CAP_KILL", "CAP_AUDIT_WRITE"}
	return &specs.Spec{
		Version: specs.Version,
		Root:    &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: []string{"true"}, Env: []string{"PATH=/bin"}, Cwd: "/",
			Capabilities:    &specs.LinuxCapabilities{Bounding: caps, Permitted: caps, Effective: caps},
			Rlimits:         []specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024}},
			NoNewPrivileges: true,
		},
		Hostname: "profile",
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/dev/mqueue", Type: "mqueue", Source: "mqueue", Options: []string{"nosuid", "noexec", "nodev"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
			{Destination: "/run", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
		},
		Linux: &specs.Linux{
			CgroupsPath: "/default/" + id,
			Resources:   &specs.LinuxResources{Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}}},
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}},
			MaskedPaths: []string{"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/sys/devices/virtual/powercap", "/proc/scsi"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}
