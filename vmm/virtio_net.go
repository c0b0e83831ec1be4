package vmm

import (
	"fmt"

	"github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/console"
	vnet "github.com/stratovirt-go/stratovirt/vmm/virtio/net"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/rng"
)

// setupNetConsoleRNG attaches the NICs, consoles and the entropy device,
// in that order, after the drives (StratoVirt's order: disks, NICs, then
// the other devices). NICs may use an iothread; consoles and the rng run
// on the default loop.
func (v *VM) setupNetConsoleRNG() error {
	for _, n := range v.cfg.Nets {
		loop, err := v.eventLoop(n.IOThread)
		if err != nil {
			return err
		}
		nc := vnet.Config{ID: n.ID, TapName: n.TapName, TapFD: -1, Vhost: n.VhostType == config.NetVhostKernel}
		if n.TapName == "" {
			nc.TapFD = n.TapFD
		}
		if n.MAC != "" {
			if nc.MAC, err = config.ParseMAC(n.MAC); err != nil {
				return fmt.Errorf("netdev %q: %w", n.ID, err)
			}
		}
		dev, err := vnet.New(nc, loop)
		if err != nil {
			return fmt.Errorf("netdev %q: %w", n.ID, err)
		}
		if err := v.attachVirtio(dev, dev); err != nil {
			dev.Close()
			return fmt.Errorf("netdev %q: %w", n.ID, err)
		}
		dev.SetConfigNotifier(v.virtio.slots[len(v.virtio.slots)-1].transport.ConfigChanged)
		v.virtio.nets = append(v.virtio.nets, dev)
	}
	for _, k := range v.cfg.Consoles {
		loop, err := v.eventLoop("")
		if err != nil {
			return err
		}
		dev, err := console.New(k.ID, k.SocketPath, loop)
		if err != nil {
			return fmt.Errorf("chardev %q: %w", k.ID, err)
		}
		if err := v.attachVirtio(dev, dev); err != nil {
			dev.Close()
			return fmt.Errorf("chardev %q: %w", k.ID, err)
		}
	}
	if r := v.cfg.RNG; r != nil {
		loop, err := v.eventLoop("")
		if err != nil {
			return err
		}
		dev, err := rng.New(rng.Config{File: r.RandomFile, BytesPerSec: r.BytesPerSec}, loop)
		if err != nil {
			return err
		}
		if err := v.attachVirtio(dev, dev); err != nil {
			dev.Close()
			return fmt.Errorf("rng: %w", err)
		}
	}
	return nil
}

// NICs returns the VM's virtio-net devices in attach order (for link
// control and counters).
func (v *VM) NICs() []*vnet.Net { return v.virtio.nets }
