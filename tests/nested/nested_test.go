// Package nested checks, inside the lab (or on a host whose KVM boots
// Linux), that KVM works the way the VMM needs: a payload runs natively
// and the devices the VMM and the runtime use exist.
package nested

import (
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/vmm/kvmprobe"
	"github.com/stratovirt-go/stratovirt/vmm/virtio"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/eventloop"
	vnet "github.com/stratovirt-go/stratovirt/vmm/virtio/net"
)

func TestMain(m *testing.M) { lab.Main(m) }

// TestKVMPayload creates a VM on /dev/kvm, runs the probe's long-mode
// payload (port I/O, int3 through an IDT, cmpxchg16b) and reads its output.
func TestKVMPayload(t *testing.T) {
	r, err := kvmprobe.Probe("/dev/kvm", 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if !r.CanBootLinux || r.Output != "ABCD" {
		t.Fatalf("payload on nested KVM: %+v", r)
	}
}

func TestDevices(t *testing.T) {
	for _, p := range []string{"/dev/kvm", "/dev/vhost-vsock", "/dev/vhost-net", "/dev/net/tun", "/dev/loop-control", "/sys/fs/cgroup/cgroup.controllers"} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: %v", p, err)
		}
	}
	fs, err := os.ReadFile("/proc/filesystems")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"overlay", "ext4", "cgroup2"} {
		if !strings.Contains(string(fs), "\t"+f+"\n") {
			t.Errorf("filesystem %s not available", f)
		}
	}
}

// TestNetworkModules creates what CNI and the shim's networking need: a
// bridge, a veth pair, a tap, and an nftables/iptables NAT rule.
func TestNetworkModules(t *testing.T) {
	if !lab.InLab() {
		t.Skip("changes host networking; runs inside the lab only")
	}
	for _, args := range [][]string{
		{"ip", "link", "add", "labbr0", "type", "bridge"},
		{"ip", "link", "add", "labveth0", "type", "veth", "peer", "name", "labveth1"},
		{"ip", "link", "set", "labveth0", "master", "labbr0"},
		{"ip", "tuntap", "add", "dev", "labtap0", "mode", "tap"},
		{"iptables", "-t", "nat", "-A", "POSTROUTING", "-s", "10.88.0.0/16", "-j", "MASQUERADE"},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Errorf("%s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
}

// TestVhostNetOffer opens a NIC with the kernel's vhost-net: it offers
// what the userspace backend offers (the kernel handles mergeable
// buffers, event index and indirect descriptors), and closing it releases
// the tap.
func TestVhostNetOffer(t *testing.T) {
	if !lab.InLab() {
		t.Skip("creates taps; runs inside the lab only")
	}
	loop, err := eventloop.New("nested-vhost-net", eventloop.Poller)
	if err != nil {
		t.Fatal(err)
	}
	defer loop.Close()
	user, err := vnet.New(vnet.Config{ID: "u", TapName: "labvhu", TapFD: -1}, loop)
	if err != nil {
		t.Fatal(err)
	}
	defer user.Close()
	vh, err := vnet.New(vnet.Config{ID: "v", TapName: "labvhv", TapFD: -1, Vhost: true}, loop)
	if err != nil {
		t.Fatal(err)
	}
	if !vh.Vhost() || user.Vhost() {
		t.Errorf("Vhost() = %v for vhost, %v for userspace", vh.Vhost(), user.Vhost())
	}
	if vh.Features() != user.Features() {
		t.Errorf("vhost-net features %#x, userspace %#x", vh.Features(), user.Features())
	}
	for _, f := range []uint{vnet.FMrgRxbuf, virtio.FEventIdx, virtio.FIndirectDesc, vnet.FGuestTSO4} {
		if !virtio.HasFeature(vh.Features(), f) {
			t.Errorf("feature %d not offered with vhost-net", f)
		}
	}
	vh.Close()
	if out, err := exec.Command("ip", "link", "show", "labvhv").CombinedOutput(); err == nil {
		t.Errorf("tap labvhv left after Close: %s", out)
	}
}
