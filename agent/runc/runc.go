// Package runc drives the runc binary for the agent: create, exec, kill,
// pause, resume, update, ps and delete, with runc's error from its JSON
// log; a start reads runc's exec FIFO itself (start.go). Every runc
// process is started and waited on through the agent's reaper (never
// exec.Cmd.Wait), because the agent reaps all of its children. A Runc is
// safe for concurrent use; it holds no lock.
package runc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/agent/reaper"
)

// Runc runs one runc binary with one state root.
type Runc struct {
	// Binary is the runc executable (default "runc" from PATH).
	Binary string
	// Root is runc's state directory (--root).
	Root string
	// Reaper waits on every runc process.
	Reaper *reaper.Reaper
	// NoPivot passes --no-pivot to create: needed when / is the
	// initramfs (see RootIsInitramfs), whose rootfs pivot_root refuses.
	// runc then moves the container's root over / and chroots, so a
	// process with CAP_SYS_CHROOT could climb out to the guest's
	// initramfs (never the host: the VM is the boundary). See
	// docs/guest.md.
	NoPivot bool
	// VersionFile, when set and readable, holds the first line of
	// `runc --version` for Binary, written when the guest image was
	// built: running runc to ask costs a boot about 0.2 s in the lab.
	VersionFile string
	// Sealed, when set, is the runc that runs instead of Binary. The Runc
	// holds it so that it stays open (an unreachable os.File is closed by
	// its finalizer).
	Sealed *Sealed
	// Debug runs runc with --debug and logs every line of runc's log
	// (runc's and runc init's phases, with runc's own timestamps) at
	// trace level: where a create spends its time.
	Debug bool

	sealDone <-chan struct{} // closed when SealInBackground is done
}

// SealInBackground runs seal in a goroutine and makes its result Sealed;
// runc commands wait for it, and run Binary if it failed. The agent seals
// while it already serves, so the copy overlaps the host's first calls
// instead of delaying the boot. Call it before the Runc is used.
func (r *Runc) SealInBackground(seal func() (*Sealed, error)) {
	done := make(chan struct{})
	r.sealDone = done
	go func() {
		defer close(done)
		t0 := time.Now()
		s, err := seal()
		if err != nil {
			log.L.WithError(err).Warnf("runc runs from %s", r.Binary)
			return
		}
		r.Sealed = s
		log.L.Debugf("runc sealed in %v", time.Since(t0).Round(time.Millisecond))
	}()
}

// Stdio is what a detached process gets as standard streams (nil: /dev/null).
type Stdio struct {
	Stdin, Stdout, Stderr *os.File
}

// Error is a failed runc command.
type Error struct {
	Args   []string
	Status int
	// Msg is runc's error message (from its log), when it gave one.
	Msg string
}

func (e *Error) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = fmt.Sprintf("exit status %d", e.Status)
	}
	return fmt.Sprintf("runc %s: %s", strings.Join(e.Args, " "), msg)
}

func (r *Runc) binary() string {
	if r.sealDone != nil {
		<-r.sealDone
	}
	if r.Sealed != nil {
		return r.Sealed.Path()
	}
	if r.Binary == "" {
		return "runc"
	}
	return r.Binary
}

// run runs runc with args. stdout, when non-nil, receives runc's standard
// output; stdio, when non-nil, is handed to runc (and so to a detached
// container process). logDir holds runc's JSON log for the error message.
func (r *Runc) run(ctx context.Context, stdio *Stdio, stdout io.Writer, logDir string, args ...string) error {
	if logDir == "" {
		var err error
		if logDir, err = os.MkdirTemp(r.Root, ".log-"); err != nil {
			return fmt.Errorf("runc log dir: %w", err)
		}
		defer os.RemoveAll(logDir)
	}
	logPath := filepath.Join(logDir, "runc.log")
	os.Remove(logPath)
	full := []string{"--root", r.Root, "--log", logPath, "--log-format", "json"}
	if r.Debug {
		full = append(full, "--debug")
		stop := followLog(ctx, args[0], logPath)
		defer stop()
	}
	full = append(full, args...)
	cmd := exec.Command(r.binary(), full...)
	if stdio != nil {
		// A detached process keeps what runc had: never one of our pipes.
		devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
		if err != nil {
			return err
		}
		defer devnull.Close()
		cmd.Stdin, cmd.Stdout, cmd.Stderr = orNull(stdio.Stdin, devnull), orNull(stdio.Stdout, devnull), orNull(stdio.Stderr, devnull)
	}
	// runc's own stderr, when it is not a container's, is kept for the
	// message (bounded, so a chatty runc cannot grow the agent).
	var errDone, outDone chan []byte
	if cmd.Stderr == nil {
		errR, errW, err := os.Pipe()
		if err != nil {
			return err
		}
		defer errR.Close()
		defer errW.Close()
		cmd.Stderr = errW
		errDone = make(chan []byte, 1)
		go func() {
			b, _ := io.ReadAll(io.LimitReader(errR, 64<<10))
			io.Copy(io.Discard, errR)
			errDone <- b
		}()
	}
	if stdout != nil {
		outR, outW, err := os.Pipe()
		if err != nil {
			return err
		}
		defer outR.Close()
		defer outW.Close()
		cmd.Stdout = outW
		outDone = make(chan []byte, 1)
		go func() { b, _ := io.ReadAll(outR); outDone <- b }()
	}
	t0 := time.Now()
	exitc, err := r.Reaper.Start(cmd)
	// Our copies of the write ends go now, so EOF comes with runc's exit.
	if errDone != nil {
		cmd.Stderr.(*os.File).Close()
	}
	if outDone != nil {
		cmd.Stdout.(*os.File).Close()
	}
	if err != nil {
		return fmt.Errorf("start runc: %w", err)
	}
	var e reaper.Exit
	select {
	case e = <-exitc:
	case <-ctx.Done():
		cmd.Process.Kill()
		e = <-exitc
	}
	log.G(ctx).Debugf("runc %s: exit %d after %v", args[0], e.Status, time.Since(t0).Round(time.Millisecond))
	if outDone != nil {
		stdout.Write(<-outDone)
	}
	var stderr []byte
	if errDone != nil {
		stderr = <-errDone
	}
	if e.Status != 0 {
		msg := logError(logPath)
		if msg == "" {
			msg = strings.TrimSpace(string(stderr))
		}
		return &Error{Args: args, Status: e.Status, Msg: msg}
	}
	return nil
}

func orNull(f, devnull *os.File) *os.File {
	if f == nil {
		return devnull
	}
	return f
}

// logError returns the last error-level message of runc's JSON log.
func logError(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var last string
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	for sc.Scan() {
		var l struct{ Level, Msg string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && (l.Level == "error" || l.Level == "fatal") {
			last = l.Msg
		}
	}
	return last
}

// followLog logs, at trace level, each line of runc's JSON log with the
// time since the start at which it appeared (runc's own timestamps have
// whole seconds), polling the file every 10 ms until stop is called.
func followLog(ctx context.Context, cmd, path string) (stop func()) {
	done, finished := make(chan struct{}), make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(finished)
		var off int64
		var partial []byte
		poll := func() {
			f, err := os.Open(path)
			if err != nil {
				return
			}
			defer f.Close()
			b, _ := io.ReadAll(io.NewSectionReader(f, off, 1<<20))
			off += int64(len(b))
			partial = append(partial, b...)
			for {
				line, rest, ok := bytes.Cut(partial, []byte("\n"))
				if !ok {
					break
				}
				partial = rest
				var l struct{ Level, Msg string }
				if json.Unmarshal(line, &l) == nil {
					log.G(ctx).Tracef("runc %s +%v: %s: %s", cmd, time.Since(t0).Round(time.Millisecond), l.Level, l.Msg)
				}
			}
		}
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				poll()
				return
			case <-t.C:
				poll()
			}
		}
	}()
	return func() { close(done); <-finished }
}

// CreateOpts are the options of Create and Exec.
type CreateOpts struct {
	// PidFile receives the pid of the process.
	PidFile string
	// ConsoleSocket, when set, receives the pty master (terminal processes).
	ConsoleSocket string
	Stdio         *Stdio
}

func (o CreateOpts) args() []string {
	a := []string{"--pid-file", o.PidFile}
	if o.ConsoleSocket != "" {
		a = append(a, "--console-socket", o.ConsoleSocket)
	}
	return a
}

// Create creates container id from bundle; its init waits for Start.
func (r *Runc) Create(ctx context.Context, id, bundle string, o CreateOpts) error {
	return r.run(ctx, o.Stdio, nil, bundle, r.createArgs(id, bundle, o)...)
}

func (r *Runc) createArgs(id, bundle string, o CreateOpts) []string {
	args := []string{"create", "--bundle", bundle}
	if r.NoPivot {
		args = append(args, "--no-pivot")
	}
	return append(append(args, o.args()...), id)
}

// Exec starts a detached process (OCI process JSON in processPath).
func (r *Runc) Exec(ctx context.Context, id, processPath, logDir string, o CreateOpts) error {
	args := append([]string{"exec", "--detach", "--process", processPath}, o.args()...)
	return r.run(ctx, o.Stdio, nil, logDir, append(args, id)...)
}

// Kill sends sig to the init process, or to every process with all.
func (r *Runc) Kill(ctx context.Context, id string, sig int, all bool) error {
	args := []string{"kill"}
	if all {
		args = append(args, "--all")
	}
	return r.run(ctx, nil, nil, "", append(args, id, strconv.Itoa(sig))...)
}

// Pause freezes the container.
func (r *Runc) Pause(ctx context.Context, id string) error {
	return r.run(ctx, nil, nil, "", "pause", id)
}

// Resume thaws the container.
func (r *Runc) Resume(ctx context.Context, id string) error {
	return r.run(ctx, nil, nil, "", "resume", id)
}

// Update applies OCI linux.resources JSON to the container.
func (r *Runc) Update(ctx context.Context, id string, resources []byte) error {
	f, err := os.CreateTemp(r.Root, ".resources-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(resources)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return r.run(ctx, nil, nil, "", "update", "--resources", f.Name(), id)
}

// Delete removes the container's runc state (force: kill it first).
func (r *Runc) Delete(ctx context.Context, id string, force bool) error {
	args := []string{"delete"}
	if force {
		args = append(args, "--force")
	}
	return r.run(ctx, nil, nil, "", append(args, id)...)
}

// State is the part of `runc state` the agent uses.
type State struct {
	ID     string `json:"id"`
	Pid    int    `json:"pid"`
	Status string `json:"status"`
}

// State returns the container's runc state.
func (r *Runc) State(ctx context.Context, id string) (State, error) {
	var out bytes.Buffer
	var s State
	if err := r.run(ctx, nil, &out, "", "state", id); err != nil {
		return s, err
	}
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		return s, fmt.Errorf("runc state %s: %w", id, err)
	}
	return s, nil
}

// Ps lists the pids of the container's processes.
func (r *Runc) Ps(ctx context.Context, id string) ([]int, error) {
	var out bytes.Buffer
	if err := r.run(ctx, nil, &out, "", "ps", "--format", "json", id); err != nil {
		return nil, err
	}
	var pids []int
	if err := json.Unmarshal(out.Bytes(), &pids); err != nil {
		return nil, fmt.Errorf("runc ps %s: %w", id, err)
	}
	return pids, nil
}

// Version returns the first line of `runc --version`, from VersionFile
// when it has one.
func (r *Runc) Version(ctx context.Context) (string, error) {
	if r.VersionFile != "" {
		if b, err := os.ReadFile(r.VersionFile); err == nil {
			if line, _, _ := strings.Cut(string(b), "\n"); strings.TrimSpace(line) != "" {
				return strings.TrimSpace(line), nil
			}
		}
	}
	var out bytes.Buffer
	if err := r.run(ctx, nil, &out, "", "--version"); err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(out.String(), "\n")
	return line, nil
}

// ReadPidFile reads a pid file runc wrote.
func ReadPidFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad content %q", path, b)
	}
	return pid, nil
}

// IsNotExist reports whether err is runc saying the container does not exist.
func IsNotExist(err error) bool {
	var e *Error
	return errors.As(err, &e) && strings.Contains(e.Msg, "does not exist")
}
