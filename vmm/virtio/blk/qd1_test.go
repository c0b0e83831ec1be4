package blk

import (
	"testing"
	"time"

	vt "github.com/stratovirt-go/stratovirt/vmm/virtio/virtiotest"
)

// TestRateLimitQD1 measures a queue-depth-1 client against iops=200: the
// average over 2 s must be within 10% of 200 (plus the 100 ms burst).
func TestRateLimitQD1(t *testing.T) {
	if testing.Short() {
		t.Skip("2 s measurement")
	}
	r := newRig(t, Config{ID: "d", IOPS: 200}, make([]byte, 1<<20), 0)
	hdr := r.header(TypeIn, 0)
	data, st := r.drv.Alloc(4096, 4096), r.drv.Alloc(1, 1)
	const d = 2 * time.Second
	n := 0
	start := time.Now()
	for time.Since(start) < d {
		r.drv.AddChain(vt.Buf{Addr: hdr, Len: 16}, vt.Buf{Addr: data, Len: 4096, Write: true}, vt.Buf{Addr: st, Len: 1, Write: true})
		r.wait(1)
		n++
	}
	rate := float64(n) / time.Since(start).Seconds()
	t.Logf("%d requests in %v: %.1f IOPS", n, time.Since(start), rate)
	if rate < 180 || rate > 230 {
		t.Errorf("QD1 client at iops=200 got %.1f IOPS", rate)
	}
}
