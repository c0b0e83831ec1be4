// Package e2e runs containers through real containerd (2.4.2 from
// .cache/bin, and Debian's 1.6.20 from .cache/containerd-1.6) and ctr
// with containerd-shim-stratovirt-v2 (tests/ctrd): TestMain builds
// the shim and the guest image on the host, then re-runs the test binary
// in the lab (lab.Exec), where each test talks to a containerd started
// with a private root, state, socket and configuration.
package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

const (
	envShimDir = "E2E_SHIM_DIR"
	runtimeV2  = ctrd.Runtime
	image      = ctrd.Image
)

func TestMain(m *testing.M) {
	os.Exit(ctrd.LabMain(m, envShimDir))
}

// daemon is one containerd (tests/ctrd) with the test's view of it.
type daemon struct {
	*ctrd.Daemon
	t    *testing.T
	dir  string
	sock string
	ctr  string
	log  lab.SyncBuffer
}

// startContainerd starts binDir/containerd (with binDir/ctr as its
// client) with a config file of the given version and imports the image.
func startContainerd(t *testing.T, binDir string, version int) *daemon {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("needs /dev/kvm")
	}
	if _, err := os.Stat(filepath.Join(binDir, "containerd")); err != nil {
		t.Skipf("%v (make deps)", err)
	}
	d := &daemon{t: t}
	cd, err := ctrd.Start(ctrd.Options{BinDir: binDir, ConfigVersion: version, ShimDir: os.Getenv(envShimDir), Debug: true, Log: &d.log,
		EnableAnnotations: []string{"default_vcpus", "default_memory", "free_page_reporting", "mem_merge"}})
	if err != nil {
		t.Fatal(err)
	}
	d.Daemon, d.dir, d.sock, d.ctr = cd, cd.Dir, cd.Sock, cd.CtrBin
	t.Cleanup(d.stop)
	if out, err := d.run(30*time.Second, "", "version"); err == nil {
		t.Logf("%s", out)
	}
	if err := d.Import(); err != nil {
		t.Fatal(err)
	}
	return d
}

func (d *daemon) stop() {
	d.Stop()
	if d.t.Failed() {
		log := d.log.String()
		// Errors and warnings of the whole run (a failed subtest may be far
		// from the end), then the tail.
		var notable, quiet []string
		for _, l := range strings.Split(log, "\n") {
			if strings.Contains(l, "level=error") || strings.Contains(l, "level=warn") || strings.Contains(l, "panic") ||
				strings.HasPrefix(l, "goroutine ") || strings.Contains(l, "SIGSYS") || strings.Contains(l, "fatal error") || strings.Contains(l, "level=fatal") {
				notable = append(notable, l)
			}
			// The guest probing for PCI through unclaimed ports is most of
			// a debug log; leave it out of the tail.
			if !strings.Contains(l, "unclaimed port") {
				quiet = append(quiet, l)
			}
		}
		if n := len(notable); n > 300 {
			notable = notable[n-300:]
		}
		log = strings.Join(quiet, "\n")
		if len(log) > 80000 {
			log = log[len(log)-80000:]
		}
		d.t.Logf("containerd log, errors and warnings:\n%s\ncontainerd log, tail:\n%s", strings.Join(notable, "\n"), log)
	}
}

// run runs ctr with stdin and returns its combined output.
func (d *daemon) run(timeout time.Duration, stdin string, args ...string) (string, error) {
	return d.Ctr(timeout, stdin, args...)
}

func exitCode(err error) int { return ctrd.ExitCode(err) }

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
	return append(l, ctrd.CacheLeftovers(filepath.Join(d.dir, ctrd.ImageCache))...)
}

// checkClean fails the test if anything is left behind 5 s after the end.
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
