package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Process holds the settings of the VMM process rather than of the guest:
// the QMP socket, daemonizing, the pid file, logging and seccomp. They come
// only from the command line (the JSON file has no keys for them, as in
// StratoVirt); the containerd shim runs the VMM in-process and leaves them
// zero.
type Process struct {
	// APIChannel is the QMP unix socket path (-api-channel unix:PATH); ""
	// means no QMP server. The file must not exist yet.
	APIChannel string
	// Daemonize detaches the VMM from its terminal (-daemonize).
	Daemonize bool
	// PidFile is written with the VMM's pid (-pidfile PATH); requires
	// Daemonize and must not exist yet.
	PidFile string
	// Log turns logging on (-D); LogFile is its file, "" meaning stderr.
	Log     bool
	LogFile string
	// DisableSeccomp turns the seccomp filters off (-disable-seccomp).
	DisableSeccomp bool
}

// hugetlbfsMagic is HUGETLBFS_MAGIC from <linux/magic.h>.
const hugetlbfsMagic = 0x958458f6

// validateProcess checks the process settings and the memory backend path.
func (c *VMConfig) validateProcess() []error {
	var errs []error
	add := func(e *Error) { errs = append(errs, e) }
	p := c.Process
	if p.APIChannel != "" {
		if e := checkNewPath("-api-channel", "api-channel socket", p.APIChannel); e != nil {
			add(e)
		}
	}
	if p.PidFile != "" {
		if !p.Daemonize {
			add(errorf("-pidfile", "", "-pidfile must be used together with -daemonize"))
		} else if e := checkNewPath("-pidfile", "pid file", p.PidFile); e != nil {
			add(e)
		}
	}
	if p.Daemonize && c.Serial.Stdio {
		add(errorf("-daemonize", "", "-serial stdio and -daemonize cannot be used together"))
	}
	if p.Log && len(p.LogFile) > MaxPathLen {
		add(errorf("-D", "", "log file path length %d out of range [1, %d]", len(p.LogFile), MaxPathLen))
	}
	if c.Machine.MemPath != "" {
		if e := checkMemPath(c.Machine.MemPath, c.Machine.MemSize); e != nil {
			add(e)
		}
	}
	return errs
}

// checkNewPath verifies that path does not exist yet and that its
// directory does (StratoVirt: "ensure that the socket file does not exist").
func checkNewPath(option, what, path string) *Error {
	if len(path) > MaxPathLen {
		return errorf(option, "", "%s path length %d out of range [1, %d]", what, len(path), MaxPathLen)
	}
	if _, err := os.Lstat(path); err == nil {
		return errorf(option, "", "%s %q already exists (remove it first)", what, path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return errorf(option, "", "%s %q: %v", what, path, unwrapPath(err))
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return errorf(option, "", "%s %q: directory %q: %v", what, path, dir, unwrapPath(err))
	} else if !fi.IsDir() {
		return errorf(option, "", "%s %q: %q is not a directory", what, path, dir)
	}
	return nil
}

// checkMemPath verifies a -mem-path: an absolute path naming a directory
// or a regular file, or a file to create in an existing directory; on
// hugetlbfs the huge page size must divide the memory size.
func checkMemPath(path string, memSize uint64) *Error {
	const opt, field = "-mem-path", "machine-config.mem_path"
	if len(path) > MaxPathLen {
		return errorf(opt, field, "path length %d out of range [1, %d]", len(path), MaxPathLen)
	}
	if !filepath.IsAbs(path) {
		return errorf(opt, field, "%q is not an absolute path", path)
	}
	statPath := path
	fi, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		statPath = filepath.Dir(path)
		if di, err := os.Stat(statPath); err != nil || !di.IsDir() {
			return errorf(opt, field, "%q does not exist and its directory %q is not a directory", path, statPath)
		}
	case err != nil:
		return errorf(opt, field, "%q: %v", path, unwrapPath(err))
	case !fi.IsDir() && !fi.Mode().IsRegular():
		return errorf(opt, field, "%q is neither a directory nor a regular file", path)
	}
	page, huge, err := PageSizeAt(statPath)
	if err != nil {
		return errorf(opt, field, "%q: %v", path, err)
	}
	if huge && memSize%page != 0 {
		return errorf(opt, field, "memory size %d bytes is not a multiple of the huge page size %d of %q", memSize, page, path)
	}
	return nil
}

// PageSizeAt returns the page size of the file system holding path and
// whether it is hugetlbfs (then the size is its huge page size, which
// guest memory must be a multiple of).
func PageSizeAt(path string) (size uint64, hugetlbfs bool, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, false, fmt.Errorf("statfs: %w", err)
	}
	if uint32(st.Type) == hugetlbfsMagic {
		if st.Bsize <= 0 {
			return 0, true, fmt.Errorf("hugetlbfs reports page size %d", st.Bsize)
		}
		return uint64(st.Bsize), true, nil
	}
	return uint64(os.Getpagesize()), false, nil
}
