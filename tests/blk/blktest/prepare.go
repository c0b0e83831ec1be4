package blktest

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

// Modules are the guest kernel modules the initramfs loads, in order
// (dependencies first).
var Modules = []string{"virtio_ring", "virtio", "virtio_mmio", "virtio_blk"}

// Files are what Prepare built on the host.
type Files struct {
	VMM     string // cmd/stratovirt
	Initrd  string // busybox + modules + guestio; init runs test.run=
	Kernel  string // Debian cloud bzImage
	GuestIO string // the static guest tool
}

// Env names under which Files travel to the test binary in the lab.
const (
	EnvVMM    = "BLK_TEST_VMM"
	EnvInitrd = "BLK_TEST_INITRD"
	EnvKernel = "BLK_TEST_KERNEL"
)

// FromEnv returns the Files exported by SetEnv, or ok false.
func FromEnv() (Files, bool) {
	f := Files{VMM: os.Getenv(EnvVMM), Initrd: os.Getenv(EnvInitrd), Kernel: os.Getenv(EnvKernel)}
	return f, f.VMM != ""
}

// SetEnv exports f for the re-executed test binary.
func (f Files) SetEnv() {
	os.Setenv(EnvVMM, f.VMM)
	os.Setenv(EnvInitrd, f.Initrd)
	os.Setenv(EnvKernel, f.Kernel)
}

// Prepare builds stratovirt and guestio and writes the initramfs into dir.
func Prepare(dir string) (Files, error) {
	var f Files
	root, err := lab.RepoRoot()
	if err != nil {
		return f, err
	}
	f.VMM = filepath.Join(dir, "stratovirt")
	f.GuestIO = filepath.Join(dir, "guestio")
	for _, b := range []struct{ out, pkg string }{{f.VMM, "./cmd/stratovirt"}, {f.GuestIO, "./tests/blk/guestio"}} {
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
	modDir, err := moduleDir(k.Image)
	if err != nil {
		return f, err
	}
	extra := map[string][]byte{}
	tool, err := os.ReadFile(f.GuestIO)
	if err != nil {
		return f, err
	}
	extra["guestio"] = tool
	for _, m := range Modules {
		p, err := findModule(modDir, m)
		if err != nil {
			return f, err
		}
		b, err := os.ReadFile(filepath.Join(modDir, p))
		if err != nil {
			return f, err
		}
		extra[m+".ko"] = b
	}
	f.Initrd = filepath.Join(dir, "initramfs.cpio")
	if err := initramfs.Busybox(f.Initrd, initScript, extra); err != nil {
		return f, err
	}
	return f, nil
}

// moduleDir finds lib/modules/<version> next to the unpacked kernel.
func moduleDir(image string) (string, error) {
	for d := filepath.Dir(image); d != "/" && d != "."; d = filepath.Dir(d) {
		matches, _ := filepath.Glob(filepath.Join(d, "lib/modules/*/modules.dep"))
		if len(matches) == 1 {
			return filepath.Dir(matches[0]), nil
		}
	}
	return "", fmt.Errorf("no lib/modules/*/modules.dep above %s", image)
}

// findModule returns the path of module name relative to modDir.
func findModule(modDir, name string) (string, error) {
	f, err := os.Open(filepath.Join(modDir, "modules.dep"))
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		file, _, _ := strings.Cut(sc.Text(), ":")
		if filepath.Base(file) == name+".ko" {
			return file, nil
		}
	}
	return "", fmt.Errorf("module %s not in %s/modules.dep (compressed or built in?)", name, modDir)
}
