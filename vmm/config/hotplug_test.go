package config

import (
	"fmt"
	"path/filepath"
	"testing"
)

func TestHotplugSlots(t *testing.T) {
	disk := tempFile(t, "disk.img")
	drives := func(n int) []Drive {
		var d []Drive
		for i := range n {
			d = append(d, Drive{ID: fmt.Sprint("d", i), File: disk})
		}
		return d
	}
	nets := func(n int) []Net {
		var out []Net
		for i := range n {
			out = append(out, Net{ID: fmt.Sprint("n", i), TapName: fmt.Sprint("tap", i)})
		}
		return out
	}
	consoles := func(n int) []Console {
		var out []Console
		for i := range n {
			out = append(out, Console{ID: fmt.Sprint("c", i), SocketPath: filepath.Join(t.TempDir(), "c.sock")})
		}
		return out
	}
	qmp := filepath.Join(t.TempDir(), "qmp.sock")
	tests := []struct {
		name               string
		mod                func(c *VMConfig)
		wantDrives, wantNs int
		wantErr            string
	}{
		{"no QMP: no slots", func(c *VMConfig) {}, 0, 0, ""},
		{"QMP: six disks, two NICs", func(c *VMConfig) { c.Process.APIChannel = qmp }, 6, 2, ""},
		{"QMP with cold devices", func(c *VMConfig) {
			c.Process.APIChannel = qmp
			c.Drives, c.Nets = drives(1), nets(1)
		}, 5, 1, ""},
		{"QMP, MMIO budget: disks first", func(c *VMConfig) {
			c.Process.APIChannel = qmp
			c.Consoles = consoles(4)
			c.RNG = &RNG{}
		}, 6, 0, ""},
		{"QMP, MMIO budget exhausted", func(c *VMConfig) {
			c.Process.APIChannel = qmp
			c.Drives, c.Nets, c.Consoles = drives(6), nets(2), consoles(3)
		}, 0, 0, ""},
		{"explicit", func(c *VMConfig) { c.Hotplug = &Hotplug{Drives: 3, Nets: 1} }, 3, 1, ""},
		{"explicit zero with QMP", func(c *VMConfig) {
			c.Process.APIChannel = qmp
			c.Hotplug = &Hotplug{}
		}, 0, 0, ""},
		{"disks at the limit", func(c *VMConfig) {
			c.Drives = drives(2)
			c.Hotplug = &Hotplug{Drives: 4}
		}, 4, 0, ""},
		{"disks over the limit", func(c *VMConfig) {
			c.Drives = drives(2)
			c.Hotplug = &Hotplug{Drives: 5}
		}, 5, 0, "hotplug: 5 disk slots with 2 drives: disk number out of range [0, 6] (hot-plugged disks included)"},
		{"negative disks", func(c *VMConfig) { c.Hotplug = &Hotplug{Drives: -1} }, -1, 0,
			"hotplug: -1 disk slots with 0 drives: disk number out of range [0, 6] (hot-plugged disks included)"},
		{"NICs at the limit", func(c *VMConfig) {
			c.Nets = nets(1)
			c.Hotplug = &Hotplug{Nets: 1}
		}, 0, 1, ""},
		{"NICs over the limit", func(c *VMConfig) {
			c.Nets = nets(1)
			c.Hotplug = &Hotplug{Nets: 2}
		}, 0, 2, "hotplug: 2 NIC slots with 1 NICs: NIC number out of range [0, 2] (hot-plugged NICs included)"},
		{"MMIO at the limit", func(c *VMConfig) {
			c.Consoles = consoles(3)
			c.Hotplug = &Hotplug{Drives: 6, Nets: 2}
		}, 6, 2, ""},
		{"MMIO over the limit", func(c *VMConfig) {
			c.Consoles = consoles(4)
			c.Hotplug = &Hotplug{Drives: 6, Nets: 2}
		}, 6, 2, "hotplug: 12 virtio-mmio devices with the hot-plug slots out of range [0, 11] on x86_64"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Boot.Kernel = tempFile(t, "vmlinux")
			tc.mod(&c)
			d, n := c.HotplugSlots()
			if d != tc.wantDrives || n != tc.wantNs {
				t.Errorf("HotplugSlots() = %d, %d; want %d, %d", d, n, tc.wantDrives, tc.wantNs)
			}
			err := c.Validate()
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Validate: %v", err)
			case tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr):
				t.Errorf("Validate: %v\nwant %s", err, tc.wantErr)
			}
			if tc.wantErr == "" && c.Hotplug == nil {
				if total := c.mmioDeviceCount() + d + n; total > MaxMMIODevices || len(c.Drives)+d > MaxDrives || len(c.Nets)+n > MaxNets {
					t.Errorf("default slots break a limit: %d devices, %d disks, %d NICs", total, len(c.Drives)+d, len(c.Nets)+n)
				}
			}
		})
	}
}
