package vmm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/stratovirt-go/stratovirt/tests/payload"
	"github.com/stratovirt-go/stratovirt/vmm/acpi"
	"github.com/stratovirt-go/stratovirt/vmm/config"
	"github.com/stratovirt-go/stratovirt/vmm/virtio/blk"
)

func diskFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "disk.img")
	if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// newHotplugVM builds (without starting) a VM with one cold drive and
// the given slots.
func newHotplugVM(t *testing.T, h *config.Hotplug) *VM {
	t.Helper()
	needKVM(t)
	cfg := payloadConfig(t, payload.Spin(), 1, 256<<20)
	cfg.Drives = []config.Drive{{ID: "root", File: diskFile(t, 1<<20), Serial: "rootser"}}
	cfg.Hotplug = h
	v, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	return v
}

func TestHotplugSlotsLayout(t *testing.T) {
	v := newHotplugVM(t, &config.Hotplug{Drives: 2, Nets: 1})
	slots := v.Slots()
	if len(slots) != 4 {
		t.Fatalf("%d slots, want 3 disks and 1 NIC: %+v", len(slots), slots)
	}
	want := []struct {
		kind SlotKind
		idx  int
		id   string
		boot bool
	}{{DiskSlot, 0, "root", true}, {DiskSlot, 1, "", false}, {DiskSlot, 2, "", false}, {NICSlot, 0, "", false}}
	for i, w := range want {
		s := slots[i]
		if s.Kind != w.kind || s.Index != w.idx || s.ID != w.id || s.Boot != w.boot {
			t.Errorf("slot %d = %+v, want %+v", i, s, w)
		}
	}
	if _, err := config.ParseMAC(slots[3].MAC); err != nil {
		t.Errorf("NIC slot MAC %q: %v", slots[3].MAC, err)
	}
	// Every slot is a virtio-mmio window on the command line and in the
	// DSDT, in slot order after the cold devices.
	cmd := v.virtio.cmdline()
	devs := v.virtio.acpiDevices()
	if len(devs) != 4 || strings.Count(cmd, "virtio_mmio.device=") != 4 {
		t.Fatalf("%d DSDT devices, cmdline %q", len(devs), cmd)
	}
	for i, s := range slots {
		if devs[i].Base != s.Base || !strings.Contains(cmd, fmt.Sprintf("@%#x:", s.Base)) {
			t.Errorf("slot %d window %#x not described (%+v)", i, s.Base, devs[i])
		}
	}
	if _, err := acpi.Build(acpi.Config{VCPUs: 1, MMIODevices: devs}); err != nil {
		t.Errorf("DSDT with slots: %v", err)
	}
	// The vCPUs serve every window's InterruptStatus and InterruptACK,
	// empty slots' included.
	if n := v.fastMMIO.Len(); n != 2*len(devs) {
		t.Errorf("%d fast MMIO registers, want 2 for each of %d windows", n, len(devs))
	}
}

func TestVirtioCmdline(t *testing.T) {
	v := newHotplugVM(t, &config.Hotplug{Drives: 1})
	devs := v.virtio.cmdline()
	if strings.Count(devs, " virtio_mmio.device=") != 2 {
		t.Fatalf("cmdline entries %q, want 2", devs)
	}
	for _, tc := range []struct{ base, want string }{
		{"console=ttyS0", "console=ttyS0" + devs},
		{"", devs},
		// Everything after " -- " is init's: the entries go before it.
		{"console=ttyS0 -- -log-level debug", "console=ttyS0" + devs + " -- -log-level debug"},
		{"quiet -- a -- b", "quiet" + devs + " -- a -- b"},
	} {
		if got := v.virtio.withCmdline(tc.base); got != tc.want {
			t.Errorf("withCmdline(%q) = %q, want %q", tc.base, got, tc.want)
		}
	}
}

func TestNoSlotsByDefaultWithoutQMP(t *testing.T) {
	v := newHotplugVM(t, nil)
	if s := v.Slots(); len(s) != 1 || s[0].ID != "root" {
		t.Errorf("slots without QMP: %+v", s)
	}
	if _, err := v.PlugDrive(config.Drive{ID: "x", File: diskFile(t, 4096)}); !errors.Is(err, ErrNoFreeSlot) {
		t.Errorf("plug without free slots: %v", err)
	}
}

func TestPlugDriveAPI(t *testing.T) {
	v := newHotplugVM(t, &config.Hotplug{Drives: 2})
	img := diskFile(t, 64<<10)
	tests := []struct {
		name    string
		d       config.Drive
		slot    int
		want    int
		wantErr error
	}{
		{"first free", config.Drive{ID: "a", File: img, Serial: "ser-a"}, -1, 1, nil},
		{"duplicate id", config.Drive{ID: "a", File: img}, -1, -1, ErrDuplicateID},
		{"id of a boot drive", config.Drive{ID: "root", File: img}, -1, -1, ErrDuplicateID},
		{"duplicate serial", config.Drive{ID: "b", File: img, Serial: "ser-a"}, -1, -1, ErrDuplicateID},
		{"occupied slot", config.Drive{ID: "b", File: img}, 0, -1, ErrSlotInUse},
		{"no such slot", config.Drive{ID: "b", File: img}, 3, -1, ErrNoSuchSlot},
		{"serial too long", config.Drive{ID: "b", File: img, Serial: strings.Repeat("s", 21)}, -1, -1, ErrInvalid},
		{"iops too high", config.Drive{ID: "b", File: img, IOPS: 1000001}, -1, -1, ErrInvalid},
		{"iothread", config.Drive{ID: "b", File: img, IOThread: "t"}, -1, -1, ErrInvalid},
		{"no id", config.Drive{File: img}, -1, -1, ErrInvalid},
		{"no file", config.Drive{ID: "b"}, -1, -1, ErrInvalid},
		{"missing file", config.Drive{ID: "b", File: img + ".nope"}, -1, -1, os.ErrNotExist},
		{"backing read-only", config.Drive{ID: "b", File: img, Backing: img, ReadOnly: true}, -1, -1, ErrInvalid},
		{"backing missing", config.Drive{ID: "b", File: diskFile(t, 64<<10), Backing: img + ".nope"}, -1, -1, os.ErrNotExist},
		{"explicit slot", config.Drive{ID: "b", File: img, ReadOnly: true, Serial: "ser-b"}, 2, 2, nil},
		{"full", config.Drive{ID: "c", File: img}, -1, -1, ErrNoFreeSlot},
	}
	for _, tc := range tests {
		got, err := v.PlugDriveAt(tc.d, tc.slot)
		if got != tc.want || (tc.wantErr == nil) != (err == nil) || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
			t.Errorf("%s: PlugDriveAt = %d, %v; want %d, %v", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	s := v.Slots()
	if s[1].ID != "a" || s[1].Drive.Serial != "ser-a" || s[2].ID != "b" || !s[2].Drive.ReadOnly {
		t.Errorf("slots after plugging: %+v", s)
	}
	if err := v.UnplugDrive("nope"); !errors.Is(err, ErrUnknownID) {
		t.Errorf("unplug of an unknown id: %v", err)
	}
	// A boot drive can be unplugged, and its slot reused.
	for _, id := range []string{"a", "root"} {
		if err := v.UnplugDrive(id); err != nil {
			t.Fatalf("unplug %s: %v", id, err)
		}
		if err := v.UnplugDrive(id); !errors.Is(err, ErrUnknownID) {
			t.Errorf("second unplug of %s: %v", id, err)
		}
	}
	if got, err := v.PlugDrive(config.Drive{ID: "a", File: img, Serial: "ser-a"}); got != 0 || err != nil {
		t.Errorf("replug: %d, %v; want slot 0", got, err)
	}
	if v.hot.disks[0].dev.Capacity() != 128 || v.hot.disks[1].dev.Capacity() != 0 {
		t.Errorf("capacities %d, %d; want 128, 0", v.hot.disks[0].dev.Capacity(), v.hot.disks[1].dev.Capacity())
	}
	// Concurrent callers: each id is plugged once.
	if err := v.UnplugDrive("a"); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := v.PlugDrive(config.Drive{ID: fmt.Sprint("c", i), File: img}); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if !errors.Is(err, ErrNoFreeSlot) {
				t.Errorf("concurrent plug: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 2 {
		t.Errorf("%d concurrent plugs succeeded, want 2 (the free slots)", ok)
	}
	v.Close()
	if _, err := v.PlugDrive(config.Drive{ID: "z", File: img}); err == nil {
		t.Error("plug after Close succeeded")
	}
}

func TestCheckDriveBacking(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    config.Drive
		want string // "" for valid
	}{
		{"backed", config.Drive{ID: "x", File: "/o", Backing: "/b"}, ""},
		{"read-only", config.Drive{ID: "x", File: "/o", Backing: "/b", ReadOnly: true},
			`drive "x": invalid setting: a backing image needs a writable, buffered drive (readonly=off, direct=off)`},
		{"direct", config.DefaultDrive("x", "/o"), ""},
		{"direct backed", func() config.Drive { d := config.DefaultDrive("x", "/o"); d.Backing = "/b"; return d }(),
			`drive "x": invalid setting: a backing image needs a writable, buffered drive (readonly=off, direct=off)`},
		{"long backing path", config.Drive{ID: "x", File: "/o", Backing: "/" + strings.Repeat("b", config.MaxPathLen)},
			fmt.Sprintf(`drive "x": invalid setting: backing image path length %d out of range [0, %d]`, config.MaxPathLen+1, config.MaxPathLen)},
	} {
		err := checkDrive(tc.d)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || err.Error() != tc.want || !errors.Is(err, ErrInvalid)) {
			t.Errorf("%s: checkDrive = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestBackedDrives boots a VM's devices with a copy-on-write drive and
// plugs another: both reach the disk with their backing image.
func TestBackedDrives(t *testing.T) {
	needKVM(t)
	base := diskFile(t, 1<<20)
	overlay := func() string {
		p := filepath.Join(t.TempDir(), "overlay.img")
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, 1<<20); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg := payloadConfig(t, payload.Spin(), 1, 256<<20)
	cfg.Drives = []config.Drive{{ID: "root", File: overlay(), Backing: base}}
	cfg.Hotplug = &config.Hotplug{Drives: 1}
	v, err := New(cfg, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.Close() })
	if f := v.hot.disks[0].dev.Features(); f&(1<<blk.FDiscard|1<<blk.FWriteZeroes) != 0 {
		t.Errorf("backed boot drive offers discard or write-zeroes: features %#x", f)
	}
	d := config.Drive{ID: "c1", File: overlay(), Backing: base, Serial: "c1"}
	if i, err := v.PlugDrive(d); i != 1 || err != nil {
		t.Fatalf("plug backed drive: %d, %v", i, err)
	}
	if s := v.Slots(); s[1].Drive.Backing != base || v.hot.disks[1].dev.Capacity() != 1<<20/blk.SectorSize {
		t.Errorf("slot %+v, capacity %d", s[1], v.hot.disks[1].dev.Capacity())
	}
	if err := v.UnplugDrive("c1"); err != nil {
		t.Fatal(err)
	}
	small := diskFile(t, 4096)
	if _, err := v.PlugDrive(config.Drive{ID: "c2", File: small, Backing: base}); err == nil || !strings.Contains(err.Error(), "same size") {
		t.Errorf("plug over a backing image of another size: %v", err)
	}
}

func TestPlugNICAPI(t *testing.T) {
	v := newHotplugVM(t, &config.Hotplug{Nets: 1})
	for _, tc := range []struct {
		name string
		n    config.Net
		want error
	}{
		{"no tap", config.Net{ID: "n"}, ErrInvalid},
		{"tap name too long", config.Net{ID: "n", TapName: strings.Repeat("t", 16)}, ErrInvalid},
		{"bad MAC", config.Net{ID: "n", TapName: "t0", MAC: "52:54:00:12:34"}, ErrInvalid},
		{"iothread", config.Net{ID: "n", TapName: "t0", IOThread: "x"}, ErrInvalid},
		{"id of a drive", config.Net{ID: "root", TapName: "t0"}, ErrDuplicateID},
	} {
		if _, err := v.PlugNIC(tc.n); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	if err := v.UnplugNIC("n"); !errors.Is(err, ErrUnknownID) {
		t.Errorf("unplug unknown: %v", err)
	}
	// A real tap needs CAP_NET_ADMIN.
	slot, err := v.PlugNIC(config.Net{ID: "n", TapName: "svhp0"})
	if err != nil {
		t.Skipf("cannot create a tap here: %v", err)
	}
	if s := v.Slots(); slot != 0 || s[1].ID != "n" || s[1].TapName != "svhp0" {
		t.Errorf("after plug: slot %d, %+v", slot, s)
	}
	if _, err := v.PlugNIC(config.Net{ID: "m", TapName: "svhp1"}); !errors.Is(err, ErrNoFreeSlot) {
		t.Errorf("second NIC: %v", err)
	}
	if err := v.UnplugNIC("n"); err != nil {
		t.Fatal(err)
	}
	if s := v.Slots(); s[1].ID != "" || s[1].TapName != "" {
		t.Errorf("after unplug: %+v", s[1])
	}
}
