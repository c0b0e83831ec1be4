package shim

import (
	"testing"

	shimconfig "github.com/stratovirt-go/stratovirt/runtime/config"
	vmconfig "github.com/stratovirt-go/stratovirt/vmm/config"
)

func TestNetVhostType(t *testing.T) {
	for _, c := range []struct {
		backend   string
		available bool
		want      string
	}{
		{shimconfig.NetAuto, true, vmconfig.NetVhostKernel},
		{shimconfig.NetAuto, false, ""},
		{shimconfig.NetVhost, false, vmconfig.NetVhostKernel}, // the VMM then fails with a clear error
		{shimconfig.NetVhost, true, vmconfig.NetVhostKernel},
		{shimconfig.NetUserspace, true, ""},
	} {
		probed := false
		got := netVhostType(c.backend, func() bool { probed = true; return c.available })
		if got != c.want {
			t.Errorf("netVhostType(%q, available %v) = %q, want %q", c.backend, c.available, got, c.want)
		}
		if probed != (c.backend == shimconfig.NetAuto) {
			t.Errorf("backend %q: probed /dev/vhost-net = %v", c.backend, probed)
		}
	}
}
