package vmm

import (
	"errors"
	"fmt"
	"sync"

	"github.com/containerd/log"

	"github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/blk"
	vnet "github.com/stratovirt-go/stratovirt/vmm/virtio/net"
)

// Hot-replaceable disks and NICs (StratoVirt's microVM model). Every
// virtio-blk and virtio-net device is a slot: the drives and NICs of the
// configuration fill the first ones, and config.VMConfig.HotplugSlots
// more are created empty at boot, after all other devices (so the cold
// devices keep their windows, GSIs and guest names). The guest sees every
// slot from boot: an empty disk slot is a disk of capacity 0 with an
// empty serial, an empty NIC slot a NIC with its link down. Plugging
// puts a file or tap behind a slot and raises a configuration interrupt:
// Linux then re-reads the disk's capacity (/sys/block/vdX/size goes from
// 0 to the size, /sys/block/vdX/serial reads the new serial) or the
// NIC's link status (carrier up). Unplugging does the reverse; requests
// to an unplugged disk fail with an I/O error, frames sent to an
// unplugged NIC are dropped.
//
// Disk slot i is the i-th virtio-blk device the guest probes, so with
// Linux it is /dev/vd('a'+i) when the driver binds in the DSDT's order;
// the dependable way for a guest agent to find a plugged disk is its
// serial (/sys/block/vd*/serial, at most 20 bytes), then to wait for a
// non-zero /sys/block/vdX/size (the guest applies the capacity from a
// work queue shortly after the interrupt). A NIC slot keeps the MAC the
// guest read at boot (Slots reports it); a MAC given to PlugNIC is not
// seen by the guest (as in StratoVirt), the agent sets it if needed.
//
// Feature bits are fixed at boot: a read-only file in a slot created
// writable is enforced per request (writes fail), and the guest should
// mount it read-only.
//
// Concurrency: the methods are safe from any goroutine while the VM is
// built, runs, is paused or has stopped, until Close; hotplug.mu
// serializes them and is taken before the devices' own locks.

// Errors of the hot-plug API; the returned errors wrap them.
var (
	// ErrNoFreeSlot: every slot of the kind is in use (the disk or NIC
	// limit, hot-plugged devices included, is reached).
	ErrNoFreeSlot = errors.New("no free slot")
	// ErrSlotInUse: the requested slot already has a device.
	ErrSlotInUse = errors.New("slot is occupied")
	// ErrNoSuchSlot: the requested slot index does not exist.
	ErrNoSuchSlot = errors.New("no such slot")
	// ErrDuplicateID: a plugged disk or NIC already has the id (or the
	// disk serial).
	ErrDuplicateID = errors.New("already in use")
	// ErrUnknownID: no plugged device of the kind has the id.
	ErrUnknownID = errors.New("not found")
	// ErrInvalid: the drive or NIC settings are out of range.
	ErrInvalid = errors.New("invalid setting")
)

// SlotKind tells disk slots from NIC slots.
type SlotKind string

// Slot kinds.
const (
	DiskSlot SlotKind = "disk"
	NICSlot  SlotKind = "nic"
)

// SlotInfo describes one hot-replaceable slot.
type SlotInfo struct {
	Kind SlotKind
	// Index is the slot's number among those of its kind, in guest
	// probe order (disk 0 is the first virtio-blk device, /dev/vda).
	Index int
	// ID is the plugged device's id; "" while the slot is empty.
	ID string
	// Boot is true for a slot filled from the configuration at boot.
	Boot bool
	// Base is the slot's virtio-mmio window.
	Base uint64
	// Drive is the plugged disk (Kind disk, ID not "").
	Drive config.Drive
	// Net is the plugged NIC (Kind nic, ID not ""); TapName is the host
	// tap it is attached to.
	Net     config.Net
	TapName string
	// MAC is the guest's MAC address of a NIC slot (xx:xx:...).
	MAC string
}

type diskSlot struct {
	dev   *blk.Block
	base  uint64
	name  string // the slot's name while empty
	boot  bool
	drive *config.Drive // nil while empty
}

type nicSlot struct {
	dev  *vnet.Net
	base uint64
	name string
	boot bool
	net  *config.Net
}

// hotplug holds the VM's slots.
type hotplug struct {
	mu    sync.Mutex
	disks []*diskSlot
	nics  []*nicSlot
}

// setupHotplug records the configured disks and NICs as filled slots and
// attaches the empty ones. It runs after setupVirtio, before the ACPI
// tables and the kernel command line are written.
func (v *VM) setupHotplug() error {
	h := &v.hot
	di, ni := 0, 0
	for _, s := range v.virtio.slots {
		switch dev := s.transport.Device().(type) {
		case *blk.Block:
			if di >= len(v.cfg.Drives) {
				continue
			}
			d := v.cfg.Drives[di]
			dev.SetConfigNotifier(s.transport.ConfigChanged)
			h.disks = append(h.disks, &diskSlot{dev: dev, base: s.base, name: slotName(DiskSlot, di), boot: true, drive: &d})
			di++
		case *vnet.Net:
			if ni >= len(v.cfg.Nets) {
				continue
			}
			n := v.cfg.Nets[ni]
			h.nics = append(h.nics, &nicSlot{dev: dev, base: s.base, name: slotName(NICSlot, ni), boot: true, net: &n})
			ni++
		}
	}
	drives, nets := v.cfg.HotplugSlots()
	for range drives {
		loop, err := v.eventLoop("")
		if err != nil {
			return err
		}
		name := slotName(DiskSlot, len(h.disks))
		dev, err := blk.NewEmpty(name, loop)
		if err != nil {
			return err
		}
		if err := v.attachVirtio(dev, dev); err != nil {
			dev.Close()
			return fmt.Errorf("disk slot %d: %w", len(h.disks), err)
		}
		s := v.virtio.slots[len(v.virtio.slots)-1]
		dev.SetConfigNotifier(s.transport.ConfigChanged)
		h.disks = append(h.disks, &diskSlot{dev: dev, base: s.base, name: name})
	}
	for range nets {
		loop, err := v.eventLoop("")
		if err != nil {
			return err
		}
		name := slotName(NICSlot, len(h.nics))
		dev, err := vnet.NewEmpty(name, [6]byte{}, loop)
		if err != nil {
			return err
		}
		if err := v.attachVirtio(dev, dev); err != nil {
			dev.Close()
			return fmt.Errorf("NIC slot %d: %w", len(h.nics), err)
		}
		s := v.virtio.slots[len(v.virtio.slots)-1]
		dev.SetConfigNotifier(s.transport.ConfigChanged)
		h.nics = append(h.nics, &nicSlot{dev: dev, base: s.base, name: name})
	}
	if drives+nets > 0 {
		log.L.Debugf("hot-plug: %d disk slots (%d empty), %d NIC slots (%d empty)", len(h.disks), drives, len(h.nics), nets)
	}
	return nil
}

func slotName(k SlotKind, i int) string { return fmt.Sprintf("%s-slot%d", k, i) }

// checkOpen fails once the VM is closed.
func (v *VM) checkOpen() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.closed {
		return errors.New("vm is closed")
	}
	return nil
}

// PlugDrive plugs disk d into the first free disk slot and returns the
// slot's index. d.Serial (at most 20 bytes) is how the guest finds the
// disk; d.IOThread must be empty (slots are served by the default event
// loop).
func (v *VM) PlugDrive(d config.Drive) (int, error) { return v.PlugDriveAt(d, -1) }

// PlugDriveAt plugs d into disk slot slot (-1: the first free one).
func (v *VM) PlugDriveAt(d config.Drive, slot int) (int, error) {
	if err := checkDrive(d); err != nil {
		return -1, err
	}
	if err := v.checkOpen(); err != nil {
		return -1, err
	}
	h := &v.hot
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.idInUse(d.ID) {
		return -1, fmt.Errorf("drive %q: id %w", d.ID, ErrDuplicateID)
	}
	for _, s := range h.disks {
		if s.drive != nil && d.Serial != "" && s.drive.Serial == d.Serial {
			return -1, fmt.Errorf("drive %q: serial %q %w by drive %q", d.ID, d.Serial, ErrDuplicateID, s.drive.ID)
		}
	}
	s, i, err := pickSlot(h.disks, slot, func(s *diskSlot) bool { return s.drive == nil }, DiskSlot)
	if err != nil {
		return -1, fmt.Errorf("drive %q: %w", d.ID, err)
	}
	err = s.dev.Plug(blk.Config{ID: d.ID, Path: d.File, Backing: d.Backing, ReadOnly: d.ReadOnly, Direct: d.Direct, Serial: d.Serial, IOPS: d.IOPS})
	if err != nil {
		return -1, fmt.Errorf("drive %q: %w", d.ID, err)
	}
	s.drive = &d
	if d.Backing != "" {
		log.L.Infof("hot-plug: drive %q (%s over %s, serial %q) in disk slot %d", d.ID, d.File, d.Backing, d.Serial, i)
	} else {
		log.L.Infof("hot-plug: drive %q (%s, serial %q) in disk slot %d", d.ID, d.File, d.Serial, i)
	}
	return i, nil
}

// UnplugDrive empties the disk slot holding drive id.
func (v *VM) UnplugDrive(id string) error {
	if err := v.checkOpen(); err != nil {
		return err
	}
	h := &v.hot
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, s := range h.disks {
		if s.drive == nil || s.drive.ID != id {
			continue
		}
		if err := s.dev.Unplug(s.name); err != nil && !errors.Is(err, blk.ErrNoBackend) {
			// The file is detached even when closing it failed.
			log.L.Warnf("hot-unplug drive %q: %v", id, err)
		}
		s.drive = nil
		log.L.Infof("hot-unplug: drive %q from disk slot %d", id, i)
		return nil
	}
	return fmt.Errorf("drive %q: %w", id, ErrUnknownID)
}

// PlugNIC attaches n's tap (n.TapFD if positive, duplicated so that the
// caller keeps its descriptor; else n.TapName, created if needed) to the
// first free NIC slot, sets the link up and returns the slot's index. The
// guest's MAC stays the slot's (see Slots).
func (v *VM) PlugNIC(n config.Net) (int, error) { return v.PlugNICAt(n, -1) }

// PlugNICAt plugs n into NIC slot slot (-1: the first free one).
func (v *VM) PlugNICAt(n config.Net, slot int) (int, error) {
	if err := checkNet(n); err != nil {
		return -1, err
	}
	if err := v.checkOpen(); err != nil {
		return -1, err
	}
	h := &v.hot
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.idInUse(n.ID) {
		return -1, fmt.Errorf("netdev %q: id %w", n.ID, ErrDuplicateID)
	}
	s, i, err := pickSlot(h.nics, slot, func(s *nicSlot) bool { return s.net == nil }, NICSlot)
	if err != nil {
		return -1, fmt.Errorf("netdev %q: %w", n.ID, err)
	}
	nc := vnet.Config{ID: n.ID, TapName: n.TapName, TapFD: -1}
	if n.TapName == "" {
		nc.TapFD = n.TapFD
	}
	if err := s.dev.Plug(nc); err != nil {
		return -1, fmt.Errorf("netdev %q: %w", n.ID, err)
	}
	s.net = &n
	log.L.Infof("hot-plug: netdev %q (tap %s) in NIC slot %d, guest MAC %s", n.ID, s.dev.TapName(), i, vnet.FormatMAC(s.dev.MAC()))
	return i, nil
}

// UnplugNIC sets the link of the NIC slot holding netdev id down and
// detaches (closes) its tap.
func (v *VM) UnplugNIC(id string) error {
	if err := v.checkOpen(); err != nil {
		return err
	}
	h := &v.hot
	h.mu.Lock()
	defer h.mu.Unlock()
	for i, s := range h.nics {
		if s.net == nil || s.net.ID != id {
			continue
		}
		if err := s.dev.Unplug(s.name); err != nil && !errors.Is(err, vnet.ErrNoTap) {
			log.L.Warnf("hot-unplug netdev %q: %v", id, err)
		}
		s.net = nil
		log.L.Infof("hot-unplug: netdev %q from NIC slot %d", id, i)
		return nil
	}
	return fmt.Errorf("netdev %q: %w", id, ErrUnknownID)
}

// Slots describes every disk slot, then every NIC slot.
func (v *VM) Slots() []SlotInfo {
	h := &v.hot
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]SlotInfo, 0, len(h.disks)+len(h.nics))
	for i, s := range h.disks {
		si := SlotInfo{Kind: DiskSlot, Index: i, Boot: s.boot, Base: s.base}
		if s.drive != nil {
			si.ID, si.Drive = s.drive.ID, *s.drive
		}
		out = append(out, si)
	}
	for i, s := range h.nics {
		si := SlotInfo{Kind: NICSlot, Index: i, Boot: s.boot, Base: s.base, MAC: vnet.FormatMAC(s.dev.MAC())}
		if s.net != nil {
			si.ID, si.Net, si.TapName = s.net.ID, *s.net, s.dev.TapName()
		}
		out = append(out, si)
	}
	return out
}

// idInUse reports whether a plugged disk or NIC has id; h.mu is held.
func (h *hotplug) idInUse(id string) bool {
	for _, s := range h.disks {
		if s.drive != nil && s.drive.ID == id {
			return true
		}
	}
	for _, s := range h.nics {
		if s.net != nil && s.net.ID == id {
			return true
		}
	}
	return false
}

// pickSlot returns slot want (or the first free one for -1) if free.
func pickSlot[S any](slots []S, want int, free func(S) bool, kind SlotKind) (S, int, error) {
	var zero S
	if want >= 0 {
		if want >= len(slots) {
			return zero, -1, fmt.Errorf("%s slot %d: %w (the VM has %d)", kind, want, ErrNoSuchSlot, len(slots))
		}
		if !free(slots[want]) {
			return zero, -1, fmt.Errorf("%s slot %d: %w", kind, want, ErrSlotInUse)
		}
		return slots[want], want, nil
	}
	for i, s := range slots {
		if free(s) {
			return s, i, nil
		}
	}
	limit := config.MaxDrives
	if kind == NICSlot {
		limit = config.MaxNets
	}
	return zero, -1, fmt.Errorf("%w: all %d %s slots are in use (at most %d including hot-plugged ones)", ErrNoFreeSlot, len(slots), kind, limit)
}

// checkDrive applies the configuration's limits to a drive to plug.
func checkDrive(d config.Drive) error {
	switch {
	case d.ID == "" || len(d.ID) > config.MaxIDLen:
		return fmt.Errorf("drive: %w: id length %d out of range [1, %d]", ErrInvalid, len(d.ID), config.MaxIDLen)
	case d.File == "" || len(d.File) > config.MaxPathLen:
		return fmt.Errorf("drive %q: %w: file path length %d out of range [1, %d]", d.ID, ErrInvalid, len(d.File), config.MaxPathLen)
	case len(d.Serial) > config.MaxSerialLen:
		return fmt.Errorf("drive %q: %w: serial length %d out of range [0, %d]", d.ID, ErrInvalid, len(d.Serial), config.MaxSerialLen)
	case d.IOPS > config.MaxIOPS:
		return fmt.Errorf("drive %q: %w: iops %d out of range [0, %d]", d.ID, ErrInvalid, d.IOPS, config.MaxIOPS)
	case d.IOThread != "":
		return fmt.Errorf("drive %q: %w: iothread %q: hot-plugged disks run on their slot's event loop", d.ID, ErrInvalid, d.IOThread)
	case len(d.Backing) > config.MaxPathLen:
		return fmt.Errorf("drive %q: %w: backing image path length %d out of range [0, %d]", d.ID, ErrInvalid, len(d.Backing), config.MaxPathLen)
	case d.Backing != "" && (d.ReadOnly || d.Direct):
		return fmt.Errorf("drive %q: %w: a backing image needs a writable, buffered drive (readonly=off, direct=off)", d.ID, ErrInvalid)
	}
	return nil
}

// checkNet applies the configuration's limits to a NIC to plug.
func checkNet(n config.Net) error {
	switch {
	case n.ID == "" || len(n.ID) > config.MaxIDLen:
		return fmt.Errorf("netdev: %w: id length %d out of range [1, %d]", ErrInvalid, len(n.ID), config.MaxIDLen)
	case n.TapName == "" && n.TapFD <= 0:
		return fmt.Errorf("netdev %q: %w: a tap name or tap fd is required", n.ID, ErrInvalid)
	case len(n.TapName) > config.MaxTapNameLen:
		return fmt.Errorf("netdev %q: %w: tap name length %d out of range [1, %d]", n.ID, ErrInvalid, len(n.TapName), config.MaxTapNameLen)
	case n.IOThread != "":
		return fmt.Errorf("netdev %q: %w: iothread %q: hot-plugged NICs run on their slot's event loop", n.ID, ErrInvalid, n.IOThread)
	}
	if n.MAC != "" {
		if _, err := config.ParseMAC(n.MAC); err != nil {
			return fmt.Errorf("netdev %q: %w: %v", n.ID, ErrInvalid, err)
		}
	}
	return nil
}
