package seccomp

import (
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// run interprets prog (the subset Assemble emits) on a seccomp_data.
func run(t *testing.T, prog []unix.SockFilter, arch, nr uint32, args [6]uint64) uint32 {
	t.Helper()
	data := make([]byte, 64)
	binary.LittleEndian.PutUint32(data[0:], nr)
	binary.LittleEndian.PutUint32(data[4:], arch)
	for i, a := range args {
		binary.LittleEndian.PutUint64(data[16+8*i:], a)
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		in := prog[pc]
		switch in.Code {
		case bpfLdAbs:
			acc = binary.LittleEndian.Uint32(data[in.K:])
		case bpfAndK:
			acc &= in.K
		case bpfJeqK:
			if acc == in.K {
				pc += int(in.Jt)
			} else {
				pc += int(in.Jf)
			}
		case bpfRetK:
			return in.K
		default:
			t.Fatalf("unknown instruction %#x at %d", in.Code, pc)
		}
	}
	t.Fatal("program fell off the end")
	return 0
}

func TestAssembleDecisions(t *testing.T) {
	f := Filter{Default: KillProcess, Rules: []Rule{
		allow("read", unix.SYS_READ),
		ioctlRule(),
		{Name: "clone", Nr: unix.SYS_CLONE, Cond: &Cond{Arg: 0, Mask: unix.CLONE_THREAD, Values: []uint32{unix.CLONE_THREAD}}},
		allow("write", unix.SYS_WRITE),
		{Name: "clone3", Nr: unix.SYS_CLONE3, Errno: uint16(unix.ENOSYS)},
	}}
	prog, err := f.Assemble()
	if err != nil {
		t.Fatal(err)
	}
	const x86 = unix.AUDIT_ARCH_X86_64
	const ok, kill = unix.SECCOMP_RET_ALLOW, unix.SECCOMP_RET_KILL_PROCESS
	kvmRun := uint64(0xae80)
	tests := []struct {
		name string
		arch uint32
		nr   uint32
		args [6]uint64
		want uint32
	}{
		{"read", x86, unix.SYS_READ, [6]uint64{}, ok},
		{"write after cond rules", x86, unix.SYS_WRITE, [6]uint64{}, ok},
		{"openat", x86, unix.SYS_OPENAT, [6]uint64{}, kill},
		{"KVM_RUN", x86, unix.SYS_IOCTL, [6]uint64{5, kvmRun}, ok},
		{"TCGETS", x86, unix.SYS_IOCTL, [6]uint64{0, unix.TCGETS}, ok},
		{"TUNSETIFF", x86, unix.SYS_IOCTL, [6]uint64{0, unix.TUNSETIFF}, ok},
		{"BLKGETSIZE64", x86, unix.SYS_IOCTL, [6]uint64{0, unix.BLKGETSIZE64}, ok},
		{"KVM_RUN high bits ignored", x86, unix.SYS_IOCTL, [6]uint64{5, 1<<32 | kvmRun}, ok},
		{"FIFREEZE", x86, unix.SYS_IOCTL, [6]uint64{0, 0xc0045877 /* FIFREEZE */}, kill},
		{"SIOCGIFFLAGS", x86, unix.SYS_IOCTL, [6]uint64{0, unix.SIOCGIFFLAGS}, kill},
		{"thread clone", x86, unix.SYS_CLONE, [6]uint64{unix.CLONE_VM | unix.CLONE_THREAD | unix.CLONE_SIGHAND}, ok},
		{"fork-like clone", x86, unix.SYS_CLONE, [6]uint64{uint64(unix.SIGCHLD)}, kill},
		{"clone3 fails with ENOSYS", x86, unix.SYS_CLONE3, [6]uint64{}, unix.SECCOMP_RET_ERRNO | uint32(unix.ENOSYS)},
		{"i386 arch", unix.AUDIT_ARCH_I386, unix.SYS_READ, [6]uint64{}, kill},
		{"x32 read", x86, 0x40000000 | unix.SYS_READ, [6]uint64{}, kill},
	}
	for _, tc := range tests {
		if got := run(t, prog, tc.arch, tc.nr, tc.args); got != tc.want {
			t.Errorf("%s: action %#x, want %#x", tc.name, got, tc.want)
		}
	}
	f.Default = Log
	prog, _ = f.Assemble()
	if got := run(t, prog, x86, unix.SYS_OPENAT, [6]uint64{}); got != unix.SECCOMP_RET_LOG {
		t.Errorf("log default: %#x", got)
	}
	if got := run(t, prog, x86, unix.SYS_IOCTL, [6]uint64{0, 0xc0045877 /* FIFREEZE */}); got != unix.SECCOMP_RET_LOG {
		t.Errorf("log default for a failed condition: %#x", got)
	}
}

func TestAssembleErrors(t *testing.T) {
	dup := Filter{Rules: []Rule{allow("read", 0), allow("read again", 0)}}
	if _, err := dup.Assemble(); err == nil || !strings.Contains(err.Error(), "listed twice") {
		t.Errorf("duplicate: %v", err)
	}
	bad := Filter{Rules: []Rule{{Name: "x", Nr: 1, Cond: &Cond{Arg: 6, Values: []uint32{1}}}}}
	if _, err := bad.Assemble(); err == nil {
		t.Error("arg 6 accepted")
	}
	empty := Filter{Rules: []Rule{{Name: "x", Nr: 1, Cond: &Cond{Arg: 0}}}}
	if _, err := empty.Assemble(); err == nil {
		t.Error("condition without values accepted")
	}
}

func TestAllowLists(t *testing.T) {
	for name, f := range map[string]Filter{"vcpu": VCPU(KillProcess), "process": Process(KillProcess)} {
		if _, err := f.Assemble(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	has := func(f Filter, nr uint32) bool {
		for _, r := range f.Rules {
			if r.Nr == nr {
				return true
			}
		}
		return false
	}
	v, p := VCPU(KillProcess), Process(KillProcess)
	for _, r := range v.Rules {
		if !has(p, r.Nr) {
			t.Errorf("vCPU syscall %s is not in the process list (it would be killed anyway)", r.Name)
		}
	}
	for _, nr := range []uint32{unix.SYS_OPENAT, unix.SYS_CLONE, unix.SYS_ACCEPT4, unix.SYS_UNLINKAT} {
		if has(v, nr) {
			t.Errorf("vCPU list allows syscall %d", nr)
		}
	}
	for _, nr := range []uint32{unix.SYS_EXECVE, unix.SYS_FORK, unix.SYS_PTRACE, unix.SYS_MOUNT, unix.SYS_BIND, unix.SYS_GETPPID} {
		if has(p, nr) {
			t.Errorf("process list allows syscall %d", nr)
		}
	}
}

func TestParseAction(t *testing.T) {
	for in, want := range map[string]Action{"": KillProcess, "kill": KillProcess, "TRAP": Trap, "log": Log} {
		if got, err := ParseAction(in); err != nil || got != want {
			t.Errorf("ParseAction(%q) = %v, %v", in, got, err)
		}
	}
	if _, err := ParseAction("allow"); err == nil {
		t.Error("allow accepted")
	}
}

const envHelper = "SECCOMP_TEST_HELPER"

// TestHelperProcess is the child of TestInstall: it installs the filters
// and then does what envHelper asks.
func TestHelperProcess(t *testing.T) {
	mode := os.Getenv(envHelper)
	if mode == "" {
		t.Skip("helper for TestInstall")
	}
	if err := Install(Process(KillProcess), true); err != nil {
		os.Stdout.WriteString("install: " + err.Error() + "\n")
		os.Exit(3)
	}
	// The runtime keeps working: goroutines, timers, allocation, GC.
	done := make(chan []byte)
	go func() {
		b := make([]byte, 0)
		for i := range 1000 {
			b = append(b, make([]byte, 1024)...)
			_ = i
		}
		time.Sleep(10 * time.Millisecond)
		done <- b
	}()
	<-done
	runtime.GC()
	switch mode {
	case "ok":
		os.Stdout.WriteString("alive\n")
		os.Exit(0)
	case "forbidden":
		unix.Syscall(unix.SYS_GETPPID, 0, 0, 0)
		os.Stdout.WriteString("survived getppid\n")
		os.Exit(0)
	case "vcpu-open", "other-open":
		res := make(chan error)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
			err := Install(VCPU(KillProcess), false)
			if err == nil && mode == "vcpu-open" {
				// Allowed by the process filter, not by this thread's.
				_, err = os.Open("/dev/null")
				os.Stdout.WriteString("survived open on the filtered thread\n")
			}
			res <- err
		}()
		if err := <-res; err != nil {
			os.Stdout.WriteString("vcpu: " + err.Error() + "\n")
			os.Exit(4)
		}
		// Other threads still may open files.
		f, err := os.Open("/dev/null")
		if err != nil {
			os.Stdout.WriteString("open: " + err.Error() + "\n")
			os.Exit(5)
		}
		f.Close()
		os.Stdout.WriteString("alive\n")
		os.Exit(0)
	}
	os.Exit(6)
}

// TestInstall runs the filters for real in child processes.
func TestInstall(t *testing.T) {
	for _, tc := range []struct {
		mode   string
		killed bool
	}{{"ok", false}, {"forbidden", true}, {"other-open", false}, {"vcpu-open", true}} {
		t.Run(tc.mode, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
			cmd.Env = append(os.Environ(), envHelper+"="+tc.mode)
			out, err := cmd.Output()
			var ee *exec.ExitError
			if strings.Contains(string(out), "install: ") && strings.Contains(string(out), "not supported") {
				t.Skipf("no seccomp here: %s", out)
			}
			if !tc.killed {
				if err != nil || !strings.Contains(string(out), "alive") {
					t.Fatalf("child failed: %v\n%s", err, out)
				}
				return
			}
			if !errors.As(err, &ee) {
				t.Fatalf("child not killed: %v\n%s", err, out)
			}
			ws := ee.Sys().(syscall.WaitStatus)
			if !ws.Signaled() || ws.Signal() != syscall.SIGSYS {
				t.Fatalf("child ended with %v, want SIGSYS\n%s", ws, out)
			}
			if strings.Contains(string(out), "survived") {
				t.Fatalf("forbidden syscall returned: %s", out)
			}
		})
	}
}
