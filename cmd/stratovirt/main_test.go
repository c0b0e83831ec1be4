package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/payload"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "stratovirt-cli-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "stratovirt")
	if out, err := exec.Command("go", "build", "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func kernelFile(t *testing.T, code []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "kernel")
	if err := os.WriteFile(p, payload.ELF(code), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func stratovirt(t *testing.T, timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(timeout, func() { cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	code = cmd.ProcessState.ExitCode()
	if err != nil && code < 0 {
		t.Fatalf("stratovirt %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

func TestBadOptions(t *testing.T) {
	kernel := kernelFile(t, payload.Spin())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-kernel", kernel, "-smp", "255"}, "-smp"},
		{[]string{"-kernel", kernel, "-smp", "0"}, "-smp"},
		{[]string{"-kernel", kernel, "-m", "128M"}, "-m"},
		{[]string{"-kernel", kernel, "-m", "513G"}, "-m"},
		{[]string{"-kernel", kernel, "-m", "lots"}, "-m"},
		{[]string{"-kernel", "/nonexistent/kernel"}, "-kernel"},
		{[]string{"-kernel", kernel, "-bogus"}, "-bogus"},
		{[]string{"-kernel", kernel, "-name", strings.Repeat("n", 256)}, "-name"},
		{[]string{"-smp", "2"}, "-kernel"},
	} {
		stdout, stderr, code := stratovirt(t, 10*time.Second, tc.args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 1 || len(lines) != 1 || !strings.Contains(stderr, tc.want) || stdout != "" {
			t.Errorf("%v: exit %d, stderr %q, stdout %q; want exit 1 and one line naming %s", tc.args, code, stderr, stdout, tc.want)
		}
	}
}

func TestHelpAndVersion(t *testing.T) {
	out, _, code := stratovirt(t, 10*time.Second, "-h")
	if code != 0 || !strings.Contains(out, "-kernel") {
		t.Errorf("-h: exit %d, %q", code, out)
	}
	out, _, code = stratovirt(t, 10*time.Second, "-V")
	if code != 0 || !strings.HasPrefix(out, "StratoVirt ") {
		t.Errorf("-V: exit %d, %q", code, out)
	}
}

func TestNotAKernel(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	p := filepath.Join(t.TempDir(), "text")
	os.WriteFile(p, bytes.Repeat([]byte("not a kernel "), 100), 0o644)
	_, stderr, code := stratovirt(t, 10*time.Second, "-kernel", p)
	if code != 1 || !strings.Contains(stderr, "not a bzImage or an ELF vmlinux") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestSerialStdioPowerOff(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	stdout, stderr, code := stratovirt(t, 20*time.Second, "-kernel", kernelFile(t, payload.Output()), "-serial", "stdio")
	if code != 0 || stdout != "ok\n" {
		t.Errorf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
}

func TestTripleFaultExit(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	_, stderr, code := stratovirt(t, 20*time.Second, "-kernel", kernelFile(t, payload.TripleFault()))
	if code != 1 || !strings.Contains(stderr, "triple fault") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}

func TestSIGTERM(t *testing.T) {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		t.Skip("no /dev/kvm")
	}
	cmd := exec.Command(binary, "-kernel", kernelFile(t, payload.Spin()), "-smp", "2")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after SIGTERM: %v, stderr %q", err, stderr.String())
		}
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		t.Fatal("VMM did not stop within 5s of SIGTERM")
	}
	t.Logf("stopped %v after SIGTERM", time.Since(start))
}
