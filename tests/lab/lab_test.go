package lab

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestModuleDeps(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/fs/9p/9p.ko: kernel/fs/netfs/netfs.ko kernel/net/9p/9pnet.ko kernel/fs/fscache/fscache.ko\n" +
		"kernel/fs/netfs/netfs.ko: kernel/fs/fscache/fscache.ko\n" +
		"kernel/fs/fscache/fscache.ko:\n" +
		"kernel/net/9p/9pnet.ko:\n" +
		"kernel/net/9p/9pnet_virtio.ko: kernel/net/9p/9pnet.ko kernel/drivers/virtio/virtio_ring.ko\n" +
		"kernel/drivers/virtio/virtio_ring.ko:\n" +
		"kernel/drivers/vhost/vhost-vsock.ko:\n"
	if err := os.WriteFile(filepath.Join(dir, "modules.dep"), []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := moduleDeps(dir, []string{"9pnet_virtio", "9p", "vhost_vsock"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"kernel/net/9p/9pnet.ko", "kernel/drivers/virtio/virtio_ring.ko", "kernel/net/9p/9pnet_virtio.ko",
		"kernel/fs/fscache/fscache.ko", "kernel/fs/netfs/netfs.ko", "kernel/fs/9p/9p.ko",
		"kernel/drivers/vhost/vhost-vsock.ko",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("order:\n got %v\nwant %v", got, want)
	}
	if _, err := moduleDeps(dir, []string{"nosuch"}); err == nil {
		t.Fatal("missing module accepted")
	}
	// A built-in module needs no file.
	if err := os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/virtio/virtio_pci.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := moduleDeps(dir, []string{"virtio_pci", "9pnet"}); err != nil || strings.Join(got, " ") != "kernel/net/9p/9pnet.ko" {
		t.Fatalf("with a built-in module: %v, %v", got, err)
	}
}

func TestShellQuote(t *testing.T) {
	for _, s := range []string{"", "plain", "it's", `a "b" $c \d`, "new\nline"} {
		out, err := exec.Command("/bin/sh", "-c", "printf %s "+shellQuote(s)).Output()
		if err != nil || string(out) != s {
			t.Errorf("quote %q: got %q, %v", s, out, err)
		}
	}
	for s, want := range map[string]bool{"PATH": true, "_x1": true, "1x": false, "A-B": false, "": false} {
		if validEnvName(s) != want {
			t.Errorf("validEnvName(%q) = %v", s, !want)
		}
	}
}

func TestLabTHP(t *testing.T) {
	for _, tc := range []struct{ want, env, mode string }{
		{"", "", "never"},
		{"", "madvise", "madvise"},
		{"", "bogus", "never"},
		{"always", "", "always"},
		{"madvise", "never", "madvise"},
		{"bogus", "always", "always"},
	} {
		t.Setenv("LAB_THP", tc.env)
		if got := labTHP(tc.want); got != tc.mode {
			t.Errorf("labTHP(%q) with LAB_THP=%q = %q, want %q", tc.want, tc.env, got, tc.mode)
		}
	}
}

func TestMissingQEMU(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	_, err := Run(context.Background(), Options{Cmd: "true"})
	if err == nil || !strings.Contains(err.Error(), "qemu-system-x86_64 not found") || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("want a clear missing-QEMU error, got %v", err)
	}
}

func TestMissingKernel(t *testing.T) {
	t.Setenv("STRATOVIRT_CACHE", t.TempDir())
	_, err := FindKernel("amd64")
	if err == nil || !strings.Contains(err.Error(), "make deps") {
		t.Fatalf("want a clear missing-kernel error, got %v", err)
	}
}

// needLab skips tests that boot the lab where it is not installed, and
// inside the lab itself.
func needLab(t *testing.T) {
	t.Helper()
	if InLab() {
		t.Skip("already inside the lab")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed (make deps)")
	}
	if _, err := FindKernel("amd64"); err != nil {
		t.Skip(err)
	}
}

func TestRun(t *testing.T) {
	needLab(t)
	out := t.TempDir()
	wd, _ := os.Getwd()
	res := RunT(t, Options{
		Cmd: `printf 'out\n'; printf 'err\n' >&2; pwd; echo "$LAB_TEST_VAR"; ` +
			`test -c /dev/kvm && test -c /dev/vhost-vsock && test -c /dev/net/tun && echo devices-ok; ` +
			`grep -qw svm /proc/cpuinfo && echo svm-ok; test -f /sys/fs/cgroup/cgroup.controllers && echo cgroup2-ok; ` +
			`echo data > "$OUT/result.txt"; touch /should-not-leak; exit 7`,
		Env:    []string{"LAB_TEST_VAR=it's here", "OUT=" + out},
		OutDir: out,
	})
	if res.ExitCode != 7 {
		t.Errorf("exit code %d, want 7", res.ExitCode)
	}
	want := "out\n" + wd + "\nit's here\ndevices-ok\nsvm-ok\ncgroup2-ok\n"
	if string(res.Stdout) != want {
		t.Errorf("stdout %q, want %q", res.Stdout, want)
	}
	if string(res.Stderr) != "err\n" {
		t.Errorf("stderr %q, want %q (kernel messages must not mix in)", res.Stderr, "err\n")
	}
	if b, err := os.ReadFile(filepath.Join(out, "result.txt")); err != nil || string(b) != "data\n" {
		t.Errorf("output dir file: %q, %v", b, err)
	}
	if _, err := os.Stat("/should-not-leak"); err == nil {
		os.Remove("/should-not-leak")
		t.Error("a write outside the output directory reached the host")
	}
}

func TestTimeout(t *testing.T) {
	needLab(t)
	start := time.Now()
	_, err := Run(context.Background(), Options{Cmd: "sleep 600", Timeout: 3 * time.Second})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("want ErrTimeout, got %v", err)
	}
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("timeout took %v", d)
	}
}

func TestIdleTimeout(t *testing.T) {
	needLab(t)
	start := time.Now()
	_, err := Run(context.Background(), Options{Cmd: "echo started; sleep 600", Timeout: 5 * time.Minute, IdleTimeout: 5 * time.Second})
	if !errors.Is(err, ErrIdle) {
		t.Fatalf("want ErrIdle, got %v", err)
	}
	if d := time.Since(start); d > 3*time.Minute {
		t.Fatalf("idle timeout took %v", d)
	}
}

func TestInnerTimeout(t *testing.T) {
	for _, c := range []struct{ outer, inner time.Duration }{
		{30 * time.Minute, 28 * time.Minute},
		{20 * time.Minute, 18 * time.Minute},
		{4 * time.Minute, 3 * time.Minute},
		{2 * time.Minute, 90 * time.Second},
		{40 * time.Second, 30 * time.Second},
	} {
		if got := innerTimeout(c.outer); got != c.inner {
			t.Errorf("innerTimeout(%v) = %v, want %v", c.outer, got, c.inner)
		}
	}
}

// A lab whose heartbeat stops (here: killed; in the real freeze the lab
// kernel no longer runs) ends in ErrFrozen soon after, though the command
// would run for minutes.
func TestFreezeTimeout(t *testing.T) {
	needLab(t)
	start := time.Now()
	res, err := Run(context.Background(), Options{
		Cmd:     `kill "$(cat /run/lab-heartbeat.pid)"; echo killed; sleep 600`,
		Timeout: 5 * time.Minute, FreezeTimeout: 10 * time.Second,
	})
	if !errors.Is(err, ErrFrozen) {
		t.Fatalf("want ErrFrozen, got %v", err)
	}
	if res == nil || string(res.Stdout) != "killed\n" {
		t.Fatalf("the command did not run before the heartbeat stopped: %+v", res)
	}
	if d := time.Since(start); d > 2*time.Minute {
		t.Fatalf("freeze found after %v", d)
	}
	// A lab that beats runs on past FreezeTimeout.
	res = RunT(t, Options{Cmd: "sleep 15; echo done", Timeout: 5 * time.Minute, FreezeTimeout: 10 * time.Second})
	if string(res.Stdout) != "done\n" {
		t.Fatalf("stdout %q", res.Stdout)
	}
}
