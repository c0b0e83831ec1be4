package shim

import (
	"testing"

	bootapi "github.com/containerd/containerd/api/runtime/bootstrap/v1"
	"google.golang.org/protobuf/proto"

	"github.com/stratovirt-go/stratovirt/agent-proto/agentv1"
)

func TestSerial(t *testing.T) {
	a, b := serial("container-a"), serial("container-b")
	if len(a) != 20 || a == b || serial("container-a") != a {
		t.Fatalf("serials %q %q", a, b)
	}
}

func TestIsBootstrap(t *testing.T) {
	b, _ := proto.Marshal(&bootapi.BootstrapParams{InstanceID: "c1", Namespace: "ns"})
	for _, tc := range []struct {
		in     []byte
		id, ns string
		want   bool
	}{
		{b, "c1", "ns", true},
		{b, "c2", "ns", false},
		{b, "c1", "other", false},
		{nil, "c1", "ns", false},
		{[]byte("\xff\xff"), "c1", "ns", false},
	} {
		if got := IsBootstrap(tc.in, tc.id, tc.ns); got != tc.want {
			t.Errorf("IsBootstrap(%q, %s, %s) = %v", tc.in, tc.id, tc.ns, got)
		}
	}
}

func TestMetrics(t *testing.T) {
	m := Metrics(&agentv1.StatsContainerResponse{
		Cpu:    &agentv1.CPUStats{UsageUsec: 10, NrThrottled: 2},
		Memory: &agentv1.MemoryStats{UsageBytes: 1 << 20, OomKills: 3, Stat: map[string]uint64{"slab": 7}},
		Pids:   &agentv1.PidsStats{Current: 4},
		Io:     &agentv1.IOStats{Devices: []*agentv1.IOEntry{{Major: 254, ReadBytes: 9}}},
	})
	if m.CPU.UsageUsec != 10 || m.CPU.NrThrottled != 2 || m.Memory.Usage != 1<<20 || m.Memory.UsageLimit != ^uint64(0) ||
		m.Memory.Slab != 7 || m.MemoryEvents.OomKill != 3 || m.Pids.Current != 4 || m.Io.Usage[0].Major != 254 || m.Io.Usage[0].Rbytes != 9 {
		t.Fatalf("metrics %+v", m)
	}
	if m := Metrics(&agentv1.StatsContainerResponse{}); m.CPU != nil || m.Memory != nil {
		t.Fatalf("empty stats gave %+v", m)
	}
}

func TestConfigPathFromOptions(t *testing.T) {
	if p, err := configPathFromOptions(nil); p != "" || err != nil {
		t.Fatalf("%q %v", p, err)
	}
}
