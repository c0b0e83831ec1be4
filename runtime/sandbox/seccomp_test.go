package sandbox

import (
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/stratovirt-go/stratovirt/vmm/seccomp"
)

const envSeccompHelper = "SANDBOX_SECCOMP_HELPER"

// TestSeccompHelper is the child of TestVCPUSeccompKills: it runs the
// shim's vCPU hook on a locked thread (as vmm/vcpu does) and then makes
// the syscall envSeccompHelper names there.
func TestSeccompHelper(t *testing.T) {
	mode := os.Getenv(envSeccompHelper)
	if mode == "" {
		t.Skip("helper for TestVCPUSeccompKills")
	}
	hook, err := VCPUSeccomp()
	if err != nil {
		os.Stdout.WriteString("hook: " + err.Error() + "\n")
		os.Exit(3)
	}
	// The network poller is in use (as in the shim: ttrpc, FIFOs), so a
	// GC's start-the-world polls it.
	pr, pw, err := os.Pipe()
	if err != nil {
		os.Stdout.WriteString("pipe: " + err.Error() + "\n")
		os.Exit(3)
	}
	defer pr.Close()
	defer pw.Close()
	res := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if err := hook(0); err != nil {
			res <- err
			return
		}
		// What a device handler may do on a vCPU thread.
		b := make([]byte, 1<<20)
		_ = b
		switch mode {
		case "open":
			f, err := os.Open(os.DevNull)
			if err == nil {
				f.Close()
			}
			os.Stdout.WriteString("survived open on a vCPU thread\n")
		case "socket":
			fd, _ := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
			syscall.Close(fd)
			os.Stdout.WriteString("survived socket on a vCPU thread\n")
		case "gc":
			// What a vCPU thread's allocation can do: start (and end) a
			// garbage collection, whose start-the-world polls the network
			// poller (epoll_pwait) on this thread.
			for range 3 {
				runtime.GC()
			}
		case "exec":
			syscall.Exec("/bin/true", []string{"true"}, nil)
			os.Stdout.WriteString("survived execve on a vCPU thread\n")
		}
		res <- nil
	}()
	if err := <-res; err != nil {
		if errors.Is(err, seccomp.ErrUnsupported) {
			os.Stdout.WriteString("unsupported: " + err.Error() + "\n")
			os.Exit(4)
		}
		os.Stdout.WriteString("install: " + err.Error() + "\n")
		os.Exit(5)
	}
	// The shim's other threads are not confined.
	f, err := os.Open(os.DevNull)
	if err != nil {
		os.Stdout.WriteString("open on another thread: " + err.Error() + "\n")
		os.Exit(6)
	}
	f.Close()
	os.Stdout.WriteString("alive\n")
	os.Exit(0)
}

// TestVCPUSeccompKills proves that the hook the shim installs on its vCPU
// threads (shim.NewVMMachine) kills the shim on a syscall outside the
// vCPU allow-list, and leaves the shim's other threads alone.
func TestVCPUSeccompKills(t *testing.T) {
	for _, tc := range []struct {
		mode, action string
		killed       bool
	}{
		{"ok", "", false},
		{"gc", "", false},
		{"open", "", true},
		{"socket", "kill", true},
		{"exec", "", true},
		{"open", "log", false}, // debugging: allowed and audit-logged
	} {
		t.Run(tc.mode+"/"+tc.action, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSeccompHelper$")
			cmd.Env = append(os.Environ(), envSeccompHelper+"="+tc.mode, EnvSeccompAction+"="+tc.action)
			out, err := cmd.Output()
			if strings.HasPrefix(string(out), "unsupported: ") {
				t.Skipf("no seccomp here: %s", out)
			}
			if !tc.killed {
				if err != nil || !strings.Contains(string(out), "alive") {
					t.Fatalf("child failed: %v\n%s", err, out)
				}
				return
			}
			var ee *exec.ExitError
			if !errors.As(err, &ee) {
				t.Fatalf("child not killed: %v\n%s", err, out)
			}
			ws, ok := ee.Sys().(syscall.WaitStatus)
			if !ok || !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Fatalf("child ended with %v, want SIGSYS\n%s", ee, out)
			}
			if strings.Contains(string(out), "survived") || strings.Contains(string(out), "alive") {
				t.Fatalf("child went on after the forbidden syscall:\n%s", out)
			}
		})
	}
	t.Run("bad action", func(t *testing.T) {
		t.Setenv(EnvSeccompAction, "allow")
		if _, err := VCPUSeccomp(); err == nil || !strings.Contains(err.Error(), EnvSeccompAction) {
			t.Fatalf("error %v", err)
		}
	})
}
