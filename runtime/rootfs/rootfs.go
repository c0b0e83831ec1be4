// Package rootfs turns a container's root filesystem, as the snapshotter
// hands it to the shim, into one virtio-blk disk for the microVM; the
// guest never sees the host filesystem. A block device (devmapper) or an
// image file (blockfile, erofs) is attached as it is; a directory (the
// overlayfs or native snapshotter, or a bundle's rootfs/) is packed into a
// new ext4 or erofs image with mkfs.ext4 -d or mkfs.erofs, and the cost
// is measured. It owns the images it builds (Disk.Owned) and nothing else.
//
// With a cache (Options.CacheDir), a root on one overlay mount whose
// upper dir is still empty (a new container of the overlayfs snapshotter;
// for a read-only root also a view, without an upper dir) is built only
// once per set of lower dirs: the ext4 image of
// the lower dirs goes into the cache, shared by all containers and all
// processes on the host, and the container gets a hard link to it
// (Disk.Backing) and an empty sparse copy-on-write overlay of the same
// size (Disk.Path). The package owns the cache too: it builds its base
// images under a lock file each, and removes the bases no container links
// once they have been idle for a while (cacheIdle), after each use.
package rootfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// Formats of an image built from a directory.
const (
	Ext4  = "ext4"
	Erofs = "erofs"
)

// Mount is one snapshot mount as containerd sends it.
type Mount struct {
	Type    string
	Source  string
	Options []string
}

// Disk is the rootfs as the VM gets it.
type Disk struct {
	// Path is the block device or image file.
	Path string
	// FSType is what the guest mounts it as.
	FSType   string
	ReadOnly bool
	// Direct: open with O_DIRECT (block devices; files use the page cache).
	Direct bool
	// Owned: Path (and Backing) are files this package made; Remove
	// deletes them.
	Owned bool
	// Backing, when set, is the container's hard link to a cached
	// read-only base image, and Path a sparse copy-on-write overlay of the
	// same size: clusters the guest never wrote read from Backing.
	Backing string
	// How says which path was taken ("block device", "image file",
	// "ext4 image", "erofs image", "ext4 overlay on a cached image",
	// "ext4 overlay on a new cached image"); Cost is the time to build the
	// image (or the overlay, with the base when this call built it) and
	// Bytes its size (the base's with Backing; 0 when attached directly).
	How   string
	Cost  time.Duration
	Bytes int64
}

// Options configure Prepare.
type Options struct {
	// Target is where directory mounts are assembled (<bundle>/rootfs); it
	// is unmounted again before Prepare returns.
	Target string
	// ImageDir receives built images.
	ImageDir string
	// Name is the image file's base name (without extension).
	Name string
	// Format is Ext4 or Erofs for a directory rootfs packed into an image
	// of its own; erofs is read-only. A cached root is ext4 either way.
	Format string
	// ReadOnly: the container's root is read-only.
	ReadOnly bool
	// MountPoints are created (when missing) in a read-only root built
	// from a directory before it is packed, as runc would create them
	// in a writable one. A cached root's disk is writable under runc,
	// which creates them itself.
	MountPoints []MountPoint
	// CacheDir, when set, holds the base images shared by containers (see
	// the package comment); it must be on ImageDir's filesystem (hard
	// links). Empty: every container gets an image of its own.
	CacheDir string
}

// MountPoint is a path (absolute, inside the container's root) a mount
// needs: a file for a bind of a file, a directory otherwise.
type MountPoint struct {
	Path string
	File bool
}

var blockFSTypes = []string{"ext4", "ext3", "ext2", "xfs", "erofs", "btrfs", "squashfs"}

// Prepare returns the disk for mounts (or, without mounts, the
// directory opts.Target).
func Prepare(ctx context.Context, mounts []Mount, opts Options) (*Disk, error) {
	if len(mounts) == 1 {
		if d, ok, err := direct(mounts[0]); ok || err != nil {
			return d, err
		}
	}
	if opts.Format != Ext4 && opts.Format != Erofs {
		return nil, fmt.Errorf("rootfs format %q: want %s or %s", opts.Format, Ext4, Erofs)
	}
	if opts.Format == Erofs && !opts.ReadOnly {
		return nil, errors.New("rootfs: an erofs image is read-only but the container's root is writable (use ext4)")
	}
	if opts.CacheDir != "" {
		d, why, err := prepareCached(ctx, mounts, opts)
		if d != nil || err != nil {
			return d, err
		}
		log.G(ctx).Debugf("rootfs: no cached image for %s: %s", opts.Name, why)
	}
	if len(mounts) > 0 {
		cm := make([]mount.Mount, len(mounts))
		for i, m := range mounts {
			cm[i] = mount.Mount{Type: m.Type, Source: m.Source, Options: m.Options}
		}
		if err := os.MkdirAll(opts.Target, 0o711); err != nil {
			return nil, fmt.Errorf("rootfs target: %w", err)
		}
		if err := mount.All(cm, opts.Target); err != nil {
			return nil, fmt.Errorf("mount rootfs on %q: %w", opts.Target, err)
		}
		defer func() {
			if err := mount.UnmountAll(opts.Target, 0); err != nil {
				log.G(ctx).WithError(err).Warnf("unmount %s", opts.Target)
			}
		}()
	}
	if opts.ReadOnly {
		for _, mp := range opts.MountPoints {
			if err := CreateMountPoint(opts.Target, mp); err != nil {
				log.G(ctx).WithError(err).Warnf("rootfs: mount point %s", mp.Path)
			}
		}
	}
	if err := os.MkdirAll(opts.ImageDir, 0o700); err != nil {
		return nil, fmt.Errorf("image dir: %w", err)
	}
	img := filepath.Join(opts.ImageDir, opts.Name+"."+opts.Format)
	start := time.Now()
	var err error
	if opts.Format == Ext4 {
		err = buildExt4(ctx, opts.Target, img)
	} else {
		err = BuildErofs(ctx, opts.Target, img)
	}
	if err != nil {
		os.Remove(img)
		return nil, err
	}
	d := &Disk{Path: img, FSType: opts.Format, ReadOnly: opts.Format == Erofs, Owned: true, How: opts.Format + " image", Cost: time.Since(start)}
	if st, err := os.Stat(img); err == nil {
		d.Bytes = st.Size()
	}
	log.G(ctx).Infof("rootfs: built %s %s (%d MiB) in %v", d.How, img, d.Bytes>>20, d.Cost.Round(time.Millisecond))
	return d, nil
}

// CreateMountPoint creates mp under root where it is missing: parent
// directories 0755, then an empty file or a directory. It never follows
// a symbolic link (one on the way is an error) and never changes what
// exists.
func CreateMountPoint(root string, mp MountPoint) error {
	rel := strings.TrimPrefix(filepath.Clean("/"+mp.Path), "/")
	if rel == "" {
		return nil
	}
	parts := strings.Split(rel, "/")
	p := root
	for i, c := range parts {
		p = filepath.Join(p, c)
		last := i == len(parts)-1
		st, err := os.Lstat(p)
		switch {
		case err == nil && st.Mode()&fs.ModeSymlink != 0:
			return fmt.Errorf("%s: a symbolic link is on the way", p)
		case err == nil && !last && !st.IsDir():
			return fmt.Errorf("%s: not a directory", p)
		case err == nil:
			continue
		case !errors.Is(err, fs.ErrNotExist):
			return err
		case last && mp.File:
			f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY|unix.O_NOFOLLOW, 0o644)
			if err != nil {
				return err
			}
			f.Close()
		default:
			if err := os.Mkdir(p, 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}

// direct recognises a mount the VM can take as a disk: a block device,
// or a filesystem image file mounted with "loop".
func direct(m Mount) (*Disk, bool, error) {
	if !slices.Contains(blockFSTypes, m.Type) || m.Source == "" {
		return nil, false, nil
	}
	st, err := os.Stat(m.Source)
	if err != nil {
		return nil, false, fmt.Errorf("rootfs source %q: %w", m.Source, err)
	}
	ro := slices.Contains(m.Options, "ro") || m.Type == "erofs" || m.Type == "squashfs"
	switch {
	case st.Mode()&fs.ModeDevice != 0 && st.Mode()&fs.ModeCharDevice == 0:
		return &Disk{Path: m.Source, FSType: m.Type, ReadOnly: ro, Direct: true, How: "block device"}, true, nil
	case st.Mode().IsRegular():
		return &Disk{Path: m.Source, FSType: m.Type, ReadOnly: ro, How: "image file"}, true, nil
	}
	return nil, false, fmt.Errorf("rootfs source %q of type %s is neither a block device nor an image file", m.Source, m.Type)
}

// usage sums the apparent sizes and counts the inodes under dir.
func usage(dir string) (bytes, inodes int64, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		inodes++
		if d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				bytes += (fi.Size() + 4095) &^ 4095
			}
		} else {
			bytes += 4096
		}
		return nil
	})
	return bytes, inodes, err
}

// BuildExt4 makes a sparse ext4 image of dir at img, sized for the
// content plus a quarter and 64 MiB of room for the container's writes,
// without a journal (the image lives and dies with the VM).
func BuildExt4(ctx context.Context, dir, img string) error {
	b, n, err := usage(dir)
	if err != nil {
		return fmt.Errorf("rootfs %q: %w", dir, err)
	}
	size := (b + b/4 + 64<<20 + 1<<20 - 1) &^ (1<<20 - 1)
	inodes := n + n/4 + 4096
	f, err := os.OpenFile(img, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("image %q: %w", img, err)
	}
	err = f.Truncate(size)
	f.Close()
	if err != nil {
		return fmt.Errorf("image %q: %w", img, err)
	}
	return run(ctx, "mkfs.ext4", "-q", "-F", "-b", "4096", "-N", fmt.Sprint(inodes), "-m", "0",
		"-O", "^has_journal,^resize_inode", "-E", "lazy_itable_init=1,nodiscard", "-d", dir, img)
}

// BuildErofs makes an uncompressed erofs image of dir at img.
func BuildErofs(ctx context.Context, dir, img string) error {
	return run(ctx, "mkfs.erofs", "--quiet", "-Enoinline_data", img, dir)
}

func run(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Remove deletes an owned image (the overlay and the link to its base,
// whose use time it sets to now: a base stays cached for cacheIdle after
// its last container); it is a no-op for direct disks.
func (d *Disk) Remove() error {
	if d == nil || !d.Owned {
		return nil
	}
	var errs []error
	if err := os.Remove(d.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	if d.Backing != "" {
		now := time.Now()
		os.Chtimes(d.Backing, now, now)
		if err := os.Remove(d.Backing); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Unmount undoes any mounts left on target (after a crash); a target that
// is not mounted or does not exist is fine.
func Unmount(target string) error {
	if err := mount.UnmountAll(target, unix.MNT_DETACH); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
