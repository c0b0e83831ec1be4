package network

import (
	"net"
	"os"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
)

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		len  uint32
		want string
		ok   bool
	}{
		{"10.0.0.2", 24, "10.0.0.2/24", true},
		{"fd00::2", 64, "fd00::2/64", true},
		{"10.0.0.2", 33, "", false},
		{"bogus", 8, "", false},
	} {
		a, err := ParseAddr(&agentv1.IPAddress{Address: tc.addr, PrefixLen: tc.len})
		if (err == nil) != tc.ok || (tc.ok && a.IPNet.String() != tc.want) {
			t.Errorf("ParseAddr(%s/%d) = %v, %v", tc.addr, tc.len, a, err)
		}
	}
}

// In a fresh network namespace: a dummy interface is found by MAC,
// renamed, addressed, given an MTU; routes and a neighbour are added.
func TestInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Skip(err)
	}
	defer orig.Close()
	ns, err := netns.New()
	if err != nil {
		t.Skip("cannot create a network namespace:", err)
	}
	defer ns.Close()
	defer netns.Set(orig)
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	mac, _ := net.ParseMAC("02:00:00:aa:bb:cc")
	if err := h.LinkAdd(&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "dummy0", HardwareAddr: mac}}); err != nil {
		// No dummy driver (the lab has veth): one end of a veth pair.
		if verr := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "dummy0", HardwareAddr: mac}, PeerName: "peer0"}); verr != nil {
			t.Skip("cannot add a dummy or veth link:", err, verr)
		}
	}
	c := Config{H: h}
	got, err := c.UpdateInterface(&agentv1.Interface{
		HwAddr: "02:00:00:AA:BB:CC", Name: "eth0", Mtu: 1400,
		Addresses: []*agentv1.IPAddress{{Address: "10.1.2.3", PrefixLen: 24}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "eth0" || got.Mtu != 1400 || len(got.Addresses) != 1 || got.Addresses[0].Address != "10.1.2.3" || got.Addresses[0].PrefixLen != 24 {
		t.Fatalf("interface after update: %v", got)
	}
	// Replacing the addresses removes the old one.
	got, err = c.UpdateInterface(&agentv1.Interface{HwAddr: "02:00:00:aa:bb:cc", Addresses: []*agentv1.IPAddress{{Address: "10.1.2.4", PrefixLen: 24}}})
	if err != nil || len(got.Addresses) != 1 || got.Addresses[0].Address != "10.1.2.4" {
		t.Fatalf("second update: %v, %v", got, err)
	}
	if _, err := c.UpdateInterface(&agentv1.Interface{HwAddr: "02:00:00:00:00:01"}); err == nil {
		t.Fatal("updated an interface with an unknown MAC")
	}
	rs, err := c.UpdateRoutes([]*agentv1.Route{
		{Dest: "default", Gateway: "10.1.2.1", Device: "eth0"},
		{Dest: "192.168.50.0/24", Device: "eth0", Scope: uint32(netlink.SCOPE_LINK)},
	})
	if err != nil {
		t.Fatal(err)
	}
	var sawDefault, sawLink bool
	for _, r := range rs {
		sawDefault = sawDefault || (r.Dest == "" || r.Dest == "0.0.0.0/0") && r.Gateway == "10.1.2.1"
		sawLink = sawLink || r.Dest == "192.168.50.0/24"
	}
	if !sawDefault || !sawLink {
		t.Fatalf("routes: %v", rs)
	}
	if err := c.AddARPNeighbors([]*agentv1.ARPNeighbor{{Ip: "10.1.2.9", HwAddr: "02:00:00:00:00:09", Device: "eth0"}}); err != nil {
		t.Fatal(err)
	}
	l, _ := h.LinkByName("eth0")
	ns2, err := h.NeighList(l.Attrs().Index, netlink.FAMILY_V4)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, n := range ns2 {
		found = found || n.IP.String() == "10.1.2.9" && n.HardwareAddr.String() == "02:00:00:00:00:09" && n.State == netlink.NUD_PERMANENT
	}
	if !found {
		t.Fatalf("neighbour not installed: %v", ns2)
	}
}
