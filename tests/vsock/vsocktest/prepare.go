// Package vsocktest builds what the vsock lab tests and benchmark boot
// (stratovirt, the static guest peer and the initramfs) and holds the
// host-side helpers they share: starting a VMM and waiting for the peer,
// echo transfers checked by SHA-256 and the peer's control commands.
package vsocktest

import (
	_ "embed"

	"github.com/stratovirt-go/stratovirt/tests/lab"
)

//go:embed init.sh
var initScript string

// guestModules are what init.sh loads (lab.GuestInitramfs adds their
// dependencies).
var guestModules = []string{"virtio_mmio", "vmw_vsock_virtio_transport", "virtio_balloon"}

// Files are what Prepare built on the host.
type Files struct {
	VMM, Initrd, Kernel string
}

// envPrefix names the variables under which Files travel to the test
// binary in the lab.
const envPrefix = "VSOCK_TEST_"

// FromEnv returns the Files exported by SetEnv, or ok false on the host.
func FromEnv() (Files, bool) {
	g, ok := lab.GuestFilesFromEnv(envPrefix)
	return Files{VMM: g.VMM, Initrd: g.Initrd, Kernel: g.Kernel}, ok
}

// SetEnv exports f for the test binary re-run in the lab.
func (f Files) SetEnv() {
	lab.GuestFiles{VMM: f.VMM, Initrd: f.Initrd, Kernel: f.Kernel}.SetEnv(envPrefix)
}

// Prepare builds stratovirt and the guest peer and writes the initramfs
// into dir.
func Prepare(dir string) (Files, error) {
	g, err := lab.PrepareGuest(dir, initScript, guestModules, "./tests/vsock/vsockpeer")
	return Files{VMM: g.VMM, Initrd: g.Initrd, Kernel: g.Kernel}, err
}
