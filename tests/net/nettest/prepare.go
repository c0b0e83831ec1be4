// Package nettest holds what the network lab tests and the network
// benchmark share: the guest initramfs (busybox, the virtio-net, console
// and rng modules of the Debian cloud kernel with their dependencies, and
// the static nettool), and the host-side network namespace with taps.
package nettest

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

// Modules are the guest kernel modules, dependencies first.
var Modules = []string{"virtio_ring", "virtio", "virtio_mmio", "failover", "net_failover", "virtio_net", "virtio_console", "virtio-rng"}

// Files are what Prepare built on the host.
type Files struct {
	VMM     string
	Initrd  string
	Kernel  string
	NetTool string
}

const (
	envVMM    = "NET_TEST_VMM"
	envInitrd = "NET_TEST_INITRD"
	envKernel = "NET_TEST_KERNEL"
	envTool   = "NET_TEST_TOOL"
)

// FromEnv returns the Files exported by SetEnv.
func FromEnv() (Files, bool) {
	f := Files{VMM: os.Getenv(envVMM), Initrd: os.Getenv(envInitrd), Kernel: os.Getenv(envKernel), NetTool: os.Getenv(envTool)}
	return f, f.VMM != ""
}

// SetEnv exports f for the re-executed test binary.
func (f Files) SetEnv() {
	os.Setenv(envVMM, f.VMM)
	os.Setenv(envInitrd, f.Initrd)
	os.Setenv(envKernel, f.Kernel)
	os.Setenv(envTool, f.NetTool)
}

// Prepare builds stratovirt and nettool and writes the initramfs in dir.
func Prepare(dir string) (Files, error) {
	var f Files
	root, err := lab.RepoRoot()
	if err != nil {
		return f, err
	}
	f.VMM = filepath.Join(dir, "stratovirt")
	f.NetTool = filepath.Join(dir, "nettool")
	for _, b := range []struct{ out, pkg string }{{f.VMM, "./cmd/stratovirt"}, {f.NetTool, "./tests/net/nettool"}} {
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
	if extra["nettool"], err = os.ReadFile(f.NetTool); err != nil {
		return f, err
	}
	for _, m := range Modules {
		p, err := findModule(modDir, m)
		if err != nil {
			return f, err
		}
		if extra[m+".ko"], err = os.ReadFile(filepath.Join(modDir, p)); err != nil {
			return f, err
		}
	}
	f.Initrd = filepath.Join(dir, "initramfs.cpio")
	return f, initramfs.Busybox(f.Initrd, initScript, extra)
}

func moduleDir(image string) (string, error) {
	for d := filepath.Dir(image); d != "/" && d != "."; d = filepath.Dir(d) {
		matches, _ := filepath.Glob(filepath.Join(d, "lib/modules/*/modules.dep"))
		if len(matches) == 1 {
			return filepath.Dir(matches[0]), nil
		}
	}
	return "", fmt.Errorf("no lib/modules/*/modules.dep above %s", image)
}

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
	return "", fmt.Errorf("module %s not in %s/modules.dep", name, modDir)
}

// NetNS is a named network namespace (ip netns) made for one test.
type NetNS struct{ Name string }

// NewNetNS creates namespace name with lo up.
func NewNetNS(name string) (*NetNS, error) {
	exec.Command("ip", "netns", "del", name).Run()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
	}
	n := &NetNS{Name: name}
	return n, n.Run("ip", "link", "set", "lo", "up")
}

// Path is the namespace's file for setns.
func (n *NetNS) Path() string { return "/var/run/netns/" + n.Name }

// Run runs a command inside the namespace.
func (n *NetNS) Run(args ...string) error {
	out, err := exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Command returns a command that runs inside the namespace.
func (n *NetNS) Command(args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", n.Name}, args...)...)
}

// AddTap creates persistent tap name with address cidr, up.
func (n *NetNS) AddTap(name, cidr string) error {
	if err := n.Run("ip", "tuntap", "add", "dev", name, "mode", "tap"); err != nil {
		return err
	}
	return n.ConfigureIf(name, cidr)
}

// ConfigureIf adds cidr to interface name and sets it up.
func (n *NetNS) ConfigureIf(name, cidr string) error {
	if err := n.Run("ip", "addr", "add", cidr, "dev", name); err != nil {
		return err
	}
	return n.Run("ip", "link", "set", name, "up")
}

// Close deletes the namespace (and the taps in it).
func (n *NetNS) Close() error {
	return exec.Command("ip", "netns", "del", n.Name).Run()
}
