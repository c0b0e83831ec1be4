package runc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

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
			if err := cgroups.Kill(ctx, s.CgroupDir); err != nil {
				return fmt.Errorf("delete container %s: %w", id, err)
			}
		}
		if err := cgroups.Remove(s.CgroupDir); err != nil {
			return fmt.Errorf("delete container %s: %w", id, err)
		}
	}
	if err := os.RemoveAll(state); err != nil {
		return fmt.Errorf("delete container %s: %w", id, err)
	}
	return nil
}
