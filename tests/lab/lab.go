// Package lab runs a command inside "the lab": a QEMU virtual machine under
// software emulation (TCG) whose emulated AMD CPU has SVM with nested
// paging, so that Debian's kvm_amd gives a real /dev/kvm inside it. It is
// how this project boots Linux guests on hosts whose own /dev/kvm cannot.
//
// The lab guest runs Debian's standard 6.12 kernel (bookworm-backports),
// unpacked by `make deps`.
// The host's root is shared read-only over 9p with a tmpfs overlay on top,
// so the command sees the same paths (checkout, Go tools, kernels) as on
// the host; writes stay in the guest except under Options.OutDir, which is
// shared read-write at the same path. The command's stdout and stderr come
// back on their own serial ports, apart from kernel messages.
package lab

import (
	"bytes"
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/initramfs"
)

//go:embed stage1.sh
var stage1 []byte

//go:embed stage2.sh
var stage2 []byte

// Options describe one command run in the lab.
type Options struct {
	// Cmd is a shell command line, run by /bin/sh.
	Cmd string
	// Dir is the working directory inside the lab (default: the current
	// directory, which exists there under the same path).
	Dir string
	// Env adds KEY=VALUE pairs to the host's environment, which the
	// command inherits.
	Env []string
	// Memory is the lab VM's memory in MiB (default 4096).
	Memory int
	// CPUs is the lab VM's CPU count (default 1, or $LAB_CPUS).
	CPUs int
	// Timeout bounds the whole run, boot included (default 10 minutes).
	Timeout time.Duration
	// OutDir, when set, is a host directory the command can write to;
	// it is created if needed and shared read-write at the same path.
	OutDir string
	// Stdout and Stderr, when set, receive the command's output as it
	// runs (it is captured in the Result as well).
	Stdout, Stderr io.Writer
	// Console, when set, receives the lab kernel's console.
	Console io.Writer
	// IdleTimeout, when set, ends the run early once the command has
	// written nothing to stdout or stderr for that long: a wedged lab
	// (nested virtualisation under TCG now and then stops making
	// progress) then fails in minutes rather than at Timeout.
	IdleTimeout time.Duration
	// FreezeTimeout ends the run with ErrFrozen once the lab's heartbeat
	// (a line stage 2 writes to a serial port of its own every few
	// seconds) has been silent for that long: the lab kernel no longer
	// runs. Default labFreezeTimeout, or $LAB_FREEZE_TIMEOUT; negative
	// turns the watch off.
	FreezeTimeout time.Duration
	// THP is the lab kernel's transparent huge page mode: never, madvise
	// or always. Empty: $LAB_THP, else never (labTHP).
	THP string
}

// Result is the outcome of a run whose command ran to completion.
type Result struct {
	ExitCode int
	Stdout   []byte
	Stderr   []byte
	Console  []byte
	// Boot is the time from starting QEMU to the command's start.
	Boot     time.Duration
	Duration time.Duration
}

// ErrTimeout is returned (wrapped) when the run exceeds Options.Timeout.
var ErrTimeout = errors.New("lab: timed out")

// ErrIdle is returned (wrapped) when the command was silent for longer
// than Options.IdleTimeout.
var ErrIdle = errors.New("lab: no output")

// ErrFrozen is returned (wrapped) when the lab's heartbeat stopped: the
// lab VM froze (see docs/performance.md, "the lab freeze": QEMU's TCG
// holds every interrupt back from the lab's halted CPU), whatever the
// command was doing.
var ErrFrozen = errors.New("lab: froze")

// labFreezeTimeout is the default Options.FreezeTimeout. Stage 2 beats
// every heartbeatPeriod; a busy lab still schedules that loop within a
// second or two, a frozen one never again.
const (
	labFreezeTimeout = 45 * time.Second
	heartbeatPeriod  = 5 * time.Second
	// labFirstBeat bounds the time from starting QEMU to the first beat
	// (a lab boots in about 8 s).
	labFirstBeat = 2 * time.Minute
)

// Modules loaded in the lab's stage 1 (to reach the host's root) and
// stage 2 (for what the tests use). Dependencies are resolved from the
// kernel package's modules.dep.
var (
	stage1Modules = []string{"virtio_pci", "9pnet_virtio", "9p", "overlay"}
	stage2Modules = []string{
		"kvm_amd", "vhost_vsock", "vhost_net", "tun", "tap", "loop", "ext4",
		"veth", "bridge", "br_netfilter", "nf_conntrack", "nf_nat",
		"nf_tables", "nft_compat", "nft_chain_nat", "nft_ct", "nft_masq",
		"ip_tables", "iptable_nat", "iptable_filter", "ipt_REJECT",
		"xt_MASQUERADE", "xt_comment", "xt_mark", "xt_conntrack",
		"xt_addrtype", "xt_multiport", "xt_nat", "xt_tcpudp",
		"sch_ingress", "cls_u32", "cls_matchall", "act_mirred", "erofs",
	}
)

// Kernel is an unpacked Debian kernel package.
type Kernel struct {
	Dir     string // unpack root (holds boot/ and lib/modules/)
	Version string // e.g. 6.12.95+deb12-amd64
	Image   string // bzImage path
}

// ModulesDir returns lib/modules/<version> of the package.
func (k Kernel) ModulesDir() string { return filepath.Join(k.Dir, "lib/modules", k.Version) }

// RepoRoot returns the root of this project's checkout, found by walking
// up from the current directory to the go.mod of this module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.Contains(b, []byte("module github.com/stratovirt-go/stratovirt\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("lab: not inside the stratovirt-go checkout (no go.mod found above the current directory)")
		}
		dir = parent
	}
}

// CacheDir returns where `make deps` puts tools and kernels:
// $STRATOVIRT_CACHE, or .cache at the repository root.
func CacheDir() (string, error) {
	if d := os.Getenv("STRATOVIRT_CACHE"); d != "" {
		return d, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, ".cache"), nil
}

// FindKernel returns the unpacked kernel of the given flavour ("amd64" for
// the lab's standard kernel, "cloud-amd64" for nested guests).
func FindKernel(flavour string) (Kernel, error) {
	cache, err := CacheDir()
	if err != nil {
		return Kernel{}, err
	}
	dir := filepath.Join(cache, "kernel", flavour)
	v, err := os.ReadFile(filepath.Join(dir, "version"))
	if err != nil {
		return Kernel{}, fmt.Errorf("lab: the Debian linux-image-%s package is not unpacked in %s; run `make deps` (as root) to download it", flavour, dir)
	}
	k := Kernel{Dir: dir, Version: strings.TrimSpace(string(v))}
	k.Image = filepath.Join(dir, "boot", "vmlinuz-"+k.Version)
	if _, err := os.Stat(k.Image); err != nil {
		return Kernel{}, fmt.Errorf("lab: kernel image missing: %w; run `make deps`", err)
	}
	return k, nil
}

// Run boots the lab, runs opts.Cmd in it and returns its exit status and
// output. A non-zero exit status is not an error; failing to boot, to run
// the command or to get its status back is.
func Run(ctx context.Context, opts Options) (*Result, error) {
	if opts.Memory == 0 {
		opts.Memory = 4096
	}
	if opts.CPUs == 0 {
		// One CPU: with two, QEMU's emulation of SVM now and then
		// livelocks on interrupt delivery (both vCPU threads spin in
		// cpu_exec's interrupt path, seen with gdb; the lab kernel reports
		// soft lockups) — in 2 of 2 focused critest runs, against none
		// with one. LAB_CPUS overrides it.
		opts.CPUs = 1
		if n, err := strconv.Atoi(os.Getenv("LAB_CPUS")); err == nil && n > 0 {
			opts.CPUs = n
		}
	}
	if opts.Timeout == 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.FreezeTimeout == 0 {
		opts.FreezeTimeout = labFreezeTimeout
		if d, err := time.ParseDuration(os.Getenv("LAB_FREEZE_TIMEOUT")); err == nil {
			opts.FreezeTimeout = d
			if d == 0 {
				opts.FreezeTimeout = -1
			}
		}
	}
	if opts.Dir == "" {
		wd, err := os.Getwd()
		if err != nil {
			return nil, err
		}
		opts.Dir = wd
	}
	qemu, err := exec.LookPath("qemu-system-x86_64")
	if err != nil {
		return nil, errors.New("lab: qemu-system-x86_64 not found; install Debian's qemu-system-x86 (`make deps` does)")
	}
	kernel, err := FindKernel("amd64")
	if err != nil {
		return nil, err
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		if _, serr := os.Stat("/bin/busybox"); serr != nil {
			return nil, errors.New("lab: busybox not found; install Debian's busybox-static (`make deps` does)")
		}
		busybox = "/bin/busybox"
	}

	job, err := os.MkdirTemp("", "lab-")
	if err != nil {
		return nil, fmt.Errorf("lab: job directory: %w", err)
	}
	defer os.RemoveAll(job)
	nonce := make([]byte, 8)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	nonceHex := hex.EncodeToString(nonce)
	if opts.OutDir != "" {
		if opts.OutDir, err = filepath.Abs(opts.OutDir); err != nil {
			return nil, err
		}
		if err := os.MkdirAll(opts.OutDir, 0o755); err != nil {
			return nil, fmt.Errorf("lab: output directory: %w", err)
		}
	}
	if err := writeJob(job, kernel, opts, nonceHex); err != nil {
		return nil, err
	}
	initrd := filepath.Join(job, "initramfs.cpio")
	if err := buildInitramfs(initrd, busybox, kernel); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	ctx, cancelIdle := context.WithCancelCause(ctx)
	defer cancelIdle(nil)
	var lastOutput, lastBeat atomic.Int64
	lastOutput.Store(time.Now().UnixNano())
	if opts.IdleTimeout > 0 {
		go watchSilence(ctx, &lastOutput, opts.IdleTimeout, ErrIdle, cancelIdle)
	}
	if opts.FreezeTimeout > 0 {
		// Until the first beat the limit is labFirstBeat from now.
		lastBeat.Store(time.Now().Add(max(labFirstBeat-opts.FreezeTimeout, 0)).UnixNano())
		go watchSilence(ctx, &lastBeat, opts.FreezeTimeout, ErrFrozen, cancelIdle)
	}
	args := []string{
		"-M", "q35,accel=tcg", "-cpu", "qemu64,+svm,+npt",
		"-smp", strconv.Itoa(opts.CPUs), "-m", strconv.Itoa(opts.Memory),
		"-nodefaults", "-display", "none", "-no-reboot",
		"-kernel", kernel.Image, "-initrd", initrd,
		// transparent_hugepage=never by default (labTHP): khugepaged
		// collapsing a nested guest's RAM under emulated nested paging
		// soft-locked a lab CPU for minutes (seen in CI). LAB_THP=madvise
		// gives the VMMs' guest RAM 2 MiB pages at fault time, with
		// khugepaged asleep (stage2.sh).
		"-append", "console=ttyS0 quiet loglevel=" + labLogLevel() + " panic=-1 mitigations=off tsc=reliable transparent_hugepage=" + labTHP(opts.THP) + " lab.job=" + job,
		"-chardev", "file,id=con,path=/dev/fd/3", "-serial", "chardev:con",
		"-chardev", "file,id=out,path=/dev/fd/4", "-serial", "chardev:out",
		"-chardev", "file,id=err,path=/dev/fd/5", "-serial", "chardev:err",
		"-chardev", "file,id=beat,path=/dev/fd/6", "-serial", "chardev:beat",
		"-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
	}
	if opts.OutDir != "" {
		args = append(args, "-virtfs", "local,path="+opts.OutDir+",mount_tag=out,security_model=none,multidevs=remap")
	}
	// LAB_QEMU_EXTRA adds QEMU arguments, for diagnosing the lab itself:
	// "-monitor unix:/tmp/labmon,server,nowait" lets `info registers`
	// and `info lapic` show where a wedged lab CPU sits.
	if extra := os.Getenv("LAB_QEMU_EXTRA"); extra != "" {
		args = append(args, strings.Fields(extra)...)
	}
	cmd := exec.CommandContext(ctx, qemu, args...)
	// A lab must not outlive the test binary that started it (killed by
	// go test's timeout or by hand): QEMU gets SIGKILL when it dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var qemuErr bytes.Buffer
	cmd.Stdout = &qemuErr
	cmd.Stderr = &qemuErr
	// LAB_CONSOLE_FILE gets the lab's console as it is written, for
	// diagnosing a lab that wedges (with LAB_LOGLEVEL=8 for the lab
	// kernel's messages).
	if f := os.Getenv("LAB_CONSOLE_FILE"); f != "" && opts.Console == nil {
		if cf, err := os.Create(f); err == nil {
			defer cf.Close()
			opts.Console = cf
		}
	}
	var console, stdout, stderr, beats SyncBuffer
	var wg sync.WaitGroup
	var files []*os.File
	var started time.Time
	cmdStart := make(chan time.Time, 1)
	for _, sink := range []struct {
		buf  *SyncBuffer
		tee  io.Writer
		last *atomic.Int64 // the time of the latest output, if kept
	}{{&console, opts.Console, nil}, {&stdout, opts.Stdout, &lastOutput}, {&stderr, opts.Stderr, &lastOutput}, {&beats, nil, &lastBeat}} {
		r, w, err := os.Pipe()
		if err != nil {
			return nil, err
		}
		defer r.Close()
		files = append(files, w)
		dst := io.Writer(sink.buf)
		if sink.tee != nil {
			dst = io.MultiWriter(sink.buf, sink.tee)
		}
		wg.Add(1)
		isOutput := sink.last == &lastOutput
		go func(last *atomic.Int64) {
			defer wg.Done()
			buf := make([]byte, 32*1024)
			first := true
			for {
				n, err := r.Read(buf)
				if n > 0 {
					if last != nil {
						last.Store(time.Now().UnixNano())
					}
					if first && isOutput {
						select {
						case cmdStart <- time.Now():
						default:
						}
					}
					first = false
					dst.Write(buf[:n])
				}
				if err != nil {
					return
				}
			}
		}(sink.last)
	}
	cmd.ExtraFiles = files
	cmd.WaitDelay = 5 * time.Second
	started = time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("lab: start qemu: %w", err)
	}
	for _, f := range files {
		f.Close()
	}
	waitErr := cmd.Wait()
	wg.Wait()
	res := &Result{
		Stdout: stdout.Bytes(), Stderr: stderr.Bytes(), Console: console.Bytes(),
		Duration: time.Since(started),
	}
	select {
	case t := <-cmdStart:
		res.Boot = t.Sub(started)
	default:
	}
	if errors.Is(context.Cause(ctx), ErrIdle) {
		return res, fmt.Errorf("%w for %v running %q; console tail:\n%s", ErrIdle, opts.IdleTimeout, opts.Cmd, tail(res.Console, 2000))
	}
	if errors.Is(context.Cause(ctx), ErrFrozen) {
		return res, fmt.Errorf("%w: no heartbeat for %v (%d beats before) running %q; console tail:\n%s",
			ErrFrozen, opts.FreezeTimeout, bytes.Count(beats.Bytes(), []byte("\n")), opts.Cmd, tail(res.Console, 2000))
	}
	if ctx.Err() == context.DeadlineExceeded {
		return res, fmt.Errorf("%w after %v running %q; console tail:\n%s", ErrTimeout, opts.Timeout, opts.Cmd, tail(res.Console, 2000))
	}
	if ctx.Err() != nil {
		return res, ctx.Err()
	}
	m := regexp.MustCompile(`LAB-EXIT-` + nonceHex + `=(\d+)`).FindSubmatch(res.Console)
	if m == nil {
		return res, fmt.Errorf("lab: the lab VM stopped without reporting an exit status (qemu: %v %s); console tail:\n%s",
			waitErr, strings.TrimSpace(qemuErr.String()), tail(res.Console, 3000))
	}
	res.ExitCode, _ = strconv.Atoi(string(m[1]))
	if b := res.Boot; b == 0 {
		res.Boot = res.Duration
	}
	return res, nil
}

// watchSilence cancels ctx with cause once last (unix nanoseconds of the
// latest output or beat) is older than limit.
func watchSilence(ctx context.Context, last *atomic.Int64, limit time.Duration, cause error, cancel context.CancelCauseFunc) {
	tick := time.NewTicker(min(limit/4, 10*time.Second))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			if now.Sub(time.Unix(0, last.Load())) > limit {
				cancel(cause)
				return
			}
		}
	}
}

// labTHP is the lab kernel's transparent huge page mode: want if it
// names one, else $LAB_THP if that does, else never.
func labTHP(want string) string {
	for _, v := range []string{want, os.Getenv("LAB_THP")} {
		switch v {
		case "never", "madvise", "always":
			return v
		}
	}
	return "never"
}

// labLogLevel is the lab kernel's console log level: 2 (emergencies and
// alerts) unless LAB_LOGLEVEL gives another digit.
func labLogLevel() string {
	if v := os.Getenv("LAB_LOGLEVEL"); len(v) == 1 && v[0] >= '0' && v[0] <= '8' {
		return v
	}
	return "2"
}

// writeJob writes the stage-2 script, the environment and the command
// into the job directory, which the lab sees at the same path.
func writeJob(job string, k Kernel, opts Options, nonce string) error {
	var env strings.Builder
	seen := map[string]bool{}
	all := append(os.Environ(), opts.Env...)
	for i := len(all) - 1; i >= 0; i-- { // later entries win
		key, val, ok := strings.Cut(all[i], "=")
		if !ok || seen[key] || !validEnvName(key) {
			continue
		}
		seen[key] = true
		fmt.Fprintf(&env, "export %s=%s\n", key, shellQuote(val))
	}
	path := os.Getenv("PATH")
	for _, kv := range opts.Env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	if path == "" {
		path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	lab := map[string]string{
		"LAB_PATH":           path + ":/usr/sbin:/sbin",
		"LAB_DIR":            opts.Dir,
		"LAB_OUT":            opts.OutDir,
		"LAB_NONCE":          nonce,
		"LAB_KERNEL_DIR":     k.Dir,
		"LAB_KERNEL_VERSION": k.Version,
		"LAB_MODULES":        strings.Join(stage2Modules, " "),
		"LAB_BEAT_SECONDS":   strconv.Itoa(int(heartbeatPeriod / time.Second)),
		"STRATOVIRT_IN_LAB":  "1",
	}
	for key, val := range lab {
		fmt.Fprintf(&env, "export %s=%s\n", key, shellQuote(val))
	}
	for name, data := range map[string][]byte{
		"env.sh":    []byte(env.String()),
		"stage2.sh": stage2,
		"cmd.sh":    []byte(opts.Cmd + "\n"),
	} {
		if err := os.WriteFile(filepath.Join(job, name), data, 0o755); err != nil {
			return fmt.Errorf("lab: write job: %w", err)
		}
	}
	return nil
}

// buildInitramfs writes the stage-1 initramfs: busybox, the init script
// and the modules needed to mount the host's root.
func buildInitramfs(path, busybox string, k Kernel) error {
	mods, err := moduleDeps(k.ModulesDir(), stage1Modules)
	if err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	bb, err := os.ReadFile(busybox)
	if err != nil {
		return fmt.Errorf("lab: read busybox: %w", err)
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("lab: create initramfs: %w", err)
	}
	defer f.Close()
	c := initramfs.NewWriter(f)
	for _, d := range []string{"bin", "dev", "proc", "sys", "modules"} {
		c.Dir(d)
	}
	c.File("bin/busybox", 0o755, bb)
	for _, applet := range []string{"sh", "mount", "umount", "insmod", "switch_root", "cat", "mkdir", "sleep"} {
		c.Symlink("bin/"+applet, "busybox")
	}
	c.File("init", 0o755, stage1)
	var order []string
	for _, m := range mods {
		data, err := os.ReadFile(filepath.Join(k.ModulesDir(), m))
		if err != nil {
			return fmt.Errorf("lab: read module: %w", err)
		}
		name := filepath.Base(m)
		c.File("modules/"+name, 0o644, data)
		order = append(order, name)
	}
	c.File("modules.order", 0o644, []byte(strings.Join(order, "\n")+"\n"))
	if err := c.Close(); err != nil {
		return fmt.Errorf("lab: write initramfs: %w", err)
	}
	return f.Close()
}

func validEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		if r == '_' || (r >= 'A' && r <= 'Z') || (r >= 'a' && r <= 'z') || (i > 0 && r >= '0' && r <= '9') {
			continue
		}
		return false
	}
	return true
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// SyncBuffer collects output written from several goroutines (the lab's
// console, a daemon's log) for a test to read.
type SyncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *SyncBuffer) Bytes() []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]byte(nil), s.buf.Bytes()...)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}
