// Package e2e runs containers through real containerd (2.4.2 from
// .cache/bin) and ctr with containerd-shim-stratovirt-v2: TestMain builds
// the shim and the guest image on the host, then re-runs the test binary
// in the lab (lab.Exec), where each test talks to a containerd started
// with a private root, state, socket and configuration.
package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

const (
	envShimDir = "E2E_SHIM_DIR"
	runtimeV2  = "io.containerd.stratovirt.v2"
	image      = "docker.io/library/e2e-busybox:1"
)

func TestMain(m *testing.M) {
	if os.Getenv(envShimDir) == "" {
		dir, err := prepare()
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			os.Exit(1)
		}
		os.Setenv(envShimDir, dir)
		code := lab.Exec(m)
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// prepare builds the shim and the guest image (make guest) on the host.
func prepare() (string, error) {
	root, err := lab.RepoRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "e2e-shim-")
	if err != nil {
		return "", err
	}
	for _, c := range [][]string{
		{"go", "build", "-o", dir + "/", "./cmd/containerd-shim-stratovirt-v2"},
		{"make", "--no-print-directory", "guest", "GUEST_DIR=" + filepath.Join(dir, "guest")},
	} {
		cmd := exec.Command(c[0], c[1:]...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return dir, fmt.Errorf("%s: %v\n%s", strings.Join(c, " "), err, out)
		}
	}
	return dir, nil
}

// daemon is one containerd with its own root, state and sockets.
type daemon struct {
	t    *testing.T
	dir  string
	sock string
	cmd  *exec.Cmd
	log  bytes.Buffer
	ctr  string
	bin  string
}

func startContainerd(t *testing.T, bin string, version int) *daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("needs /dev/kvm")
	}
	root, _ := lab.RepoRoot()
	dir, err := os.MkdirTemp("", "e2e-ctrd-")
	if err != nil {
		t.Fatal(err)
	}
	// A tmpfs: overlayfs snapshots cannot live on the lab's overlay root.
	if err := syscall.Mount("e2e", dir, "tmpfs", 0, "mode=0755"); err != nil {
		t.Fatal(err)
	}
	d := &daemon{t: t, dir: dir, sock: filepath.Join(dir, "c.sock"), bin: bin, ctr: filepath.Join(root, ".cache/bin/ctr")}
	shimDir := os.Getenv(envShimDir)
	conf := fmt.Sprintf(`[hypervisor]
kernel = %q
initrd = %q
default_vcpus = 1
default_memory = 256
boot_timeout = "60s"
console_log = true
[runtime]
log_level = "debug"
work_dir = %q
`, filepath.Join(shimDir, "guest/vmlinuz"), filepath.Join(shimDir, "guest/initramfs.cpio.gz"), filepath.Join(dir, "work"))
	os.WriteFile(filepath.Join(dir, "configuration.toml"), []byte(conf), 0o644)
	cc := fmt.Sprintf("version = %d\nroot = %q\nstate = %q\n[grpc]\n  address = %q\n[ttrpc]\n  address = %q\n",
		version, filepath.Join(dir, "root"), filepath.Join(dir, "state"), d.sock, d.sock+".ttrpc")
	os.WriteFile(filepath.Join(dir, "config.toml"), []byte(cc), 0o644)
	d.cmd = exec.Command(bin, "--config", filepath.Join(dir, "config.toml"), "--log-level", "debug")
	d.cmd.Env = append(os.Environ(), "PATH="+shimDir+":"+filepath.Join(root, ".cache/bin")+":/usr/sbin:/usr/bin:/sbin:/bin",
		"STRATOVIRT_CONF_FILE="+filepath.Join(dir, "configuration.toml"))
	d.cmd.Stdout, d.cmd.Stderr = &d.log, &d.log
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.stop)
	for i := 0; ; i++ {
		if _, err := d.run(10*time.Second, "", "version"); err == nil {
			break
		}
		if i > 100 {
			t.Fatalf("containerd did not start:\n%s", d.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	img := filepath.Join(dir, "image.tar")
	if err := ociImage(img, image); err != nil {
		t.Fatal(err)
	}
	if out, err := d.run(60*time.Second, "", "images", "import", img); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	return d
}

func (d *daemon) stop() {
	if d.cmd.Process != nil {
		d.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { d.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			d.cmd.Process.Kill()
			<-done
		}
	}
	if d.t.Failed() {
		log := d.log.String()
		if len(log) > 60000 {
			log = log[len(log)-60000:]
		}
		d.t.Logf("containerd log:\n%s", log)
	}
	exec.Command("sh", "-c", "umount -R "+d.dir+"/* 2>/dev/null; true").Run()
	syscall.Unmount(d.dir, syscall.MNT_DETACH)
	os.RemoveAll(d.dir)
}

// run runs ctr with stdin and returns its combined output.
func (d *daemon) run(timeout time.Duration, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, d.ctr, append([]string{"-a", d.sock, "-n", "e2e"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

func (d *daemon) ctrRun(t *testing.T, stdin string, args ...string) (string, int) {
	t.Helper()
	t0 := time.Now()
	out, err := d.run(120*time.Second, stdin, append([]string{"run", "--rm", "--runtime", runtimeV2}, args...)...)
	t.Logf("ctr run %s: exit %d in %v", strings.Join(args, " "), exitCode(err), time.Since(t0).Round(time.Millisecond))
	return out, exitCode(err)
}

// leftovers lists what a finished container could leave behind.
func (d *daemon) leftovers() []string {
	var l []string
	out, _ := exec.Command("pgrep", "-af", "containerd-shim-stratovirt").Output()
	if s := strings.TrimSpace(string(out)); s != "" {
		l = append(l, "processes: "+s)
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	for _, line := range strings.Split(string(mi), "\n") {
		if strings.Contains(line, d.dir+"/state/io.containerd.runtime") {
			l = append(l, "mount: "+line)
		}
	}
	for _, pat := range []string{"/run/containerd/s/*", d.dir + "/work/*/*", d.dir + "/root/io.containerd.runtime.v2.task/*/*", d.dir + "/state/io.containerd.runtime.v2.task/*/*"} {
		m, _ := filepath.Glob(pat)
		for _, p := range m {
			l = append(l, "file: "+p)
		}
	}
	links, _ := exec.Command("ip", "-o", "link", "show", "type", "tun").Output()
	if s := strings.TrimSpace(string(links)); s != "" {
		l = append(l, "tap: "+s)
	}
	return l
}

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
