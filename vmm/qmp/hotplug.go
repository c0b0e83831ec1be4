package qmp

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm"
	"github.com/stratovirt-go/stratovirt/vmm/config"
)

// Hotplug is what the hot-plug commands act on; *vmm.VM provides it.
type Hotplug interface {
	PlugDriveAt(d config.Drive, slot int) (int, error)
	UnplugDrive(id string) error
	PlugNICAt(n config.Net, slot int) (int, error)
	UnplugNIC(id string) error
	Slots() []vmm.SlotInfo
}

// maxPending bounds the backends registered by blockdev-add and
// netdev_add and not yet used by device_add (StratoVirt: "A maximum of
// 6 replaceble devices are supported.").
const maxPending = config.MaxDrives + config.MaxNets

// hotplugCmds holds the backends registered by blockdev-add and
// netdev_add until device_add uses them, as StratoVirt's microVM does:
// the device then goes into a hot-replaceable slot (vmm's Slots) and
// device_del empties the slot and forgets the backend.
type hotplugCmds struct {
	s *Server
	h Hotplug

	mu     sync.Mutex // commands run one at a time; this guards against Close
	drives map[string]config.Drive
	nets   map[string]pendingNet
	// nodes maps a plugged device id to the node-name or netdev id it
	// uses, so that the name stays taken until device_del.
	nodes map[string]string
}

type pendingNet struct {
	net   config.Net
	owned bool // TapFD came from getfd and is closed by us
}

// RegisterHotplug replaces the hot-plug placeholders with blockdev-add,
// blockdev-del, netdev_add, netdev_del, device_add and device_del for h.
func RegisterHotplug(s *Server, h Hotplug) {
	c := &hotplugCmds{s: s, h: h, drives: map[string]config.Drive{}, nets: map[string]pendingNet{}, nodes: map[string]string{}}
	s.Handle("blockdev-add", c.blockdevAdd)
	s.Handle("blockdev-del", c.blockdevDel)
	s.Handle("netdev_add", c.netdevAdd)
	s.Handle("netdev_del", c.netdevDel)
	s.Handle("device_add", c.deviceAdd)
	s.Handle("device_del", c.deviceDel)
}

// ignored accepts any JSON value for a member StratoVirt takes and
// ignores.
type ignored = json.RawMessage

type blockdevArgs struct {
	NodeName    *string         `json:"node-name"`
	Driver      *string         `json:"driver"`
	File        json.RawMessage `json:"file"`
	Cache       json.RawMessage `json:"cache"`
	ReadOnly    *bool           `json:"read-only"`
	IOPS        *uint64         `json:"throttling.iops-total"`
	IOPSShort   *uint64         `json:"iops"`
	ID          ignored         `json:"id"`
	DetectZeros ignored         `json:"detect-zeroes"`
	ReadZeros   ignored         `json:"read-zeros"`
	Discard     ignored         `json:"discard"`
	Backing     ignored         `json:"backing"`
	Options     ignored         `json:"options"`
	AIO         ignored         `json:"aio"`
}

type blockdevFile struct {
	Driver   *string `json:"driver"`
	Filename *string `json:"filename"`
	AIO      ignored `json:"aio"`
}

type blockdevCache struct {
	Direct  *bool `json:"direct"`
	NoFlush *bool `json:"no-flush"`
}

// blockdevAdd registers a raw disk file under node-name; nothing changes
// for the guest until device_add.
func (c *hotplugCmds) blockdevAdd(r *Request) (any, error) {
	var a blockdevArgs
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.NodeName == nil || *a.NodeName == "" {
		return nil, Errorf(ClassGeneric, "Parameter 'node-name' is missing")
	}
	id := *a.NodeName
	if len(id) > config.MaxIDLen {
		return nil, Errorf(ClassGeneric, "Parameter 'node-name' is too long (at most %d bytes)", config.MaxIDLen)
	}
	if a.Driver != nil && *a.Driver != "raw" {
		return nil, Errorf(ClassGeneric, "Unsupported block format '%s': only raw is supported", *a.Driver)
	}
	if len(a.File) == 0 {
		return nil, Errorf(ClassGeneric, "Parameter 'file' is missing")
	}
	var f blockdevFile
	if err := decodeArgs(a.File, &f); err != nil {
		return nil, nested("file", err)
	}
	if f.Filename == nil || *f.Filename == "" {
		return nil, Errorf(ClassGeneric, "Parameter 'file.filename' is missing")
	}
	if f.Driver != nil && *f.Driver != "file" && *f.Driver != "host_device" {
		return nil, Errorf(ClassGeneric, "Unsupported file driver '%s' (file or host_device)", *f.Driver)
	}
	d := config.DefaultDrive(id, *f.Filename)
	if len(a.Cache) > 0 {
		var cache blockdevCache
		if err := decodeArgs(a.Cache, &cache); err != nil {
			return nil, nested("cache", err)
		}
		if cache.Direct != nil {
			d.Direct = *cache.Direct
		}
	}
	if a.ReadOnly != nil {
		d.ReadOnly = *a.ReadOnly
	}
	for _, p := range []*uint64{a.IOPS, a.IOPSShort} {
		if p != nil {
			d.IOPS = *p
		}
	}
	if d.IOPS > config.MaxIOPS {
		return nil, Errorf(ClassGeneric, "iops of block device must >= 0 and <= %d.", config.MaxIOPS)
	}
	if err := checkBlockFile(d.File); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkNewName(id); err != nil {
		return nil, err
	}
	c.drives[id] = d
	return nil, nil
}

// checkBlockFile applies StratoVirt's blockdev-add checks to path.
func checkBlockFile(path string) error {
	if len(path) > config.MaxPathLen || len(filepath.Base(path)) > 255 {
		return Errorf(ClassGeneric, "Illegal block name")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return Errorf(ClassGeneric, "Could not open '%s': %v", path, unwrapPath(err))
	}
	if m := fi.Mode(); !m.IsRegular() && (m&os.ModeDevice == 0 || m&os.ModeCharDevice != 0) {
		return Errorf(ClassGeneric, "File is not a regular file or block device")
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// nested prefixes the member errors of a nested object with its name.
func nested(member string, err error) error {
	var qe *Error
	if errors.As(err, &qe) {
		desc := strings.Replace(qe.Desc, "Parameter '", "Parameter '"+member+".", 1)
		desc = strings.Replace(desc, "for '", "for '"+member+".", 1)
		desc = strings.Replace(desc, "member 'arguments' must", "member '"+member+"' must", 1)
		return Errorf(qe.Class, "%s", desc)
	}
	return err
}

// checkNewName fails if a backend or plugged device already uses name;
// c.mu is held.
func (c *hotplugCmds) checkNewName(name string) error {
	_, d := c.drives[name]
	_, n := c.nets[name]
	used := d || n
	for _, node := range c.nodes {
		used = used || node == name
	}
	if used {
		return Errorf(ClassGeneric, "%s is already registered.", name)
	}
	if len(c.drives)+len(c.nets) >= maxPending {
		return Errorf(ClassGeneric, "A maximum of %d replaceble devices are supported.", maxPending)
	}
	return nil
}

// blockdevDel forgets a node that no device uses. As in StratoVirt,
// whose device_del already drops the backend, an unknown node is not an
// error.
func (c *hotplugCmds) blockdevDel(r *Request) (any, error) {
	var a struct {
		NodeName *string `json:"node-name"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.NodeName == nil {
		return nil, Errorf(ClassGeneric, "Parameter 'node-name' is missing")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if dev := c.userOf(*a.NodeName); dev != "" {
		return nil, Errorf(ClassGeneric, "Node '%s' is busy: device '%s' uses it", *a.NodeName, dev)
	}
	delete(c.drives, *a.NodeName)
	return nil, nil
}

// userOf returns the plugged device using node (""); c.mu is held.
func (c *hotplugCmds) userOf(node string) string {
	for dev, n := range c.nodes {
		if n == node {
			return dev
		}
	}
	return ""
}

type netdevArgs struct {
	ID        *string `json:"id"`
	IfName    *string `json:"ifname"`
	FDs       *string `json:"fds"`
	FD        *string `json:"fd"`
	Type      ignored `json:"type"`
	DNSSearch ignored `json:"dnssearch"`
	Vhost     ignored `json:"vhost"`
	VhostFDs  ignored `json:"vhostfds"`
	VhostFD   ignored `json:"vhostfd"`
	Script    ignored `json:"script"`
	Down      ignored `json:"downscript"`
	Queues    ignored `json:"queues"`
	Chardev   ignored `json:"chardev"`
}

// netdevAdd registers a tap: ifname (attached or created at device_add)
// or fds/fd, a name given to getfd or a descriptor number the VMM
// inherited. For a list "a:b" the last entry is used (one queue pair).
func (c *hotplugCmds) netdevAdd(r *Request) (any, error) {
	var a netdevArgs
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.ID == nil || *a.ID == "" {
		return nil, Errorf(ClassGeneric, "Parameter 'id' is missing")
	}
	id := *a.ID
	if len(id) > config.MaxIDLen {
		return nil, Errorf(ClassGeneric, "Parameter 'id' is too long (at most %d bytes)", config.MaxIDLen)
	}
	n := config.Net{ID: id}
	fdArg := a.FDs
	if fdArg == nil {
		fdArg = a.FD
	}
	switch {
	case a.IfName != nil && *a.IfName != "":
		if len(*a.IfName) > config.MaxTapNameLen || strings.ContainsAny(*a.IfName, "/ \t\n:") {
			return nil, Errorf(ClassGeneric, "Invalid tap name '%s' (1 to %d characters)", *a.IfName, config.MaxTapNameLen)
		}
		n.TapName = *a.IfName
	case fdArg != nil && *fdArg != "":
	default:
		return nil, Errorf(ClassGeneric, "Tap device is missing, use 'ifname' or 'fd' to configure a tap device")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.checkNewName(id); err != nil {
		return nil, err
	}
	p := pendingNet{net: n}
	if n.TapName == "" {
		name := *fdArg
		if i := strings.LastIndexByte(name, ':'); i >= 0 {
			name = name[i+1:]
		}
		if num, err := strconv.Atoi(name); err == nil {
			if _, err := unix.FcntlInt(uintptr(num), unix.F_GETFD, 0); num < 3 || err != nil {
				return nil, Errorf(ClassGeneric, "Invalid file descriptor %d", num)
			}
			p.net.TapFD = num
		} else {
			fd, ok := c.s.TakeFD(name)
			if !ok {
				return nil, Errorf(ClassGeneric, "File descriptor named '%s' has not been found", name)
			}
			p.net.TapFD, p.owned = fd, true
		}
	}
	c.nets[id] = p
	return nil, nil
}

// netdevDel forgets a tap no device uses (closing a descriptor taken
// from getfd); like blockdev-del, an unknown id is not an error.
func (c *hotplugCmds) netdevDel(r *Request) (any, error) {
	var a struct {
		ID *string `json:"id"`
	}
	if err := r.Decode(&a); err != nil {
		return nil, err
	}
	if a.ID == nil {
		return nil, Errorf(ClassGeneric, "Parameter 'id' is missing")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if dev := c.userOf(*a.ID); dev != "" {
		return nil, Errorf(ClassGeneric, "Netdev '%s' is busy: device '%s' uses it", *a.ID, dev)
	}
	if p, ok := c.nets[*a.ID]; ok {
		p.release()
		delete(c.nets, *a.ID)
	}
	return nil, nil
}

func (p pendingNet) release() {
	if p.owned && p.net.TapFD > 0 {
		unix.Close(p.net.TapFD)
	}
}
