package runc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent/cgroups"
)

// Stopped describes a container whose init has exited and been reaped,
// for DeleteStopped.
type Stopped struct {
	// CgroupDir is the container's cgroup v2 directory ("" when it has
	// none of its own).
	CgroupDir string
	// SharedPIDs: the container has no PID namespace of its own, so its
	// processes can outlive the init; they are killed as `runc delete`
	// does.
	SharedPIDs bool
}

// cgroupEmptyWait bounds how long DeleteStopped waits for killed
// processes to leave the cgroup.
const cgroupEmptyWait = 5 * time.Second

// DeleteStopped removes a stopped container the way `runc delete` does for
// one (runc 1.0 to 1.3): it kills what is left in the cgroup of a
// container without its own PID namespace, removes the cgroup and removes
// runc's state directory; in the agent instead of in a runc process, which
// in the guest is a start of runc's 9 MB Go binary (about 0.4 s in the
// lab). A container with poststop hooks, or without runc's state where
// this runc keeps it, is left to `runc delete`, which runs the hooks or
// gives runc's own answer.
func (r *Runc) DeleteStopped(ctx context.Context, id string, s Stopped, hooks bool) error {
	state := filepath.Join(r.Root, id)
	if _, err := os.Stat(filepath.Join(state, "state.json")); err != nil || hooks {
		return r.Delete(ctx, id, false)
	}
	if s.CgroupDir != "" && s.SharedPIDs {
		// cgroup.kill came with Linux 5.14; runc signals the processes
		// one by one where it is missing.
		if _, err := os.Stat(filepath.Join(s.CgroupDir, "cgroup.kill")); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(s.CgroupDir); err == nil {
				return r.Delete(ctx, id, false)
			}
		}
	}
	if s.CgroupDir != "" {
		if s.SharedPIDs {
			if err := killCgroup(ctx, s.CgroupDir); err != nil {
				return fmt.Errorf("delete container %s: %w", id, err)
			}
		}
		if err := removeCgroup(s.CgroupDir); err != nil {
			return fmt.Errorf("delete container %s: %w", id, err)
		}
	}
	if err := os.RemoveAll(state); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return nil
}

// killCgroup kills every process in the cgroup dir (and its children)
// through cgroup.kill and waits until none is left.
func killCgroup(ctx context.Context, dir string) error {
	if populated, err := cgroupPopulated(dir); err != nil || !populated {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	deadline := time.Now().Add(cgroupEmptyWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		populated, err := cgroupPopulated(dir)
		if err != nil || !populated {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: processes left %v after cgroup.kill", dir, cgroupEmptyWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// cgroupPopulated reads the populated key of dir's cgroup.events: whether
// a process is in the cgroup or below it.
func cgroupPopulated(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return parsePopulated(b)
}

// parsePopulated reads the populated key (0 or 1) of cgroup.events
// contents.
func parsePopulated(b []byte) (bool, error) {
	v, ok := cgroups.ParseFlatKeyed(b)["populated"]
	if !ok || v > 1 {
		return false, fmt.Errorf("cgroup.events %q: no populated key", b)
	}
	return v == 1, nil
}

// removeCgroup removes dir and the cgroups below it, deepest first, as
// runc does; a cgroup already gone is not an error. rmdir of a cgroup
// whose last process has just exited can fail with EBUSY for a moment, so
// that is retried for about a second.
func removeCgroup(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	delay := time.Millisecond
	for try := 0; ; try++ {
		err := unix.Rmdir(dir)
		if err == nil || errors.Is(err, unix.ENOENT) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) || try == 10 {
			return fmt.Errorf("remove cgroup %s: %w", dir, err)
		}
		time.Sleep(delay)
		delay *= 2
	}
}
