package net

import (
	"os"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   series
		want float64
	}{
		{nil, 0},
		{series{3}, 3},
		{series{5, 1, 3}, 3},
		{series{4, 1, 3, 2}, 2.5},
	} {
		if got := c.in.median(); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
	s := series{5, 1, 3}
	s.median()
	if s[0] != 5 {
		t.Error("median sorted its input in place")
	}
	if got := s.minMax(); got != "1.0–5.0" {
		t.Errorf("minMax = %q", got)
	}
}

func TestParseResult(t *testing.T) {
	out := "noise\nRESULT source 33554432 0.500000 67.11\nRESULT rr 200 85.5 60.1 300.2\n"
	v, err := parseResult(out, "source")
	if err != nil || len(v) != 3 || v[0] != 33554432 || v[2] != 67.11 {
		t.Fatalf("source: %v %v", v, err)
	}
	v, err = parseResult(out, "rr")
	if err != nil || len(v) != 4 || v[1] != 85.5 {
		t.Fatalf("rr: %v %v", v, err)
	}
	for _, bad := range []string{"", "BENCHTOOL ERROR dial: refused", "RESULT sink 1 x 2", "RESULT sink 1"} {
		if _, err := parseResult(bad, "sink"); err == nil {
			t.Errorf("parseResult(%q) accepted", bad)
		}
	}
}

func TestTable(t *testing.T) {
	r := results{}
	for _, v := range []float64{100, 120, 110} {
		r.add("ours", "source", v)
		r.add("qemu", "source", 2*v)
	}
	r.add("ours", "rr", 90)
	r.add("qemu", "rr", 60)
	r.add("ours-vh", "rr", 50)
	r.add("qemu-vh", "rr", 100)
	pairs := []pair{{"ours", "qemu", ""}, {"ours-vh", "qemu-vh", ", vhost"}}
	got := table(r, pairs)
	for _, want := range []string{
		"| TCP guest→host (MB/s) | ours | qemu | 110.0 | 220.0 | 0.50 | 3/3 | 100.0–120.0 | 200.0–240.0 |",
		"| TCP host→guest (MB/s) | ours | qemu | 0.0 | 0.0 | - | 0/0 | - | - |",
		"| TCP 1-byte round trip (µs) | ours | qemu | 90.0 | 60.0 | 1.50 | 1/1 |",
		"| TCP 1-byte round trip (µs) | ours-vh | qemu-vh | 50.0 | 100.0 | 0.50 | 1/1 |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	rows := benchRows(r, pairs)
	if len(rows) != 6 {
		t.Fatalf("%d rows, want 6", len(rows))
	}
	if rows[5].Name != "virtio-net TCP 1-byte round trip, vhost" || rows[5].HigherIsBetter {
		t.Errorf("last row %+v", rows[5])
	}
}

func TestFindModule(t *testing.T) {
	dir := t.TempDir()
	dep := "kernel/drivers/virtio/virtio.ko:\nkernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/drivers/virtio/virtio.ko\n"
	if err := os.WriteFile(dir+"/modules.dep", []byte(dep), 0o644); err != nil {
		t.Fatal(err)
	}
	if p, err := findModule(dir, "virtio_net"); err != nil || p != "kernel/drivers/net/virtio_net.ko" {
		t.Errorf("virtio_net: %q %v", p, err)
	}
	if p, err := findModule(dir, "virtio"); err != nil || p != "kernel/drivers/virtio/virtio.ko" {
		t.Errorf("virtio: %q %v", p, err)
	}
	if _, err := findModule(dir, "failover"); err == nil {
		t.Error("failover found (it is only a dependency's prefix)")
	}
}

func TestRounds(t *testing.T) {
	r := results{}
	if n := r.rounds(); n != 0 {
		t.Errorf("empty: %d rounds", n)
	}
	r.add("a", "source", 1)
	r.add("a", "sink", 1)
	r.add("b", "source", 1)
	r.add("a", "source", 2)
	r.add("a", "sink", 2)
	if n := r.rounds(); n != 1 {
		t.Errorf("b has one round: rounds() = %d", n)
	}
	r.add("b", "source", 2)
	if n := r.rounds(); n != 2 {
		t.Errorf("rounds() = %d, want 2", n)
	}
}
