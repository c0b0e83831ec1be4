package shim

import (
	"context"
	"fmt"
	"strconv"

	"github.com/containerd/log"
	specs "github.com/opencontainers/runtime-spec/specs-go"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	"github.com/stratovirt-go/stratovirt/runtime/network"
	"github.com/stratovirt-go/stratovirt/runtime/sandbox"
	"github.com/stratovirt-go/stratovirt/runtime/translate"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
	vnet "github.com/stratovirt-go/stratovirt/vmm/virtio/net"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/vhost"
)

// netnsPath is the network namespace path of the spec (CNI's netns for
// a CRI pod), or "" when the container asks for a new one or none.
func netnsPath(spec *specs.Spec) string {
	if spec.Linux == nil {
		return ""
	}
	for _, n := range spec.Linux.Namespaces {
		if n.Type == specs.NetworkNamespace {
			return n.Path
		}
	}
	return ""
}

// netVhostType maps the configured network backend to the NICs'
// vhost_type: "auto" asks for vhost-net when the host has it.
func netVhostType(backend string, vhostAvailable func() bool) string {
	switch backend {
	case shimconfig.NetVhost:
		return vmconfig.NetVhostKernel
	case shimconfig.NetAuto:
		if vhostAvailable() {
			return vmconfig.NetVhostKernel
		}
	}
	return ""
}

// attachNetwork pairs every CNI interface of the spec's network
// namespace with a tap and adds the taps to the VM as virtio-net NICs
// with the interfaces' MACs, served by the configured backend. It
// returns nil without a namespace path.
func attachNetwork(ctx context.Context, spec *specs.Spec, vmc *vmconfig.VMConfig, backend string) (*network.Pod, error) {
	ns := netnsPath(spec)
	if ns == "" {
		return nil, nil
	}
	pn, err := network.Attach(ns)
	if err != nil {
		return nil, fmt.Errorf("pod network: %w", err)
	}
	vhostType := netVhostType(backend, func() bool { return vhost.Available(vnet.VhostDevice) })
	for i, ep := range pn.Endpoints {
		vmc.Nets = append(vmc.Nets, vmconfig.Net{ID: "net" + strconv.Itoa(i), TapFD: int(ep.Tap.Fd()), MAC: ep.MAC.String(), VhostType: vhostType})
	}
	if err := vmc.Validate(); err != nil {
		pn.Close()
		return nil, fmt.Errorf("vm config with %d NICs: %w", len(pn.Endpoints), err)
	}
	log.G(ctx).Debugf("pod network %s: %d interface(s), %d route(s), vhost %q", ns, len(pn.Endpoints), len(pn.Routes), vhostType)
	return pn, nil
}

// configureGuestNetwork gives the guest interfaces the veths' names,
// addresses and MTUs, then the routes and static neighbours.
func configureGuestNetwork(ctx context.Context, sb *sandbox.Sandbox, pn *network.Pod) error {
	if pn == nil || len(pn.Endpoints) == 0 {
		return nil
	}
	for _, ep := range pn.Endpoints {
		if _, err := sb.Agent().UpdateInterface(ctx, &agentv1.UpdateInterfaceRequest{Interface: ep.Interface()}); err != nil {
			return fmt.Errorf("agent update interface %s (%s): %w", ep.Name, ep.MAC, err)
		}
	}
	if len(pn.Routes) > 0 {
		if _, err := sb.Agent().UpdateRoutes(ctx, &agentv1.UpdateRoutesRequest{Routes: pn.Routes}); err != nil {
			return fmt.Errorf("agent update routes: %w", err)
		}
	}
	if len(pn.Neighbors) > 0 {
		if _, err := sb.Agent().AddARPNeighbors(ctx, &agentv1.AddARPNeighborsRequest{Neighbors: pn.Neighbors}); err != nil {
			return fmt.Errorf("agent add ARP neighbours: %w", err)
		}
	}
	return nil
}

// sandboxRequest is the agent's CreateSandbox for the VM's first
// container: hostname and, when the spec bound a resolv.conf, its DNS
// configuration (which the guest then binds into pod containers).
func sandboxRequest(ctx context.Context, id string, spec *specs.Spec, files translate.CRIFiles) (*agentv1.CreateSandboxRequest, bool) {
	r := &agentv1.CreateSandboxRequest{SandboxId: id, Hostname: spec.Hostname}
	if files.ResolvConf == "" {
		return r, false
	}
	d, err := network.ReadResolvConf(files.ResolvConf)
	if err != nil {
		log.G(ctx).WithError(err).Warn("pod resolv.conf: the guest keeps its own")
		return r, false
	}
	if len(d.Servers)+len(d.Searches)+len(d.Options) == 0 {
		// Still give the guest a file to bind.
		d.Options = []string{"ndots:1"}
	}
	r.DnsServers, r.DnsSearches, r.DnsOptions = d.Servers, d.Searches, d.Options
	return r, true
}

// dropGuestResolvConf removes the guest resolv.conf bind from a pod
// container's spec when the VM has none.
func dropGuestResolvConf(spec *specs.Spec) {
	out := spec.Mounts[:0]
	for _, m := range spec.Mounts {
		if m.Source == translate.GuestSource+translate.GuestResolvConf {
			continue
		}
		out = append(out, m)
	}
	spec.Mounts = out
}
