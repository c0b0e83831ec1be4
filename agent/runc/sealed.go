package runc

import (
	"fmt"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// runcSeals are the seals runc checks for (RUNC_MEMFD_SEALS): a memfd
// sealed with exactly these is a copy of runc that a container cannot
// overwrite (CVE-2019-5736), so runc runs from it as it is.
const runcSeals = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE

// Sealed is runc copied into a sealed memfd (runc's own memfd-bind idea).
// Run from it, `runc init` finds itself already cloned and skips what it
// otherwise does at every container create and exec: copy (or bind-mount)
// its binary and execute itself once more, a second dynamic link and Go
// runtime start.
type Sealed struct {
	f *os.File // open as long as the Sealed is reachable
}

// SealRunc copies the executable at path into a sealed memfd.
func SealRunc(path string) (*Sealed, error) {
	src, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("runc", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd for %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), "memfd:runc")
	if _, err := io.Copy(f, src); err != nil {
		f.Close()
		return nil, fmt.Errorf("copy %s into a memfd: %w", path, err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, runcSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal the memfd copy of %s: %w", path, err)
	}
	return &Sealed{f: f}, nil
}

// Path is what runs the sealed copy: this process's descriptor by its
// pid, not /proc/self, because a child moves its stdio and extra files
// onto low descriptors before execve and /proc/self/fd/N could then name
// one of those.
func (s *Sealed) Path() string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), s.f.Fd()) }

// Close releases the copy.
func (s *Sealed) Close() error { return s.f.Close() }
