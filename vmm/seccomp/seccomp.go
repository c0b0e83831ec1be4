// Package seccomp owns the VMM's system-call filters: it assembles classic
// BPF programs from allow-lists (allowlist.go) and installs them with
// seccomp(2), either on the calling thread only or, with TSYNC, on every
// thread of the process. It has no state and no goroutines; Install
// affects the calling OS thread (and, with TSYNC, all threads), so callers
// that install a per-thread filter must hold runtime.LockOSThread for the
// rest of the goroutine's life.
//
// Program shape (x86_64 only): check seccomp_data.arch is
// AUDIT_ARCH_X86_64 (anything else, i386 or x32 entry points included, is
// killed), load the syscall number, then for each allowed syscall a JEQ to
// RET ALLOW, or to a block that checks one argument against a set of
// values under a mask; anything not matched gets the default action.
package seccomp

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
)

// Action is what a filter does with a syscall it does not allow.
type Action uint32

// Default actions.
const (
	// KillProcess kills the whole process with SIGSYS; the kernel logs
	// it (audit type=1326 in dmesg/journal). The production default.
	KillProcess Action = unix.SECCOMP_RET_KILL_PROCESS
	// Trap sends SIGSYS to the thread; Go's runtime then crashes with a
	// traceback naming the PC ("SIGSYS: bad system call").
	Trap Action = unix.SECCOMP_RET_TRAP
	// Log allows the syscall and logs it: how the allow-lists are found.
	Log Action = unix.SECCOMP_RET_LOG
)

// ParseAction maps "kill", "trap" and "log" to an Action.
func ParseAction(s string) (Action, error) {
	switch strings.ToLower(s) {
	case "", "kill", "kill_process":
		return KillProcess, nil
	case "trap":
		return Trap, nil
	case "log":
		return Log, nil
	}
	return 0, fmt.Errorf("seccomp action %q (want kill, trap or log)", s)
}

func (a Action) String() string {
	switch a {
	case KillProcess:
		return "kill"
	case Trap:
		return "trap"
	case Log:
		return "log"
	}
	return fmt.Sprintf("action(%#x)", uint32(a))
}

// Cond restricts one argument: the syscall is allowed only when the low
// 32 bits of argument Arg, ANDed with Mask, equal one of Values.
type Cond struct {
	Arg    int
	Mask   uint32
	Values []uint32
}

// Rule allows one syscall, optionally only with a matching argument. A
// rule with Errno set instead makes the syscall fail with that errno (for
// calls whose callers have a fallback, such as clone3 → clone).
type Rule struct {
	Name  string // for documentation and error messages
	Nr    uint32
	Cond  *Cond
	Errno uint16
}

// Filter is an allow-list with a default action for everything else.
type Filter struct {
	Rules   []Rule
	Default Action
}

// seccomp_data offsets.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
)

const (
	bpfLdAbs  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
	bpfJeqK   = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
	bpfAndK   = unix.BPF_ALU | unix.BPF_AND | unix.BPF_K
	bpfRetK   = unix.BPF_RET | unix.BPF_K
	maxValues = 200 // keeps every jump offset within 8 bits
	maxInsns  = 4096
)

// Assemble compiles f to a classic BPF program.
func (f Filter) Assemble() ([]unix.SockFilter, error) {
	ins := func(code uint16, jt, jf uint8, k uint32) unix.SockFilter {
		return unix.SockFilter{Code: code, Jt: jt, Jf: jf, K: k}
	}
	allow := ins(bpfRetK, 0, 0, unix.SECCOMP_RET_ALLOW)
	deny := ins(bpfRetK, 0, 0, uint32(f.Default))
	prog := []unix.SockFilter{
		ins(bpfLdAbs, 0, 0, offArch),
		ins(bpfJeqK, 1, 0, unix.AUDIT_ARCH_X86_64),
		ins(bpfRetK, 0, 0, unix.SECCOMP_RET_KILL_PROCESS),
		ins(bpfLdAbs, 0, 0, offNr),
	}
	seen := make(map[uint32]string)
	for _, r := range f.Rules {
		if prev, dup := seen[r.Nr]; dup {
			return nil, fmt.Errorf("seccomp: syscall %d (%s) listed twice (also as %s)", r.Nr, r.Name, prev)
		}
		seen[r.Nr] = r.Name
		if r.Errno != 0 {
			prog = append(prog, ins(bpfJeqK, 0, 1, r.Nr), ins(bpfRetK, 0, 0, unix.SECCOMP_RET_ERRNO|uint32(r.Errno)))
			continue
		}
		if r.Cond == nil {
			prog = append(prog, ins(bpfJeqK, 0, 1, r.Nr), allow)
			continue
		}
		c := r.Cond
		n := len(c.Values)
		if n == 0 || n > maxValues || c.Arg < 0 || c.Arg > 5 {
			return nil, fmt.Errorf("seccomp: rule %s: bad condition (arg %d, %d values)", r.Name, c.Arg, n)
		}
		// JEQ nr; LD arg; AND mask; JEQ v_i → allow (n of them); deny;
		// allow; reload nr for the following rules.
		prog = append(prog,
			ins(bpfJeqK, 0, uint8(n+4), r.Nr),
			ins(bpfLdAbs, 0, 0, uint32(offArgs+8*c.Arg)),
			ins(bpfAndK, 0, 0, c.Mask))
		for i, v := range c.Values {
			prog = append(prog, ins(bpfJeqK, uint8(n-i), 0, v))
		}
		prog = append(prog, deny, allow)
	}
	prog = append(prog, deny)
	if len(prog) > maxInsns {
		return nil, fmt.Errorf("seccomp: program has %d instructions (max %d)", len(prog), maxInsns)
	}
	return prog, nil
}

// ErrUnsupported is returned when the kernel has no seccomp filters.
var ErrUnsupported = errors.New("seccomp filters are not supported by this kernel")

// Install assembles f and installs it on the calling thread, or with
// tsync on every thread of the process (the call then fails if another
// thread already has a filter that is not an ancestor of this thread's).
// It sets no_new_privs on the calling thread first, as seccomp requires
// of unprivileged callers; TSYNC propagates it to the other threads.
func Install(f Filter, tsync bool) error {
	prog, err := f.Assemble()
	if err != nil {
		return err
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	var flags uintptr
	if tsync {
		flags = unix.SECCOMP_FILTER_FLAG_TSYNC
	}
	r, err := install(prog, flags)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) {
			return fmt.Errorf("%w: %v", ErrUnsupported, err)
		}
		return fmt.Errorf("seccomp(SET_MODE_FILTER): %w", err)
	}
	if tsync && r != 0 {
		return fmt.Errorf("seccomp TSYNC: thread %d has an incompatible filter", r)
	}
	return nil
}
