package agentvm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/containerd/ttrpc"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
	"github.com/stratovirt-go/stratovirt/runtime/translate"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

const (
	rootSerial  = "rootfs"
	vhostCID    = 42
	bootTimeout = 90 * time.Second
	rpcTimeout  = 60 * time.Second
)

func TestAgentVM(t *testing.T) {
	if _, err := os.Stat(os.Getenv(envVMM)); err != nil {
		t.Fatalf("VMM binary: %v", err)
	}
	if f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0); err != nil {
		t.Skipf("no /dev/kvm: %v", err)
	} else {
		f.Close()
	}
	for _, backend := range []string{"vhost", "unix"} {
		t.Run(backend, func(t *testing.T) { runBackend(t, backend, false) })
	}
	// What the shim boots by default: no initramfs, / is root.erofs on
	// virtio-pmem (DAX), and runc pivots into containers.
	t.Run("root-image", func(t *testing.T) { runBackend(t, "vhost", true) })
}

// runBackend boots one VM with the given vsock backend, from the
// initramfs with the runc image or (rootImage) from the root image, runs
// both containers in it, shuts it down and checks for leftovers.
func runBackend(t *testing.T, backend string, rootImage bool) {
	if backend == "vhost" {
		if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
			t.Skip("no /dev/vhost-vsock")
		}
	}
	socketsBefore := socketFDs(t)
	dir := t.TempDir()
	uds := filepath.Join(dir, "v.sock")
	dev := fmt.Sprintf("vsock,id=vsock0,guest-cid=%d,backend=%s", vhostCID, backend)
	target := vsockdial.Target{CID: vhostCID}
	if backend == "unix" {
		dev += ",uds-path=" + uds
		target = vsockdial.Target{UDSPath: uds}
	}
	args := append([]string{
		"-name", "agentvm-" + backend,
		"-kernel", os.Getenv(envKernel),
		"-smp", "1", "-m", "512M", "-serial", "stdio",
		"-drive", "id=rootfs,file=" + os.Getenv(envRootfs) + ",direct=off,serial=" + rootSerial,
		"-device", dev,
	}, bootArgs(rootImage, "")...)
	vm := newProcVM(os.Getenv(envVMM), args, target)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("VMM output (console and log):\n%s", vm.out.String())
		}
	})

	ctx := context.Background()
	start := time.Now()
	sb, err := sandbox.Start(ctx, vm, bootTimeout)
	if err != nil {
		t.Fatalf("boot and connect to the agent: %v", err)
	}
	t.Cleanup(sb.Stop) // on failure paths; a no-op after the clean stop below
	d := sb.Details
	t.Logf("%s: agent %s serving after %v (kernel %s, %d CPU, %d MiB, %s)", backend, d.AgentVersion,
		sb.BootTime.Round(time.Millisecond), d.KernelRelease, d.OnlineCpus, d.MemTotalBytes>>20, d.RuncVersion)

	// The agent said it was ready with one port write (the microVM
	// kernel has ioperm), not only with its console line.
	if want := fmt.Sprintf("guest boot marker %d after", stream.ReadyMarker); !strings.Contains(vm.out.String(), want) {
		t.Errorf("the VMM's log has no %q: the agent did not write its ready marker", want)
	}

	// sandbox.Start checked Health on its connection; a second control
	// connection, as a health prober would open, must be served too.
	hctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	err = healthCheck(hctx, vm)
	cancel()
	if err != nil {
		t.Fatal(err)
	}

	runContainer(t, sb, "hello", []string{"echo", "hello"}, "hello\n", 0)
	runContainer(t, sb, "exit3", []string{"sh", "-c", "exit 3"}, "", 3)
	// The base command line's sysctl reached the guest kernel
	// (translate.BaseCmdline: no proactive compaction).
	runContainer(t, sb, "sysctl", []string{"cat", "/proc/sys/vm/compaction_proactiveness"}, "0\n", 0)
	// The containers' cgroups grew the guest's percpu memory, and with
	// the base command line's percpu_alloc=page no chunk came with a map
	// of 1 MiB or more (with the default allocator and one vCPU, the
	// first container's chunk brought a 4 MiB one).
	runContainer(t, sb, "percpu", []string{"sh", "-c", percpuMapsCheck},
		"vmallocinfo read; percpu maps of 1 MiB or more: none\n", 0)

	// Clean shutdown: the agent tears the sandbox down (unmounts the
	// rootfs), then the VMM gets SIGTERM and must exit with status 0.
	t0 := time.Now()
	dctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	_, err = sb.Agent().DestroySandbox(dctx, &agentv1.DestroySandboxRequest{})
	cancel()
	if err != nil {
		t.Errorf("destroy sandbox: %v", err)
	}
	tDestroy := time.Since(t0)
	t0 = time.Now()
	sb.Stop()
	if err := sb.Err(); err != nil {
		t.Errorf("VM did not shut down cleanly: %v", err)
	}
	t.Logf("%s: destroy sandbox %v, VMM exit after SIGTERM %v; whole VM life %v", backend,
		tDestroy.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), time.Since(start).Round(time.Millisecond))

	checkLeftovers(t, vm, uds, socketsBefore)
}

// percpuMapsCheck lists, from /proc/vmallocinfo, the percpu allocator's
// maps (pcpu_mem_zalloc) of 1 MiB or more, and says whether it read the
// file at all.
const percpuMapsCheck = `n=0; big=
while read -r range size caller rest; do
	n=$((n+1))
	case $caller in pcpu_mem_zalloc*) [ "$size" -ge 1048576 ] && big="$big $size";; esac
done < /proc/vmallocinfo
[ "$n" -gt 10 ] && echo -n "vmallocinfo read; "
echo "percpu maps of 1 MiB or more:${big:- none}"`

// bootArgs are the VMM arguments that boot the guest image: the
// initramfs with the runc image, or (rootImage) the root image as the
// shim boots it; extra goes at the end of the kernel command line.
func bootArgs(rootImage bool, extra string) []string {
	if rootImage {
		return []string{"-append", strings.TrimSpace(translate.BaseCmdline + " " + translate.RootCmdline + " " + extra),
			"-device", "virtio-pmem,id=root,readonly=on,file=" + os.Getenv(envRoot)}
	}
	return []string{"-initrd", os.Getenv(envInitrd), "-append", strings.TrimSpace(translate.BaseCmdline + " " + extra),
		"-device", "virtio-pmem,id=runc,readonly=on,file=" + os.Getenv(envRunc)}
}

// healthCheck asks the agent's Health service over a new control
// connection and closes it.
func healthCheck(ctx context.Context, vm *procVM) error {
	conn, err := vm.Dial(ctx, stream.ControlPort)
	if err != nil {
		return fmt.Errorf("health: dial: %w", err)
	}
	c := ttrpc.NewClient(conn)
	defer c.Close()
	r, err := agentv1.NewHealthClient(c).Check(ctx, &agentv1.CheckRequest{})
	if err != nil {
		return fmt.Errorf("health: %w", err)
	}
	if r.Status != agentv1.CheckResponse_SERVING {
		return fmt.Errorf("health: status %v", r.Status)
	}
	return nil
}

// runContainer creates, starts and waits for one container with the
// busybox disk as its rootfs, and checks its stdout, stderr and status.
func runContainer(t *testing.T, sb *sandbox.Sandbox, id string, argv []string, wantOut string, wantStatus int32) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), rpcTimeout)
	defer cancel()
	t0 := time.Now()
	stdio := &agentv1.Stdio{Stdout: true, Stderr: true}
	req, err := translate.CreateContainer(id, ociSpec(argv), rootSerial, "ext4", false, stdio)
	if err != nil {
		t.Fatalf("%s: request: %v", id, err)
	}
	cr, err := sb.Agent().CreateContainer(ctx, req)
	if err != nil {
		t.Fatalf("%s: create: %v", id, err)
	}
	tCreate := time.Since(t0)
	stdout, err := sb.OpenStream(ctx, stream.Stdout, id, "")
	if err != nil {
		t.Fatalf("%s: %v", id, err)
	}
	stderr, err := sb.OpenStream(ctx, stream.Stderr, id, "")
	if err != nil {
		stdout.Close()
		t.Fatalf("%s: %v", id, err)
	}
	outc, errc := readAll(stdout), readAll(stderr)
	if _, err := sb.Agent().StartContainer(ctx, &agentv1.StartContainerRequest{ContainerId: id}); err != nil {
		t.Fatalf("%s: start: %v", id, err)
	}
	wr, err := sb.Agent().WaitProcess(ctx, &agentv1.WaitProcessRequest{ContainerId: id})
	if err != nil {
		t.Fatalf("%s: wait: %v", id, err)
	}
	tRun := time.Since(t0)
	out, errOut := <-outc, <-errc
	if out.err != nil || errOut.err != nil {
		t.Errorf("%s: streams: stdout %v, stderr %v", id, out.err, errOut.err)
	}
	if out.data != wantOut {
		t.Errorf("%s: stdout %q, want %q", id, out.data, wantOut)
	}
	if errOut.data != "" {
		t.Errorf("%s: stderr %q, want nothing", id, errOut.data)
	}
	if wr.ExitStatus != wantStatus {
		t.Errorf("%s: exit status %d, want %d", id, wr.ExitStatus, wantStatus)
	}
	if wr.Pid != cr.Pid || cr.Pid == 0 {
		t.Errorf("%s: wait reports pid %d, create said %d", id, wr.Pid, cr.Pid)
	}
	if _, err := sb.Agent().RemoveContainer(ctx, &agentv1.RemoveContainerRequest{ContainerId: id}); err != nil {
		t.Errorf("%s: remove: %v", id, err)
	}
	t.Logf("%s %q: create %v, create to exit %v, remove %v (status %d, stdout %q)", id, argv,
		tCreate.Round(time.Millisecond), tRun.Round(time.Millisecond), (time.Since(t0) - tRun).Round(time.Millisecond),
		wr.ExitStatus, out.data)
}

type streamResult struct {
	data string
	err  error
}

// readAll reads c to EOF (bounded by a deadline) in the background.
func readAll(c net.Conn) <-chan streamResult {
	ch := make(chan streamResult, 1)
	go func() {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(rpcTimeout))
		b, err := io.ReadAll(io.LimitReader(c, 1<<20))
		ch <- streamResult{string(b), err}
	}()
	return ch
}

// ociSpec is a minimal runc-style spec running argv as root.
func ociSpec(argv []string) *specs.Spec {
	return &specs.Spec{
		Version:  specs.Version,
		Hostname: "agentvm",
		Root:     &specs.Root{Path: "rootfs"},
		Process: &specs.Process{
			Args: argv, Env: []string{"PATH=/bin", "HOME=/root"}, Cwd: "/",
			Capabilities: &specs.LinuxCapabilities{
				Bounding:  []string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"},
				Effective: []string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"},
				Permitted: []string{"CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_AUDIT_WRITE"},
			},
			NoNewPrivileges: true,
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc"},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "strictatime", "mode=755", "size=65536k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/dev/shm", Type: "tmpfs", Source: "shm", Options: []string{"nosuid", "noexec", "nodev", "mode=1777", "size=65536k"}},
			{Destination: "/sys", Type: "sysfs", Source: "sysfs", Options: []string{"nosuid", "noexec", "nodev", "ro"}},
		},
		Linux: &specs.Linux{
			Namespaces: []specs.LinuxNamespace{{Type: specs.PIDNamespace}, {Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace}, {Type: specs.MountNamespace}},
			MaskedPaths:   []string{"/proc/kcore", "/proc/keys", "/sys/firmware"},
			ReadonlyPaths: []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"},
		},
	}
}

// checkLeftovers asserts that the VMM process is gone, that this test
// process has no child left, that the unix backend removed its socket and
// that every socket this test opened (ttrpc, streams) is closed.
func checkLeftovers(t *testing.T, vm *procVM, uds string, socketsBefore int) {
	t.Helper()
	if pid := vm.Pid(); pid != 0 {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("VMM pid %d still exists (kill 0: %v)", pid, err)
		}
	}
	if kids := children(t); len(kids) > 0 {
		t.Errorf("child processes left: %v", kids)
	}
	matches, _ := filepath.Glob(uds + "*")
	if len(matches) > 0 {
		t.Errorf("vsock sockets left: %v", matches)
	}
	// Connections close from their own goroutines: allow a moment.
	var n int
	for deadline := time.Now().Add(3 * time.Second); ; {
		if n = socketFDs(t); n <= socketsBefore || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if n > socketsBefore {
		t.Errorf("%d socket fds open, %d before the VM", n, socketsBefore)
	}
}

// socketFDs counts this process's open sockets.
func socketFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// children lists "pid comm" of every live process whose parent is this one.
func children(t *testing.T) []string {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may contain spaces and parens.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self {
			out = append(out, fmt.Sprintf("%d %s", pid, s[strings.IndexByte(s, '(')+1:i]))
		}
	}
	return out
}
