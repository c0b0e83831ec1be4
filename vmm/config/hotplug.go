package config

// Hotplug reserves empty hot-replaceable virtio-mmio slots at boot, as
// StratoVirt's microVM does: a disk slot is a virtio-blk device with no
// file (capacity 0) and a NIC slot a virtio-net device with no tap (link
// down) until QMP (blockdev-add/netdev_add + device_add) or the VMM's
// PlugDrive/PlugNIC put a backend behind them. The drives and NICs of the
// configuration fill slots of their own, which can be unplugged too.
// Slots count against the disk limit (MaxDrives, hot-plugged disks
// included), the NIC limit (MaxNets) and the MMIO-device limit.
//
// There is no command-line option or JSON key for it (the native
// interface stays as StratoVirt's); see VMConfig.HotplugSlots for the
// default.
type Hotplug struct {
	// Drives and Nets are how many empty disk and NIC slots to create.
	Drives int
	Nets   int
}

// HotplugSlots returns how many empty disk and NIC slots the VM gets.
// With Hotplug set they are its values. Otherwise a VM with a QMP socket
// (the only way to use them from the command line) gets as many as the
// limits leave room for, disks first: up to MaxDrives disks and MaxNets
// NICs in all, within MaxMMIODevices; a VM without one gets none.
func (c *VMConfig) HotplugSlots() (drives, nets int) {
	if c.Hotplug != nil {
		return c.Hotplug.Drives, c.Hotplug.Nets
	}
	if c.Process.APIChannel == "" {
		return 0, 0
	}
	free := MaxMMIODevices - c.mmioDeviceCount()
	drives = max(0, min(MaxDrives-len(c.Drives), free))
	nets = max(0, min(MaxNets-len(c.Nets), free-drives))
	return drives, nets
}

// validateHotplug checks explicit slot counts against the limits.
func (c *VMConfig) validateHotplug() []error {
	h := c.Hotplug
	if h == nil {
		return nil
	}
	var errs []error
	add := func(e *Error) { errs = append(errs, e) }
	if h.Drives < 0 || len(c.Drives)+h.Drives > MaxDrives {
		add(errorf("hotplug", "", "%d disk slots with %d drives: disk number out of range [0, %d] (hot-plugged disks included)",
			h.Drives, len(c.Drives), MaxDrives))
	}
	if h.Nets < 0 || len(c.Nets)+h.Nets > MaxNets {
		add(errorf("hotplug", "", "%d NIC slots with %d NICs: NIC number out of range [0, %d] (hot-plugged NICs included)",
			h.Nets, len(c.Nets), MaxNets))
	}
	// (A configuration over the limit without slots is reported by
	// validateDrives.)
	if cold, n := c.mmioDeviceCount(), c.mmioDeviceCount()+max(h.Drives, 0)+max(h.Nets, 0); cold <= MaxMMIODevices && n > MaxMMIODevices {
		add(errorf("hotplug", "", "%d virtio-mmio devices with the hot-plug slots out of range [0, %d] on x86_64", n, MaxMMIODevices))
	}
	return errs
}
