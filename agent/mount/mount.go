// Package mount finds the guest's block devices by virtio serial and
// mounts the storages the host describes (container rootfs, volumes,
// sandbox mounts). It holds no state; callers serialise mounts of one
// target.
package mount

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
)

// SysBlock is where block devices appear in sysfs.
const SysBlock = "/sys/block"

// FindBySerial returns /dev/<name> of the block device whose
// <sysBlock>/<name>/serial is serial, waiting (for a hot-plugged disk)
// until ctx ends. A device whose size is still 0 (a hot-replaceable slot
// whose capacity change the kernel has not read yet) is not ready.
func FindBySerial(ctx context.Context, sysBlock, serial string) (string, error) {
	if serial == "" {
		return "", errors.New("empty serial")
	}
	for {
		ents, err := os.ReadDir(sysBlock)
		if err != nil {
			return "", fmt.Errorf("list block devices: %w", err)
		}
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(sysBlock, e.Name(), "serial"))
			if err == nil && strings.TrimSpace(string(b)) == serial && sized(filepath.Join(sysBlock, e.Name())) {
				return "/dev/" + e.Name(), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("no block device with serial %q: %w", serial, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// sized reports whether the device's size (512-byte sectors) is non-zero;
// a device without a size file counts as sized.
func sized(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "size"))
	if err != nil {
		return true
	}
	return strings.TrimSpace(string(b)) != "0"
}

var flagOptions = map[string]struct {
	clear bool
	flag  uintptr
}{
	"ro": {false, unix.MS_RDONLY}, "rw": {true, unix.MS_RDONLY},
	"nosuid": {false, unix.MS_NOSUID}, "suid": {true, unix.MS_NOSUID},
	"nodev": {false, unix.MS_NODEV}, "dev": {true, unix.MS_NODEV},
	"noexec": {false, unix.MS_NOEXEC}, "exec": {true, unix.MS_NOEXEC},
	"sync": {false, unix.MS_SYNCHRONOUS}, "async": {true, unix.MS_SYNCHRONOUS},
	"noatime": {false, unix.MS_NOATIME}, "atime": {true, unix.MS_NOATIME},
	"nodiratime": {false, unix.MS_NODIRATIME}, "relatime": {false, unix.MS_RELATIME},
	"strictatime": {false, unix.MS_STRICTATIME}, "dirsync": {false, unix.MS_DIRSYNC},
	"bind": {false, unix.MS_BIND}, "rbind": {false, unix.MS_BIND | unix.MS_REC},
	"defaults": {false, 0},
}

// ParseOptions splits mount(8)-style options into flags and the data
// string passed to the filesystem.
func ParseOptions(opts []string) (uintptr, string) {
	var flags uintptr
	var data []string
	for _, o := range opts {
		if f, ok := flagOptions[o]; ok {
			if f.clear {
				flags &^= f.flag
			} else {
				flags |= f.flag
			}
			continue
		}
		if o != "" {
			data = append(data, o)
		}
	}
	return flags, strings.Join(data, ",")
}

// Source resolves the device or path a storage mounts.
func Source(ctx context.Context, sysBlock string, s *agentv1.Storage) (string, error) {
	if s.GetSerial() != "" {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return FindBySerial(wctx, sysBlock, s.GetSerial())
	}
	if s.GetSource() == "" {
		return "", errors.New("storage has neither serial nor source")
	}
	return s.GetSource(), nil
}

// Mount mounts storage s on target (created if needed).
func Mount(ctx context.Context, sysBlock string, s *agentv1.Storage, target string) error {
	src, err := Source(ctx, sysBlock, s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	flags, data := ParseOptions(s.GetOptions())
	fstype := s.GetFstype()
	if fstype == "bind" {
		flags |= unix.MS_BIND
		fstype = ""
	}
	if fstype == "" && flags&unix.MS_BIND == 0 {
		return fmt.Errorf("storage %q: no filesystem type", s.GetName())
	}
	if err := unix.Mount(src, target, fstype, flags&^unix.MS_RDONLY|bindRO(flags), data); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", src, s.GetFstype(), target, err)
	}
	// A bind mount takes MS_RDONLY only on a remount.
	if flags&unix.MS_BIND != 0 && flags&unix.MS_RDONLY != 0 {
		if err := unix.Mount("", target, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			unix.Unmount(target, unix.MNT_DETACH)
			return fmt.Errorf("remount %s read-only: %w", target, err)
		}
	}
	return nil
}

func bindRO(flags uintptr) uintptr {
	if flags&unix.MS_BIND != 0 {
		return 0
	}
	return flags & unix.MS_RDONLY
}

// Unmount detaches whatever is mounted on target; not mounted is fine.
func Unmount(target string) error {
	err := unix.Unmount(target, unix.MNT_DETACH)
	if err == nil || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOENT) {
		return nil
	}
	return fmt.Errorf("unmount %s: %w", target, err)
}
