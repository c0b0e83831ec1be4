package ctrd

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Pid is containerd's process id (0 before Start or after Stop).
func (d *Daemon) Pid() int {
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// DebugSock is containerd's debug socket (pprof), served once
// EnableDebugSocket has restarted it.
func (d *Daemon) DebugSock() string { return filepath.Join(d.Dir, "debug.sock") }

// EnableDebugSocket adds a [debug] address (DebugSock) to the
// configuration and restarts containerd, so that `ctr pprof` can read its
// goroutines.
func (d *Daemon) EnableDebugSocket() error {
	p := filepath.Join(d.Dir, "config.toml")
	f, err := os.OpenFile(p, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "[debug]\n  address = %q\n", d.DebugSock())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	return d.Restart()
}

// Restart stops containerd with SIGTERM (as a service manager does; its
// shims keep running) and starts it again with the same configuration,
// root and state, then waits until it answers. Running containers are
// reconnected by containerd itself.
func (d *Daemon) Restart() error {
	if d.cmd == nil || d.cmd.Process == nil {
		return errors.New("containerd is not running")
	}
	old := d.cmd
	old.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { old.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		old.Process.Kill()
		<-done
	}
	cmd := exec.Command(old.Path, old.Args[1:]...)
	cmd.Env, cmd.Stdout, cmd.Stderr = old.Env, old.Stdout, old.Stderr
	if err := cmd.Start(); err != nil {
		d.cmd = nil
		return fmt.Errorf("restart %s: %w", old.Path, err)
	}
	d.cmd = cmd
	for i := 0; ; i++ {
		if _, err := d.Ctr(10*time.Second, "", "version"); err == nil {
			return nil
		} else if i > 100 {
			return fmt.Errorf("containerd did not answer after restart: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
