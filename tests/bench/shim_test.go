package bench

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseBusy(t *testing.T) {
	for _, tc := range []struct {
		name, stat string
		want       time.Duration
		err        bool
	}{
		// user nice system idle iowait irq softirq steal guest guest_nice:
		// busy is everything but idle and iowait (guest is inside user).
		{"kernel 6.x", "cpu  100 2 30 5000 40 5 6 7 50 0\ncpu0 50 1 15 2500 20 2 3 3 25 0\n", 150 * 10 * time.Millisecond, false},
		{"eight fields", "cpu 1 0 0 9 0 0 0 1\n", 2 * 10 * time.Millisecond, false},
		{"per-CPU line first", "cpu0 1 2 3 4 5 6 7 8\n", 0, true},
		{"too few fields", "cpu 1 2 3 4 5 6 7\n", 0, true},
		{"not a number", "cpu 1 2 x 4 5 6 7 8\n", 0, true},
		{"empty", "", 0, true},
	} {
		got, err := parseBusy(tc.stat)
		if (err != nil) != tc.err || got != tc.want {
			t.Errorf("%s: %v, %v; want %v (error %v)", tc.name, got, err, tc.want, tc.err)
		}
	}
	if b, err := hostBusy(); err != nil || b <= 0 {
		t.Errorf("hostBusy on this machine: %v, %v", b, err)
	}
}

func TestParseProcCPU(t *testing.T) {
	// 52 fields, the command name with a space and a parenthesis; utime
	// 300, stime 100, guest_time 250 ticks.
	fields := make([]string, 0, 50)
	for i := 3; i <= 52; i++ {
		v := "0"
		switch i {
		case 3:
			v = "S"
		case 14:
			v = "300"
		case 15:
			v = "100"
		case 43:
			v = "250"
		}
		fields = append(fields, v)
	}
	line := "1234 (CPU 0/KVM) x) " + strings.Join(fields, " ") + "\n"
	total, guest, err := parseProcCPU(line)
	if err != nil || total != 4*time.Second || guest != 2500*time.Millisecond {
		t.Errorf("parseProcCPU: %v, %v, %v; want 4s, 2.5s", total, guest, err)
	}
	for _, bad := range []string{"", "1234 (x) S 1 2 3", strings.Replace(line, " 300 ", " x ", 1)} {
		if _, _, err := parseProcCPU(bad); err == nil {
			t.Errorf("parseProcCPU(%q) took it", bad)
		}
	}
	if total, _, err := ProcCPU(os.Getpid()); err != nil || total < 0 {
		t.Errorf("ProcCPU(self): %v, %v", total, err)
	}
}

// TestMarkdownZeroPeer: a peer median of 0 (runc's idle CPU) prints no
// ratio; any other prints ours/peer.
func TestMarkdownZeroPeer(t *testing.T) {
	r := &Report{Rows: []Row{
		NewRow("idle cpu", "% of a CPU", []float64{5.9}, "runc", []float64{0}),
		NewRow("idle cpu, tiny peer", "% of a CPU", []float64{0.44}, "runc", []float64{0.0000075}),
		NewRow("boot", "ms", []float64{3}, "qemu", []float64{6}),
	}}
	var b strings.Builder
	if err := r.Markdown(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if !strings.Contains(out, "| idle cpu | % of a CPU | 5.90 | runc | 0 | — |") || !strings.Contains(out, "| 0.50× |") ||
		!strings.Contains(out, "| idle cpu, tiny peer | % of a CPU | 0.44 | runc | 0 | — |") {
		t.Errorf("markdown:\n%s", out)
	}
}

// TestRatioCI: the interval holds the ratio, excludes 1 where the sides
// are far apart, holds it where they are drawn alike, pairs rounds when
// both sides have one sample each, and is the same on every call.
func TestRatioCI(t *testing.T) {
	slow := []float64{10, 11, 9, 10.5, 9.5, 10.2, 9.8, 10.1}
	fast := []float64{20, 22, 18, 21, 19, 20.4, 19.6, 20.2}
	lo, hi, ok := ratioCI(fast, slow, true)
	if !ok || lo > 2 || hi < 2 || lo <= 1 {
		t.Errorf("fast/slow: [%v, %v] %v, want around 2 and above 1", lo, hi, ok)
	}
	if lo2, hi2, _ := ratioCI(fast, slow, true); lo2 != lo || hi2 != hi {
		t.Errorf("not reproducible: [%v, %v] then [%v, %v]", lo, hi, lo2, hi2)
	}
	// Both sides from the same spread: parity cannot be ruled out.
	a := []float64{5, 9, 14, 7, 11, 6, 13, 8}
	b := []float64{12, 6, 8, 13, 5, 10, 7, 9}
	if lo, hi, ok := ratioCI(a, b, true); !ok || lo > 1 || hi < 1 {
		t.Errorf("alike: [%v, %v] %v, want an interval holding 1", lo, hi, ok)
	}
	// A lab whose speed drifts: each round's pair moves together, ours
	// 10% ahead in every round. Paired, the interval stays near 1.1 and
	// above 1; the medians alone could not tell.
	var ours, peer []float64
	for i, speed := range []float64{3, 9, 5, 14, 7, 4, 11, 6} {
		ours, peer = append(ours, speed*1.1+float64(i%2)*0.01), append(peer, speed)
	}
	if lo, hi, ok := ratioCI(ours, peer, true); !ok || lo <= 1 || hi < 1.1 || lo > 1.1 {
		t.Errorf("drifting lab, paired: [%v, %v] %v, want above 1 around 1.1", lo, hi, ok)
	}
	if lo, hi, ok := ratioCI(ours, peer[:7], true); !ok || lo > 1 {
		t.Errorf("drifting lab, unpaired: [%v, %v] %v, want an interval holding 1", lo, hi, ok)
	}
	for _, tc := range []struct{ ours, peer []float64 }{
		{[]float64{1, 2}, []float64{1, 2, 3}},
		{[]float64{1, 2, 3}, []float64{0, 0, 0}},
	} {
		if _, _, ok := ratioCI(tc.ours, tc.peer, true); ok {
			t.Errorf("ratioCI(%v, %v) gave an interval", tc.ours, tc.peer)
		}
	}
	r := NewRow("x", "MB/s", fast, "peer", slow)
	if r.RatioCI90 == nil || r.RatioCI90[0] != lo {
		t.Errorf("NewRow: interval %v", r.RatioCI90)
	}
	var md strings.Builder
	if err := (&Report{Rows: []Row{r}}).Markdown(&md); err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("| %.2f× | %.2f–%.2f |", r.Ratio, lo, hi); !strings.Contains(md.String(), want) {
		t.Errorf("markdown lacks %q:\n%s", want, md.String())
	}
}

func TestParseSetting(t *testing.T) {
	for _, c := range []struct {
		in, section, key, value string
		err                     bool
	}{
		{in: "hypervisor.kernel_params=-- -prefault=false", section: "hypervisor", key: "kernel_params", value: "-- -prefault=false"},
		{in: "hypervisor.kernel=/tmp/k/vmlinux", section: "hypervisor", key: "kernel", value: "/tmp/k/vmlinux"},
		{in: "runtime.rootfs_cache_dir=", section: "runtime", key: "rootfs_cache_dir", value: ""},
		{in: "hypervisor.kernel_params=a=b", section: "hypervisor", key: "kernel_params", value: "a=b"},
		{in: "kernel=/k", err: true},
		{in: "hypervisor.kernel", err: true},
		{in: ".kernel=/k", err: true},
		{in: "hypervisor.=/k", err: true},
		{in: "hyper visor.kernel=/k", err: true},
		{in: "[hypervisor].kernel=/k", err: true},
	} {
		section, key, value, err := ParseSetting(c.in)
		if c.err {
			if err == nil {
				t.Errorf("%q: got %q %q %q, want an error", c.in, section, key, value)
			}
			continue
		}
		if err != nil || section != c.section || key != c.key || value != c.value {
			t.Errorf("%q: got %q %q %q %v, want %q %q %q", c.in, section, key, value, err, c.section, c.key, c.value)
		}
	}
}
