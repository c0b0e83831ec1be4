// Package network configures the guest's network from the host's
// description: interfaces matched by MAC address (name, addresses, MTU,
// up), routes and static ARP neighbours, through netlink. It holds no
// state; a Handle selects the network namespace (tests use their own).
package network

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
)

// Config applies network settings through one netlink handle.
type Config struct {
	H *netlink.Handle
}

func (c Config) linkByMAC(mac string) (netlink.Link, error) {
	hw, err := net.ParseMAC(mac)
	if err != nil {
		return nil, fmt.Errorf("MAC %q: %w", mac, err)
	}
	links, err := c.H.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	for _, l := range links {
		if strings.EqualFold(l.Attrs().HardwareAddr.String(), hw.String()) {
			return l, nil
		}
	}
	return nil, fmt.Errorf("no interface with MAC %s", hw)
}

// ParseAddr turns an address and prefix length into a netlink address.
func ParseAddr(a *agentv1.IPAddress) (*netlink.Addr, error) {
	ip := net.ParseIP(a.GetAddress())
	if ip == nil {
		return nil, fmt.Errorf("IP address %q: invalid", a.GetAddress())
	}
	bits := 128
	if ip4 := ip.To4(); ip4 != nil {
		ip, bits = ip4, 32
	}
	if int(a.GetPrefixLen()) > bits {
		return nil, fmt.Errorf("prefix length %d of %s", a.GetPrefixLen(), ip)
	}
	return &netlink.Addr{IPNet: &net.IPNet{IP: ip, Mask: net.CIDRMask(int(a.GetPrefixLen()), bits)}}, nil
}

// UpdateInterface configures the interface with the given MAC address
// and returns what it now has.
func (c Config) UpdateInterface(iface *agentv1.Interface) (*agentv1.Interface, error) {
	if iface == nil {
		return nil, errors.New("no interface")
	}
	var addrs []*netlink.Addr
	for _, a := range iface.GetAddresses() {
		na, err := ParseAddr(a)
		if err != nil {
			return nil, err
		}
		addrs = append(addrs, na)
	}
	l, err := c.linkByMAC(iface.GetHwAddr())
	if err != nil {
		return nil, err
	}
	if err := c.H.LinkSetDown(l); err != nil {
		return nil, fmt.Errorf("set %s down: %w", l.Attrs().Name, err)
	}
	if n := iface.GetName(); n != "" && n != l.Attrs().Name {
		if err := c.H.LinkSetName(l, n); err != nil {
			return nil, fmt.Errorf("rename %s to %s: %w", l.Attrs().Name, n, err)
		}
	}
	if mtu := iface.GetMtu(); mtu != 0 {
		if err := c.H.LinkSetMTU(l, int(mtu)); err != nil {
			return nil, fmt.Errorf("set MTU %d: %w", mtu, err)
		}
	}
	old, err := c.H.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, a := range old {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		if err := c.H.AddrDel(l, &a); err != nil {
			return nil, fmt.Errorf("delete address %s: %w", a.IPNet, err)
		}
	}
	for _, a := range addrs {
		if err := c.H.AddrAdd(l, a); err != nil {
			return nil, fmt.Errorf("add address %s: %w", a.IPNet, err)
		}
	}
	if err := c.H.LinkSetUp(l); err != nil {
		return nil, fmt.Errorf("set up: %w", err)
	}
	return c.describe(l.Attrs().Index)
}

func (c Config) describe(index int) (*agentv1.Interface, error) {
	l, err := c.H.LinkByIndex(index)
	if err != nil {
		return nil, err
	}
	out := &agentv1.Interface{HwAddr: l.Attrs().HardwareAddr.String(), Name: l.Attrs().Name, Mtu: uint32(l.Attrs().MTU)}
	addrs, err := c.H.AddrList(l, netlink.FAMILY_ALL)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs {
		if a.IP.IsLinkLocalUnicast() {
			continue
		}
		ones, _ := a.Mask.Size()
		out.Addresses = append(out.Addresses, &agentv1.IPAddress{Address: a.IP.String(), PrefixLen: uint32(ones)})
	}
	return out, nil
}

// ToNetlink converts a route description.
func (c Config) ToNetlink(r *agentv1.Route) (*netlink.Route, error) {
	l, err := c.H.LinkByName(r.GetDevice())
	if err != nil {
		return nil, fmt.Errorf("route device %q: %w", r.GetDevice(), err)
	}
	nr := &netlink.Route{LinkIndex: l.Attrs().Index, Scope: netlink.Scope(r.GetScope()), MTU: int(r.GetMtu())}
	if d := r.GetDest(); d != "" && d != "default" {
		_, dst, err := net.ParseCIDR(d)
		if err != nil {
			return nil, fmt.Errorf("route destination %q: %w", d, err)
		}
		nr.Dst = dst
	}
	if g := r.GetGateway(); g != "" {
		if nr.Gw = net.ParseIP(g); nr.Gw == nil {
			return nil, fmt.Errorf("route gateway %q: invalid", g)
		}
	}
	if s := r.GetSource(); s != "" {
		if nr.Src = net.ParseIP(s); nr.Src == nil {
			return nil, fmt.Errorf("route source %q: invalid", s)
		}
	}
	return nr, nil
}

// UpdateRoutes replaces the non-kernel routes of the named devices with
// the given ones (link-scope routes first so gateways resolve) and
// returns the routes of those devices.
func (c Config) UpdateRoutes(routes []*agentv1.Route) ([]*agentv1.Route, error) {
	var nrs []*netlink.Route
	devs := map[int]string{}
	for _, r := range routes {
		nr, err := c.ToNetlink(r)
		if err != nil {
			return nil, err
		}
		nrs = append(nrs, nr)
		devs[nr.LinkIndex] = r.GetDevice()
	}
	for idx := range devs {
		l, err := c.H.LinkByIndex(idx)
		if err != nil {
			return nil, err
		}
		old, err := c.H.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, r := range old {
			if r.Protocol == unix.RTPROT_KERNEL || (r.Dst != nil && r.Dst.IP.IsLinkLocalUnicast()) {
				continue
			}
			if err := c.H.RouteDel(&r); err != nil {
				return nil, fmt.Errorf("delete route %s: %w", r, err)
			}
		}
	}
	for pass := 0; pass < 2; pass++ {
		for _, nr := range nrs {
			link := nr.Scope == netlink.SCOPE_LINK
			if (pass == 0) != link {
				continue
			}
			if err := c.H.RouteReplace(nr); err != nil {
				return nil, fmt.Errorf("add route %s: %w", nr, err)
			}
		}
	}
	var out []*agentv1.Route
	for idx, name := range devs {
		l, err := c.H.LinkByIndex(idx)
		if err != nil {
			return nil, err
		}
		rs, err := c.H.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, err
		}
		for _, r := range rs {
			ar := &agentv1.Route{Device: name, Scope: uint32(r.Scope), Mtu: uint32(r.MTU)}
			if r.Dst != nil {
				ar.Dest = r.Dst.String()
			}
			if r.Gw != nil {
				ar.Gateway = r.Gw.String()
			}
			if r.Src != nil {
				ar.Source = r.Src.String()
			}
			out = append(out, ar)
		}
	}
	return out, nil
}

// AddARPNeighbors installs static neighbour entries.
func (c Config) AddARPNeighbors(ns []*agentv1.ARPNeighbor) error {
	for _, n := range ns {
		ip := net.ParseIP(n.GetIp())
		if ip == nil {
			return fmt.Errorf("neighbour IP %q: invalid", n.GetIp())
		}
		hw, err := net.ParseMAC(n.GetHwAddr())
		if err != nil {
			return fmt.Errorf("neighbour MAC %q: %w", n.GetHwAddr(), err)
		}
		l, err := c.H.LinkByName(n.GetDevice())
		if err != nil {
			return fmt.Errorf("neighbour device %q: %w", n.GetDevice(), err)
		}
		state := int(n.GetState())
		if state == 0 {
			state = netlink.NUD_PERMANENT
		}
		fam := netlink.FAMILY_V4
		if ip.To4() == nil {
			fam = netlink.FAMILY_V6
		}
		if err := c.H.NeighSet(&netlink.Neigh{LinkIndex: l.Attrs().Index, Family: fam, State: state, IP: ip, HardwareAddr: hw}); err != nil {
			return fmt.Errorf("add neighbour %s: %w", ip, err)
		}
	}
	return nil
}
