package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// TestPool: rows of the same name pool their samples in the reports'
// order and keep rounds paired only where every run had them paired;
// rows that differ in what they measure are refused.
func TestPool(t *testing.T) {
	// A drifting lab, ours 10% ahead in every round, split over two runs.
	var ours, peer []float64
	for i, speed := range []float64{3, 9, 5, 14, 7, 4, 11, 6} {
		ours, peer = append(ours, speed*1.1+float64(i%2)*0.01), append(peer, speed)
	}
	a := &Report{Generated: time.Unix(100, 0), Where: "lab", Rows: []Row{
		NewRow("echo", "MiB/s", ours[:5], "qemu", peer[:5]),
		NewRow("skewed", "ms", ours[:4], "runc", peer[:5]),
		NewRow("only in a", "MiB", []float64{1, 2, 3}, "", nil),
	}}
	b := &Report{Generated: time.Unix(200, 0), Where: "lab", Rows: []Row{
		NewRow("skewed", "ms", ours[4:], "runc", peer[5:]),
		NewRow("echo", "MiB/s", ours[5:], "qemu", peer[5:]),
		NewRow("only in b", "ms", []float64{4, 5, 6}, "qemu", []float64{5, 6, 7}),
	}}
	for i := range a.Rows {
		a.Rows[i].HigherIsBetter = a.Rows[i].Unit == "MiB/s"
	}
	b.Rows[1].HigherIsBetter = true
	p, err := Pool([]*Report{a, b})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, r := range p.Rows {
		names = append(names, r.Name)
	}
	if want := []string{"echo", "skewed", "only in a", "only in b"}; !slices.Equal(names, want) {
		t.Fatalf("rows %q, want %q", names, want)
	}
	if !p.Generated.Equal(time.Unix(200, 0)) || p.Where != "pooled: lab" {
		t.Errorf("generated %v, where %q", p.Generated, p.Where)
	}

	echo := p.Rows[0]
	if !slices.Equal(echo.Ours.Samples, ours) || !slices.Equal(echo.Peer.Samples, peer) || !echo.HigherIsBetter {
		t.Fatalf("echo: ours %v, peer %v, higher %v", echo.Ours.Samples, echo.Peer.Samples, echo.HigherIsBetter)
	}
	lo, hi, _ := ratioCI(ours, peer, true)
	if echo.RatioCI90 == nil || echo.RatioCI90[0] != lo || echo.RatioCI90[1] != hi || lo <= 1 {
		t.Errorf("echo: interval %v, want the paired [%v, %v] above 1", echo.RatioCI90, lo, hi)
	}
	if echo.Note != "pooled from 2 of 2 runs (samples 5 + 3)" {
		t.Errorf("echo: note %q", echo.Note)
	}

	// 4/5 then 4/3: 8 a side in all, but no run had its rounds paired.
	skewed := p.Rows[1]
	lo, hi, _ = ratioCI(skewed.Ours.Samples, skewed.Peer.Samples, false)
	if skewed.RatioCI90 == nil || skewed.RatioCI90[0] != lo || skewed.RatioCI90[1] != hi {
		t.Errorf("skewed: interval %v, want the unpaired [%v, %v]", skewed.RatioCI90, lo, hi)
	}
	if pl, ph, _ := ratioCI(skewed.Ours.Samples, skewed.Peer.Samples, true); pl == lo && ph == hi {
		t.Errorf("skewed: the unpaired interval equals the paired one, the test tells nothing")
	}
	if !strings.Contains(skewed.Note, "samples 4/5 + 4/3") || !strings.Contains(skewed.Note, "not paired") {
		t.Errorf("skewed: note %q", skewed.Note)
	}

	if r := p.Rows[2]; r.Peer != nil || r.Note != "pooled from 1 of 2 runs (samples 3)" || r.Ours.Median != 2 {
		t.Errorf("only in a: %+v", r)
	}

	for _, bad := range []Row{
		NewRow("echo", "MB/s", ours, "qemu", peer),
		NewRow("echo", "MiB/s", ours, "firecracker", peer),
		NewRow("echo", "MiB/s", ours, "", nil),
	} {
		bad.HigherIsBetter = true
		if _, err := Pool([]*Report{a, {Rows: []Row{bad}}}); err == nil {
			t.Errorf("pooled %q with unit %q and peer %v", bad.Name, bad.Unit, bad.Peer)
		}
	}
	// The direction counts as well.
	if _, err := Pool([]*Report{a, {Rows: []Row{NewRow("echo", "MiB/s", ours, "qemu", peer)}}}); err == nil {
		t.Error("pooled rows of opposite directions")
	}
}
