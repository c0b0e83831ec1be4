// Package network owns the host side of a pod's network for the shim:
// in the pod's network namespace (set up by CNI) it finds every
// interface with addresses (the CNI veth), creates one tap per interface
// and joins the two with tc ingress redirects both ways (Kata's tcfilter
// model), so frames pass unchanged between the CNI bridge and the VM's
// virtio-net NIC, which gets the veth's MAC. It also reads what the
// guest must be told through the agent (addresses, MTU, routes, static
// neighbours) and the pod's resolv.conf.
//
// All netlink work goes through a handle bound to the namespace; no
// goroutine changes namespace except inside virtio/net.OpenTapInNetNS.
// A Pod is not safe for concurrent use: the shim's service lock guards it.
package network

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/containerd/log"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	vnet "github.com/stratovirt-go/stratovirt/vmm/virtio/net"
)

// MaxEndpoints bounds the interfaces taken from one namespace (each is
// one virtio-mmio slot in the VM).
const MaxEndpoints = 4

// Endpoint is one CNI interface and the tap that mirrors it.
type Endpoint struct {
	// Name, MAC and MTU are the veth's; the guest interface takes them.
	Name string
	MAC  net.HardwareAddr
	MTU  int
	// Addresses of the veth (link-local IPv6 excluded).
	Addresses []*agentv1.IPAddress
	// TapName is the tap in the namespace; Tap its open descriptor (the
	// tap disappears when every copy is closed).
	TapName string
	Tap     *os.File
}

// Pod is the network of one pod sandbox.
type Pod struct {
	NSPath    string
	Endpoints []*Endpoint
	Routes    []*agentv1.Route
	Neighbors []*agentv1.ARPNeighbor
}

// TapName is the name of the tap paired with the i-th interface.
func TapName(i int) string { return "tap" + strconv.Itoa(i) + "_sv" }

// Attach scans the namespace at nsPath and pairs each interface that has
// addresses with a new tap. On error nothing is left behind. A namespace
// with no such interface gives a Pod without endpoints.
func Attach(nsPath string) (_ *Pod, err error) {
	ns, err := netns.GetFromPath(nsPath)
	if err != nil {
		return nil, fmt.Errorf("network namespace %q: %w", nsPath, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink in %q: %w", nsPath, err)
	}
	defer h.Close()

	links, err := h.LinkList()
	if err != nil {
		return nil, fmt.Errorf("list links in %q: %w", nsPath, err)
	}
	p := &Pod{NSPath: nsPath}
	defer func() {
		if err != nil {
			p.close(h)
		}
	}()
	for _, l := range links {
		a := l.Attrs()
		if a.Flags&net.FlagLoopback != 0 || l.Type() == "tuntap" || strings.HasSuffix(a.Name, "_sv") {
			continue
		}
		addrs, err := h.AddrList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("addresses of %s: %w", a.Name, err)
		}
		ips := guestAddresses(addrs)
		if len(ips) == 0 {
			continue
		}
		if len(p.Endpoints) == MaxEndpoints {
			log.L.Warnf("network: %s: more than %d interfaces; ignoring %s", nsPath, MaxEndpoints, a.Name)
			continue
		}
		if len(a.HardwareAddr) != 6 {
			return nil, fmt.Errorf("interface %s: MAC %q is not Ethernet", a.Name, a.HardwareAddr)
		}
		ep := &Endpoint{Name: a.Name, MAC: a.HardwareAddr, MTU: a.MTU, Addresses: ips, TapName: TapName(len(p.Endpoints))}
		if err := connect(h, nsPath, l, ep); err != nil {
			if ep.Tap != nil {
				ep.Tap.Close()
			}
			return nil, fmt.Errorf("interface %s: %w", a.Name, err)
		}
		p.Endpoints = append(p.Endpoints, ep)

		routes, err := h.RouteList(l, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("routes of %s: %w", a.Name, err)
		}
		p.Routes = append(p.Routes, guestRoutes(routes, a.Name)...)
		neigh, err := h.NeighList(a.Index, netlink.FAMILY_ALL)
		if err != nil {
			return nil, fmt.Errorf("neighbours of %s: %w", a.Name, err)
		}
		p.Neighbors = append(p.Neighbors, guestNeighbors(neigh, a.Name)...)
	}
	return p, nil
}

// connect creates the endpoint's tap and the two redirects.
func connect(h *netlink.Handle, nsPath string, veth netlink.Link, ep *Endpoint) error {
	f, err := vnet.OpenTapInNetNS(nsPath, ep.TapName)
	if err != nil {
		return err
	}
	ep.Tap = f
	tap, err := h.LinkByName(ep.TapName)
	if err != nil {
		return fmt.Errorf("tap %s: %w", ep.TapName, err)
	}
	if err := h.LinkSetMTU(tap, ep.MTU); err != nil {
		return fmt.Errorf("tap %s MTU %d: %w", ep.TapName, ep.MTU, err)
	}
	if err := h.LinkSetUp(tap); err != nil {
		return fmt.Errorf("tap %s up: %w", ep.TapName, err)
	}
	if err := redirect(h, veth.Attrs().Index, tap.Attrs().Index); err != nil {
		return fmt.Errorf("redirect %s to %s: %w", ep.Name, ep.TapName, err)
	}
	if err := redirect(h, tap.Attrs().Index, veth.Attrs().Index); err != nil {
		return fmt.Errorf("redirect %s to %s: %w", ep.TapName, ep.Name, err)
	}
	return nil
}

// ingressParent is the ingress qdisc's handle (ffff:).
var ingressParent = netlink.MakeHandle(0xffff, 0)

// redirect adds an ingress qdisc on from (if it has none) and a match-all
// u32 filter whose mirred action sends every frame out of to.
func redirect(h *netlink.Handle, from, to int) error {
	q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: from, Parent: netlink.HANDLE_INGRESS, Handle: ingressParent}}
	if err := h.QdiscAdd(q); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("ingress qdisc: %w", err)
	}
	f := &netlink.U32{
		FilterAttrs: netlink.FilterAttrs{LinkIndex: from, Parent: ingressParent, Priority: 1, Protocol: unix.ETH_P_ALL},
		Actions: []netlink.Action{&netlink.MirredAction{
			ActionAttrs:  netlink.ActionAttrs{Action: netlink.TC_ACT_STOLEN},
			MirredAction: netlink.TCA_EGRESS_REDIR,
			Ifindex:      to,
		}},
	}
	if err := h.FilterAdd(f); err != nil {
		return fmt.Errorf("u32 mirred filter: %w", err)
	}
	return nil
}

// guestAddresses converts addresses, leaving out IPv6 link-local ones
// (the guest makes its own from the MAC).
func guestAddresses(addrs []netlink.Addr) []*agentv1.IPAddress {
	var out []*agentv1.IPAddress
	for _, a := range addrs {
		if a.IPNet == nil || a.IP.IsLinkLocalUnicast() || a.IP.IsLoopback() {
			continue
		}
		ones, _ := a.Mask.Size()
		out = append(out, &agentv1.IPAddress{Address: a.IP.String(), PrefixLen: uint32(ones)})
	}
	return out
}

// guestRoutes converts the routes of one interface, leaving out those
// the guest kernel adds itself (connected subnets, IPv6 link-local and
// multicast).
func guestRoutes(routes []netlink.Route, dev string) []*agentv1.Route {
	var out []*agentv1.Route
	for _, r := range routes {
		if r.Protocol == unix.RTPROT_KERNEL {
			continue
		}
		if r.Dst != nil && (r.Dst.IP.IsLinkLocalUnicast() || r.Dst.IP.IsMulticast()) {
			continue
		}
		gr := &agentv1.Route{Device: dev, Scope: uint32(r.Scope), Mtu: uint32(r.MTU)}
		if r.Dst != nil {
			gr.Dest = r.Dst.String()
		}
		if r.Gw != nil {
			gr.Gateway = r.Gw.String()
		}
		if r.Src != nil {
			gr.Source = r.Src.String()
		}
		out = append(out, gr)
	}
	return out
}

// guestNeighbors keeps the permanent (static) neighbours, as CNI plugins
// that need them install them.
func guestNeighbors(ns []netlink.Neigh, dev string) []*agentv1.ARPNeighbor {
	var out []*agentv1.ARPNeighbor
	for _, n := range ns {
		if n.State&netlink.NUD_PERMANENT == 0 || n.IP == nil || len(n.HardwareAddr) == 0 {
			continue
		}
		out = append(out, &agentv1.ARPNeighbor{Ip: n.IP.String(), HwAddr: n.HardwareAddr.String(), Device: dev})
	}
	return out
}

// Interface is the agent's description of the endpoint's guest interface.
func (e *Endpoint) Interface() *agentv1.Interface {
	return &agentv1.Interface{HwAddr: e.MAC.String(), Name: e.Name, Addresses: e.Addresses, Mtu: uint32(e.MTU)}
}

// Close closes the taps (which removes them) and removes the redirect
// qdiscs from the veths. A namespace already gone is fine: CNI teardown
// may have run first.
func (p *Pod) Close() error {
	if p == nil {
		return nil
	}
	var h *netlink.Handle
	if ns, err := netns.GetFromPath(p.NSPath); err == nil {
		h, _ = netlink.NewHandleAt(ns, unix.NETLINK_ROUTE)
		ns.Close()
	}
	err := p.close(h)
	if h != nil {
		h.Close()
	}
	return err
}

func (p *Pod) close(h *netlink.Handle) error {
	var errs []error
	for _, ep := range p.Endpoints {
		if ep.Tap != nil {
			errs = append(errs, ep.Tap.Close())
			ep.Tap = nil
		}
		if h == nil {
			continue
		}
		if l, err := h.LinkByName(ep.Name); err == nil {
			q := &netlink.Ingress{QdiscAttrs: netlink.QdiscAttrs{LinkIndex: l.Attrs().Index, Parent: netlink.HANDLE_INGRESS, Handle: ingressParent}}
			if err := h.QdiscDel(q); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("remove ingress qdisc of %s: %w", ep.Name, err))
			}
		}
	}
	p.Endpoints = nil
	return errors.Join(errs...)
}
