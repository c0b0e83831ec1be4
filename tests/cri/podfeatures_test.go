package cri

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

// podSysctls are the sysctls TestPodMultiContainer sets on its pod: an
// IPC one (applied in the pause container's IPC namespace, which the
// app containers join) and a net one (applied to the VM).
var podSysctls = map[string]string{"kernel.shm_rmid_forced": "1", "net.ipv4.ip_unprivileged_port_start": "79"}

// readOnlyConfig is containerConfig with a read-only root filesystem.
func readOnlyConfig(name string, args ...string) map[string]any {
	c := containerConfig(name, args...)
	c["linux"] = map[string]any{"security_context": map[string]any{"readonly_rootfs": true}}
	return c
}

// nsTarget returns the namespace in `ls -l /proc/self/ns/<ns>` output
// (busybox has no readlink here).
func nsTarget(ls, ns string) string {
	_, target, _ := strings.Cut(ls, "-> ")
	target, _, _ = strings.Cut(target, "\n")
	target = strings.TrimSpace(target)
	if !strings.HasPrefix(target, ns+":[") {
		return ""
	}
	return target
}

// checkPodFeatures checks, in a running pod with the writable container
// rw and the read-only one ro (both busybox), in one exec each:
//   - /etc/hostname is the pod's hostname and /etc/hosts the host file
//     containerd copied for the pod;
//   - the pod's kernel.* sysctl (IPC namespace) and net.* sysctl show;
//   - both containers are in one IPC namespace;
//   - /dev/shm is shared (written in rw, read in ro) and writable in the
//     read-only container, whose / refuses writes.
func (d *daemon) checkPodFeatures(t *testing.T, hostname, rw, ro string) {
	t.Helper()
	hosts, err := os.ReadFile("/etc/hosts")
	must(t, err)
	out := d.crictl(t, "exec", rw, "sh", "-c", "cat /etc/hostname; echo @@; cat /etc/hosts; echo @@; "+
		"cat /proc/sys/kernel/shm_rmid_forced /proc/sys/net/ipv4/ip_unprivileged_port_start; echo @@; "+
		"ls -l /proc/self/ns/ipc; echo from-rw > /dev/shm/x")
	parts := strings.Split(out, "@@\n")
	if len(parts) != 4 {
		t.Fatalf("exec output:\n%s", out)
	}
	if got := strings.TrimSpace(parts[0]); got != hostname {
		t.Errorf("/etc/hostname %q, want %q", got, hostname)
	}
	if got := strings.TrimSpace(parts[1]); got == "" || got != strings.TrimSpace(string(hosts)) {
		t.Errorf("/etc/hosts in the container:\n%s\nwant the host's:\n%s", got, hosts)
	}
	if got, want := strings.TrimSpace(parts[2]), podSysctls["kernel.shm_rmid_forced"]+"\n"+podSysctls["net.ipv4.ip_unprivileged_port_start"]; got != want {
		t.Errorf("pod sysctls in the container: %q, want %q", got, want)
	}
	ipc := nsTarget(parts[3], "ipc")
	out, _ = d.crictlRun(time.Minute, "exec", ro, "sh", "-c", "cat /dev/shm/x; ls -l /proc/self/ns/ipc; "+
		"echo from-ro > /dev/shm/y && echo shm-ok; touch /rootfs-write 2>&1; test -e /rootfs-write && echo root-written")
	if !strings.Contains(out, "from-rw") || !strings.Contains(out, "shm-ok") ||
		!strings.Contains(out, "Read-only file system") || strings.Contains(out, "root-written") {
		t.Errorf("read-only container: want the shared /dev/shm readable and writable and / read-only:\n%s", out)
	}
	if other := nsTarget(out, "ipc"); ipc == "" || other != ipc {
		t.Errorf("IPC namespaces: %q and %q (%s)", ipc, other, out)
	}
}

// checkExecTTY runs `crictl exec -it` on a pseudo-terminal: the process
// must get a terminal as its stdin and stdout.
func (d *daemon) checkExecTTY(t *testing.T, cid string) {
	t.Helper()
	master, slave, err := openPTY()
	if err != nil {
		t.Fatalf("pty: %v", err)
	}
	defer master.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ep := "unix://" + d.sock
	cmd := exec.CommandContext(ctx, d.crictlBin, "--runtime-endpoint", ep, "--image-endpoint", ep,
		"exec", "-it", cid, "sh", "-c", "test -t 0 && test -t 1 && echo tty-$((6*7))")
	var errb bytes.Buffer
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, &errb
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true}
	t0 := time.Now()
	err = cmd.Start()
	slave.Close()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	copied := make(chan struct{})
	go func() { io.Copy(&out, master); close(copied) }() // ends with EIO once crictl is gone
	err = cmd.Wait()
	select {
	case <-copied:
	case <-time.After(5 * time.Second):
	}
	t.Logf("crictl exec -it: %v", time.Since(t0).Round(time.Millisecond))
	if err != nil || !strings.Contains(out.String(), "tty-42") {
		t.Errorf("crictl exec -it: %v: output %q, stderr %q", err, out.String(), errb.String())
	}
}

// checkExecTimeout: `crictl exec --timeout` fails after the timeout and
// the exec'd process is gone from the container afterwards.
func (d *daemon) checkExecTimeout(t *testing.T, cid string) {
	t.Helper()
	t0 := time.Now()
	out, err := d.crictlRun(time.Minute, "exec", "-s", "--timeout", "2", cid, "sleep", "4321")
	t.Logf("crictl exec --timeout 2: %v", time.Since(t0).Round(time.Millisecond))
	if err == nil || !strings.Contains(out, "timeout") {
		t.Errorf("exec with a 2 s timeout of sleep 4321: %v %q", err, out)
	}
	ps := d.crictl(t, "exec", cid, "ps", "-o", "pid,args")
	if strings.Contains(ps, "sleep 4321") {
		t.Errorf("the timed-out exec is still running:\n%s", ps)
	}
}

// openPTY opens a pseudo-terminal pair (80x24).
func openPTY() (master, slave *os.File, err error) {
	master, err = os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, err
	}
	fd := int(master.Fd())
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err == nil {
		err = unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0)
	}
	if err == nil {
		err = unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: 24, Col: 80})
	}
	if err == nil {
		slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	}
	if err != nil {
		master.Close()
		return nil, nil, err
	}
	return master, slave, nil
}

// TestCritestFocused runs the critest specs matching $CRITEST_FOCUS (a
// ginkgo focus regexp) the way TestCritest does, and fails if one of
// them does not pass: for trying specs before they join the checked-in
// focus. Skipped without CRITEST_FOCUS.
//
//	CRITEST_FOCUS='execSync with timeout|ReadOnlyRootfs is true' go test -run TestCritestFocused -v ./tests/cri
func TestCritestFocused(t *testing.T) {
	focus := os.Getenv("CRITEST_FOCUS")
	if focus == "" {
		t.Skip("set CRITEST_FOCUS to a critest focus regexp")
	}
	root, _ := lab.RepoRoot()
	bin := filepath.Join(root, ".cache/bin/critest")
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("no %s (make deps)", bin)
	}
	if _, err := os.Stat(filepath.Join(root, ".cache/bin/registry")); err != nil {
		t.Skip("critest needs the local registry (make deps)")
	}
	d := startContainerd(t)
	for ref, spec := range critestImages() {
		img, err := buildImage(spec)
		must(t, err)
		repo, tag, _ := strings.Cut(ref, ":")
		must(t, pushImage(registryAddr, repo, tag, img))
	}
	for _, ref := range []string{"busybox:1.29-2", "httpd:2.4.39-4", "nginx:1.14-2"} {
		d.crictl(t, "pull", "registry.k8s.io/e2e-test-images/"+ref)
	}
	hosts := fmt.Sprintf("server = \"http://%[1]s\"\n\n[host.\"http://%[1]s\"]\n  capabilities = [\"pull\", \"resolve\"]\n", registryAddr)
	must(t, os.MkdirAll(filepath.Join(d.dir, "certs.d", registryAddr), 0o755))
	must(t, os.WriteFile(filepath.Join(d.dir, "certs.d", registryAddr, "hosts.toml"), []byte(hosts), 0o644))
	report := filepath.Join(d.dir, "critest.json")
	ep := "unix://" + d.sock
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--runtime-endpoint", ep, "--image-endpoint", ep, "--runtime-handler", handler,
		"--registry-prefix", registryAddr, "--ginkgo.no-color", "--ginkgo.json-report", report, "--ginkgo.focus", focus)
	cmd.Dir = d.dir
	cmd.WaitDelay = 10 * time.Second
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	t0 := time.Now()
	err := cmd.Run()
	t.Logf("critest --ginkgo.focus %q: %v (exit: %v)", focus, time.Since(t0).Round(time.Second), err)
	d.crictlRun(3*time.Minute, "rmp", "-a", "-f")
	b, rerr := os.ReadFile(report)
	if rerr != nil {
		t.Fatalf("no critest report: %v\n%s", rerr, tail(buf.Bytes(), 8000))
	}
	var r ginkgoReport
	must(t, json.Unmarshal(b, &r))
	ran := 0
	for _, suite := range r {
		for _, s := range suite.SpecReports {
			if s.LeafNodeType != "It" || s.State == "skipped" {
				continue
			}
			ran++
			name := strings.Join(append(slices.Clone(s.ContainerHierarchyTexts), s.LeafNodeText), " ")
			if s.State != "passed" {
				msg := ""
				if s.Failure != nil {
					msg = s.Failure.Message
				}
				t.Errorf("%s: %s: %s", s.State, name, msg)
				continue
			}
			t.Logf("passed: %s", name)
		}
	}
	if ran == 0 || t.Failed() {
		t.Errorf("%d specs ran; critest output (tail):\n%s", ran, tail(buf.Bytes(), 8000))
	}
}
