package lab

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/vmm/kvmprobe"
)

// InLab reports whether this process runs inside the lab VM.
func InLab() bool { return os.Getenv("STRATOVIRT_IN_LAB") == "1" }

// Where says where Linux guests boot from this process: "host" when the
// host's /dev/kvm can run them, "lab" when already inside the lab, or
// "needs-lab" with the probe's reason.
func Where() (string, string) {
	if InLab() {
		return "lab", "inside the nested-KVM lab VM"
	}
	r := kvmprobe.Host()
	if r.CanBootLinux {
		return "host", r.Detail
	}
	return "needs-lab", r.Detail
}

// Main is the TestMain of test packages that boot Linux guests. Where the
// host's KVM can run Linux (or inside the lab) it runs the tests directly;
// otherwise it runs this same test binary, with the same flags, inside
// one lab VM and exits with its status.
func Main(m *testing.M) { os.Exit(Exec(m)) }

// Exec is Main without the exit, for a TestMain that prepares files on
// the host before and cleans up after.
func Exec(m *testing.M) int {
	where, why := Where()
	if where != "needs-lab" {
		fmt.Fprintf(os.Stderr, "lab: tests boot guests on this machine's KVM (%s: %s)\n", where, why)
		return m.Run()
	}
	fmt.Fprintf(os.Stderr, "lab: host KVM cannot boot Linux (%s); running %s inside the lab\n", why, filepath.Base(os.Args[0]))
	return reexec(os.Args)
}

func reexec(args []string) int {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		return 1
	}
	return runTestBinary(exe, args[1:], os.Stdout, Run)
}

// runTestBinary runs the test binary exe with args in the lab through
// run, writing its output to stdout, and returns its exit status.
func runTestBinary(exe string, args []string, stdout io.Writer, run func(context.Context, Options) (*Result, error)) int {
	opts := Options{Stdout: stdout, Stderr: os.Stderr, Timeout: 30 * time.Minute}
	var inner []string
	verbose := ""
	for _, a := range args {
		// The binary inside gets a shorter timeout than the lab run so that
		// a hung test ends in the testing package's panic, which prints
		// every goroutine's stack, instead of a silent lab kill.
		if v, ok := strings.CutPrefix(a, "-test.timeout="); ok {
			if d, err := time.ParseDuration(v); err == nil && d > 0 {
				opts.Timeout = d
				if d > time.Minute {
					opts.Timeout = d - 30*time.Second
				}
				a = "-test.timeout=" + innerTimeout(d).String()
			}
		}
		// A verbose binary prints as each test starts and logs; silence
		// that long means a wedged lab, not a slow test.
		if a == "-test.v=true" || a == "-test.v=test2json" || a == "-test.v" {
			verbose = a
			opts.IdleTimeout = labIdleTimeout
			if d, err := time.ParseDuration(os.Getenv("LAB_IDLE_TIMEOUT")); err == nil {
				opts.IdleTimeout = d // 0 turns the limit off
			}
		}
		inner = append(inner, a)
		// Files go test asks the binary to write must come back.
		for _, f := range []string{"-test.testlogfile=", "-test.coverprofile=", "-test.outputdir=", "-test.cpuprofile="} {
			if v, ok := strings.CutPrefix(a, f); ok && opts.OutDir == "" {
				if f == "-test.outputdir=" {
					opts.OutDir = v
				} else {
					opts.OutDir = filepath.Dir(v)
				}
			}
		}
	}
	if v, err := strconv.Atoi(os.Getenv("LAB_MEMORY")); err == nil && v > 0 {
		opts.Memory = v
	}
	progress := &testProgress{w: stdout}
	if verbose != "" {
		opts.Stdout = progress
	}
	prefix := ""
	if verbose == "-test.v=test2json" {
		prefix = testMarker
	}
	var failed []string       // tests failed because their lab went silent or froze too often
	froze := map[string]int{} // how often each test's lab froze
	for labs := 1; ; labs++ {
		quoted := []string{shellQuote(exe)}
		ended, _ := progress.state()
		for _, a := range skipArgs(inner, append(ended, failed...)) {
			quoted = append(quoted, shellQuote(a))
		}
		res, err := run(context.Background(), opts.with(strings.Join(quoted, " ")))
		if err == nil {
			fmt.Fprintf(os.Stderr, "lab: test binary started %.1fs after lab launch, lab run took %.1fs\n", res.Boot.Seconds(), res.Duration.Seconds())
			if len(failed) > 0 && res.ExitCode == 0 {
				return 1
			}
			return res.ExitCode
		}
		fmt.Fprintln(os.Stderr, err)
		_, running := progress.state()
		frozen := errors.Is(err, ErrFrozen)
		if verbose == "" || labs == maxLabs || !frozen && (running == "" || !errors.Is(err, ErrIdle)) {
			progress.closeOpen(stdout, prefix, "FAIL", "the lab run ended: "+firstLine(err))
			return 1
		}
		switch {
		case frozen && running == "":
			// Between tests: the ones not yet ended run in a fresh lab.
			fmt.Fprintln(os.Stderr, "lab: the lab froze between tests; going on in a fresh lab")
		case frozen && froze[running] < maxFreezes:
			// The lab froze under the test (see docs/performance.md, "the
			// lab freeze": QEMU's emulated SVM, not the test): the test
			// did not end, so it runs again, whole, in a fresh lab.
			froze[running]++
			progress.closeOpen(stdout, prefix, "SKIP", fmt.Sprintf("the lab froze (%d of %d allowed); %s runs again in a fresh lab", froze[running], maxFreezes, running))
		default:
			// Silent while the lab lived (a hung test), or froze again
			// and again: fail the test, so that a rerun takes it, and go
			// on in a fresh lab with the tests after it, which would
			// otherwise not run at all.
			why := "the lab froze too often during " + running
			if !frozen {
				why = "the lab was alive but " + running + " printed nothing for " + opts.IdleTimeout.String()
			}
			progress.closeOpen(stdout, prefix, "FAIL", why+"; going on with the tests after it in a fresh lab")
			failed = append(failed, running)
		}
	}
}

// firstLine is the first line of err's message.
func firstLine(err error) string {
	l, _, _ := strings.Cut(err.Error(), "\n")
	return l
}

// maxLabs bounds the labs one test binary runs in: its own and the fresh
// ones after labs that froze or went silent.
const maxLabs = 8

// maxFreezes is how often the lab may freeze under one test before that
// test fails: each freeze costs a lab boot and the test's rerun.
const maxFreezes = 2

// labTimeoutMargin is how much sooner than the lab run a test binary
// inside it times out: lab boot plus the time to print the stacks.
const labTimeoutMargin = 2 * time.Minute

// labIdleTimeout ends the lab run of a verbose test binary that has
// printed nothing for this long (see Options.IdleTimeout).
const labIdleTimeout = 5 * time.Minute

// innerTimeout is the -test.timeout given to a test binary run in the lab
// when the outer one is d.
func innerTimeout(d time.Duration) time.Duration {
	if d > 2*labTimeoutMargin {
		return d - labTimeoutMargin
	}
	return d * 3 / 4
}

func (o Options) with(cmd string) Options { o.Cmd = cmd; return o }

// RunT runs cmd in the lab from a host test and fails the test when the
// lab cannot run it. The exit status is in the Result.
func RunT(t testing.TB, opts Options) *Result {
	t.Helper()
	res, err := Run(context.Background(), opts)
	if err != nil {
		t.Fatalf("lab run of %q: %v", opts.Cmd, err)
	}
	t.Logf("lab: command started %.1fs after launch, run took %.1fs, exit %d", res.Boot.Seconds(), res.Duration.Seconds(), res.ExitCode)
	return res
}
