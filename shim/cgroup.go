package shim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// cgroupRoot is the cgroup v2 mount.
var cgroupRoot = "/sys/fs/cgroup"

// hostCgroup is the sandbox's host cgroup the shim moved into (with its
// VMM and vCPU threads: cgroup v2 moves the whole process).
type hostCgroup struct {
	path    string // absolute directory
	from    string // where the shim was
	created bool
}

// cgroupFile records, in the shim's state directory, a cgroup the shim
// created, so that "delete" can remove it after a crash.
const cgroupFile = "cgroup"

// joinCgroup moves this process into the cgroup v2 path cgroupsPath
// (cgroupfs style, relative to the root; systemd "slice:prefix:name"
// paths are not handled), creating it if needed.
func joinCgroup(cgroupsPath, stateDir string) (*hostCgroup, error) {
	if strings.Contains(cgroupsPath, ":") {
		return nil, errors.New("systemd cgroup paths are not supported")
	}
	if _, err := os.Stat(filepath.Join(cgroupRoot, "cgroup.controllers")); err != nil {
		return nil, errors.New("no cgroup v2 hierarchy")
	}
	rel := filepath.Clean("/" + cgroupsPath)
	dir := filepath.Join(cgroupRoot, rel)
	cur, err := currentCgroup()
	if err != nil {
		return nil, err
	}
	cg := &hostCgroup{path: dir, from: filepath.Join(cgroupRoot, cur)}
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err
		}
		cg.created = true
		os.WriteFile(filepath.Join(stateDir, cgroupFile), []byte(dir), 0o600)
	}
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
		if cg.created {
			os.Remove(dir)
		}
		return nil, fmt.Errorf("join %s: %w", dir, err)
	}
	return cg, nil
}

func currentCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(l, "0::"); ok {
			return p, nil
		}
	}
	return "", errors.New("not on cgroup v2")
}

// leave moves the shim back and removes a cgroup it created.
func (c *hostCgroup) leave() {
	os.WriteFile(filepath.Join(c.from, "cgroup.procs"), []byte(strconv.Itoa(os.Getpid())), 0o644)
	if c.created {
		os.Remove(c.path)
	}
}

// removeRecordedCgroup removes the cgroup recorded in stateDir (after the
// shim died); it fails harmlessly while processes remain.
func removeRecordedCgroup(stateDir string) {
	b, err := os.ReadFile(filepath.Join(stateDir, cgroupFile))
	if err != nil {
		return
	}
	p := filepath.Clean(string(b))
	if strings.HasPrefix(p, cgroupRoot+"/") {
		os.Remove(p)
	}
}
