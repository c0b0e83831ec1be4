package cgroups

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

// ErrUnsupported wraps resources Apply cannot set.
var ErrUnsupported = errors.New("not supported")

// emptyWait bounds how long Kill waits for killed processes to leave a
// cgroup, and Freeze for the cgroup to report the new state.
const emptyWait = 5 * time.Second

// Make creates the cgroup dir below root and, as runc does, enables in
// root and in every cgroup between root and dir the controllers each
// has, so that dir gets them all (cpu, memory, pids, io for its
// statistics and limits).
func Make(root, dir string) error {
	rel, err := filepath.Rel(root, dir)
	if err != nil || rel == "." || rel == ".." || strings.HasPrefix(rel, "../") {
		return fmt.Errorf("cgroup %s: not below %s", dir, root)
	}
	cur := root
	for _, part := range strings.Split(rel, "/") {
		if err := enableControllers(cur); err != nil {
			return err
		}
		cur = filepath.Join(cur, part)
		if err := os.Mkdir(cur, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("create cgroup %s: %w", cur, err)
		}
	}
	return nil
}

// enableControllers writes every controller of dir's cgroup.controllers
// not yet in its cgroup.subtree_control there.
func enableControllers(dir string) error {
	have, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", dir, err)
	}
	on, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return fmt.Errorf("cgroup %s: %w", dir, err)
	}
	enabled := map[string]bool{}
	for _, c := range strings.Fields(string(on)) {
		enabled[c] = true
	}
	var add []string
	for _, c := range strings.Fields(string(have)) {
		if !enabled[c] {
			add = append(add, "+"+c)
		}
	}
	if len(add) == 0 {
		return nil
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.subtree_control"), []byte(strings.Join(add, " ")), 0); err != nil {
		return fmt.Errorf("cgroup %s: enable %v: %w", dir, add, err)
	}
	return nil
}

// Apply sets the OCI resources r on the cgroup dir the way runc's cgroup
// v2 driver does: CPU shares, quota and period; memory limit,
// reservation and swap; pids limit; unified (cgroup v2 files by name).
// Other resources are ErrUnsupported.
func Apply(dir string, r *specs.LinuxResources) error {
	if r == nil {
		return nil
	}
	if len(r.Devices) > 0 && !onlyDefaultDeny(r.Devices) || r.BlockIO != nil || len(r.HugepageLimits) > 0 ||
		len(r.Rdma) > 0 || r.Network != nil {
		return fmt.Errorf("cgroup %s: devices, block I/O, huge page, RDMA and network resources: %w", dir, ErrUnsupported)
	}
	files := map[string]string{}
	if c := r.CPU; c != nil {
		if c.Shares != nil && *c.Shares != 0 {
			files["cpu.weight"] = strconv.FormatUint(cpuWeight(*c.Shares), 10)
		}
		if c.Quota != nil || c.Period != nil {
			quota, period := "max", uint64(100000)
			if c.Quota != nil && *c.Quota > 0 {
				quota = strconv.FormatInt(*c.Quota, 10)
			}
			if c.Period != nil && *c.Period != 0 {
				period = *c.Period
			}
			files["cpu.max"] = quota + " " + strconv.FormatUint(period, 10)
		}
		if c.Cpus != "" || c.Mems != "" || c.RealtimeRuntime != nil || c.RealtimePeriod != nil || c.Idle != nil {
			return fmt.Errorf("cgroup %s: cpusets, realtime and idle CPU settings: %w", dir, ErrUnsupported)
		}
	}
	if m := r.Memory; m != nil {
		if m.Limit != nil && *m.Limit != 0 {
			files["memory.max"] = limit(*m.Limit)
		}
		if m.Reservation != nil && *m.Reservation != 0 {
			files["memory.low"] = limit(*m.Reservation)
		}
		if m.Swap != nil && *m.Swap != 0 {
			// OCI's swap is memory plus swap; cgroup v2's is swap alone.
			switch {
			case *m.Swap == -1:
				files["memory.swap.max"] = "max"
			case m.Limit != nil && *m.Limit > 0 && *m.Swap >= *m.Limit:
				files["memory.swap.max"] = strconv.FormatInt(*m.Swap-*m.Limit, 10)
			default:
				return fmt.Errorf("cgroup %s: memory swap %d with limit %v: %w", dir, *m.Swap, m.Limit, ErrUnsupported)
			}
		}
	}
	if p := r.Pids; p != nil && p.Limit != nil && *p.Limit != 0 {
		files["pids.max"] = limit(*p.Limit)
	}
	for k, v := range r.Unified {
		if k == "" || strings.ContainsAny(k, "/\x00") || strings.HasPrefix(k, "cgroup.") {
			return fmt.Errorf("cgroup %s: unified key %q: %w", dir, k, ErrUnsupported)
		}
		files[k] = v
	}
	for name, v := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(v), 0); err != nil {
			return fmt.Errorf("cgroup %s: write %s %q: %w", dir, name, v, err)
		}
	}
	return nil
}

// onlyDefaultDeny reports whether a device list says no more than "deny
// all", which every CRI spec carries and which a process that opens no
// device does not need.
func onlyDefaultDeny(d []specs.LinuxDeviceCgroup) bool {
	for _, e := range d {
		if e.Allow {
			return false
		}
	}
	return true
}

// limit renders a byte or count limit, -1 (or less) as "max".
func limit(v int64) string {
	if v < 0 {
		return "max"
	}
	return strconv.FormatInt(v, 10)
}

// cpuWeight converts cgroup v1 CPU shares (2..262144) to a cgroup v2
// weight (1..10000), with the formula runc and crun use.
func cpuWeight(shares uint64) uint64 {
	shares = min(max(shares, 2), 262144)
	return 1 + ((shares-2)*9999)/262142
}

// Freeze freezes (or thaws) the cgroup dir and waits until the kernel
// reports it done.
func Freeze(ctx context.Context, dir string, frozen bool) error {
	v := "0"
	if frozen {
		v = "1"
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.freeze"), []byte(v), 0); err != nil {
		return fmt.Errorf("freeze cgroup %s: %w", dir, err)
	}
	return poll(ctx, dir, "frozen", frozen)
}

// Kill kills every process in the cgroup dir (and its children)
// through cgroup.kill and waits until none is left.
func Kill(ctx context.Context, dir string) error {
	if populated, err := Populated(dir); err != nil || !populated {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0); err != nil {
		return fmt.Errorf("kill cgroup %s: %w", dir, err)
	}
	return poll(ctx, dir, "populated", false)
}

// poll waits until key of dir's cgroup.events is want.
func poll(ctx context.Context, dir, key string, want bool) error {
	deadline := time.Now().Add(emptyWait)
	for delay := time.Millisecond; ; delay = min(2*delay, 50*time.Millisecond) {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
		if err != nil {
			return fmt.Errorf("cgroup %s: %w", dir, err)
		}
		got, err := ParseEventsKey(b, key)
		if err != nil || got == want {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cgroup %s: %s is not %v after %v", dir, key, want, emptyWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
	}
}

// Populated reads the populated key of dir's cgroup.events: whether a
// process is in the cgroup or below it.
func Populated(dir string) (bool, error) {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	if err != nil {
		return false, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return ParseEventsKey(b, "populated")
}

// ParseEventsKey reads a 0-or-1 key (populated, frozen) of cgroup.events
// contents.
func ParseEventsKey(b []byte, key string) (bool, error) {
	v, ok := ParseFlatKeyed(b)[key]
	if !ok || v > 1 {
		return false, fmt.Errorf("cgroup.events %q: no %s key", b, key)
	}
	return v == 1, nil
}

// Remove removes dir and the cgroups below it, deepest first, as runc
// does; a cgroup already gone is not an error. rmdir of a cgroup whose
// last process has just exited can fail with EBUSY for a moment, so that
// is retried for about a second.
func Remove(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := Remove(filepath.Join(dir, e.Name())); err != nil {
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
