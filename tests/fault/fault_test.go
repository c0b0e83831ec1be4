// Package fault runs the shim through faults and load with real
// containerd 2.4.2 and ctr (tests/ctrd), in one lab boot: kill -9 of the
// shim, a guest kernel panic, the guest agent dying, the rootfs image
// disappearing under a running VM, a full disk while the rootfs image is
// built, and containerd restarting while containers run (TestFaults);
// sequential and concurrent container lifecycles without leaked
// descriptors, threads, goroutines, taps, mounts or files (TestLoad, small
// by default, 100 + 10-way with LOAD=1). Every case ends with the
// container reported as exited with a meaningful status and nothing of
// it left on the host. TestMain builds the shim and the guest image on
// the host, then re-runs the test binary in the lab (lab.Exec).
package fault

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

const (
	envShimDir = "FAULT_SHIM_DIR"
	runtimeV2  = ctrd.Runtime
	image      = ctrd.Image
)

func TestMain(m *testing.M) {
	os.Exit(ctrd.LabMain(m, envShimDir))
}

// daemon is one containerd 2.4 with the test's view of it.
type daemon struct {
	*ctrd.Daemon
	t     *testing.T
	log   lab.SyncBuffer
	loops string // losetup -a before any container
}

// start starts containerd 2.4.2 (from make deps) with the shim built by
// TestMain and imports the busybox test image.
func start(t *testing.T) *daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("needs /dev/kvm")
	}
	root, _ := lab.RepoRoot()
	bin := filepath.Join(root, ".cache/bin")
	if _, err := os.Stat(filepath.Join(bin, "containerd")); err != nil {
		t.Skipf("%v (make deps)", err)
	}
	d := &daemon{t: t, loops: losetup()}
	// Ten VMs booting at once under nested emulation (TestLoad) take
	// minutes; a boot timeout is not what these tests check.
	cd, err := ctrd.Start(ctrd.Options{BinDir: bin, ConfigVersion: 3, ShimDir: os.Getenv(envShimDir), Debug: true, Log: &d.log,
		BootTimeout: 5 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	d.Daemon = cd
	t.Cleanup(d.stop)
	if err := d.Import(); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *daemon) stop() {
	d.Stop()
	// A shim killed by its vCPU seccomp filter shows up as an audit
	// record (default action kill; docs/seccomp.md).
	if out, err := exec.Command("dmesg").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.Contains(l, "type=1326") && strings.Contains(l, "containerd-shim") {
				d.t.Errorf("seccomp: %s", l)
			}
		}
	}
	if d.t.Failed() {
		log := d.log.String()
		if len(log) > 60000 {
			log = log[len(log)-60000:]
		}
		d.t.Logf("containerd log:\n%s", log)
	}
}

// ctr runs ctr and returns its combined output and exit status.
func (d *daemon) ctr(timeout time.Duration, stdin string, args ...string) (string, int) {
	out, err := d.Ctr(timeout, stdin, args...)
	return out, ctrd.ExitCode(err)
}

type result struct {
	out  string
	code int
	took time.Duration
}

// runAsync runs `ctr run --rm` (attached) with extra flags before the
// image, then id and args; the result arrives on the channel.
func (d *daemon) runAsync(flags []string, id string, args ...string) <-chan result {
	ch := make(chan result, 1)
	a := append([]string{"run", "--rm", "--runtime", runtimeV2}, flags...)
	a = append(a, image, id)
	a = append(a, args...)
	go func() {
		t0 := time.Now()
		out, code := d.ctr(3*time.Minute, "", a...)
		ch <- result{out, code, time.Since(t0)}
	}()
	return ch
}

// runDetached starts `ctr run -d` and waits until the task runs; it
// returns the shim's pid.
func (d *daemon) runDetached(t *testing.T, flags []string, id string, args ...string) int {
	t.Helper()
	a := append([]string{"run", "-d", "--runtime", runtimeV2}, flags...)
	a = append(a, image, id)
	a = append(a, args...)
	if out, code := d.ctr(3*time.Minute, "", a...); code != 0 {
		t.Fatalf("ctr run -d %s: exit %d %s", id, code, out)
	}
	return d.waitStatus(t, id, "RUNNING", 90*time.Second)
}

// waitStatus waits until ctr t ls shows the task with status and
// returns its pid (the shim's).
func (d *daemon) waitStatus(t *testing.T, id, status string, timeout time.Duration) int {
	t.Helper()
	var out string
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		out, _ = d.ctr(10*time.Second, "", "t", "ls")
		for _, l := range strings.Split(out, "\n") {
			f := strings.Fields(l)
			if len(f) >= 3 && f[0] == id && f[2] == status {
				var pid int
				fmt.Sscan(f[1], &pid)
				return pid
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not %s after %v; ctr t ls:\n%s", id, status, timeout, out)
	return 0
}

// wait waits for an attached run to end.
func wait(t *testing.T, ch <-chan result, timeout time.Duration) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(timeout):
		t.Fatalf("ctr run did not return within %v", timeout)
	}
	return result{}
}

// remove kills (if needed) and deletes a detached container and returns
// what ctr t rm said.
func (d *daemon) remove(id string) string {
	out, _ := d.ctr(60*time.Second, "", "t", "rm", "-f", id)
	d.ctr(30*time.Second, "", "c", "rm", id)
	return out
}

func losetup() string {
	out, _ := exec.Command("losetup", "-a").Output()
	return strings.TrimSpace(string(out))
}

// leftovers lists what a finished container could leave on the host: a
// shim or mkfs process, a mount of its bundle, files in the shim's work
// directory and containerd's task directories, shim sockets, rootfs
// images, taps, loop devices and the host cgroups the shim joined.
func (d *daemon) leftovers() []string {
	var l []string
	for _, name := range []string{"containerd-shim-stratovirt", "mkfs"} {
		out, _ := exec.Command("pgrep", "-af", name).Output()
		if s := strings.TrimSpace(string(out)); s != "" {
			l = append(l, "process: "+s)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, d.Dir+"/state/io.containerd.runtime") || strings.Contains(line, d.Dir+"/work") {
			l = append(l, "mount: "+line)
		}
	}
	for _, pat := range []string{"/run/containerd/s/*", d.Dir + "/work/*/*", d.Dir + "/root/io.containerd.runtime.v2.task/*/*",
		d.Dir + "/state/io.containerd.runtime.v2.task/*/*", "/sys/fs/cgroup/" + ctrd.Namespace + "/*/"} {
		m, _ := filepath.Glob(pat)
		for _, p := range m {
			l = append(l, "file: "+p)
		}
	}
	filepath.WalkDir(d.Dir, func(p string, e os.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(e.Name(), "rootfs-") {
			l = append(l, "image: "+p)
		}
		return nil
	})
	links, _ := exec.Command("ip", "-o", "link", "show", "type", "tun").Output()
	if s := strings.TrimSpace(string(links)); s != "" {
		l = append(l, "tap: "+s)
	}
	if s := losetup(); s != d.loops {
		l = append(l, "loop devices: "+s)
	}
	return append(l, ctrd.CacheLeftovers(filepath.Join(d.Dir, ctrd.ImageCache))...)
}

// checkClean fails the test if anything is left 5 s after the end.
func (d *daemon) checkClean(t *testing.T) {
	t.Helper()
	var l []string
	for range 50 {
		if l = d.leftovers(); len(l) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("left behind:\n%s", strings.Join(l, "\n"))
}

// events runs `ctr events` into a buffer so that tests can read the exit
// status containerd publishes (ctr run's own status is lost when the
// shim dies under it). It ends with containerd; watch again after a
// restart. The caller stops it.
type events struct {
	buf  lab.SyncBuffer
	stop func()
}

func (d *daemon) watchEvents(t *testing.T) *events {
	t.Helper()
	ev := &events{}
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, d.CtrBin, "-a", d.Sock, "-n", ctrd.Namespace, "events")
	cmd.Stdout, cmd.Stderr = &ev.buf, &ev.buf
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("ctr events: %v", err)
	}
	var once sync.Once
	ev.stop = func() { once.Do(func() { cancel(); cmd.Wait() }) }
	time.Sleep(200 * time.Millisecond) // subscribed before anything happens
	return ev
}

// exit waits for the TaskExit of container id's init process and
// returns its exit status.
func (ev *events) exit(t *testing.T, id string, timeout time.Duration) uint32 {
	t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		for _, line := range strings.Split(ev.buf.String(), "\n") {
			_, js, ok := strings.Cut(line, " /tasks/exit ")
			if !ok {
				continue
			}
			var e struct {
				ContainerID string `json:"container_id"`
				ID          string `json:"id"`
				ExitStatus  uint32 `json:"exit_status"`
			}
			if json.Unmarshal([]byte(js), &e) == nil && e.ContainerID == id && e.ID == id {
				return e.ExitStatus
			}
		}
	}
	t.Fatalf("no /tasks/exit event for %s within %v; events:\n%s", id, timeout, ev.buf.String())
	return 0
}
