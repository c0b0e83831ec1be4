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
	return seal(path, false)
}

// MoveRunc moves the executable at path into a sealed memfd: the file is
// truncated from its end as each chunk is copied and then removed. In a
// guest whose root is the initramfs the file is guest memory, and the
// pages each chunk frees are the ones the next chunk's copy gets
// (freshly freed pages are handed out first), so the move costs the
// guest no memory it had not touched before; a plain copy touched 8.7
// MB of new guest RAM at every boot, each page a nested-paging fault
// where KVM is nested. If the move fails half-way the file is lost: the
// caller has no runc either way.
func MoveRunc(path string) (*Sealed, error) {
	return seal(path, true)
}

// moveChunk is what MoveRunc copies before freeing it in the source:
// small enough for the freed pages to stay on the guest kernel's
// per-CPU free lists.
const moveChunk = 128 << 10

func seal(path string, move bool) (*Sealed, error) {
	flags := os.O_RDONLY
	if move {
		flags = os.O_RDWR
	}
	src, err := os.OpenFile(path, flags, 0)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	fd, err := unix.MemfdCreate("runc", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memfd for %s: %w", path, err)
	}
	f := os.NewFile(uintptr(fd), "memfd:runc")
	if move {
		err = moveInto(f, src)
	} else {
		_, err = io.Copy(f, src)
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("copy %s into a memfd: %w", path, err)
	}
	if move {
		if err := os.Remove(path); err != nil {
			f.Close()
			return nil, err
		}
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, runcSeals); err != nil {
		f.Close()
		return nil, fmt.Errorf("seal the memfd copy of %s: %w", path, err)
	}
	return &Sealed{f: f}, nil
}

// moveInto copies src into dst chunk by chunk from the end, truncating
// src behind each chunk.
func moveInto(dst, src *os.File) error {
	st, err := src.Stat()
	if err != nil {
		return err
	}
	end := st.Size()
	if err := dst.Truncate(end); err != nil {
		return err
	}
	buf := make([]byte, moveChunk)
	for end > 0 {
		off := max(0, end-moveChunk)
		b := buf[:end-off]
		if _, err := src.ReadAt(b, off); err != nil {
			return err
		}
		if _, err := dst.WriteAt(b, off); err != nil {
			return err
		}
		if err := src.Truncate(off); err != nil {
			return err
		}
		end = off
	}
	return nil
}

// Path is what runs the sealed copy: this process's descriptor by its
// pid, not /proc/self, because a child moves its stdio and extra files
// onto low descriptors before execve and /proc/self/fd/N could then name
// one of those.
func (s *Sealed) Path() string { return fmt.Sprintf("/proc/%d/fd/%d", os.Getpid(), s.f.Fd()) }

// Close releases the copy.
func (s *Sealed) Close() error { return s.f.Close() }

// OnReadOnlyFS reports whether the file at path lies on a filesystem
// mounted read-only: the runc image, whose pages are the host's page
// cache shared by every VM (DAX). The agent leaves such a runc where it
// is, since a sealed copy would hold 8.7 MB of guest RAM for the VM's
// life. runc 1.1 then guards itself at every create and exec the way it
// does on a host: `runc init` bind-mounts its binary read-only and
// executes itself once more from that mount (no copy).
func OnReadOnlyFS(path string) bool {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false
	}
	return st.Flags&unix.ST_RDONLY != 0
}
