// Command guestimage builds the stratovirt guest image (`make guest`): the
// kernel as a bzImage (vmlinuz) and as an ELF (vmlinux, booted through PVH
// without in-guest decompression); an initramfs, uncompressed
// (initramfs.cpio, what the shim boots by default) and gzip'd
// (initramfs.cpio.gz), holding the agent as /init, the kernel modules the
// agent loads at start (with their dependencies, in load order, listed in
// /etc/stratovirt/modules) and runc's version line
// (/etc/stratovirt/runc-version); and runc.erofs, a read-only erofs image
// of runc and the shared libraries it needs, laid out as the guest's /usr;
// and root.erofs, both in one read-only erofs that the kernel mounts as /
// from virtio-pmem with DAX (what the shim boots by default: no initramfs,
// so nothing of the guest's userland is copied into guest RAM at boot).
//
// runc and its libraries are most of the guest's userland (11 of 17.5
// MB). In the initramfs every boot copied them into guest RAM twice (the
// archive, then its unpacked files). The shim gives runc.erofs to the
// guest as virtio-pmem, host page cache mapped into the guest: the guest
// reads only the pages runc runs, with memory copies, and every VM shares
// the host's copy. The output is reproducible: entries are sorted, owned
// by root, with zero mtimes, and gzip carries no name or time.
package main

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	"github.com/stratovirt-go/stratovirt/tests/initramfs"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

// Modules the guest needs: virtio-mmio transport (the VMM has no PCI),
// block, network, vsock, entropy, and the filesystems container images use
// (ext4 is built in).
var defaultModules = []string{
	"virtio_mmio", "virtio_blk", "virtio_net", "vmw_vsock_virtio_transport",
	"virtio_rng", "overlay", "erofs", "squashfs",
}

// RuncImage is the file name of the runc image in the output.
const RuncImage = "runc.erofs"

// RootImage is the file name of the root image in the output: the
// initramfs's files and runc's /usr in one read-only erofs, which the
// kernel mounts as / from virtio-pmem with DAX (no initramfs at all).
const RootImage = "root.erofs"

// rootDirs are the mount points and writable places the root image
// provides as empty directories (the agent mounts proc, sysfs, devtmpfs
// and tmpfs on them; the image itself is read-only).
var rootDirs = []string{"dev", "proc", "sys", "run", "tmp", "root", "mnt"}

// Library directories searched for runc's DT_NEEDED entries.
var libDirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib"}

func main() {
	agent := flag.String("agent", "", "static stratovirt-agent binary (/init)")
	out := flag.String("out", "build/guest", "output directory")
	runcPath := flag.String("runc", "/usr/sbin/runc", "runc binary to include")
	kernelDir := flag.String("kernel-dir", "", "unpacked kernel package (boot/, lib/modules/, optionally vmlinux): the microVM kernel (agent/kernel) or Debian's cloud kernel, both from `make deps`; default: the cloud kernel")
	mods := flag.String("modules", strings.Join(defaultModules, ","), "kernel modules to load at boot (comma separated)")
	vmlinux := flag.String("vmlinux", "", "ELF kernel to write as vmlinux (default: decompressed from the bzImage)")
	flag.Parse()
	var modules []string
	for _, m := range strings.Split(*mods, ",") {
		if m = strings.TrimSpace(m); m != "" {
			modules = append(modules, m)
		}
	}
	if err := build(*agent, *out, *runcPath, *kernelDir, *vmlinux, modules); err != nil {
		fmt.Fprintln(os.Stderr, "guestimage:", err)
		os.Exit(1)
	}
}

// image collects initramfs entries by path.
type image struct {
	files    map[string][]byte
	modes    map[string]uint32
	symlinks map[string]string
	dirs     map[string]bool // empty directories (writeTree)
}

func newImage() *image {
	return &image{files: map[string][]byte{}, modes: map[string]uint32{}, symlinks: map[string]string{}, dirs: map[string]bool{}}
}

// rootTree is the root image: the initramfs's entries, tree under /usr,
// the mount points, and /etc/resolv.conf as a link into /run (the agent
// writes the sandbox's DNS there; / is read-only).
func rootTree(initrd, usr *image) *image {
	root := newImage()
	for n, b := range initrd.files {
		root.file(n, initrd.modes[n], b)
	}
	for n, t := range initrd.symlinks {
		root.symlink(n, t)
	}
	for n, b := range usr.files {
		root.file(path.Join("usr", n), usr.modes[n], b)
	}
	for n, t := range usr.symlinks {
		root.symlink(path.Join("usr", n), t)
	}
	root.symlink("etc/resolv.conf", "/run/resolv.conf")
	for _, d := range rootDirs {
		root.dirs[d] = true
	}
	return root
}

func (im *image) file(name string, mode uint32, data []byte) {
	im.files[strings.TrimPrefix(name, "/")] = data
	im.modes[strings.TrimPrefix(name, "/")] = mode
}

func (im *image) symlink(name, target string) {
	im.symlinks[strings.TrimPrefix(name, "/")] = target
}

// write emits the archive: every parent directory, then entries sorted.
func (im *image) write() ([]byte, error) {
	dirs := map[string]bool{}
	for _, d := range []string{"dev", "proc", "sys", "run", "tmp", "etc", "root", "usr", "bin", "sbin"} {
		dirs[d] = true
	}
	addParents := func(p string) {
		for d := path.Dir(p); d != "." && d != "/"; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	var names []string
	for n := range im.files {
		names = append(names, n)
		addParents(n)
	}
	for n := range im.symlinks {
		names = append(names, n)
		addParents(n)
	}
	for d := range dirs {
		addParents(d + "/x")
	}
	var dl []string
	for d := range dirs {
		dl = append(dl, d)
	}
	sort.Strings(dl)
	sort.Strings(names)
	var buf bytes.Buffer
	w := initramfs.NewWriter(&buf)
	for _, d := range dl {
		w.Dir(d)
	}
	for _, n := range names {
		if t, ok := im.symlinks[n]; ok {
			w.Symlink(n, t)
		} else {
			w.File(n, im.modes[n], im.files[n])
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func build(agent, out, runcPath, kernelDir, vmlinuxPath string, modules []string) error {
	if agent == "" {
		return errors.New("-agent is required")
	}
	k, err := findKernel(kernelDir)
	if err != nil {
		return err
	}
	im := newImage()
	a, err := os.ReadFile(agent)
	if err != nil {
		return err
	}
	im.file("init", 0o755, a)
	usr, err := runcTree(runcPath, im)
	if err != nil {
		return fmt.Errorf("runc: %w", err)
	}
	// The agent answers version queries from this file instead of
	// running runc at every boot.
	v, err := exec.Command(runcPath, "--version").Output()
	if err != nil {
		return fmt.Errorf("runc --version: %w", err)
	}
	line, _, _ := strings.Cut(string(v), "\n")
	im.file("etc/stratovirt/runc-version", 0o644, []byte(line+"\n"))
	modDir := k.ModulesDir()
	files, err := ModuleDeps(modDir, modules)
	if err != nil {
		return err
	}
	var list strings.Builder
	list.WriteString("# Loaded in order by stratovirt-agent (finit_module).\n")
	for _, f := range files {
		b, err := os.ReadFile(filepath.Join(modDir, f))
		if err != nil {
			return err
		}
		p := path.Join("/lib/modules", k.Version, f)
		im.file(p, 0o644, b)
		list.WriteString(p + "\n")
	}
	im.file("etc/stratovirt/modules", 0o644, []byte(list.String()))
	im.file("etc/stratovirt/kernel-version", 0o644, []byte(k.Version+"\n"))
	raw, err := im.write()
	if err != nil {
		return err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.BestCompression)
	if err != nil {
		return err
	}
	zw.Write(raw)
	if err := zw.Close(); err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	kernel, err := os.ReadFile(k.Image)
	if err != nil {
		return err
	}
	var elfKernel []byte
	if vmlinuxPath == "" {
		// A kernel built here (agent/kernel/build.sh) comes with its
		// linked vmlinux.
		if p := filepath.Join(k.Dir, "vmlinux"); fileExists(p) {
			vmlinuxPath = p
		}
	}
	if vmlinuxPath != "" {
		elfKernel, err = os.ReadFile(vmlinuxPath)
	} else {
		elfKernel, err = Vmlinux(kernel)
	}
	if err != nil {
		return fmt.Errorf("vmlinux from %s: %w", k.Image, err)
	}
	runcImage, err := writeErofs(usr)
	if err != nil {
		return err
	}
	rootImage, err := writeErofs(rootTree(im, usr))
	if err != nil {
		return err
	}
	outputs := []struct {
		name string
		data []byte
	}{{"vmlinuz", kernel}, {"vmlinux", elfKernel}, {"initramfs.cpio", raw}, {"initramfs.cpio.gz", gz.Bytes()}, {RuncImage, runcImage}, {RootImage, rootImage}}
	for _, o := range outputs {
		if err := writeAtomic(filepath.Join(out, o.name), o.data); err != nil {
			return err
		}
	}
	fmt.Printf("guest image in %s (kernel %s, %d modules):\n", out, k.Version, len(files))
	for _, o := range outputs {
		fmt.Printf("  %-18s %9d bytes (%.1f MiB)  sha256 %x\n", o.name, len(o.data), float64(len(o.data))/(1<<20), sha256.Sum256(o.data))
	}
	fmt.Printf("  initramfs: agent %d bytes, modules; %s: runc and its libraries as /usr (%s); %s: both as the root filesystem (%s, no initramfs)\n",
		len(a), RuncImage, agentv1.RuncDevice, RootImage, agentv1.RuncDevice)
	return nil
}

// usrPath is where a file at host path p sits in the runc image, whose
// root is the guest's /usr.
func usrPath(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	return strings.TrimPrefix(p, "usr/")
}

// runcTree collects runc at /usr/bin/runc with its interpreter and
// libraries into a tree rooted at the guest's /usr, and links each of
// their directories outside /usr (/lib64 for the ELF interpreter,
// /lib/x86_64-linux-gnu) from the initramfs into it, so that every file
// is found at its host path.
func runcTree(runcPath string, initrd *image) (*image, error) {
	host := newImage()
	if err := addELF(host, runcPath, "/usr/bin/runc"); err != nil {
		return nil, err
	}
	tree := newImage()
	link := func(n string) {
		if d := path.Dir(n); !strings.HasPrefix(n, "usr/") {
			initrd.symlink(d, path.Join("/usr", usrPath(d)))
		}
	}
	for n, b := range host.files {
		tree.file(usrPath(n), host.modes[n], b)
		link(n)
	}
	for n, t := range host.symlinks {
		tree.symlink(usrPath(n), t)
		link(n)
	}
	return tree, nil
}

// writeTree writes the image's files and symlinks under dir, with their
// modes and every directory 0755.
func (im *image) writeTree(dir string) error {
	mkdir := func(p string) error {
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		// Whatever the umask: the image must not depend on it.
		for d := filepath.Dir(p); len(d) > len(dir); d = filepath.Dir(d) {
			if err := os.Chmod(d, 0o755); err != nil {
				return err
			}
		}
		return nil
	}
	for n, b := range im.files {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := mkdir(p); err != nil {
			return err
		}
		if err := os.WriteFile(p, b, os.FileMode(im.modes[n])); err != nil {
			return err
		}
		if err := os.Chmod(p, os.FileMode(im.modes[n])); err != nil {
			return err
		}
	}
	for n, t := range im.symlinks {
		p := filepath.Join(dir, filepath.FromSlash(n))
		if err := mkdir(p); err != nil {
			return err
		}
		if err := os.Symlink(t, p); err != nil {
			return err
		}
	}
	for d := range im.dirs {
		if err := mkdir(filepath.Join(dir, filepath.FromSlash(d), "x")); err != nil {
			return err
		}
	}
	return nil
}

// erofsUUID makes the runc image reproducible (mkfs.erofs picks a random
// one).
const erofsUUID = "73747261-746f-7669-7274-2d72756e6300"

// erofsAlign is the size the runc image is padded to: a virtio-pmem
// region is whole 2 MiB sections, and a file that fills its region is
// mapped without a zero tail.
const erofsAlign = 2 << 20

// writeErofs returns tree as an uncompressed erofs image owned by root
// with zero timestamps (erofs-utils' mkfs.erofs), padded to erofsAlign.
func writeErofs(tree *image) ([]byte, error) {
	dir, err := os.MkdirTemp("", "runc-image")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	root := filepath.Join(dir, "root")
	if err := os.Mkdir(root, 0o755); err != nil {
		return nil, err
	}
	if err := os.Chmod(root, 0o755); err != nil {
		return nil, err
	}
	if err := tree.writeTree(root); err != nil {
		return nil, err
	}
	img := filepath.Join(dir, "image")
	out, err := exec.Command("mkfs.erofs", "--quiet", "--all-root", "-T0", "-U"+erofsUUID, "-x-1", "-Enoinline_data", img, root).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("mkfs.erofs (erofs-utils): %v: %s", err, out)
	}
	b, err := os.ReadFile(img)
	if err != nil {
		return nil, err
	}
	if pad := (erofsAlign - len(b)%erofsAlign) % erofsAlign; pad > 0 {
		b = append(b, make([]byte, pad)...)
	}
	return b, nil
}

// writeAtomic replaces path with data through a rename, so that a VMM
// starting meanwhile reads either the old file or the new one, never a
// half-written one.
func writeAtomic(path string, data []byte) error {
	tmp := path + ".new"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

func findKernel(dir string) (lab.Kernel, error) {
	if dir == "" {
		return lab.GuestKernel()
	}
	ents, err := os.ReadDir(filepath.Join(dir, "lib/modules"))
	if err != nil || len(ents) != 1 {
		return lab.Kernel{}, fmt.Errorf("kernel dir %s: want exactly one lib/modules/<version>", dir)
	}
	v := ents[0].Name()
	img := filepath.Join(dir, "boot", "vmlinuz-"+v)
	if _, err := os.Stat(img); err != nil {
		return lab.Kernel{}, err
	}
	return lab.Kernel{Dir: dir, Version: v, Image: img}, nil
}

// addHostFile adds the host file at p (mode 0755) and returns its
// contents. A symbolic link is added as a link, with what it points to
// added as well, so that a file reached under two names (the ELF
// interpreter's /lib64 path and the library directory's) is in the image
// once.
func addHostFile(im *image, p string) ([]byte, error) {
	for range 8 {
		st, err := os.Lstat(p)
		if err != nil {
			return nil, err
		}
		if st.Mode()&os.ModeSymlink == 0 {
			break
		}
		t, err := os.Readlink(p)
		if err != nil {
			return nil, err
		}
		im.symlink(p, t)
		if !filepath.IsAbs(t) {
			t = filepath.Join(filepath.Dir(p), t)
		}
		p = filepath.Clean(t)
	}
	d, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	im.file(p, 0o755, d)
	return d, nil
}

// addELF adds a dynamically linked executable at dst with its interpreter
// and every shared library it needs (recursively), at their host paths.
func addELF(im *image, src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	im.file(dst, 0o755, b)
	seen := map[string]bool{}
	var walk func(data []byte) error
	walk = func(data []byte) error {
		f, err := elf.NewFile(bytes.NewReader(data))
		if err != nil {
			return err
		}
		defer f.Close()
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				ib := make([]byte, p.Filesz)
				if _, err := p.ReadAt(ib, 0); err != nil {
					return err
				}
				interp := strings.TrimRight(string(ib), "\x00")
				if !seen[interp] {
					seen[interp] = true
					if _, err := addHostFile(im, interp); err != nil {
						return err
					}
				}
			}
		}
		libs, err := f.ImportedLibraries()
		if err != nil {
			return err
		}
		for _, l := range libs {
			if seen[l] {
				continue
			}
			seen[l] = true
			var found string
			for _, d := range libDirs {
				if _, err := os.Stat(filepath.Join(d, l)); err == nil {
					found = filepath.Join(d, l)
					break
				}
			}
			if found == "" {
				return fmt.Errorf("shared library %s not found", l)
			}
			d, err := addHostFile(im, found)
			if err != nil {
				return err
			}
			if err := walk(d); err != nil {
				return fmt.Errorf("%s: %w", l, err)
			}
		}
		return nil
	}
	return walk(b)
}

// ModuleDeps returns the module files (relative to modDir) needed to load
// names, dependencies first, each once, from modDir/modules.dep. A name
// that is built into the kernel (modules.builtin) is skipped, and so is
// every name when modules.dep is empty: a kernel built without loadable
// modules (agent/kernel) has every driver it was configured with built in.
func ModuleDeps(modDir string, names []string) ([]string, error) {
	dep, err := os.ReadFile(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	builtin, _ := os.ReadFile(filepath.Join(modDir, "modules.builtin"))
	return resolveDeps(string(dep), string(builtin), names)
}

func modName(file string) string {
	b := path.Base(file)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

func resolveDeps(dep, builtin string, names []string) ([]string, error) {
	byName := map[string][]string{} // module -> [file, deps...]
	for _, line := range strings.Split(dep, "\n") {
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		byName[modName(file)] = append([]string{file}, strings.Fields(rest)...)
	}
	if len(byName) == 0 {
		return nil, nil
	}
	isBuiltin := map[string]bool{}
	for _, l := range strings.Fields(builtin) {
		isBuiltin[modName(l)] = true
	}
	var out []string
	done := map[string]bool{}
	var visit func(name string, depth int) error
	visit = func(name string, depth int) error {
		if done[name] || isBuiltin[name] {
			return nil
		}
		if depth > 64 {
			return fmt.Errorf("module %s: dependency loop", name)
		}
		e, ok := byName[name]
		if !ok {
			return fmt.Errorf("module %s not in modules.dep", name)
		}
		// modules.dep lists dependencies so that loading them from the
		// last to the first works.
		for i := len(e) - 1; i >= 1; i-- {
			if err := visit(modName(e[i]), depth+1); err != nil {
				return err
			}
		}
		done[name] = true
		out = append(out, e[0])
		return nil
	}
	for _, n := range names {
		n = strings.TrimSpace(n)
		if n == "" {
			continue
		}
		if err := visit(strings.ReplaceAll(n, "-", "_"), 0); err != nil {
			return nil, err
		}
	}
	return out, nil
}
