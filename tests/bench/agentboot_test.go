package bench

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/agent-proto/stream"
)

func TestBreakdown(t *testing.T) {
	at := func(ms int) time.Duration { return time.Duration(ms) * time.Millisecond }
	lines := []consoleLine{
		{at(900), "[    0.000000] Linux version 6.1.0"},
		{at(700 + 50), "[    0.050000] Command line: console=ttyS0"}, // the smallest host-printk gap: 700
		{at(1000), "[    0.200000] Trying to unpack rootfs image as initramfs..."},
		{at(1200), "[    0.450000] Freeing initrd memory: 18220K"},
		{at(1300), "[    0.600000] Run /init as init process"},
		{at(1400), `time="2025-01-01T00:00:00Z" level=debug msg="module /lib/modules/x/virtio.ko loaded"`},
		{at(1500), `time="2025-01-01T00:00:00Z" level=debug msg="module /lib/modules/x/vsock.ko loaded"`},
		{at(1600), stream.ReadyLine + " (kernel clock at start 600 ms, now 1000 ms)"},
	}
	b := Breakdown(lines, at(1650))
	want := BootBreakdown{PreKernel: 700, UnpackStart: 200, UnpackEnd: 450, RunInit: 600, AgentLog: 1400, ModulesDone: 1500, Serving: 1600, Ready: 1650}
	if b != want {
		t.Fatalf("got %+v\nwant %+v", b, want)
	}
	if s := b.String(); s == "" {
		t.Fatal("empty summary")
	}
}

func TestSummarize(t *testing.T) {
	s := Summarize("x", []float64{5, 1, 3, 2})
	if s.Median != 2.5 || s.Min != 1 || s.Max != 5 || s.Runs != 4 {
		t.Fatalf("%+v", s)
	}
	r := NewRow("r", "ms", []float64{2}, "p", []float64{4})
	if r.Ratio != 0.5 {
		t.Fatalf("ratio %v", r.Ratio)
	}
}

func TestAgentClock(t *testing.T) {
	lines := []consoleLine{
		{0, `time="2025-01-01T00:00:00Z" level=info msg="root is the initramfs: runc create --no-pivot"`},
		{0, `time="2025-01-01T00:00:00Z" level=info msg="stratovirt-agent v serving on vsock://1024 and vsock://1025 (pid 1; kernel clock at start 1 ms, now 2 ms)"`},
		{0, stream.ReadyLine + " (kernel clock at start 812 ms, now 1034 ms)"},
	}
	c, ok := ParseAgentClock(lines)
	if !ok || c.Start != 812 || c.Serving != 1034 {
		t.Fatalf("got %+v, %v", c, ok)
	}
	if _, ok := ParseAgentClock(lines[:2]); ok {
		t.Fatal("took a clock from outside the ready line")
	}
	c.Ready = 1500
	c2 := AgentClock{Start: 900, Serving: 1100, Ready: 1700}
	want := "medians of 2: kernel start to /init 856 ms, /init to agent serving 211 ms, the rest (VMM, load, pre-clock boot, connect) 533 ms"
	if got := ClockNote([]AgentClock{c, c2}); got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if ClockNote(nil) != "" {
		t.Fatal("a note without boots")
	}
}

// A report read back from its results.json keeps its rows and the groups
// that ended, which cmd/bench resumes after when a lab freezes.
func TestReadReport(t *testing.T) {
	dir := t.TempDir()
	want := &Report{Generated: time.Unix(1700000000, 0).UTC(), Where: "here",
		Rows: []Row{NewRow("boot", "ms", []float64{1, 2, 3}, "qemu", []float64{2, 4})}, Groups: []string{"boot"}}
	if err := want.Write(dir); err != nil {
		t.Fatal(err)
	}
	got, err := ReadReport(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("read back %+v, want %+v", got, want)
	}
	if _, err := ReadReport(t.TempDir()); err == nil {
		t.Fatal("no results.json: no error")
	}
}

func TestSaveRuns(t *testing.T) {
	type runs struct{ A, B []float64 }
	t.Setenv(EnvRunsFile, "")
	if err := SaveRuns("x", runs{A: []float64{1}}); err != nil {
		t.Fatalf("SaveRuns without %s: %v", EnvRunsFile, err)
	}
	var got runs
	if ok, err := LoadRuns("x", &got); ok || err != nil {
		t.Fatalf("LoadRuns without %s = %v, %v; want nothing kept", EnvRunsFile, ok, err)
	}
	t.Setenv(EnvRunsFile, filepath.Join(t.TempDir(), "runs.json"))
	if ok, err := LoadRuns("x", &got); ok || err != nil {
		t.Fatalf("LoadRuns before any save = %v, %v", ok, err)
	}
	want := map[string]runs{"x": {A: []float64{1, 2}, B: []float64{3, 4}}, "y": {A: []float64{5}}}
	for _, k := range []string{"x", "y"} {
		if err := SaveRuns(k, runs{A: want[k].A[:1]}); err != nil {
			t.Fatal(err)
		}
		if err := SaveRuns(k, want[k]); err != nil { // replaces the first save
			t.Fatal(err)
		}
	}
	for k, w := range want {
		var r runs
		if ok, err := LoadRuns(k, &r); !ok || err != nil || !reflect.DeepEqual(r, w) {
			t.Errorf("LoadRuns(%q) = %+v, %v, %v; want %+v", k, r, ok, err, w)
		}
	}
	if ok, err := LoadRuns("z", &got); ok || err != nil {
		t.Errorf("LoadRuns of an unsaved key = %v, %v", ok, err)
	}
}
