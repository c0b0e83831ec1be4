// Package vsock benchmarks vsock throughput between the host and the
// guest: our device with the vhost backend and with the userspace unix
// backend against QEMU microvm's vhost-vsock-device, inside one lab run
// (or on the host when its KVM boots Linux). The guest runs the static
// peer of tests/vsock; the workloads are a 32 MiB echo started by the
// host, the same started by the guest, and 32 parallel 1 MiB echoes. The
// three guests run at once and take turns, the others stopped, for
// VSOCK_BENCH_RUNS (else BENCH_RUNS, else 3) rounds; in each round every
// workload runs on each VMM in turn. It prints a Markdown
// table of the medians and their ratios.
//
// It runs only when VSOCK_BENCH=1 (it takes a few minutes):
//
//	VSOCK_BENCH=1 go test ./tests/bench/vsock/ -v -count=1 -timeout 30m
package vsock

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mdvsock "github.com/mdlayher/vsock"

	"github.com/stratovirt-go/stratovirt/tests/bench"
	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/tests/vsock/vsocktest"
	"github.com/stratovirt-go/stratovirt/vmm/vsockdial"
)

var bin vsocktest.Files

func TestMain(m *testing.M) {
	if os.Getenv("VSOCK_BENCH") == "" {
		fmt.Println("vsock benchmark: set VSOCK_BENCH=1 to run it")
		os.Exit(0)
	}
	if f, ok := vsocktest.FromEnv(); ok {
		bin = f
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "vsock-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := vsocktest.Prepare(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vsock bench:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	f.SetEnv()
	bin = f
	code := lab.Exec(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	large = 32 << 20
	conns = 32
	each  = 1 << 20
)

// result is MiB/s per workload.
type result map[string]float64

var workloads = []struct{ key, label string }{
	{"h2g", "host-initiated echo, 32 MiB"},
	{"g2h", "guest-initiated echo, 32 MiB"},
	{"par", "32 parallel host-initiated echoes of 1 MiB"},
}

// vmm is one VMM under test, running its guest for the whole benchmark.
type vmm struct {
	name   string
	vm     *vsocktest.VM
	target vsockdial.Target
	// kvm: the VM's KVM exit counters over its measured rounds; sw: the
	// VMM's context switches by thread name (bench.ThreadSwitches).
	kvm, sw map[string]int64
}

// measure runs workload key once against v's guest and returns its
// MiB/s; the VM's KVM exits and the VMM's context switches during it are
// added to v.kvm and v.sw.
func (v *vmm) measure(t *testing.T, key string) float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	k0 := bench.KVMStats(v.vm.Cmd.Process.Pid, bench.KVMExitCounters)
	sw0 := bench.ThreadSwitches(v.vm.Cmd.Process.Pid)
	start := time.Now()
	var moved int
	switch key {
	case "h2g":
		moved = large
		if err := vsocktest.EchoTransfer(ctx, v.target, 1, large); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
	case "g2h":
		moved = large
		if rep := vsocktest.Control(t, v.target, fmt.Sprintf("connect %d 1 %d", vsocktest.HostPort, large), 5*time.Minute); !strings.HasPrefix(rep, "OK") {
			t.Fatalf("%s: guest-initiated: %s", v.name, rep)
		}
	case "par":
		moved = conns * each
		errs := make(chan error, conns)
		for i := range conns {
			go func() { errs <- vsocktest.EchoTransfer(ctx, v.target, i+2, each) }()
		}
		for range conns {
			if err := <-errs; err != nil {
				t.Fatalf("%s: %v", v.name, err)
			}
		}
	default:
		t.Fatalf("unknown workload %q", key)
	}
	mibs := float64(moved) / (1 << 20) / time.Since(start).Seconds()
	bench.AddStatsDiff(v.kvm, k0, bench.KVMStats(v.vm.Cmd.Process.Pid, bench.KVMExitCounters))
	bench.AddStatsDiff(v.sw, sw0, bench.ThreadSwitches(v.vm.Cmd.Process.Pid))
	return mibs
}

// start boots v's guest and warms it up (which also waits for it to
// answer).
func (v *vmm) start(t *testing.T, args []string) {
	t.Helper()
	v.vm = vsocktest.Start(t, args)
	v.kvm, v.sw = map[string]int64{}, map[string]int64{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := vsocktest.EchoTransfer(ctx, v.target, 0, 1<<20); err != nil {
		t.Fatalf("%s: warm-up: %v", v.name, err)
	}
}

// runCount is how many rounds each VMM gets: VSOCK_BENCH_RUNS, else
// BENCH_RUNS (make bench BENCH_RUNS=N exports it), else 3.
func runCount() int {
	for _, e := range []string{"VSOCK_BENCH_RUNS", "BENCH_RUNS"} {
		if n, err := strconv.Atoi(os.Getenv(e)); err == nil && n > 0 {
			return n
		}
	}
	return 3
}

func TestVsockBench(t *testing.T) {
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		t.Skip("qemu-system-x86_64 not installed")
	}
	if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
		t.Skip("no /dev/vhost-vsock")
	}
	// Guest-initiated connections arrive here: AF_VSOCK for vhost
	// (ours and QEMU's), a unix socket for our userspace backend.
	vl, err := mdvsock.Listen(vsocktest.HostPort, nil)
	if err != nil {
		t.Skipf("host AF_VSOCK listen: %v", err)
	}
	defer vl.Close()
	go vsocktest.EchoServer(vl)
	uds := filepath.Join(t.TempDir(), "v.sock")
	ul, err := net.Listen("unix", fmt.Sprintf("%s_%d", uds, vsocktest.HostPort))
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go vsocktest.EchoServer(ul)

	// The three guests run at once (each with its own CID); only one
	// transfers at a time, in an order that rotates every round, with the
	// other VMMs stopped (SIGSTOP).
	vmms := []*vmm{
		{name: "stratovirt vhost", target: vsockdial.Target{CID: 11}},
		{name: "qemu vhost-vsock-device", target: vsockdial.Target{CID: 12}},
		{name: "stratovirt unix", target: vsockdial.Target{UDSPath: uds}},
	}
	bench.MountDebugfs()
	vmms[0].start(t, bin.StratoVirtArgsCmdline("512M", vsocktest.StoppableCmdline, "-device", "vsock,id=v,guest-cid=11,backend=vhost"))
	vmms[1].start(t, []string{"qemu-system-x86_64", "-M", "microvm", "-accel", "kvm", "-cpu", "host",
		"-m", "512M", "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", bin.Kernel, "-initrd", bin.Initrd, "-append", vsocktest.StoppableCmdline,
		"-device", "vhost-vsock-device,guest-cid=12"})
	vmms[2].start(t, bin.StratoVirtArgsCmdline("512M", vsocktest.StoppableCmdline, "-device", "vsock,id=v,guest-cid=13,backend=unix,uds-path="+uds))
	var procs []*os.Process
	for _, v := range vmms {
		procs = append(procs, v.vm.Cmd.Process)
	}

	// Finished rounds are saved after each (bench.SaveRuns): after a lab
	// freeze the benchmark goes on from there in a fresh lab.
	runs := runCount()
	res := map[string][]result{}
	if ok, err := bench.LoadRuns("vsock", &res); err != nil {
		t.Fatal(err)
	} else if ok {
		t.Logf("%d rounds saved by an earlier lab", len(res[vmms[0].name]))
	}
	first := min(len(res[vmms[0].name]), runs)
	for r := first; r < runs; r++ {
		round := map[string]result{}
		// Each workload runs on every VMM in turn, in an order that
		// rotates with the workload and the round, so that a slow drift of
		// the lab's speed falls on all three alike.
		for wi, w := range workloads {
			for j := range vmms {
				v := vmms[(r+wi+j)%len(vmms)]
				// The other VMMs are stopped while v is measured, so that
				// their guests' timers do not take turns on the lab's CPU.
				if err := bench.SignalOthers(procs, v.vm.Cmd.Process, syscall.SIGSTOP); err != nil {
					t.Fatal(err)
				}
				if round[v.name] == nil {
					round[v.name] = result{}
				}
				round[v.name][w.key] = v.measure(t, w.key)
				if err := bench.SignalOthers(procs, v.vm.Cmd.Process, syscall.SIGCONT); err != nil {
					t.Fatal(err)
				}
			}
		}
		line := fmt.Sprintf("round %d/%d:", r+1, runs)
		for _, v := range vmms {
			m := round[v.name]
			res[v.name] = append(res[v.name], m)
			line += fmt.Sprintf(" %s %.1f/%.1f/%.1f MiB/s;", v.name, m["h2g"], m["g2h"], m["par"])
		}
		fmt.Println(line)
		if err := bench.SaveRuns("vsock", res); err != nil {
			t.Fatal(err)
		}
	}
	samples := func(name, key string) []float64 {
		var out []float64
		for _, m := range res[name] {
			out = append(out, m[key])
		}
		return out
	}
	median := func(xs []float64) float64 { return bench.Summarize("", xs).Median }
	ours, qemu, user := vmms[0].name, vmms[1].name, vmms[2].name

	where, _ := lab.Where()
	var b strings.Builder
	fmt.Fprintf(&b, "\nvsock throughput, stratovirt-go vs QEMU %s microvm vhost-vsock-device (guest: Debian cloud kernel, 2 vCPUs, 512 MiB; medians of %d interleaved rounds; measured on: %s)\n\n",
		qemuVersion(), runs, where)
	b.WriteString("| workload | ours vhost MiB/s | ours unix MiB/s | QEMU vhost MiB/s | vhost ratio | unix ratio |\n|---|---:|---:|---:|---:|---:|\n")
	var rows []bench.Row
	for _, w := range workloads {
		o, u, q := median(samples(ours, w.key)), median(samples(user, w.key)), median(samples(qemu, w.key))
		fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f | %.2f | %.2f |\n", w.label, o, u, q, o/q, u/q)
		for _, side := range []struct{ label, name string }{{"vhost", ours}, {"unix backend", user}} {
			r := bench.NewRow("vsock "+w.label+", ours "+side.label, "MiB/s", samples(side.name, w.key), "qemu vhost-vsock-device", samples(qemu, w.key))
			r.HigherIsBetter = true
			r.Note = pairedNote(samples(side.name, w.key), samples(qemu, w.key))
			rows = append(rows, r)
		}
	}
	if len(vmms[0].kvm) > 0 {
		mib := float64(large+large+conns*each) * 2 / (1 << 20) // each echo moves its bytes both ways
		b.WriteString("\nKVM exits of the VM (the lab's KVM debugfs counters, summed over vCPUs) per MiB moved, this lab's rounds:\n\n| VMM | per MiB |\n|---|---|\n")
		for _, v := range vmms {
			fmt.Fprintf(&b, "| %s | %s |\n", v.name, bench.FormatStats(v.kvm, mib*float64(max(runs-first, 1))))
		}
		b.WriteString("\nContext switches of the VMM's threads (by thread name; vhost workers included) per MiB moved:\n\n| VMM | per MiB |\n|---|---|\n")
		for _, v := range vmms {
			fmt.Fprintf(&b, "| %s | %s |\n", v.name, bench.FormatStats(v.sw, mib*float64(max(runs-first, 1))))
		}
	}
	if err := bench.EmitRows(rows); err != nil {
		t.Error(err)
	}
	fmt.Println(b.String())
	t.Log(b.String())
}

// pairedNote gives the ratio ours/QEMU of each round (the two measured
// minutes apart, in the same lab) and their median.
func pairedNote(ours, qemu []float64) string {
	var ratios []float64
	var parts []string
	for i := range min(len(ours), len(qemu)) {
		if qemu[i] <= 0 {
			continue
		}
		ratios = append(ratios, ours[i]/qemu[i])
		parts = append(parts, fmt.Sprintf("%.2f", ours[i]/qemu[i]))
	}
	if len(ratios) == 0 {
		return ""
	}
	return fmt.Sprintf("ratio by round: %s (median %.2f)", strings.Join(parts, ", "), bench.Summarize("", ratios).Median)
}

func qemuVersion() string {
	out, err := exec.Command("qemu-system-x86_64", "--version").Output()
	if err != nil {
		return "?"
	}
	if f := strings.Fields(strings.SplitN(string(out), "\n", 2)[0]); len(f) >= 4 {
		return f[3]
	}
	return "?"
}
