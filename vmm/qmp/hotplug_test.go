package qmp

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/stratovirt-go/stratovirt/vmm"
	"github.com/stratovirt-go/stratovirt/vmm/config"
)

// fakeHotplug models the VM's slots: disks and NICs by index, ids unique
// across both.
type fakeHotplug struct {
	mu     sync.Mutex
	disks  []*config.Drive
	nics   []*config.Net
	tapFDs []bool // whether the tap fd was open when PlugNICAt ran
	failFD bool
}

func newFakeHotplug(disks, nics int) *fakeHotplug {
	return &fakeHotplug{disks: make([]*config.Drive, disks), nics: make([]*config.Net, nics)}
}

func (f *fakeHotplug) used(id string) bool {
	for _, d := range f.disks {
		if d != nil && d.ID == id {
			return true
		}
	}
	for _, n := range f.nics {
		if n != nil && n.ID == id {
			return true
		}
	}
	return false
}

func pick[T any](slots []*T, want int) (int, error) {
	if want >= len(slots) {
		return -1, fmt.Errorf("slot %d: %w", want, vmm.ErrNoSuchSlot)
	}
	if want >= 0 {
		if slots[want] != nil {
			return -1, fmt.Errorf("slot %d: %w", want, vmm.ErrSlotInUse)
		}
		return want, nil
	}
	for i, s := range slots {
		if s == nil {
			return i, nil
		}
	}
	return -1, vmm.ErrNoFreeSlot
}

func (f *fakeHotplug) PlugDriveAt(d config.Drive, slot int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used(d.ID) {
		return -1, fmt.Errorf("drive %q: id %w", d.ID, vmm.ErrDuplicateID)
	}
	if d.IOThread != "" {
		return -1, fmt.Errorf("drive %q: %w: iothread", d.ID, vmm.ErrInvalid)
	}
	i, err := pick(f.disks, slot)
	if err != nil {
		return -1, err
	}
	f.disks[i] = &d
	return i, nil
}

func (f *fakeHotplug) UnplugDrive(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, d := range f.disks {
		if d != nil && d.ID == id {
			f.disks[i] = nil
			return nil
		}
	}
	return fmt.Errorf("drive %q: %w", id, vmm.ErrUnknownID)
}

func (f *fakeHotplug) PlugNICAt(n config.Net, slot int) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.used(n.ID) {
		return -1, fmt.Errorf("netdev %q: id %w", n.ID, vmm.ErrDuplicateID)
	}
	if n.TapName == "" {
		_, err := unix.FcntlInt(uintptr(n.TapFD), unix.F_GETFD, 0)
		f.tapFDs = append(f.tapFDs, err == nil)
		if f.failFD {
			return -1, fmt.Errorf("tap fd %d: not a tap", n.TapFD)
		}
	}
	i, err := pick(f.nics, slot)
	if err != nil {
		return -1, err
	}
	f.nics[i] = &n
	return i, nil
}

func (f *fakeHotplug) UnplugNIC(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, n := range f.nics {
		if n != nil && n.ID == id {
			f.nics[i] = nil
			return nil
		}
	}
	return fmt.Errorf("netdev %q: %w", id, vmm.ErrUnknownID)
}

func (f *fakeHotplug) disk(i int) *config.Drive {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.disks[i]
}

func (f *fakeHotplug) nic(i int) *config.Net {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nics[i]
}

func (f *fakeHotplug) setFail(v bool) {
	f.mu.Lock()
	f.failFD = v
	f.mu.Unlock()
}

func (f *fakeHotplug) fdStates() []bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]bool(nil), f.tapFDs...)
}

func (f *fakeHotplug) Slots() []vmm.SlotInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []vmm.SlotInfo
	for i := range f.disks {
		out = append(out, vmm.SlotInfo{Kind: vmm.DiskSlot, Index: i})
	}
	for i := range f.nics {
		out = append(out, vmm.SlotInfo{Kind: vmm.NICSlot, Index: i})
	}
	return out
}

func hotplugServer(t *testing.T, h Hotplug) (*Server, *client) {
	t.Helper()
	s := newServer(t, Options{})
	RegisterPlaceholders(s)
	RegisterHotplug(s, h)
	return s, negotiated(t, s.Path())
}

// expect checks a reply: want "" means success, else "Class: desc"
// (desc compared as a prefix).
func expect(t *testing.T, name string, r map[string]any, want string) {
	t.Helper()
	cl, d := errClass(r)
	switch {
	case want == "" && cl != "":
		t.Errorf("%s: %s: %s", name, cl, d)
	case want == "" && r["return"] == nil:
		t.Errorf("%s: no return in %v", name, r)
	case want != "" && !strings.HasPrefix(cl+": "+d, want):
		t.Errorf("%s: got %q\nwant %q", name, cl+": "+d, want)
	}
}

func TestBlockHotplugCommands(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	h := newFakeHotplug(3, 0)
	h.disks[0] = &config.Drive{ID: "rootfs"}
	_, c := hotplugServer(t, h)
	steps := []struct {
		name, cmd, want string
	}{
		{"blockdev-add (Kata's form)", `{"execute":"blockdev-add","arguments":{"driver":"raw","read-only":true,"node-name":"d1","file":{"driver":"file","filename":"` + img + `","aio":"native"}}}`, ""},
		{"blockdev-add (StratoVirt's form)", `{"execute":"blockdev-add","arguments":{"node-name":"d2","file":{"driver":"file","filename":"` + img + `"},"cache":{"direct":false},"throttling.iops-total":100}}`, ""},
		{"duplicate node", `{"execute":"blockdev-add","arguments":{"node-name":"d1","file":{"filename":"` + img + `"}}}`, "GenericError: d1 is already registered."},
		{"missing node-name", `{"execute":"blockdev-add","arguments":{"file":{"filename":"` + img + `"}}}`, "GenericError: Parameter 'node-name' is missing"},
		{"missing file", `{"execute":"blockdev-add","arguments":{"node-name":"x"}}`, "GenericError: Parameter 'file' is missing"},
		{"missing filename", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"driver":"file"}}}`, "GenericError: Parameter 'file.filename' is missing"},
		{"unknown file member", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"` + img + `","bogus":1}}}`, "GenericError: Parameter 'file.bogus' is unexpected"},
		{"file not an object", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":"` + img + `"}}`, "GenericError: QMP input member 'file' must be an object"},
		{"unknown cache member", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"` + img + `"},"cache":{"writeback":true}}}`, "GenericError: Parameter 'cache.writeback' is unexpected"},
		{"wrong type", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"` + img + `"},"read-only":"yes"}}`, "GenericError: Invalid parameter type for 'read-only'"},
		{"qcow2", `{"execute":"blockdev-add","arguments":{"node-name":"x","driver":"qcow2","file":{"filename":"` + img + `"}}}`, "GenericError: Unsupported block format 'qcow2'"},
		{"not a file", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"` + dir + `"}}}`, "GenericError: File is not a regular file or block device"},
		{"char device", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"/dev/null"}}}`, "GenericError: File is not a regular file or block device"},
		{"no such file", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"` + img + `.no"}}}`, "GenericError: Could not open"},
		{"long basename", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"/tmp/` + strings.Repeat("a", 256) + `"}}}`, "GenericError: Illegal block name"},
		{"iops over the limit", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"` + img + `"},"iops":1000001}}`, "GenericError: iops of block device must >= 0 and <= 1000000."},
		{"unknown argument", `{"execute":"blockdev-add","arguments":{"node-name":"x","file":{"filename":"` + img + `"},"color":"red"}}`, "GenericError: Parameter 'color' is unexpected"},

		{"device_add without config", `{"execute":"device_add","arguments":{"id":"nope","driver":"virtio-blk-mmio"}}`, "GenericError: Failed to find the configuration."},
		{"device_add unknown driver", `{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-scsi","drive":"d1"}}`, "GenericError: Unsupported replaceable device type."},
		{"device_add missing driver", `{"execute":"device_add","arguments":{"id":"d1"}}`, "GenericError: Parameter 'driver' is missing"},
		{"device_add bad addr", `{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-blk-mmio","drive":"d1","addr":"zz"}}`, "GenericError: Invalid addr for device d1"},
		{"device_add addr out of range", `{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-blk-mmio","drive":"d1","addr":"7"}}`, "GenericError: Invalid addr for device d1"},
		{"device_add occupied slot", `{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-blk-mmio","drive":"d1","addr":"0x0"}}`, "GenericError: The slot 0 is occupied already."},
		{"device_add serial too long", `{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-blk-mmio","drive":"d1","serial":"` + strings.Repeat("s", 21) + `"}}`, "GenericError: Parameter 'serial' is longer than 20"},
		{"device_add netdev on a disk", `{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-blk-mmio","drive":"d1","netdev":"n"}}`, "GenericError: Parameters 'netdev' and 'mac'"},
		{"device_add id of a boot drive", `{"execute":"device_add","arguments":{"id":"rootfs","driver":"virtio-blk-mmio","drive":"d1"}}`, "GenericError: Duplicate ID 'rootfs' for device"},
		{"device_add (Kata's form)", `{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-blk-mmio","drive":"d1","addr":"2","romfile":"","serial":"ser1"}}`, ""},
		{"blockdev-del of a used node", `{"execute":"blockdev-del","arguments":{"node-name":"d1"}}`, "GenericError: Node 'd1' is busy: device 'd1' uses it"},
		{"node name taken while plugged", `{"execute":"blockdev-add","arguments":{"node-name":"d1","file":{"filename":"` + img + `"}}}`, "GenericError: d1 is already registered."},
		{"device_add duplicate id", `{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-blk-mmio","drive":"d2"}}`, "GenericError: Duplicate ID 'd1' for device"},
		{"device_add by lun", `{"execute":"device_add","arguments":{"id":"disk2","driver":"virtio-blk-device","drive":"d2","lun":0}}`, ""},
		{"blockdev-add d3", `{"execute":"blockdev-add","arguments":{"node-name":"d3","file":{"filename":"` + img + `"}}}`, ""},
		{"device_add full", `{"execute":"device_add","arguments":{"id":"d3","driver":"virtio-blk-mmio"}}`, "GenericError: A maximum of 3 block replaceble devices are supported."},
		{"blockdev-del pending", `{"execute":"blockdev-del","arguments":{"node-name":"d3"}}`, ""},
		{"device_add after blockdev-del", `{"execute":"device_add","arguments":{"id":"d3","driver":"virtio-blk-mmio"}}`, "GenericError: Failed to find the configuration."},
		{"blockdev-del unknown", `{"execute":"blockdev-del","arguments":{"node-name":"zzz"}}`, ""},
		{"device_del unknown", `{"execute":"device_del","arguments":{"id":"zzz"}}`, "DeviceNotFound: Device zzz not found"},
		{"device_del missing id", `{"execute":"device_del","arguments":{}}`, "GenericError: Parameter 'id' is missing"},
	}
	for _, s := range steps {
		expect(t, s.name, c.cmd(s.cmd), s.want)
	}
	if d := h.disk(2); d == nil || d.ID != "d1" || d.Serial != "ser1" || !d.ReadOnly || !d.Direct || d.File != img {
		t.Errorf("slot 2 = %+v", d)
	}
	if d := h.disk(1); d == nil || d.ID != "disk2" || d.Direct || d.IOPS != 100 || d.ReadOnly {
		t.Errorf("slot 1 = %+v", d)
	}
	// device_del: DEVICE_DELETED before the reply, the slot emptied, the
	// node name free again.
	for _, id := range []string{"d1", "rootfs"} {
		c.send(`{"execute":"device_del","arguments":{"id":"` + id + `"}}`)
		ev := c.line()
		data, _ := ev["data"].(map[string]any)
		if ev["event"] != "DEVICE_DELETED" || data["device"] != id || data["path"] != id {
			t.Errorf("device_del %s: first message %v, want DEVICE_DELETED", id, ev)
		}
		expect(t, "device_del "+id, c.line(), "")
	}
	if h.disk(0) != nil || h.disk(2) != nil {
		t.Errorf("slots after device_del: %+v %+v", h.disk(0), h.disk(2))
	}
	expect(t, "node name free after device_del", c.cmd(`{"execute":"blockdev-add","arguments":{"node-name":"d1","file":{"filename":"`+img+`"}}}`), "")
	expect(t, "device_add into the freed slot", c.cmd(`{"execute":"device_add","arguments":{"id":"d1","driver":"virtio-blk-mmio","drive":"d1","addr":"0"}}`), "")
}

func TestNetHotplugCommands(t *testing.T) {
	h := newFakeHotplug(0, 2)
	s, c := hotplugServer(t, h)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	if _, _, err := c.c.WriteMsgUnix([]byte(`{"execute":"getfd","arguments":{"fdname":"tapfd"}}`), unix.UnixRights(p[1]), nil); err != nil {
		t.Fatal(err)
	}
	unix.Close(p[1])
	expect(t, "getfd", c.line(), "")
	steps := []struct {
		name, cmd, want string
	}{
		{"netdev_add no tap", `{"execute":"netdev_add","arguments":{"id":"n0"}}`, "GenericError: Tap device is missing, use 'ifname' or 'fd' to configure a tap device"},
		{"netdev_add long ifname", `{"execute":"netdev_add","arguments":{"id":"n0","ifname":"0123456789abcdef"}}`, "GenericError: Invalid tap name"},
		{"netdev_add unknown fd name", `{"execute":"netdev_add","arguments":{"id":"n0","fds":"nope"}}`, "GenericError: File descriptor named 'nope' has not been found"},
		{"netdev_add bad fd number", `{"execute":"netdev_add","arguments":{"id":"n0","fds":"999"}}`, "GenericError: Invalid file descriptor 999"},
		{"netdev_add stdin", `{"execute":"netdev_add","arguments":{"id":"n0","fd":"0"}}`, "GenericError: Invalid file descriptor 0"},
		{"netdev_add unknown member", `{"execute":"netdev_add","arguments":{"id":"n0","ifname":"tap0","model":"e1000"}}`, "GenericError: Parameter 'model' is unexpected"},
		{"netdev_add ifname (ignored members)", `{"execute":"netdev_add","arguments":{"id":"n0","type":"tap","ifname":"tap0","vhost":false,"queues":1,"script":"no","downscript":"no"}}`, ""},
		{"netdev_add getfd name", `{"execute":"netdev_add","arguments":{"id":"n1","fds":"x:tapfd"}}`, ""},
		{"netdev_add duplicate", `{"execute":"netdev_add","arguments":{"id":"n1","ifname":"tap1"}}`, "GenericError: n1 is already registered."},
		{"device_add bad mac", `{"execute":"device_add","arguments":{"id":"n0","driver":"virtio-net-mmio","netdev":"n0","mac":"52:54:00:12:34"}}`, "GenericError: Mac address is illegal."},
		{"device_add drive on a NIC", `{"execute":"device_add","arguments":{"id":"n0","driver":"virtio-net-mmio","drive":"n0"}}`, "GenericError: Parameters 'drive' and 'serial'"},
		{"device_add ifname", `{"execute":"device_add","arguments":{"id":"eth0","driver":"virtio-net-mmio","netdev":"n0","mac":"52:54:00:12:34:56","addr":"0x1"}}`, ""},
		{"netdev_del of a used netdev", `{"execute":"netdev_del","arguments":{"id":"n0"}}`, "GenericError: Netdev 'n0' is busy: device 'eth0' uses it"},
		{"device_add fd (same id as netdev)", `{"execute":"device_add","arguments":{"id":"n1","driver":"virtio-net-device"}}`, ""},
	}
	for _, st := range steps {
		expect(t, st.name, c.cmd(st.cmd), st.want)
	}
	if n := h.nic(1); n == nil || n.ID != "eth0" || n.TapName != "tap0" || n.MAC != "52:54:00:12:34:56" {
		t.Errorf("NIC slot 1 = %+v", n)
	}
	if n := h.nic(0); n == nil || n.ID != "n1" || n.TapName != "" || n.TapFD <= 2 {
		t.Errorf("NIC slot 0 = %+v", n)
	}
	// The getfd descriptor was open during the plug and is closed after
	// (the device keeps its own duplicate); the name is gone.
	if len(h.fdStates()) != 1 || !h.fdStates()[0] {
		t.Errorf("tap fd open during plug: %v", h.fdStates())
	}
	if _, err := unix.FcntlInt(uintptr(h.nic(0).TapFD), unix.F_GETFD, 0); err == nil {
		t.Errorf("QMP's copy of the tap fd %d is still open", h.nic(0).TapFD)
	}
	if _, ok := s.TakeFD("tapfd"); ok {
		t.Error("getfd name still stored after netdev_add took it")
	}
	c.send(`{"execute":"device_del","arguments":{"id":"eth0"}}`)
	if ev := c.line(); ev["event"] != "DEVICE_DELETED" {
		t.Errorf("device_del eth0: %v", ev)
	}
	expect(t, "device_del eth0", c.line(), "")
	expect(t, "netdev_del after device_del", c.cmd(`{"execute":"netdev_del","arguments":{"id":"n0"}}`), "")
	if h.nic(1) != nil {
		t.Errorf("slot 1 after device_del: %+v", h.nic(1))
	}
}

// A getfd descriptor registered by netdev_add and never used is closed
// by netdev_del; one whose device_add failed stays for a retry.
func TestNetdevFDLifetime(t *testing.T) {
	h := newFakeHotplug(0, 1)
	_, c := hotplugServer(t, h)
	var p [2]int
	if err := unix.Pipe2(p[:], unix.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	defer unix.Close(p[0])
	c.c.WriteMsgUnix([]byte(`{"execute":"getfd","arguments":{"fdname":"f"}}`), unix.UnixRights(p[1]), nil)
	unix.Close(p[1])
	expect(t, "getfd", c.line(), "")
	expect(t, "netdev_add", c.cmd(`{"execute":"netdev_add","arguments":{"id":"n","fds":"f"}}`), "")
	h.setFail(true)
	expect(t, "device_add fails", c.cmd(`{"execute":"device_add","arguments":{"id":"n","driver":"virtio-net-mmio"}}`), "GenericError: Failed to add device n: tap fd")
	h.setFail(false)
	expect(t, "netdev_del", c.cmd(`{"execute":"netdev_del","arguments":{"id":"n"}}`), "")
	if len(h.fdStates()) != 1 || !h.fdStates()[0] {
		t.Fatalf("fd states %v", h.fdStates())
	}
	// The pipe's write end is now closed everywhere: reading sees EOF.
	var b [1]byte
	if n, err := unix.Read(p[0], b[:]); n != 0 || err != nil {
		t.Errorf("read %d, %v: the fd taken by netdev_add is still open", n, err)
	}
}

func TestParseAddr(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{`"3"`, 3, true}, {`"0x1f"`, 31, true}, {`"0X2"`, 2, true}, {`5`, 5, true}, {`"10"`, 10, true},
		{`"x"`, 0, false}, {`""`, 0, false}, {`-1`, 0, false}, {`"0x"`, 0, false}, {`"99999"`, 0, false},
		{`null`, 0, false}, {`{}`, 0, false}, {`1.5`, 0, false},
	} {
		got, ok := parseAddr(json.RawMessage(tc.in))
		if got != tc.want || ok != tc.ok {
			t.Errorf("parseAddr(%s) = %d, %v; want %d, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

// FuzzHotplugArgs sends arbitrary arguments to the hot-plug commands: no
// panic, one well-formed reply each, and the fake VM's slots stay
// consistent.
func FuzzHotplugArgs(f *testing.F) {
	f.Add(uint8(0), `{"node-name":"a","file":{"filename":"/dev/null"}}`)
	f.Add(uint8(2), `{"id":"a","driver":"virtio-blk-mmio","addr":"0x1","lun":3}`)
	f.Add(uint8(3), `{"id":"a"}`)
	f.Add(uint8(4), `{"id":"n","fds":"a:b:3"}`)
	f.Add(uint8(1), `{"node-name":null}`)
	cmds := []string{"blockdev-add", "blockdev-del", "device_add", "device_del", "netdev_add", "netdev_del"}
	f.Fuzz(func(t *testing.T, which uint8, args string) {
		srv := &Server{handlers: map[string]Handler{}, fds: map[string]int{}, opts: Options{MaxMessage: 4096}}
		h := newFakeHotplug(2, 1)
		RegisterHotplug(srv, h)
		c := &conn{s: srv}
		c.setNegotiated()
		for i := range 3 { // the same arguments to three commands
			name := cmds[(int(which)+i)%len(cmds)]
			reply := srv.execute(c, []byte(`{"execute":"`+name+`","arguments":`+args+`}`))
			b, err := json.Marshal(reply)
			if err != nil {
				t.Fatalf("reply not encodable: %v", err)
			}
			_, hasRet := reply["return"]
			_, hasErr := reply["error"]
			if hasRet == hasErr {
				t.Fatalf("reply %s has neither or both of return and error", b)
			}
		}
		if len(h.disks) != 2 || len(h.nics) != 1 {
			t.Fatal("slot table changed size")
		}
	})
}
