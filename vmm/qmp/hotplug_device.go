package qmp

import (
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/stratovirt-go/stratovirt/vmm"
	"github.com/stratovirt-go/stratovirt/vmm/config"
)

type deviceArgs struct {
	ID       *string         `json:"id"`
	Driver   *string         `json:"driver"`
	Drive    *string         `json:"drive"`
	Netdev   *string         `json:"netdev"`
	Serial   *string         `json:"serial"`
	MAC      *string         `json:"mac"`
	IOThread *string         `json:"iothread"`
	Addr     json.RawMessage `json:"addr"`
	LUN      *int            `json:"lun"`
	// Accepted and ignored, as by StratoVirt (Kata and libvirt send them).
	Bus           ignored `json:"bus"`
	ROMFile       ignored `json:"romfile"`
	ShareRW       ignored `json:"share-rw"`
	DisableModern ignored `json:"disable-modern"`
	MQ            ignored `json:"mq"`
	Vectors       ignored `json:"vectors"`
	LogicalBlock  ignored `json:"logical_block_size"`
	PhysicalBlock ignored `json:"physical_block_size"`
	NumQueues     ignored `json:"num-queues"`
	QueueSize     ignored `json:"queue-size"`
	BootIndex     ignored `json:"bootindex"`
}

// parseAddr reads device_add's addr: a string ("0x1f" hex, else decimal)
// or a number; ok false for anything else.
func parseAddr(raw json.RawMessage) (int, bool) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		var n int
		if err := json.Unmarshal(raw, &n); err != nil || n < 0 {
			return 0, false
		}
		return n, true
	}
	base, digits := 10, s
	if strings.HasPrefix(s, "0x") || strings.HasPrefix(s, "0X") {
		base, digits = 16, s[2:]
	}
	n, err := strconv.ParseUint(digits, base, 16)
	if err != nil {
		return 0, false
	}
	return int(n), true
}

// deviceAdd puts a backend registered by blockdev-add or netdev_add into
// a hot-replaceable slot: driver virtio-blk-* (or any name containing
// "blk") with drive=NODE, virtio-net-* ("net") with netdev=ID; without
// drive/netdev the backend registered under the device's own id is used
// (StratoVirt LTS). The slot is addr (decimal, or hex with 0x), else
// lun+1, else the first free one. serial is the disk's GET_ID serial
// (how the guest finds it); mac is checked but not applied (the guest
// keeps the slot's MAC, as in StratoVirt).
func (c *hotplugCmds) deviceAdd(r *Request) (any, error) {
	var a deviceArgs
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.ID == nil || *a.ID == "" {
		return nil, Errorf(ClassGeneric, "Parameter 'id' is missing")
	}
	if a.Driver == nil || *a.Driver == "" {
		return nil, Errorf(ClassGeneric, "Parameter 'driver' is missing")
	}
	id, driver := *a.ID, *a.Driver
	slot := -1
	switch {
	case len(a.Addr) > 0 && string(a.Addr) != "null":
		n, ok := parseAddr(a.Addr)
		if !ok {
			return nil, Errorf(ClassGeneric, "Invalid addr for device %s", id)
		}
		slot = n
	case a.LUN != nil:
		if *a.LUN < 0 {
			return nil, Errorf(ClassGeneric, "Invalid lun for device %s", id)
		}
		slot = *a.LUN + 1
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.nodes[id]; ok {
		return nil, Errorf(ClassGeneric, "Duplicate ID '%s' for device", id)
	}
	switch {
	case strings.Contains(driver, "blk"):
		return nil, c.addDisk(id, slot, &a)
	case strings.Contains(driver, "net"):
		return nil, c.addNIC(id, slot, &a)
	}
	return nil, Errorf(ClassGeneric, "Unsupported replaceable device type.")
}

func (c *hotplugCmds) addDisk(id string, slot int, a *deviceArgs) error {
	if a.Netdev != nil || a.MAC != nil {
		return Errorf(ClassGeneric, "Parameters 'netdev' and 'mac' are for virtio-net devices")
	}
	node := id
	if a.Drive != nil {
		node = *a.Drive
	}
	d, ok := c.drives[node]
	if !ok {
		return Errorf(ClassGeneric, "Failed to find the configuration.")
	}
	d.ID = id
	if a.Serial != nil {
		if len(*a.Serial) > config.MaxSerialLen {
			return Errorf(ClassGeneric, "Parameter 'serial' is longer than %d characters", config.MaxSerialLen)
		}
		d.Serial = *a.Serial
	}
	if a.IOThread != nil {
		d.IOThread = *a.IOThread
	}
	if _, err := c.h.PlugDriveAt(d, slot); err != nil {
		return c.plugError(id, slot, vmm.DiskSlot, "block", err)
	}
	delete(c.drives, node)
	c.nodes[id] = node
	return nil
}

func (c *hotplugCmds) addNIC(id string, slot int, a *deviceArgs) error {
	if a.Drive != nil || a.Serial != nil {
		return Errorf(ClassGeneric, "Parameters 'drive' and 'serial' are for virtio-blk devices")
	}
	node := id
	if a.Netdev != nil {
		node = *a.Netdev
	}
	p, ok := c.nets[node]
	if !ok {
		return Errorf(ClassGeneric, "Failed to find the configuration.")
	}
	n := p.net
	n.ID = id
	if a.MAC != nil {
		if _, err := config.ParseMAC(*a.MAC); err != nil {
			return Errorf(ClassGeneric, "Mac address is illegal.")
		}
		n.MAC = *a.MAC
	}
	if a.IOThread != nil {
		n.IOThread = *a.IOThread
	}
	if _, err := c.h.PlugNICAt(n, slot); err != nil {
		return c.plugError(id, slot, vmm.NICSlot, "net", err)
	}
	p.release() // the device holds its own duplicate
	delete(c.nets, node)
	c.nodes[id] = node
	return nil
}

// plugError turns the VM's errors into StratoVirt's texts.
func (c *hotplugCmds) plugError(id string, slot int, kind vmm.SlotKind, what string, err error) error {
	switch {
	case errors.Is(err, vmm.ErrNoFreeSlot):
		n := 0
		for _, s := range c.h.Slots() {
			if s.Kind == kind {
				n++
			}
		}
		return Errorf(ClassGeneric, "A maximum of %d %s replaceble devices are supported.", n, what)
	case errors.Is(err, vmm.ErrSlotInUse):
		return Errorf(ClassGeneric, "The slot %d is occupied already.", slot)
	case errors.Is(err, vmm.ErrNoSuchSlot):
		return Errorf(ClassGeneric, "Invalid addr for device %s", id)
	case errors.Is(err, vmm.ErrDuplicateID) && !strings.Contains(err.Error(), "serial"):
		return Errorf(ClassGeneric, "Duplicate ID '%s' for device", id)
	}
	return Errorf(ClassGeneric, "Failed to add device %s: %v", id, err)
}

// deviceDel empties the slot of device id (a disk or NIC plugged by
// device_add or given at boot) and forgets its backend. DEVICE_DELETED
// goes out before the reply, as in StratoVirt.
func (c *hotplugCmds) deviceDel(r *Request) (any, error) {
	var a struct {
		ID *string `json:"id"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.ID == nil || *a.ID == "" {
		return nil, Errorf(ClassGeneric, "Parameter 'id' is missing")
	}
	id := *a.ID
	c.mu.Lock()
	defer c.mu.Unlock()
	err := c.h.UnplugDrive(id)
	if errors.Is(err, vmm.ErrUnknownID) {
		err = c.h.UnplugNIC(id)
	}
	if errors.Is(err, vmm.ErrUnknownID) {
		return nil, Errorf(ClassDeviceNotFound, "Device %s not found", id)
	}
	if err != nil {
		return nil, Errorf(ClassGeneric, "Failed to delete device %s: %v", id, err)
	}
	delete(c.nodes, id)
	c.s.Event("DEVICE_DELETED", map[string]any{"device": id, "path": id})
	return nil, nil
}
