// Package blk benchmarks our virtio-blk against QEMU microvm's
// virtio-blk-device on the same backing file, inside one lab run (or on
// the host when its KVM boots Linux): sequential and random 4 KiB
// read/write throughput and IOPS at queue depth 1, and random-read IOPS
// at queue depth 4, measured in the guest by guestio with O_DIRECT. Both
// sides boot the same kernel and initramfs with 2 vCPUs and 512 MiB and
// serve the same raw file from the host page cache (ours direct=off, QEMU
// cache=writeback), one 256-entry queue, no iothread on either side. Each
// side gets BENCH_RUNS runs (default 2), interleaved QEMU first; rows are
// medians. It prints a Markdown ratio table (ours / QEMU).
//
// A second set of rows reads a slow disk with O_DIRECT (ours direct=on,
// QEMU cache=none, both unchanged otherwise): null_blk completing every
// request 5 ms after it is issued, at queue depth 1, 4 and 16. There the
// VMM's own queue depth shows, as on real disks: a VMM that serves one
// request at a time tops out at 200 IOPS whatever the guest's queue
// depth. BLK_BENCH_SLOW=0 leaves it out; it is skipped where null_blk
// cannot be loaded or is already in use.
//
// It runs only when BLK_BENCH=1 (it takes a few minutes):
//
//	BLK_BENCH=1 go test ./tests/bench/blk/ -v -count=1 -timeout 30m
package blk

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/bench"
	"github.com/stratovirt-go/stratovirt/tests/blk/blktest"
	"github.com/stratovirt-go/stratovirt/tests/lab"
)

var files blktest.Files

func TestMain(m *testing.M) {
	if os.Getenv("BLK_BENCH") == "" {
		// Only the harness's self-checks run; TestBlkBench skips.
		os.Exit(m.Run())
	}
	if f, ok := blktest.FromEnv(); ok {
		files = f
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "blk-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := blktest.Prepare(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "blk bench:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	f.SetEnv()
	files = f
	code := lab.Exec(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

// The workload on a file: 8 MiB sequential each way, 3 s of random I/O
// each way and 3 s of random reads at queue depth 4.
const fileSteps = "bench:/dev/vda:8:3;iops:/dev/vda:3:4"

// The workload on the slow disk (null_blk, see slowDisk): 3 s of random
// reads at queue depth 1, 4 and 16.
const slowSteps = "iops:/dev/vda:3:1;iops:/dev/vda:3:4;iops:/dev/vda:3:16"

func cmdline(steps string) string {
	return "console=ttyS0 reboot=k panic=1 quiet loglevel=4 test.run=" + steps
}

// run boots one VMM and returns the metrics (name → IOPS) it printed.
func run(t *testing.T, name string, args []string) map[string]float64 {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// QEMU may not power off from our init: stop it once the guest is done.
	deadline := time.After(4 * time.Minute)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case <-done:
			break loop
		case <-tick.C:
			if strings.Contains(out.String(), "GUEST DONE") {
				time.Sleep(500 * time.Millisecond)
				cmd.Process.Kill()
				<-done
				break loop
			}
		case <-deadline:
			cmd.Process.Kill()
			<-done
			t.Fatalf("%s did not finish in 4 minutes:\n%s", name, out.String())
		}
	}
	s := out.String()
	if !strings.Contains(s, "GUESTIO OK") {
		t.Fatalf("%s: guest failed:\n%s", name, s)
	}
	m := map[string]float64{}
	for _, x := range regexp.MustCompile(`BENCH (\w+) MiBps=[0-9.]+ IOPS=([0-9.]+)`).FindAllStringSubmatch(s, -1) {
		m[x[1]], _ = strconv.ParseFloat(x[2], 64)
	}
	for _, x := range regexp.MustCompile(`IOPS /dev/vda ([0-9.]+) \(.*queue depth ([0-9]+)\)`).FindAllStringSubmatch(s, -1) {
		m["randread-qd"+x[2]], _ = strconv.ParseFloat(x[1], 64)
	}
	// Printed at once so that progress shows while the lab runs.
	fmt.Printf("%s: %v in %v\n", name, m, time.Since(start).Round(time.Millisecond))
	return m
}

func ours(disk string, direct bool, steps string) []string {
	d := "off"
	if direct {
		d = "on"
	}
	return []string{files.VMM, "-name", "bench", "-kernel", files.Kernel, "-initrd", files.Initrd, "-m", "512M", "-smp", "2",
		"-serial", "stdio", "-drive", "id=d0,file=" + disk + ",direct=" + d, "-append", cmdline(steps)}
}

func qemu(disk string, direct bool, steps string) []string {
	cache := "writeback"
	if direct {
		cache = "none"
	}
	return []string{"qemu-system-x86_64", "-M", "microvm", "-accel", "kvm", "-cpu", "host", "-m", "512M", "-smp", "2",
		"-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", files.Kernel, "-initrd", files.Initrd, "-append", cmdline(steps),
		"-drive", "id=d0,file=" + disk + ",format=raw,if=none,cache=" + cache,
		"-device", "virtio-blk-device,drive=d0"}
}

type metric struct{ key, label string }

var fileMetrics = []metric{
	{"seqread", "sequential read 4 KiB, QD1"},
	{"seqwrite", "sequential write 4 KiB, QD1"},
	{"randread", "random read 4 KiB, QD1"},
	{"randwrite", "random write 4 KiB, QD1"},
	{"randread-qd4", "random read 4 KiB, QD4"},
}

var slowMetrics = []metric{
	{"randread-qd1", "random read 4 KiB, QD1"},
	{"randread-qd4", "random read 4 KiB, QD4"},
	{"randread-qd16", "random read 4 KiB, QD16"},
}

// slowDiskLatency is what each request to the slow disk takes.
const slowDiskLatency = 5 * time.Millisecond

// slowDisk loads null_blk as a 1 GiB memory-backed disk whose every
// request completes slowDiskLatency after it is issued, up to 64 at once:
// a disk where a VMM's queue depth shows, as on real hardware, which the
// page-cached file cannot. It returns the device and how to unload it,
// or why there is none (null_blk already in use, no module).
func slowDisk() (string, func(), error) {
	if _, err := os.Stat("/sys/module/null_blk"); err == nil {
		return "", nil, fmt.Errorf("null_blk is already loaded")
	}
	args := []string{"null_blk", "nr_devices=1", "gb=1", "memory_backed=1", "irqmode=2",
		fmt.Sprintf("completion_nsec=%d", slowDiskLatency.Nanoseconds()), "hw_queue_depth=64"}
	if dir, ver := os.Getenv("LAB_KERNEL_DIR"), os.Getenv("LAB_KERNEL_VERSION"); dir != "" && ver != "" {
		args = append([]string{"-d", dir, "-S", ver}, args...)
	}
	if out, err := exec.Command("modprobe", args...).CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("modprobe %v: %v %s", args, err, out)
	}
	unload := func() { exec.Command("rmmod", "null_blk").Run() }
	dev := "/dev/nullb0"
	for i := 0; i < 50; i++ {
		if _, err := os.Stat(dev); err == nil {
			return dev, unload, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	unload()
	return "", nil, fmt.Errorf("%s did not appear", dev)
}

// runCount is how many runs each side gets: BENCH_RUNS (make bench
// BENCH_RUNS=N exports it), default 2.
func runCount() int {
	if n, err := strconv.Atoi(os.Getenv("BENCH_RUNS")); err == nil && n > 0 {
		return n
	}
	return 2
}

// pairs are the runs finished so far, QEMU's and ours, in step: QEMU's
// run of a pair comes first, so QEMU may be one run ahead.
type pairs struct{ QEMU, Ours []map[string]float64 }

// trim keeps at most n runs a side, with QEMU at most one run ahead.
func (p *pairs) trim(n int) {
	o := min(n, len(p.Ours), len(p.QEMU))
	q := min(n, len(p.QEMU), o+1)
	p.QEMU, p.Ours = p.QEMU[:q], p.Ours[:o]
}

// samples collects one metric over runs.
func samples(runs []map[string]float64, key string) []float64 {
	var v []float64
	for _, m := range runs {
		v = append(v, m[key])
	}
	return v
}

func TestTrim(t *testing.T) {
	r := func(n int) []map[string]float64 { return make([]map[string]float64, n) }
	tests := []struct {
		qemu, ours, n int
		wantQ, wantO  int
	}{
		{0, 0, 3, 0, 0},
		{1, 0, 3, 1, 0}, // ours froze after QEMU's run: keep QEMU's
		{2, 1, 3, 2, 1},
		{2, 2, 3, 2, 2},
		{3, 1, 3, 2, 1}, // never more than one ahead
		{5, 5, 3, 3, 3},
		{4, 3, 3, 3, 3},
		{0, 2, 3, 0, 0},
	}
	for _, tc := range tests {
		p := pairs{QEMU: r(tc.qemu), Ours: r(tc.ours)}
		p.trim(tc.n)
		if len(p.QEMU) != tc.wantQ || len(p.Ours) != tc.wantO {
			t.Errorf("trim(%d) of %d/%d runs: %d/%d, want %d/%d", tc.n, tc.qemu, tc.ours, len(p.QEMU), len(p.Ours), tc.wantQ, tc.wantO)
		}
	}
}

// fileDir is where the file rows' disk goes: BLK_BENCH_DIR if set, else
// tmpfs (/dev/shm), where the shim keeps its container images (its
// work_dir, /run/stratovirt, is tmpfs on common hosts), else the test's
// temporary directory. It returns the directory and its file system's
// type as stat -f names it.
func fileDir(t *testing.T) (string, string) {
	parent := os.Getenv("BLK_BENCH_DIR")
	if parent == "" && fsTypeOf("/dev/shm") == "tmpfs" {
		parent = "/dev/shm"
	}
	dir := t.TempDir()
	if parent != "" {
		d, err := os.MkdirTemp(parent, "blk-bench-")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	return dir, fsTypeOf(dir)
}

func fsTypeOf(path string) string {
	out, err := exec.Command("stat", "-f", "-c", "%T", path).Output()
	if err != nil {
		return "unknown file system"
	}
	return strings.TrimSpace(string(out))
}

func TestBlkBench(t *testing.T) {
	if os.Getenv("BLK_BENCH") == "" {
		t.Skip("set BLK_BENCH=1 to run the virtio-blk benchmark")
	}
	runs := runCount()
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	dir, fsType := fileDir(t)
	disk := filepath.Join(dir, "bench.img")
	if err := os.WriteFile(disk, make([]byte, 256<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	type mode struct {
		name    string
		disk    string
		direct  bool
		steps   string
		metrics []metric
	}
	modes := []mode{{"file on " + fsType + ", host page cache (direct=off / cache=writeback)", disk, false, fileSteps, fileMetrics}}
	if os.Getenv("BLK_BENCH_SLOW") == "0" {
		t.Log("BLK_BENCH_SLOW=0: no slow-disk rows")
	} else if dev, unload, err := slowDisk(); err != nil {
		t.Logf("no slow disk: %v", err)
	} else {
		defer unload()
		name := fmt.Sprintf("null_blk, %v a request, O_DIRECT (direct=on / cache=none)", slowDiskLatency)
		modes = append(modes, mode{name, dev, true, slowSteps, slowMetrics})
	}
	if os.Getenv("BLK_BENCH_DIRECT") == "" {
		t.Log("set BLK_BENCH_DIRECT=1 to also compare O_DIRECT on a loop device")
	} else if out, err := exec.Command("losetup", "-f", "--show", disk).CombinedOutput(); err == nil {
		loop := strings.TrimSpace(string(out))
		defer exec.Command("losetup", "-d", loop).Run()
		modes = append(modes, mode{"loop block device, O_DIRECT (direct=on / cache=none)", loop, true, fileSteps, fileMetrics})
	} else {
		t.Logf("no loop device: %v %s", err, out)
	}
	where, _ := lab.Where()
	var table strings.Builder
	var rows []bench.Row
	fmt.Fprintf(&table, "\nvirtio-blk, stratovirt-go vs QEMU %s microvm (guest: Debian cloud kernel, 2 vCPUs, 512 MiB; measured on: %s)\n", qemuVersion(), where)
	for _, md := range modes {
		// Interleave the runs (QEMU first) so neither VMM always runs on a
		// warm cache or in a quiet moment of the host.
		// Each finished run is saved (bench.SaveRuns): after a lab
		// freeze the group goes on from there in a fresh lab, without
		// running again the QEMU half of a pair whose second half froze.
		var saved pairs
		key := "blk " + md.name
		if ok, err := bench.LoadRuns(key, &saved); err != nil {
			t.Fatal(err)
		} else if ok {
			saved.trim(runs)
			t.Logf("%s: %d runs each saved by an earlier lab", md.name, len(saved.Ours))
		}
		qs, os_ := saved.QEMU, saved.Ours
		for i := len(os_); i < runs; i++ {
			if len(qs) == i {
				qs = append(qs, run(t, fmt.Sprintf("qemu (%d/%d) %s", i+1, runs, md.name), qemu(md.disk, md.direct, md.steps)))
				if err := bench.SaveRuns(key, pairs{QEMU: qs, Ours: os_}); err != nil {
					t.Fatal(err)
				}
			}
			os_ = append(os_, run(t, fmt.Sprintf("stratovirt (%d/%d) %s", i+1, runs, md.name), ours(md.disk, md.direct, md.steps)))
			if err := bench.SaveRuns(key, pairs{QEMU: qs, Ours: os_}); err != nil {
				t.Fatal(err)
			}
		}
		fmt.Fprintf(&table, "\n%s (median of %d runs each)\n\n| workload | stratovirt-go IOPS | QEMU IOPS | ratio |\n|---|---:|---:|---:|\n", md.name, runs)
		for _, m := range md.metrics {
			o, q := samples(os_, m.key), samples(qs, m.key)
			a, b := bench.Summarize("", o).Median, bench.Summarize("", q).Median
			ratio := 0.0
			if b > 0 {
				ratio = a / b
			}
			fmt.Fprintf(&table, "| %s | %.0f (%.2f MiB/s) | %.0f (%.2f MiB/s) | %.2f |\n", m.label, a, a*4096/(1<<20), b, b*4096/(1<<20), ratio)
			r := bench.NewRow("virtio-blk "+m.label+", "+md.name, "IOPS", o, "qemu microvm", q)
			r.HigherIsBetter = true
			rows = append(rows, r)
		}
	}
	if err := bench.EmitRows(rows); err != nil {
		t.Error(err)
	}
	fmt.Println(table.String())
	t.Log(table.String())
}

func qemuVersion() string {
	out, err := exec.Command("qemu-system-x86_64", "--version").Output()
	if err != nil {
		return "?"
	}
	f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0])
	if len(f) >= 4 {
		return f[3]
	}
	return "?"
}
