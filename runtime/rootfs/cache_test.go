package rootfs

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/containerd/containerd/v2/core/mount"
	"golang.org/x/sys/unix"
)

// needOverlay skips a test that mounts overlays where that is not
// possible (not root, or no overlayfs here).
func needOverlay(t *testing.T) {
	t.Helper()
	need(t, "mkfs.ext4")
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount overlays")
	}
	d := t.TempDir()
	for _, s := range []string{"l", "u", "w", "m"} {
		os.Mkdir(filepath.Join(d, s), 0o755)
	}
	m := mount.Mount{Type: "overlay", Source: "overlay", Options: []string{"ro", "lowerdir=" + filepath.Join(d, "l"),
		"upperdir=" + filepath.Join(d, "u"), "workdir=" + filepath.Join(d, "w")}}
	if err := mount.All([]mount.Mount{m}, filepath.Join(d, "m")); err != nil {
		t.Skipf("cannot mount an overlay here: %v", err)
	}
	mount.UnmountAll(filepath.Join(d, "m"), unix.MNT_DETACH)
}

// countBuilds counts the calls of buildExt4 until the test ends; delay
// makes each build slower (to make builds overlap).
func countBuilds(t *testing.T, delay time.Duration) *atomic.Int32 {
	var n atomic.Int32
	orig := buildExt4
	buildExt4 = func(ctx context.Context, dir, img string) error {
		n.Add(1)
		time.Sleep(delay)
		return orig(ctx, dir, img)
	}
	t.Cleanup(func() { buildExt4 = orig })
	return &n
}

// layer makes a lower dir with files (name -> content; a name ending in
// "/" is a directory).
func layer(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fs")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// snapshot is the overlay mount the overlayfs snapshotter gives a new
// container on lowers: a fresh empty upper dir and a work dir.
func snapshot(t *testing.T, lowers ...string) []Mount {
	t.Helper()
	d := t.TempDir()
	upper, work := filepath.Join(d, "upper"), filepath.Join(d, "work")
	os.Mkdir(upper, 0o755)
	os.Mkdir(work, 0o700)
	return []Mount{{Type: "overlay", Source: "overlay",
		Options: []string{"index=off", "lowerdir=" + strings.Join(lowers, ":"), "upperdir=" + upper, "workdir=" + work}}}
}

// env is a cache and an image dir (on the same filesystem).
type env struct {
	cache, images, targets string
}

func newEnv(t *testing.T) env {
	d := t.TempDir()
	return env{cache: filepath.Join(d, "cache"), images: filepath.Join(d, "images"), targets: filepath.Join(d, "targets")}
}

func (e env) opts(name string) Options {
	return Options{Target: filepath.Join(e.targets, name), ImageDir: e.images, Name: name, Format: Ext4, CacheDir: e.cache}
}

func (e env) bases(t *testing.T) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(e.cache, "*.ext4"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func stat(t *testing.T, p string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// baseOf is the cache's base that d links to.
func (e env) baseOf(t *testing.T, d *Disk) string {
	t.Helper()
	ino := stat(t, d.Backing).Ino
	for _, b := range e.bases(t) {
		if stat(t, b).Ino == ino {
			return b
		}
	}
	t.Fatalf("no base in %s for %s", e.cache, d.Backing)
	return ""
}

// imageNames lists dir inside the ext4 image img (with debugfs).
func imageNames(t *testing.T, img, dir string) []string {
	t.Helper()
	need(t, "debugfs")
	out, err := exec.Command("debugfs", "-R", "ls -l "+dir, img).Output()
	if err != nil {
		t.Fatalf("debugfs ls %s: %v", dir, err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && f[len(f)-1] != "." && f[len(f)-1] != ".." {
			names = append(names, f[len(f)-1])
		}
	}
	slices.Sort(names)
	return names
}

func imageCat(t *testing.T, img, file string) string {
	t.Helper()
	need(t, "debugfs")
	out, err := exec.Command("debugfs", "-R", "cat "+file, img).Output()
	if err != nil {
		t.Fatalf("debugfs cat %s: %v", file, err)
	}
	return string(out)
}

func TestCacheable(t *testing.T) {
	d := t.TempDir()
	lower, upper, work, full, file := filepath.Join(d, "lower"), filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "full"), filepath.Join(d, "file")
	for _, p := range []string{lower, upper, work, full} {
		os.Mkdir(p, 0o755)
	}
	os.WriteFile(filepath.Join(full, "x"), nil, 0o644)
	os.WriteFile(file, nil, 0o644)
	ov := func(extra ...string) []Mount {
		return []Mount{{Type: "overlay", Source: "overlay", Options: append([]string{"lowerdir=" + lower + ":" + d, "upperdir=" + upper, "workdir=" + work}, extra...)}}
	}
	rw := Options{Format: Ext4}
	tests := []struct {
		name   string
		mounts []Mount
		opts   Options
		why    string // a part of the reason; "" for cacheable
		replay []string
	}{
		{name: "plain", mounts: ov(), opts: rw},
		{name: "options", mounts: ov("index=off", "redirect_dir=on", "metacopy=off", "volatile", "userxattr", "xino=auto", "ro", "rw"), opts: rw,
			replay: []string{"index=off", "redirect_dir=on", "metacopy=off", "userxattr", "xino=auto"}},
		{name: "uidmap", mounts: ov("uidmap=0:1000:1"), opts: rw, why: "uidmap="},
		{name: "gidmap", mounts: ov("gidmap=0:1000:1"), opts: rw, why: "gidmap="},
		{name: "idmap", mounts: ov("idmap"), opts: rw, why: "idmap"},
		{name: "lowerdir+", mounts: ov("lowerdir+=" + lower), opts: rw, why: "lowerdir+="},
		{name: "datadir+", mounts: ov("datadir+=" + lower), opts: rw, why: "datadir+="},
		{name: "two lowerdir", mounts: ov("lowerdir=" + lower), opts: rw, why: "twice"},
		{name: "escaped", mounts: []Mount{{Type: "overlay", Options: []string{`lowerdir=` + lower + `\:x`, "upperdir=" + upper, "workdir=" + work}}}, opts: rw, why: "escaped"},
		{name: "no upper", mounts: []Mount{{Type: "overlay", Options: []string{"lowerdir=" + lower, "workdir=" + work}}}, opts: rw, why: "upperdir"},
		{name: "no work", mounts: []Mount{{Type: "overlay", Options: []string{"lowerdir=" + lower, "upperdir=" + upper}}}, opts: rw, why: "workdir"},
		{name: "no lower", mounts: []Mount{{Type: "overlay", Options: []string{"upperdir=" + upper, "workdir=" + work}}}, opts: rw, why: "lowerdir"},
		{name: "empty lower", mounts: []Mount{{Type: "overlay", Options: []string{"lowerdir=" + lower + "::" + d, "upperdir=" + upper, "workdir=" + work}}}, opts: rw, why: "empty lower"},
		{name: "upper not empty", mounts: []Mount{{Type: "overlay", Options: []string{"lowerdir=" + lower, "upperdir=" + full, "workdir=" + work}}}, opts: rw, why: "not empty"},
		{name: "upper a file", mounts: []Mount{{Type: "overlay", Options: []string{"lowerdir=" + lower, "upperdir=" + file, "workdir=" + work}}}, opts: rw, why: "not a directory"},
		{name: "upper missing", mounts: []Mount{{Type: "overlay", Options: []string{"lowerdir=" + lower, "upperdir=" + d + "/none", "workdir=" + work}}}, opts: rw, why: "no such file"},
		{name: "two mounts", mounts: append(ov(), ov()...), opts: rw, why: "2 mounts"},
		{name: "no mounts", opts: rw, why: "0 mounts"},
		{name: "bind", mounts: []Mount{{Type: "bind", Source: lower, Options: []string{"rbind"}}}, opts: rw, why: "type bind"},
		{name: "read-only root", mounts: ov(), opts: Options{Format: Ext4, ReadOnly: true}},
		{name: "read-only root, erofs", mounts: ov(), opts: Options{Format: Erofs, ReadOnly: true}},
		{name: "read-only view", mounts: []Mount{{Type: "overlay", Options: []string{"ro", "lowerdir=" + lower + ":" + d}}}, opts: Options{Format: Erofs, ReadOnly: true}},
		{name: "view of a writable root", mounts: []Mount{{Type: "overlay", Options: []string{"ro", "lowerdir=" + lower + ":" + d}}}, opts: rw, why: "upperdir"},
		{name: "read-only, upper without work", mounts: []Mount{{Type: "overlay", Options: []string{"lowerdir=" + lower + ":" + d, "upperdir=" + upper}}}, opts: Options{Format: Ext4, ReadOnly: true}, why: "workdir"},
		{name: "read-only, upper not empty", mounts: []Mount{{Type: "overlay", Options: []string{"lowerdir=" + lower + ":" + d, "upperdir=" + full, "workdir=" + work}}}, opts: Options{Format: Ext4, ReadOnly: true}, why: "not empty"},
		{name: "erofs writable", mounts: ov(), opts: Options{Format: Erofs}, why: "format erofs"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lowerOpt, lowers, replay, why := cacheable(tc.mounts, tc.opts)
			if tc.why == "" {
				if why != "" || lowerOpt != lower+":"+d || !slices.Equal(lowers, []string{lower, d}) || !slices.Equal(replay, tc.replay) {
					t.Fatalf("got %q %q %q, why %q", lowerOpt, lowers, replay, why)
				}
				return
			}
			if !strings.Contains(why, tc.why) {
				t.Fatalf("why %q, want %q", why, tc.why)
			}
		})
	}
}

func TestCacheKey(t *testing.T) {
	d := t.TempDir()
	a, b, file := filepath.Join(d, "a"), filepath.Join(d, "b"), filepath.Join(d, "file")
	os.Mkdir(a, 0o755)
	os.Mkdir(b, 0o755)
	os.WriteFile(file, nil, 0o644)
	key := func(lowers []string, replay ...string) (string, string) {
		return cacheKey(strings.Join(lowers, ":"), lowers, replay)
	}
	k1, why := key([]string{a, b})
	if why != "" || !validKey(k1) {
		t.Fatalf("key %q why %q", k1, why)
	}
	if k, _ := key([]string{a, b}); k != k1 {
		t.Fatal("the key changed")
	}
	for _, other := range [][]string{{b, a}, {a}, {a, b, a}} {
		if k, _ := key(other); k == k1 {
			t.Fatalf("%v: the same key as %v", other, []string{a, b})
		}
	}
	if k, _ := key([]string{a, b}, "userxattr"); k == k1 {
		t.Fatal("replayed options do not change the key")
	}
	os.Remove(b)
	os.Mkdir(b, 0o755)
	if k, _ := key([]string{a, b}); k == k1 {
		t.Fatal("a recreated lower dir kept the key")
	}
	if _, why := key([]string{a, filepath.Join(d, "none")}); !strings.Contains(why, "no such file") {
		t.Fatalf("missing lower dir: %q", why)
	}
	if _, why := key([]string{file}); !strings.Contains(why, "not a directory") {
		t.Fatalf("lower file: %q", why)
	}
}

// TestCachedReadOnly: a read-only root (writable snapshot or view) shares
// the base of a writable root of the same layers, on a writable overlay
// (runc makes the root read-only in the guest), whatever the packing
// format says; its mount points are left to runc, never put in the base.
func TestCachedReadOnly(t *testing.T) {
	needOverlay(t)
	builds := countBuilds(t, 0)
	e := newEnv(t)
	lower := layer(t, map[string]string{"etc/hello": "hello\n"})
	ctx := context.Background()
	ro := func(o Options) Options {
		o.ReadOnly, o.Format = true, Erofs
		o.MountPoints = []MountPoint{{Path: "/etc/hostname", File: true}, {Path: "/data"}}
		return o
	}
	view := []Mount{{Type: "overlay", Source: "overlay", Options: []string{"ro", "index=off", "lowerdir=" + lower}}}
	for _, c := range []struct {
		name   string
		mounts []Mount
		opts   Options
	}{
		{"rw", snapshot(t, lower), e.opts("rw")},
		{"ro", snapshot(t, lower), ro(e.opts("ro"))},
		{"view", view, ro(e.opts("view"))},
	} {
		d, err := Prepare(ctx, c.mounts, c.opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		defer d.Remove()
		if d.Backing == "" || d.ReadOnly || d.FSType != Ext4 || d.Path != filepath.Join(e.images, c.name+".ext4") {
			t.Fatalf("%s: disk %+v", c.name, d)
		}
	}
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
	bases := e.bases(t)
	if len(bases) != 1 || stat(t, bases[0]).Nlink != 4 {
		t.Fatalf("bases %v", bases)
	}
	if got := imageNames(t, bases[0], "/"); slices.Contains(got, "data") {
		t.Fatalf("a mount point in the shared base: %v", got)
	}
	if got := imageNames(t, bases[0], "/etc"); !slices.Equal(got, []string{"hello"}) {
		t.Fatalf("/etc of the base: %v", got)
	}
}

func TestCachedShared(t *testing.T) {
	needOverlay(t)
	builds := countBuilds(t, 0)
	e := newEnv(t)
	top := layer(t, map[string]string{"etc/top": "top\n"})
	bottom := layer(t, map[string]string{"etc/hello": "hello from the image\n", "bin/big": strings.Repeat("x", 3<<20), "tmp/": ""})
	ctx := context.Background()
	d1, err := Prepare(ctx, snapshot(t, top, bottom), e.opts("c1"))
	if err != nil {
		t.Fatal(err)
	}
	d2, err := Prepare(ctx, snapshot(t, top, bottom), e.opts("c2"))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new cached base: %v; cached: %v", d1.Cost, d2.Cost)
	if n := builds.Load(); n != 1 {
		t.Fatalf("%d builds, want 1", n)
	}
	if d1.How != "ext4 overlay on a new cached image" || d2.How != "ext4 overlay on a cached image" {
		t.Fatalf("how %q, %q", d1.How, d2.How)
	}
	bases := e.bases(t)
	if len(bases) != 1 {
		t.Fatalf("bases %v", bases)
	}
	base := bases[0]
	bst := stat(t, base)
	if bst.Nlink != 3 {
		t.Fatalf("base links %d, want 3", bst.Nlink)
	}
	for i, d := range []*Disk{d1, d2} {
		name := []string{"c1", "c2"}[i]
		if d.Path != filepath.Join(e.images, name+".ext4") || d.Backing != filepath.Join(e.images, name+".base.ext4") ||
			d.FSType != "ext4" || d.ReadOnly || d.Direct || !d.Owned || d.Bytes != bst.Size {
			t.Fatalf("disk %+v", d)
		}
		if st := stat(t, d.Backing); st.Ino != bst.Ino {
			t.Fatalf("%s is not a link to %s", d.Backing, base)
		}
		if st := stat(t, d.Path); st.Size != bst.Size || st.Blocks*512 > 64<<10 {
			t.Fatalf("overlay %s: size %d (base %d), %d blocks allocated", d.Path, st.Size, bst.Size, st.Blocks)
		}
	}
	if got := imageCat(t, base, "/etc/hello"); got != "hello from the image\n" {
		t.Fatalf("/etc/hello %q", got)
	}
	if got := imageNames(t, base, "/etc"); !slices.Equal(got, []string{"hello", "top"}) {
		t.Fatalf("/etc: %v", got)
	}
	if err := d1.Remove(); err != nil {
		t.Fatal(err)
	}
	if exists(d1.Path) || exists(d1.Backing) {
		t.Fatal("Remove left files of c1")
	}
	if !exists(base) || !exists(d2.Path) || !exists(d2.Backing) || stat(t, base).Nlink != 2 {
		t.Fatal("Remove of c1 took the base or c2's files")
	}
	if err := d2.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := d2.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if !exists(base) || stat(t, base).Nlink != 1 {
		t.Fatal("the base went with its last container (it stays for cacheIdle)")
	}
	// A container with the same name still holding its files fails.
	if _, err := Prepare(ctx, snapshot(t, top, bottom), e.opts("c3")); err != nil {
		t.Fatal(err)
	}
	if _, err := Prepare(ctx, snapshot(t, top, bottom), e.opts("c3")); err == nil {
		t.Fatal("c3 prepared twice")
	}
	if stat(t, base).Nlink != 2 || exists(filepath.Join(e.targets, "c3")) && len(mustReadDir(t, filepath.Join(e.targets, "c3"))) != 0 {
		t.Fatal("a failed Prepare left a link or a mount")
	}
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return ents
}

func TestCachedDistinctLowers(t *testing.T) {
	needOverlay(t)
	builds := countBuilds(t, 0)
	e := newEnv(t)
	a := layer(t, map[string]string{"a": "a"})
	b := layer(t, map[string]string{"b": "b"})
	ctx := context.Background()
	steps := []struct {
		lowers []string
		redo   string // recreate this dir first
		bases  int
	}{
		{lowers: []string{a, b}, bases: 1},
		{lowers: []string{a, b}, bases: 1},
		{lowers: []string{b, a}, bases: 2},
		{lowers: []string{a}, bases: 3},
		{lowers: []string{a}, bases: 3},
		{lowers: []string{a}, redo: a, bases: 4},
	}
	for i, s := range steps {
		if s.redo != "" {
			os.RemoveAll(s.redo)
			os.Mkdir(s.redo, 0o755)
			os.WriteFile(filepath.Join(s.redo, "new"), nil, 0o644)
		}
		d, err := Prepare(ctx, snapshot(t, s.lowers...), e.opts("c"+string(rune('0'+i))))
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if d.Backing == "" {
			t.Fatalf("step %d: not cached: %+v", i, d)
		}
		if n := len(e.bases(t)); n != s.bases || int(builds.Load()) != s.bases {
			t.Fatalf("step %d: %d bases, %d builds, want %d", i, n, builds.Load(), s.bases)
		}
	}
}

func TestCachedFallback(t *testing.T) {
	needOverlay(t)
	builds := countBuilds(t, 0)
	ctx := context.Background()
	lower := layer(t, map[string]string{"etc/hello": "hello\n"})
	tests := []struct {
		name   string
		mounts func() []Mount
		opts   func(Options) Options
		how    string
		tool   string
	}{
		{name: "non-empty upper", mounts: func() []Mount {
			m := snapshot(t, lower)
			os.WriteFile(filepath.Join(strings.TrimPrefix(m[0].Options[2], "upperdir="), "written"), nil, 0o644)
			return m
		}, how: "ext4 image"},
		{name: "two mounts", mounts: func() []Mount {
			return append(snapshot(t, lower), Mount{Type: "bind", Source: lower, Options: []string{"rbind", "ro"}})
		}, how: "ext4 image"},
		{name: "bind", mounts: func() []Mount { return []Mount{{Type: "bind", Source: lower, Options: []string{"rbind", "rw"}}} }, how: "ext4 image"},
		{name: "uidmap", mounts: func() []Mount {
			m := snapshot(t, lower)
			m[0].Options = append(m[0].Options, "uidmap=0:0:65536")
			return m
		}, how: "ext4 image"},
		{name: "read-only bind", mounts: func() []Mount { return []Mount{{Type: "bind", Source: lower, Options: []string{"rbind", "ro"}}} },
			opts: func(o Options) Options { o.ReadOnly, o.Format = true, Erofs; return o }, how: "erofs image", tool: "mkfs.erofs"},
		{name: "no cache", mounts: func() []Mount { return snapshot(t, lower) },
			opts: func(o Options) Options { o.CacheDir = ""; return o }, how: "ext4 image"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tool != "" {
				need(t, tc.tool)
			}
			e := newEnv(t)
			o := e.opts("c")
			if tc.opts != nil {
				o = tc.opts(o)
			}
			before := builds.Load()
			d, err := Prepare(ctx, tc.mounts(), o)
			if err != nil {
				if tc.name == "uidmap" {
					t.Skipf("this kernel does not take the idmapped overlay: %v", err)
				}
				t.Fatal(err)
			}
			defer d.Remove()
			if d.How != tc.how || d.Backing != "" || d.Path != filepath.Join(e.images, "c."+o.Format) {
				t.Fatalf("disk %+v, want %q without Backing", d, tc.how)
			}
			if b := e.bases(t); len(b) != 0 {
				t.Fatalf("cached bases %v", b)
			}
			if exists(filepath.Join(e.images, "c.base.ext4")) {
				t.Fatal("a base link")
			}
			if want := int32(1); o.Format == Ext4 && builds.Load()-before != want {
				t.Fatalf("%d ext4 builds, want %d", builds.Load()-before, want)
			}
		})
	}
}

func TestCachedWhiteout(t *testing.T) {
	needOverlay(t)
	e := newEnv(t)
	bottom := layer(t, map[string]string{"a": "a\n", "b": "b\n", "d/x": "x\n", "keep/k": "k\n"})
	top := layer(t, map[string]string{"d/y": "y\n", "keep/t": "t\n"})
	// A whiteout of /a and an opaque /d.
	if err := unix.Mknod(filepath.Join(top, "a"), unix.S_IFCHR, 0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(top, "d"), "trusted.overlay.opaque", []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
	d, err := Prepare(context.Background(), snapshot(t, top, bottom), e.opts("c"))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Remove()
	if d.Backing == "" {
		t.Fatalf("not cached: %+v", d)
	}
	if got := imageNames(t, d.Backing, "/"); !slices.Equal(got, []string{"b", "d", "keep", "lost+found"}) {
		t.Errorf("/: %v, want b d keep lost+found", got)
	}
	if got := imageNames(t, d.Backing, "/d"); !slices.Equal(got, []string{"y"}) {
		t.Errorf("/d: %v, want y (opaque)", got)
	}
	if got := imageNames(t, d.Backing, "/keep"); !slices.Equal(got, []string{"k", "t"}) {
		t.Errorf("/keep: %v, want k t (merged)", got)
	}
}

func TestCachedConcurrent(t *testing.T) {
	needOverlay(t)
	builds := countBuilds(t, 50*time.Millisecond)
	e := newEnv(t)
	lowers := []string{layer(t, map[string]string{"top": "t"}), layer(t, map[string]string{"bottom": "b"})}
	const n = 8
	mounts := make([][]Mount, n)
	for i := range mounts {
		mounts[i] = snapshot(t, lowers...)
	}
	disks := make([]*Disk, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			disks[i], errs[i] = Prepare(context.Background(), mounts[i], e.opts("c"+string(rune('a'+i))))
		}()
	}
	close(start)
	wg.Wait()
	if b := builds.Load(); b != 1 {
		t.Fatalf("%d builds, want 1", b)
	}
	var ino uint64
	news := 0
	for i, d := range disks {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if d.Backing == "" {
			t.Fatalf("not cached: %+v", d)
		}
		st := stat(t, d.Backing)
		if i > 0 && st.Ino != ino {
			t.Fatalf("%s: another base", d.Backing)
		}
		ino = st.Ino
		if d.How == howNewCached {
			news++
		}
	}
	if news != 1 || len(e.bases(t)) != 1 || stat(t, e.bases(t)[0]).Nlink != n+1 {
		t.Fatalf("%d new, bases %v", news, e.bases(t))
	}
}

func TestCacheGC(t *testing.T) {
	needOverlay(t)
	idle := cacheIdle
	cacheIdle = time.Minute
	t.Cleanup(func() { cacheIdle = idle })
	e := newEnv(t)
	ctx := context.Background()
	longAgo := time.Now().Add(-time.Hour)
	prepare := func(name string, files map[string]string) (*Disk, string) {
		t.Helper()
		d, err := Prepare(ctx, snapshot(t, layer(t, files)), e.opts(name))
		if err != nil {
			t.Fatal(err)
		}
		return d, e.baseOf(t, d)
	}
	age := func(p string) {
		t.Helper()
		if err := os.Chtimes(p, longAgo, longAgo); err != nil {
			t.Fatal(err)
		}
	}
	_, linked := prepare("linked", map[string]string{"1": ""}) // old, still linked: kept
	age(linked)
	d, unused := prepare("unused", map[string]string{"2": ""}) // old, unused: removed
	d.Remove()
	age(unused)
	d, recent := prepare("recent", map[string]string{"3": ""}) // unused but recent: kept
	d.Remove()
	d, locked := prepare("locked", map[string]string{"5": ""}) // old, unused, but locked: kept
	d.Remove()
	age(locked)

	const dead = "0123456789abcdef0123456789abcdef"
	staleImg := filepath.Join(e.cache, dead+".ext4.tmp-0011223344556677")
	staleDir := filepath.Join(e.cache, dead+".tmp-123")
	staleLock := filepath.Join(e.cache, dead+".lock")
	freshImg := filepath.Join(e.cache, "fedcba9876543210fedcba9876543210.ext4.tmp-0011223344556677")
	other := filepath.Join(e.cache, "notes")
	os.WriteFile(staleImg, []byte("half an image"), 0o600)
	os.MkdirAll(filepath.Join(staleDir, "upper"), 0o700)
	os.WriteFile(staleLock, nil, 0o600)
	os.WriteFile(freshImg, nil, 0o600)
	os.WriteFile(other, nil, 0o600)
	for _, p := range []string{staleImg, filepath.Join(staleDir, "upper"), staleDir, staleLock, other} {
		age(p)
	}
	lockedLock := strings.TrimSuffix(locked, ".ext4") + ".lock"
	held, err := lockFile(ctx, lockedLock, false)
	if err != nil {
		t.Fatal(err)
	}

	// The next cached Prepare collects.
	_, fresh := prepare("trigger", map[string]string{"4": ""})
	for _, c := range []struct {
		path string
		kept bool
	}{
		{linked, true}, {unused, false}, {strings.TrimSuffix(unused, ".ext4") + ".lock", false}, {recent, true},
		{locked, true}, {fresh, true}, {staleImg, false}, {staleDir, false}, {staleLock, false}, {freshImg, true}, {other, true},
	} {
		if exists(c.path) != c.kept {
			t.Errorf("%s: kept %v, want %v", filepath.Base(c.path), !c.kept, c.kept)
		}
	}
	held.Close()
	collect(ctx, e.cache)
	if exists(locked) || exists(lockedLock) {
		t.Error("an old unused base stayed after its lock was released")
	}
	if !exists(linked) || !exists(recent) || !exists(fresh) {
		t.Error("the second collection took a base in use or recent")
	}
}

func TestCachedBuildFails(t *testing.T) {
	needOverlay(t)
	orig := buildExt4
	t.Cleanup(func() { buildExt4 = orig })
	buildExt4 = func(ctx context.Context, dir, img string) error {
		os.WriteFile(img, []byte("half"), 0o600)
		return os.ErrInvalid
	}
	e := newEnv(t)
	_, err := Prepare(context.Background(), snapshot(t, layer(t, map[string]string{"a": ""})), e.opts("c"))
	if err == nil {
		t.Fatal("a failed build did not fail Prepare")
	}
	for _, ent := range mustReadDir(t, e.cache) {
		if !strings.HasSuffix(ent.Name(), ".lock") {
			t.Errorf("left %s in the cache", ent.Name())
		}
	}
	if ents, _ := os.ReadDir(e.images); len(ents) != 0 {
		t.Errorf("left %d files in the image dir", len(ents))
	}
}

// A cache on another filesystem than the image dir cannot be linked
// from it: each container gets an image of its own.
func TestCachedOtherFilesystem(t *testing.T) {
	needOverlay(t)
	e := newEnv(t)
	other, err := os.MkdirTemp("/dev/shm", "rootfs-cache-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(other) })
	os.MkdirAll(e.images, 0o700)
	if stat(t, other).Dev == stat(t, e.images).Dev {
		t.Skip("/dev/shm is on the temp dir's filesystem")
	}
	o := e.opts("c")
	o.CacheDir = other
	d, err := Prepare(context.Background(), snapshot(t, layer(t, map[string]string{"a": ""})), o)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Remove()
	if d.How != "ext4 image" || d.Backing != "" || len(mustReadDir(t, other)) != 0 {
		t.Fatalf("disk %+v, cache %v", d, mustReadDir(t, other))
	}
}
