package lab

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/stratovirt-go/stratovirt/tests/initramfs"
)

// GuestInitramfs writes a busybox initramfs for nested guests running the
// Debian cloud kernel: the named modules of that kernel (dependencies
// first, resolved from modules.dep) are under /modules, listed in load
// order in /modules.order, and /bin/load-modules insmods them; init
// should run it first. extra adds files (path -> content, mode 0755).
func GuestInitramfs(path, init string, modules []string, extra map[string][]byte) error {
	k, err := GuestKernel()
	if err != nil {
		return err
	}
	mods, err := moduleDeps(k.ModulesDir(), modules)
	if err != nil {
		return fmt.Errorf("guest modules: %w", err)
	}
	files := map[string][]byte{}
	for n, b := range extra {
		files[n] = b
	}
	var order []string
	for _, m := range mods {
		b, err := os.ReadFile(filepath.Join(k.ModulesDir(), m))
		if err != nil {
			return fmt.Errorf("guest module: %w", err)
		}
		name := "modules/" + filepath.Base(m)
		files[name] = b
		order = append(order, "/"+name)
	}
	files["modules.order"] = []byte(strings.Join(order, "\n") + "\n")
	files["bin/load-modules"] = []byte("#!/bin/sh\n# Loads /modules.order, dependencies first.\n" +
		"for m in $(cat /modules.order); do insmod \"$m\" || echo \"insmod $m failed\"; done\n")
	return initramfs.Busybox(path, init, files)
}

// GuestFiles are what PrepareGuest builds on the host for the nested
// guests of a lab test package.
type GuestFiles struct {
	VMM    string            // cmd/stratovirt
	Kernel string            // the Debian cloud kernel (bzImage)
	Initrd string            // busybox initramfs with modules and tools
	Tools  map[string]string // package path -> its binary on the host
}

// PrepareGuest builds cmd/stratovirt and the tool packages (static, paths
// relative to the repository root) into dir, and writes dir/initramfs.cpio
// with init, the modules (see GuestInitramfs) and each tool at /<name>.
func PrepareGuest(dir, init string, modules []string, tools ...string) (GuestFiles, error) {
	f := GuestFiles{VMM: filepath.Join(dir, "stratovirt"), Initrd: filepath.Join(dir, "initramfs.cpio"), Tools: map[string]string{}}
	root, err := RepoRoot()
	if err != nil {
		return f, err
	}
	extra := map[string][]byte{}
	for _, pkg := range append([]string{"./cmd/stratovirt"}, tools...) {
		out := filepath.Join(dir, filepath.Base(pkg))
		cmd := exec.Command("go", "build", "-o", out, pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			return f, fmt.Errorf("build %s: %v\n%s", pkg, err, b)
		}
		if pkg == "./cmd/stratovirt" {
			continue
		}
		f.Tools[pkg] = out
		if extra[filepath.Base(pkg)], err = os.ReadFile(out); err != nil {
			return f, err
		}
	}
	k, err := GuestKernel()
	if err != nil {
		return f, err
	}
	f.Kernel = k.Image
	return f, GuestInitramfs(f.Initrd, init, modules, extra)
}

// SetEnv exports f under prefix for the test binary re-run in the lab.
func (f GuestFiles) SetEnv(prefix string) {
	os.Setenv(prefix+"VMM", f.VMM)
	os.Setenv(prefix+"KERNEL", f.Kernel)
	os.Setenv(prefix+"INITRD", f.Initrd)
	var tools []string
	for pkg, bin := range f.Tools {
		tools = append(tools, pkg+"="+bin)
	}
	os.Setenv(prefix+"TOOLS", strings.Join(tools, ","))
}

// GuestFilesFromEnv returns what SetEnv exported under prefix, or ok false
// on the host before PrepareGuest ran.
func GuestFilesFromEnv(prefix string) (GuestFiles, bool) {
	f := GuestFiles{VMM: os.Getenv(prefix + "VMM"), Kernel: os.Getenv(prefix + "KERNEL"), Initrd: os.Getenv(prefix + "INITRD"), Tools: map[string]string{}}
	for _, kv := range strings.Split(os.Getenv(prefix+"TOOLS"), ",") {
		if pkg, bin, ok := strings.Cut(kv, "="); ok {
			f.Tools[pkg] = bin
		}
	}
	return f, f.VMM != ""
}
