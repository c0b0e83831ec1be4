package network

import (
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNS creates a named network namespace holding a veth pair
// (veth0 10.99.0.2/24 with a default route via 10.99.0.1 and a static
// neighbour, peer vpeer up without addresses) and returns its path.
func testNS(t *testing.T) (string, *netlink.Handle) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skip("needs /dev/net/tun")
	}
	name := "svnet-" + strings.ReplaceAll(t.Name(), "/", "-")
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		t.Fatal(err)
	}
	defer orig.Close()
	ns, err := netns.NewNamed(name)
	if err != nil {
		t.Skipf("cannot create a network namespace: %v", err)
	}
	if err := netns.Set(orig); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ns.Close(); netns.DeleteNamed(name) })
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	mac, _ := net.ParseMAC("02:00:00:aa:bb:cc")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "veth0", MTU: 1450, HardwareAddr: mac}, PeerName: "vpeer"}
	if err := h.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"veth0", "vpeer", "lo"} {
		l, err := h.LinkByName(n)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.LinkSetUp(l); err != nil {
			t.Fatal(err)
		}
	}
	l, _ := h.LinkByName("veth0")
	addr, _ := netlink.ParseAddr("10.99.0.2/24")
	if err := h.AddrAdd(l, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.ParseIP("10.99.0.1")}); err != nil {
		t.Fatal(err)
	}
	nmac, _ := net.ParseMAC("02:00:00:00:00:01")
	if err := h.NeighAdd(&netlink.Neigh{LinkIndex: l.Attrs().Index, IP: net.ParseIP("10.99.0.1"), HardwareAddr: nmac, State: netlink.NUD_PERMANENT}); err != nil {
		t.Fatal(err)
	}
	return filepath.Join("/var/run/netns", name), h
}

func TestAttach(t *testing.T) {
	path, h := testNS(t)
	p, err := Attach(path)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if len(p.Endpoints) != 1 {
		t.Fatalf("endpoints: %d, want 1", len(p.Endpoints))
	}
	ep := p.Endpoints[0]
	if ep.Name != "veth0" || ep.MAC.String() != "02:00:00:aa:bb:cc" || ep.MTU != 1450 || ep.TapName != "tap0_sv" {
		t.Errorf("endpoint %s %s mtu %d tap %s", ep.Name, ep.MAC, ep.MTU, ep.TapName)
	}
	if len(ep.Addresses) != 1 || ep.Addresses[0].Address != "10.99.0.2" || ep.Addresses[0].PrefixLen != 24 {
		t.Errorf("addresses %v", ep.Addresses)
	}
	i := ep.Interface()
	if i.HwAddr != "02:00:00:aa:bb:cc" || i.Name != "veth0" || i.Mtu != 1450 {
		t.Errorf("interface %v", i)
	}
	if len(p.Routes) != 1 || p.Routes[0].Gateway != "10.99.0.1" || p.Routes[0].Dest != "0.0.0.0/0" || p.Routes[0].Device != "veth0" {
		t.Errorf("routes %v", p.Routes)
	}
	if len(p.Neighbors) != 1 || p.Neighbors[0].Ip != "10.99.0.1" || p.Neighbors[0].HwAddr != "02:00:00:00:00:01" {
		t.Errorf("neighbours %v", p.Neighbors)
	}

	tap, err := h.LinkByName("tap0_sv")
	if err != nil {
		t.Fatal(err)
	}
	veth, _ := h.LinkByName("veth0")
	if tap.Attrs().MTU != 1450 || tap.Attrs().OperState == netlink.OperDown && tap.Attrs().Flags&net.FlagUp == 0 {
		t.Errorf("tap MTU %d flags %v", tap.Attrs().MTU, tap.Attrs().Flags)
	}
	for _, c := range []struct{ from, to netlink.Link }{{veth, tap}, {tap, veth}} {
		fs, err := h.FilterList(c.from, ingressParent)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, f := range fs {
			u, ok := f.(*netlink.U32)
			if !ok {
				continue
			}
			for _, a := range u.Actions {
				if m, ok := a.(*netlink.MirredAction); ok && m.Ifindex == c.to.Attrs().Index && m.MirredAction == netlink.TCA_EGRESS_REDIR {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("no redirect %s -> %s in %v", c.from.Attrs().Name, c.to.Attrs().Name, fs)
		}
	}

	// A frame written to the tap leaves through the veth and reaches
	// its peer; one sent on the peer arrives on the tap.
	peer, _ := h.LinkByName("vpeer")
	rx0 := peer.Attrs().Statistics.RxPackets
	frame := make([]byte, 12+60) // virtio-net header, then Ethernet
	copy(frame[12:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0xaa, 0xbb, 0xcc, 0x88, 0xb5})
	if _, err := ep.Tap.Write(frame); err != nil {
		t.Fatalf("write tap: %v", err)
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		peer, _ = h.LinkByName("vpeer")
		if peer.Attrs().Statistics.RxPackets > rx0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("peer rx packets stayed at %d", rx0)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sendOnLink(t, path, peer.Attrs().Index)
	fd := int(ep.Tap.Fd())
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	buf := make([]byte, 2048)
	got := false
	for time.Now().Before(deadline.Add(2 * time.Second)) {
		n, _ := unix.Poll(pfd, 200)
		if n <= 0 {
			continue
		}
		m, err := unix.Read(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if m >= 12+14 && buf[12+12] == 0x88 && buf[12+13] == 0xb6 {
			got = true
			break
		}
	}
	if !got {
		t.Error("frame sent on the peer did not arrive on the tap")
	}

	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.LinkByName("tap0_sv"); err == nil {
		t.Error("tap still there after Close")
	}
	qs, _ := h.QdiscList(veth)
	for _, q := range qs {
		if q.Type() == "ingress" {
			t.Error("ingress qdisc still on veth0 after Close")
		}
	}
}

// sendOnLink sends one broadcast frame with ethertype 0x88b6 out of the
// link, from inside the namespace.
func sendOnLink(t *testing.T, path string, index int) {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, _ := netns.Get()
	defer orig.Close()
	ns, err := netns.GetFromPath(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Close()
	if err := netns.Set(ns); err != nil {
		t.Fatal(err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW, 0)
	netns.Set(orig)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	frame := make([]byte, 60)
	copy(frame, []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 2, 0x88, 0xb6})
	sa := &unix.SockaddrLinklayer{Ifindex: index, Halen: 6, Addr: [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff}}
	if err := unix.Sendto(fd, frame, 0, sa); err != nil {
		t.Fatal(err)
	}
}

func TestAttachNoNamespace(t *testing.T) {
	if _, err := Attach("/nonexistent/netns"); err == nil {
		t.Fatal("no error for a missing namespace")
	}
	var p *Pod
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}
