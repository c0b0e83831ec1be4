package rootfs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/log"
	"golang.org/x/sys/unix"
)

// The cache of base images (Options.CacheDir) holds, directly in the
// directory:
//
//	<key>.ext4           a base image: the ext4 image of an overlay of a
//	                     set of lower dirs, read-only once renamed here;
//	                     each container using it holds a hard link to it
//	<key>.lock           flocked while the base is built, linked or removed
//	<key>.ext4.tmp-<r>   a base being built
//	<key>.tmp-<r>/       the read-only overlay a base is built from
//
// key is the first 32 hex digits of a sha256 over the lowerdir option,
// the options replayed on the overlay, and each lower dir's device,
// inode and ctime (so a directory recreated under the same path gets a
// new key).

// How of a disk on a cached base image.
const (
	howCached    = "ext4 overlay on a cached image"
	howNewCached = "ext4 overlay on a new cached image"
)

// cacheIdle is how long a base no container links stays in the cache
// after its last use, and how old stale temporary and lock files must be
// before they are removed.
var cacheIdle = 10 * time.Minute

// buildExt4 is BuildExt4 (tests count the builds).
var buildExt4 = BuildExt4

// overlayIgnored are the options of a snapshot's overlay mount that the
// read-only overlay of its lower dirs can do without (ro, rw, volatile:
// the base is always mounted read-only) or replays (the others).
var overlayIgnored = []string{"ro", "rw", "volatile"}
var overlayReplayed = []string{"userxattr"}
var overlayReplayedPrefixes = []string{"index=", "redirect_dir=", "metacopy=", "xino="}

// cacheable says whether mounts can use a cached base: a single overlay
// mount with an empty upper dir and only options that a read-only overlay
// of its lower dirs can replay. A read-only root may also come without an
// upper and a work dir (a view snapshot's overlay), and takes the cache
// whatever opts.Format says (the format of an image of its own): its
// disk is the same writable overlay on the base, where runc creates the
// mount points before it makes the root read-only in the guest, as it
// does on a host. It returns the lowerdir option's value, the lower dirs,
// the options to replay, or why not.
func cacheable(mounts []Mount, opts Options) (lowerOpt string, lowers, replay []string, why string) {
	switch {
	case opts.Format != Ext4 && !opts.ReadOnly:
		return "", nil, nil, "format " + opts.Format
	case len(mounts) != 1:
		return "", nil, nil, fmt.Sprintf("%d mounts", len(mounts))
	case mounts[0].Type != "overlay":
		return "", nil, nil, "a mount of type " + mounts[0].Type
	}
	var upper, work string
	var haveLower bool
	for _, o := range mounts[0].Options {
		k, v, _ := strings.Cut(o, "=")
		switch {
		case k == "lowerdir" && strings.HasPrefix(o, "lowerdir="):
			if haveLower {
				return "", nil, nil, "lowerdir= given twice"
			}
			lowerOpt, haveLower = v, true
		case k == "upperdir" && strings.HasPrefix(o, "upperdir="):
			upper = v
		case k == "workdir" && strings.HasPrefix(o, "workdir="):
			work = v
		case slices.Contains(overlayIgnored, o):
		case slices.Contains(overlayReplayed, o) || slices.ContainsFunc(overlayReplayedPrefixes, func(p string) bool { return strings.HasPrefix(o, p) }):
			replay = append(replay, o)
		default:
			return "", nil, nil, "overlay option " + o
		}
	}
	view := opts.ReadOnly && upper == "" && work == ""
	switch {
	case !haveLower || lowerOpt == "":
		return "", nil, nil, "no lowerdir="
	case upper == "" && !view:
		return "", nil, nil, "no upperdir="
	case work == "" && !view:
		return "", nil, nil, "no workdir="
	case strings.Contains(lowerOpt, `\`):
		return "", nil, nil, "an escaped character in lowerdir="
	}
	if !view {
		if empty, err := emptyDir(upper); err != nil || !empty {
			if err == nil {
				err = errors.New("not empty")
			}
			return "", nil, nil, fmt.Sprintf("upperdir %s: %v", upper, err)
		}
	}
	lowers = strings.Split(lowerOpt, ":")
	for _, l := range lowers {
		if l == "" {
			return "", nil, nil, "an empty lower dir"
		}
	}
	return lowerOpt, lowers, replay, ""
}

// emptyDir says whether dir is a directory with no entries.
func emptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || !st.IsDir() {
		if err == nil {
			err = errors.New("not a directory")
		}
		return false, err
	}
	if _, err := f.Readdirnames(1); err == io.EOF {
		return true, nil
	} else if err != nil {
		return false, err
	}
	return false, nil
}

// cacheKey is the cache key of an overlay of lowers (see above); why is
// set when a lower dir is not a directory.
func cacheKey(lowerOpt string, lowers, replay []string) (key, why string) {
	h := sha256.New()
	fmt.Fprintf(h, "lowerdir=%s\x00", lowerOpt)
	for _, l := range lowers {
		var st unix.Stat_t
		if err := unix.Stat(l, &st); err != nil {
			return "", fmt.Sprintf("lower dir %s: %v", l, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return "", fmt.Sprintf("lower dir %s: not a directory", l)
		}
		fmt.Fprintf(h, "%d %d %d.%09d\x00", st.Dev, st.Ino, st.Ctim.Sec, st.Ctim.Nsec)
	}
	for _, o := range replay {
		fmt.Fprintf(h, "%s\x00", o)
	}
	return hex.EncodeToString(h.Sum(nil))[:32], ""
}

// validKey says whether s looks like a cache key (so that the garbage
// collector touches only the cache's own files).
func validKey(s string) bool {
	if len(s) != 32 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// errLocked: a non-blocking lock is held elsewhere.
var errLocked = errors.New("locked")

// lockFile takes an exclusive flock on path (created when missing) and
// returns the open file that holds it. It makes sure the lock is on the
// file now at path (the garbage collector removes lock files, under their
// lock). Without wait it returns errLocked when the lock is held;
// with wait it polls until ctx is done.
func lockFile(ctx context.Context, path string, wait bool) (*os.File, error) {
	delay := time.Millisecond
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|unix.O_CLOEXEC, 0o600)
		if err != nil {
			return nil, err
		}
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			if !wait {
				return nil, errLocked
			}
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
			case <-time.After(delay):
			}
			delay = min(2*delay, 20*time.Millisecond)
			continue
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		var held, now unix.Stat_t
		if unix.Fstat(int(f.Fd()), &held) == nil && unix.Stat(path, &now) == nil && held.Dev == now.Dev && held.Ino == now.Ino {
			return f, nil
		}
		f.Close() // removed or replaced while we waited: lock the new one
	}
}

// prepareCached gives the container an empty sparse overlay on a cached
// base image of the overlay's lower dirs, building the base when it is
// not in the cache yet. It returns a nil disk and why when the mounts or
// the directories do not allow it (the caller builds an image of its own).
func prepareCached(ctx context.Context, mounts []Mount, opts Options) (*Disk, string, error) {
	start := time.Now()
	lowerOpt, lowers, replay, why := cacheable(mounts, opts)
	if why != "" {
		return nil, why, nil
	}
	key, why := cacheKey(lowerOpt, lowers, replay)
	if why != "" {
		return nil, why, nil
	}
	if err := os.MkdirAll(opts.CacheDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("rootfs cache: %w", err)
	}
	if err := os.MkdirAll(opts.ImageDir, 0o700); err != nil {
		return nil, "", fmt.Errorf("image dir: %w", err)
	}
	var cst, ist unix.Stat_t
	if err := unix.Stat(opts.CacheDir, &cst); err != nil {
		return nil, "", fmt.Errorf("rootfs cache: %w", err)
	}
	if err := unix.Stat(opts.ImageDir, &ist); err != nil {
		return nil, "", fmt.Errorf("image dir: %w", err)
	}
	if cst.Dev != ist.Dev {
		// A placement the operator can fix: said where it is seen.
		why := fmt.Sprintf("the image dir %s and the cache %s are on different filesystems", opts.ImageDir, opts.CacheDir)
		log.G(ctx).Infof("rootfs: %s: %s gets an image of its own (put rootfs_cache_dir on the bundles' file system)", why, opts.Name)
		return nil, why, nil
	}

	base := filepath.Join(opts.CacheDir, key+".ext4")
	link := filepath.Join(opts.ImageDir, opts.Name+".base.ext4")
	overlay := filepath.Join(opts.ImageDir, opts.Name+".ext4")
	lock, err := lockFile(ctx, filepath.Join(opts.CacheDir, key+".lock"), true)
	if err != nil {
		return nil, "", fmt.Errorf("rootfs cache: %w", err)
	}
	built, size, err := func() (bool, int64, error) {
		defer lock.Close() // releases the flock
		built := false
		st, err := os.Stat(base)
		if errors.Is(err, fs.ErrNotExist) {
			if err := buildBase(ctx, opts.CacheDir, key, lowerOpt, replay, base); err != nil {
				return false, 0, err
			}
			built = true
			st, err = os.Stat(base)
		}
		if err != nil {
			return false, 0, fmt.Errorf("rootfs cache: %w", err)
		}
		if err := os.Link(base, link); err != nil {
			return built, 0, err
		}
		now := time.Now()
		if err := os.Chtimes(base, now, now); err != nil {
			log.G(ctx).WithError(err).Debugf("rootfs cache: touch %s", base)
		}
		return built, st.Size(), nil
	}()
	if errors.Is(err, unix.EXDEV) {
		return nil, fmt.Sprintf("cannot link the cache's %s into %s: %v", base, opts.ImageDir, err), nil
	}
	if err != nil {
		return nil, "", err
	}
	defer collect(ctx, opts.CacheDir)
	if err := sparseFile(overlay, size); err != nil {
		os.Remove(link)
		return nil, "", err
	}
	d := &Disk{Path: overlay, Backing: link, FSType: Ext4, Owned: true, How: howCached, Cost: time.Since(start), Bytes: size}
	if built {
		d.How = howNewCached
	}
	log.G(ctx).Infof("rootfs: built %s %s (base %s, %d MiB) in %v", d.How, overlay, base, d.Bytes>>20, d.Cost.Round(time.Millisecond))
	return d, "", nil
}

// sparseFile creates path (which must not exist) as a sparse file of size
// bytes.
func sparseFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("overlay %q: %w", path, err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("overlay %q: %w", path, err)
	}
	return nil
}

// buildBase builds the base image of the overlay of lowerOpt at base; the
// caller holds the key's lock. The lower dirs are mounted as a read-only
// overlay (with an empty upper dir: some kernels refuse an overlay of a
// single lower dir without one), so whiteouts and opaque directories of
// upper layers are resolved as the container would see them.
func buildBase(ctx context.Context, cacheDir, key, lowerOpt string, replay []string, base string) (err error) {
	tmp, err := os.MkdirTemp(cacheDir, key+".tmp-")
	if err != nil {
		return fmt.Errorf("rootfs cache: %w", err)
	}
	mnt, upper, work := filepath.Join(tmp, "mnt"), filepath.Join(tmp, "upper"), filepath.Join(tmp, "work")
	mounted := false
	defer func() {
		if mounted {
			if uerr := mount.UnmountAll(mnt, unix.MNT_DETACH); uerr != nil {
				// Left for the garbage collector (which unmounts first).
				log.G(ctx).WithError(uerr).Warnf("rootfs cache: unmount %s", mnt)
				err = errors.Join(err, uerr)
				return
			}
		}
		if rerr := os.RemoveAll(tmp); rerr != nil {
			log.G(ctx).WithError(rerr).Warnf("rootfs cache: remove %s", tmp)
		}
	}()
	for _, d := range []string{mnt, upper, work} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("rootfs cache: %w", err)
		}
	}
	m := mount.Mount{Type: "overlay", Source: "overlay",
		Options: append([]string{"ro", "lowerdir=" + lowerOpt, "upperdir=" + upper, "workdir=" + work}, replay...)}
	if err := mount.All([]mount.Mount{m}, mnt); err != nil {
		return fmt.Errorf("rootfs cache: mount the lower dirs on %q: %w", mnt, err)
	}
	mounted = true
	var r [8]byte
	if _, err := rand.Read(r[:]); err != nil {
		return fmt.Errorf("rootfs cache: %w", err)
	}
	img := base + ".tmp-" + hex.EncodeToString(r[:])
	if err := buildExt4(ctx, mnt, img); err != nil {
		os.Remove(img)
		return err
	}
	if err := syncFile(img); err != nil {
		os.Remove(img)
		return fmt.Errorf("rootfs cache: %w", err)
	}
	if err := mount.UnmountAll(mnt, unix.MNT_DETACH); err != nil {
		os.Remove(img)
		return fmt.Errorf("rootfs cache: unmount %q: %w", mnt, err)
	}
	mounted = false
	if err := os.Rename(img, base); err != nil {
		os.Remove(img)
		return fmt.Errorf("rootfs cache: %w", err)
	}
	return nil
}

// syncFile flushes path to its disk (a cache on a persistent filesystem
// must not keep a half-written base after a crash).
func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// collect removes from the cache the bases no container links that were
// last used more than cacheIdle ago, and temporary and lock files older
// than that which no build needs. It never removes anything of a key
// whose lock another process (or goroutine) holds. Errors are logged.
func collect(ctx context.Context, dir string) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		log.G(ctx).WithError(err).Debugf("rootfs cache: gc %s", dir)
		return
	}
	cutoff := time.Now().Add(-cacheIdle)
	old := func(p string) (*unix.Stat_t, bool) {
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return nil, false
		}
		return &st, time.Unix(st.Mtim.Unix()).Before(cutoff)
	}
	// Find the candidates first, without taking any lock.
	type garbage struct {
		base bool     // an unused old base
		lock bool     // an old lock file
		tmps []string // old temporary files and dirs
	}
	keys := map[string]*garbage{}
	var order []string
	get := func(k string) *garbage {
		g := keys[k]
		if g == nil {
			g = &garbage{}
			keys[k] = g
			order = append(order, k)
		}
		return g
	}
	for _, e := range ents {
		key, rest, _ := strings.Cut(e.Name(), ".")
		if !validKey(key) {
			continue
		}
		p := filepath.Join(dir, e.Name())
		switch {
		case rest == "ext4":
			if st, o := old(p); o && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1 {
				get(key).base = true
			}
		case rest == "lock":
			if _, o := old(p); o {
				get(key).lock = true
			}
		case strings.HasPrefix(rest, "tmp-") || strings.HasPrefix(rest, "ext4.tmp-"):
			if _, o := old(p); o {
				g := get(key)
				g.tmps = append(g.tmps, p)
			}
		}
	}
	for _, key := range order {
		g := keys[key]
		base, lockPath := filepath.Join(dir, key+".ext4"), filepath.Join(dir, key+".lock")
		if !g.base && len(g.tmps) == 0 {
			if _, err := os.Lstat(base); err == nil || !errors.Is(err, fs.ErrNotExist) {
				continue // an old lock file of a base still here
			}
		}
		lock, err := lockFile(ctx, lockPath, false)
		if err != nil {
			if !errors.Is(err, errLocked) {
				log.G(ctx).WithError(err).Debugf("rootfs cache: gc %s", key)
			}
			continue
		}
		// Under the lock, nothing of key changes: check again.
		removedBase := false
		if st, o := old(base); g.base && o && st.Nlink == 1 && st.Mode&unix.S_IFMT == unix.S_IFREG {
			if err := os.Remove(base); err != nil {
				log.G(ctx).WithError(err).Debugf("rootfs cache: gc %s", base)
			} else {
				removedBase = true
				log.G(ctx).Debugf("rootfs cache: removed %s, unused since %v", base, time.Unix(st.Mtim.Unix()).Round(time.Second))
			}
		}
		for _, p := range g.tmps {
			if _, o := old(p); !o {
				continue
			}
			if err := removeTemp(p); err != nil {
				log.G(ctx).WithError(err).Debugf("rootfs cache: gc %s", p)
			}
		}
		if _, err := os.Lstat(base); errors.Is(err, fs.ErrNotExist) && (removedBase || g.lock) {
			if err := os.Remove(lockPath); err != nil && !errors.Is(err, fs.ErrNotExist) {
				log.G(ctx).WithError(err).Debugf("rootfs cache: gc %s", lockPath)
			}
		}
		lock.Close()
	}
}

// removeTemp removes a stale temporary image, or a build's temporary dir
// after undoing its overlay mount (its builder died mid-build).
func removeTemp(p string) error {
	st, err := os.Lstat(p)
	if err != nil {
		return nil
	}
	if st.IsDir() {
		mnt := filepath.Join(p, "mnt")
		if err := mount.UnmountAll(mnt, unix.MNT_DETACH); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		return os.RemoveAll(p)
	}
	return os.Remove(p)
}
