// Package vsocktest builds what the vsock lab tests and benchmark boot
// (stratovirt, the static guest peer and the initramfs) and holds the
// host-side helpers they share: starting a VMM and waiting for the peer,
// echo transfers checked by SHA-256 and the peer's control commands.
package vsocktest

import (
	"bufio"
	_ "embed"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/stratovirt-go/stratovirt/tests/initramfs"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

//go:embed init.sh
var initScript string

// guestModules are loaded by init.sh in this order.
var guestModules = []string{"virtio_ring", "virtio", "virtio_mmio", "vsock", "vmw_vsock_virtio_transport_common",
	"vmw_vsock_virtio_transport", "virtio_balloon"}

// Files are what Prepare built on the host; they travel to the lab in the
// environment.
type Files struct {
	VMM, Initrd, Kernel string
}

const envPrefix = "VSOCK_TEST_"

// FromEnv returns the Files exported by SetEnv, or ok false.
func FromEnv() (Files, bool) {
	f := Files{VMM: os.Getenv(envPrefix + "VMM"), Initrd: os.Getenv(envPrefix + "INITRD"), Kernel: os.Getenv(envPrefix + "KERNEL")}
	return f, f.VMM != ""
}

// SetEnv exports f for the test binary re-executed in the lab.
func (f Files) SetEnv() {
	os.Setenv(envPrefix+"VMM", f.VMM)
	os.Setenv(envPrefix+"INITRD", f.Initrd)
	os.Setenv(envPrefix+"KERNEL", f.Kernel)
}

// Prepare builds stratovirt and the static guest peer and writes the
// initramfs into dir.
func Prepare(dir string) (Files, error) {
	var f Files
	root, err := lab.RepoRoot()
	if err != nil {
		return f, err
	}
	f.VMM = filepath.Join(dir, "stratovirt")
	peer := filepath.Join(dir, "vsockpeer")
	for _, b := range []struct{ out, pkg string }{{f.VMM, "./cmd/stratovirt"}, {peer, "./tests/vsock/vsockpeer"}} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return f, fmt.Errorf("build %s: %v\n%s", b.pkg, err, out)
		}
	}
	k, err := lab.FindKernel("cloud-amd64")
	if err != nil {
		return f, err
	}
	f.Kernel = k.Image
	extra := map[string][]byte{}
	if extra["vsockpeer"], err = os.ReadFile(peer); err != nil {
		return f, err
	}
	deps, err := modulePaths(k.ModulesDir())
	if err != nil {
		return f, err
	}
	for _, m := range guestModules {
		p, ok := deps[m]
		if !ok {
			return f, fmt.Errorf("module %s not in %s/modules.dep", m, k.ModulesDir())
		}
		b, err := os.ReadFile(filepath.Join(k.ModulesDir(), p))
		if err != nil {
			return f, err
		}
		extra[m+".ko"] = b
	}
	f.Initrd = filepath.Join(dir, "initramfs.cpio")
	return f, initramfs.Busybox(f.Initrd, initScript, extra)
}

// modulePaths maps module names to their paths in modules.dep.
func modulePaths(modDir string) (map[string]string, error) {
	fd, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return nil, err
	}
	defer fd.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(fd)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		file, _, _ := strings.Cut(sc.Text(), ":")
		out[strings.TrimSuffix(filepath.Base(file), ".ko")] = file
	}
	return out, sc.Err()
}
