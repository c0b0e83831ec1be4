// Package boot boots the Debian cloud kernel (bzImage and the ELF vmlinux
// inside it) with a busybox initramfs under cmd/stratovirt, on the host's
// KVM when it can run Linux and inside the lab otherwise, and checks what
// the guest sees: CPU count, memory, e820 map, ACPI tables, power-off and
// reboot.
package boot

import (
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/initramfs"
	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/tests/payload"
)

//go:embed init.sh
var initScript string

// Set by TestMain on the host; inherited by the test binary in the lab.
const (
	envVMM     = "BOOT_TEST_VMM"
	envInitrd  = "BOOT_TEST_INITRD"
	envBz      = "BOOT_TEST_BZIMAGE"
	envVmlinux = "BOOT_TEST_VMLINUX"
)

func TestMain(m *testing.M) {
	if os.Getenv(envVMM) == "" {
		dir, err := prepare()
		if err != nil {
			fmt.Fprintln(os.Stderr, "boot tests:", err)
			os.Exit(1)
		}
		code := lab.Exec(m)
		os.RemoveAll(dir)
		os.Exit(code)
	}
	os.Exit(m.Run())
}

// prepare builds the VMM and the initramfs on the host (fast) so that the
// lab only runs them.
func prepare() (string, error) {
	dir, err := os.MkdirTemp("", "boot-test-")
	if err != nil {
		return "", err
	}
	root, err := lab.RepoRoot()
	if err != nil {
		return dir, err
	}
	vmm := filepath.Join(dir, "stratovirt")
	build := exec.Command("go", "build", "-o", vmm, "./cmd/stratovirt")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		return dir, fmt.Errorf("build stratovirt: %v\n%s", err, out)
	}
	initrd := filepath.Join(dir, "initramfs.cpio")
	marker := map[string][]byte{"bin/boot-marker": payload.UserPortWrite(0x3f0, 123)}
	if err := initramfs.Busybox(initrd, initScript, marker); err != nil {
		return dir, err
	}
	k, err := lab.GuestKernel()
	if err != nil {
		return dir, err
	}
	vmlinux, err := lab.Vmlinux()
	if err != nil {
		return dir, err
	}
	os.Setenv(envVMM, vmm)
	os.Setenv(envInitrd, initrd)
	os.Setenv(envBz, k.Image)
	os.Setenv(envVmlinux, vmlinux)
	return dir, nil
}

type bootResult struct {
	stdout, stderr string
	err            error
	exitCode       int
	took           time.Duration
}

func boot(t *testing.T, kernel string, smp int, mem, action string) bootResult {
	t.Helper()
	args := []string{
		"-name", "boot-test", "-kernel", kernel, "-initrd", os.Getenv(envInitrd),
		"-smp", strconv.Itoa(smp), "-m", mem, "-serial", "stdio",
		"-append", "console=ttyS0 reboot=k panic=1 quiet loglevel=4 test.action=" + action,
	}
	cmd := exec.Command(os.Getenv(envVMM), args...)
	// Debug: TestBoot reads the pre-fault line.
	cmd.Env = append(os.Environ(), "STRATOVIRT_LOG_LEVEL=debug")
	// If the VMM is killed, do not wait on anything that still holds its
	// output pipes.
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(90 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("VM did not end within 90s\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	r := bootResult{stdout: stdout.String(), stderr: stderr.String(), err: err, took: time.Since(start)}
	if ee, ok := err.(*exec.ExitError); ok {
		r.exitCode = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("stratovirt %s: exit %d after %v", strings.Join(args, " "), r.exitCode, r.took.Round(time.Millisecond))
	return r
}

func parseSize(s string) uint64 {
	n, _ := strconv.ParseUint(strings.TrimRight(s, "MG"), 10, 64)
	switch s[len(s)-1] {
	case 'G':
		return n << 30
	case 'M':
		return n << 20
	}
	return n
}

func TestBoot(t *testing.T) {
	for _, tc := range []struct {
		kernel string
		smp    int
		mem    string
	}{
		{"bzImage", 1, "256M"},
		{"bzImage", 2, "1G"},
		{"bzImage", 4, "5G"},
		{"vmlinux", 1, "256M"},
		{"vmlinux", 2, "1G"},
		{"vmlinux", 4, "5G"},
	} {
		t.Run(fmt.Sprintf("%s/smp%d/%s", tc.kernel, tc.smp, tc.mem), func(t *testing.T) {
			kernel := os.Getenv(envBz)
			if tc.kernel == "vmlinux" {
				kernel = os.Getenv(envVmlinux)
			}
			r := boot(t, kernel, tc.smp, tc.mem, "poweroff")
			if r.exitCode != 0 {
				t.Fatalf("VMM exit %d (%v)\nstdout:\n%s\nstderr:\n%s", r.exitCode, r.err, r.stdout, r.stderr)
			}
			out := r.stdout
			if !strings.Contains(out, fmt.Sprintf("NPROC=%d\n", tc.smp)) && !strings.Contains(out, fmt.Sprintf("NPROC=%d\r\n", tc.smp)) {
				t.Errorf("guest does not see %d CPUs:\n%s", tc.smp, out)
			}
			want := parseSize(tc.mem)
			m := regexp.MustCompile(`MemTotal:\s+(\d+) kB`).FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no MemTotal in guest output:\n%s", out)
			}
			total, _ := strconv.ParseUint(m[1], 10, 64)
			total <<= 10
			// The kernel keeps some memory for itself; it must see most of
			// what was configured and never more.
			if total > want || total < want*85/100-32<<20 {
				t.Errorf("MemTotal %d MiB for %s", total>>20, tc.mem)
			}
			var ram uint64
			var high bool
			for _, e := range regexp.MustCompile(`E820 0x([0-9a-f]+) 0x([0-9a-f]+) System RAM`).FindAllStringSubmatch(out, -1) {
				s, _ := strconv.ParseUint(e[1], 16, 64)
				end, _ := strconv.ParseUint(e[2], 16, 64)
				ram += end + 1 - s
				if s >= 4<<30 {
					high = true
				}
			}
			if ram > want || ram < want-(1<<20) {
				t.Errorf("e820 System RAM totals %d bytes, want about %d\n%s", ram, want, out)
			}
			if want > 3<<30 && !high {
				t.Errorf("no RAM above 4 GiB in the e820 map for %s:\n%s", tc.mem, out)
			}
			if !regexp.MustCompile(`guest boot marker 123 after [0-9.]+m?s`).MatchString(r.stderr) {
				t.Errorf("VMM did not log the guest's boot marker:\n%s", r.stderr)
			}
			if !strings.Contains(out, "ACPI: FACP") || !strings.Contains(out, "ACPI: APIC") {
				t.Errorf("guest did not find the ACPI tables:\n%s", out)
			}
			checkPreFault(t, r.stderr)
		})
	}
}

func TestReboot(t *testing.T) {
	r := boot(t, os.Getenv(envBz), 1, "256M", "reboot")
	if r.exitCode != 0 || !strings.Contains(r.stdout, "ACTION=reboot") {
		t.Fatalf("reboot: exit %d (%v)\nstdout:\n%s\nstderr:\n%s", r.exitCode, r.err, r.stdout, r.stderr)
	}
}

// TestSerialInput types a line into the VMM's stdin once the guest waits
// for it and expects the guest to echo it back.
func TestSerialInput(t *testing.T) {
	cmd := exec.Command(os.Getenv(envVMM), "-kernel", os.Getenv(envBz), "-initrd", os.Getenv(envInitrd),
		"-m", "256M", "-serial", "stdio", "-append", "console=ttyS0 quiet panic=1 test.action=read")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "READY") {
		if time.Now().After(deadline) {
			t.Fatalf("guest never became ready:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if _, err := stdin.Write([]byte("hello from the host\n")); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil || !strings.Contains(out.String(), "GOT=hello from the host") {
			t.Fatalf("exit %v, output:\n%s", err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("guest did not echo the line:\n%s", out.String())
	}
}

// TestSIGTERM stops a running Linux guest from the host.
func TestSIGTERM(t *testing.T) {
	cmd := exec.Command(os.Getenv(envVMM), "-kernel", os.Getenv(envBz), "-initrd", os.Getenv(envInitrd),
		"-smp", "2", "-m", "256M", "-serial", "stdio", "-append", "console=ttyS0 quiet panic=1 test.action=sleep")
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "ACTION=sleep") {
		if time.Now().After(deadline) {
			t.Fatalf("guest never booted:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after SIGTERM: %v\n%s", err, out.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("VMM still running 10s after SIGTERM")
	}
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// kvmCapPreFaultMemory is KVM_CAP_PRE_FAULT_MEMORY.
const kvmCapPreFaultMemory = 236

// checkPreFault: where KVM can pre-fault (Linux 6.10+ with two-dimensional
// paging, as in the lab), the boot vCPU mapped the kernel it was given
// before it first ran (vmm/prefault.go); elsewhere the VMM says nothing.
func checkPreFault(t *testing.T, log string) {
	t.Helper()
	f, err := os.Open("/dev/kvm")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	const kvmCheckExtension = 0xAE03
	n, _, errno := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), kvmCheckExtension, kvmCapPreFaultMemory)
	m := regexp.MustCompile(`pre-faulted ([0-9]+) KiB of guest memory`).FindStringSubmatch(log)
	if errno != 0 || n == 0 {
		if m != nil {
			t.Errorf("KVM cannot pre-fault (%d, %v), yet the VMM logged %q", n, errno, m[0])
		}
		return
	}
	if m == nil {
		t.Fatalf("KVM can pre-fault, but the VMM did not log it:\n%s", log)
	}
	// The kernel alone is megabytes; the boot tables add a few pages.
	if kib, _ := strconv.Atoi(m[1]); kib < 1024 {
		t.Errorf("pre-faulted %d KiB, want the kernel's megabytes", kib)
	}
}
