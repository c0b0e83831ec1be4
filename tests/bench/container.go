package bench

import (
	"fmt"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/ctrd"
)

// ContainerRows measures container start and teardown end to end: the wall
// time of `ctr run --rm <image> <id> true` through the stratovirt shim (a
// microVM per container) and through io.containerd.runc.v2, alternating,
// on the same containerd d (with ctrd.Image imported).
func ContainerRows(d *ctrd.Daemon, runs int) ([]Row, error) {
	var ours, peer []float64
	run := func(runtime, id string) (float64, error) {
		t0 := time.Now()
		out, err := d.Ctr(5*time.Minute, "", "run", "--rm", "--runtime", runtime, ctrd.Image, id, "true")
		ms := float64(time.Since(t0).Microseconds()) / 1000
		if err != nil {
			return 0, fmt.Errorf("ctr run --runtime %s: %v: %s", runtime, err, out)
		}
		return ms, nil
	}
	for i := 0; i < runs; i++ {
		ms, err := run(ctrd.Runtime, fmt.Sprintf("bench-sv-%d", i))
		if err != nil {
			return nil, err
		}
		ours = append(ours, ms)
		if ms, err = run("io.containerd.runc.v2", fmt.Sprintf("bench-runc-%d", i)); err != nil {
			return nil, err
		}
		peer = append(peer, ms)
	}
	r := NewRow("container start+stop: ctr run --rm true (wall), 1 vCPU, 256 MiB", "ms", ours, "runc (io.containerd.runc.v2)", peer)
	r.Note = "containerd 2.4.2; ours boots a microVM per container"
	return []Row{r}, nil
}
