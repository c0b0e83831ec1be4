// Package nettest holds what the network lab tests and the network
// benchmark share: the guest initramfs (busybox, the virtio-net, console
// and rng modules of the Debian cloud kernel with their dependencies, and
// the static nettool), and the host-side network namespace with taps.
package nettest

import (
	_ "embed"
	"fmt"
	"os/exec"
	"strings"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

//go:embed init.sh
var initScript string

// Modules are the guest kernel modules (lab.GuestInitramfs adds their
// dependencies).
var Modules = []string{"virtio_mmio", "virtio_net", "virtio_console", "virtio-rng"}

// Files are what Prepare built on the host.
type Files struct {
	VMM     string
	Initrd  string
	Kernel  string
	NetTool string
}

const (
	envPrefix = "NET_TEST_"
	toolPkg   = "./tests/net/nettool"
)

// FromEnv returns the Files exported by SetEnv.
func FromEnv() (Files, bool) {
	g, ok := lab.GuestFilesFromEnv(envPrefix)
	return Files{VMM: g.VMM, Initrd: g.Initrd, Kernel: g.Kernel, NetTool: g.Tools[toolPkg]}, ok
}

// SetEnv exports f for the re-executed test binary.
func (f Files) SetEnv() {
	lab.GuestFiles{VMM: f.VMM, Initrd: f.Initrd, Kernel: f.Kernel, Tools: map[string]string{toolPkg: f.NetTool}}.SetEnv(envPrefix)
}

// Prepare builds stratovirt and nettool and writes the initramfs in dir.
func Prepare(dir string) (Files, error) {
	g, err := lab.PrepareGuest(dir, initScript, Modules, toolPkg)
	return Files{VMM: g.VMM, Initrd: g.Initrd, Kernel: g.Kernel, NetTool: g.Tools[toolPkg]}, err
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
