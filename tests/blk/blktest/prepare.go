package blktest

import (
	_ "embed"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

//go:embed init.sh
var initScript string

// Modules are the guest kernel modules the initramfs loads (lab.GuestInitramfs
// adds their dependencies).
var Modules = []string{"virtio_mmio", "virtio_blk"}

// Files are what Prepare built on the host.
type Files struct {
	VMM    string // cmd/stratovirt
	Initrd string // busybox + modules + guestio; init runs test.run=
	Kernel string // Debian cloud bzImage
}

// envPrefix names the variables under which Files travel to the test
// binary in the lab.
const envPrefix = "BLK_TEST_"

// FromEnv returns the Files exported by SetEnv, or ok false.
func FromEnv() (Files, bool) {
	g, ok := lab.GuestFilesFromEnv(envPrefix)
	return Files{VMM: g.VMM, Initrd: g.Initrd, Kernel: g.Kernel}, ok
}

// SetEnv exports f for the re-executed test binary.
func (f Files) SetEnv() {
	lab.GuestFiles{VMM: f.VMM, Initrd: f.Initrd, Kernel: f.Kernel}.SetEnv(envPrefix)
}

// Prepare builds stratovirt and guestio and writes the initramfs into dir.
func Prepare(dir string) (Files, error) {
	g, err := lab.PrepareGuest(dir, initScript, Modules, "./tests/blk/guestio")
	return Files{VMM: g.VMM, Initrd: g.Initrd, Kernel: g.Kernel}, err
}
