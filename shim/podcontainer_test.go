package shim

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

func TestReserveDiskSlots(t *testing.T) {
	dir := t.TempDir()
	kernel, disk := filepath.Join(dir, "vmlinux"), filepath.Join(dir, "rootfs.img")
	for _, f := range []string{kernel, disk} {
		if err := os.WriteFile(f, make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct{ drives, nets, want int }{
		{1, 0, 5}, {1, 1, 5}, {1, 2, 5}, {3, 0, 3}, {6, 0, 0},
	} {
		c := vmconfig.Default()
		c.Boot.Kernel = kernel
		for i := range tc.drives {
			c.Drives = append(c.Drives, vmconfig.DefaultDrive("d"+strconv.Itoa(i), disk))
		}
		for i := range tc.nets {
			c.Nets = append(c.Nets, vmconfig.Net{ID: "n" + strconv.Itoa(i), TapFD: 3 + i, MAC: "02:00:00:00:00:0" + strconv.Itoa(i)})
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("%+v: base config: %v", tc, err)
		}
		got := reserveDiskSlots(&c)
		if got != tc.want || c.Hotplug == nil || c.Hotplug.Drives != got || c.Hotplug.Nets != 0 {
			t.Errorf("%+v: %d slots (hotplug %+v), want %d", tc, got, c.Hotplug, tc.want)
		}
		if c.Vsock != nil {
			t.Errorf("%+v: the probe's vsock leaked into the config", tc)
		}
	}
}

func TestPlugSerial(t *testing.T) {
	seen := map[string]bool{}
	for _, id := range []string{"a", "b", "a-very-long-container-id-0123456789abcdef0123456789abcdef"} {
		for n := uint64(1); n <= 3; n++ {
			s := plugSerial(id, n)
			if len(s) > vmconfig.MaxSerialLen || len(s) == 0 {
				t.Errorf("plugSerial(%q, %d) = %q: bad length", id, n, s)
			}
			if seen[s] || s == serial(id) {
				t.Errorf("plugSerial(%q, %d) = %q: not unique", id, n, s)
			}
			seen[s] = true
		}
	}
}
