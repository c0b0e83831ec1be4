package net

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stratovirt-go/stratovirt/tests/bench"
	"github.com/stratovirt-go/stratovirt/tests/lab"
	"github.com/stratovirt-go/stratovirt/tests/net/nettest"
)

var files Files

func TestMain(m *testing.M) {
	if os.Getenv("NET_BENCH") == "" {
		// Only the harness's self-checks run; TestNetBench skips.
		os.Exit(m.Run())
	}
	if f, ok := FromEnv(); ok {
		files = f
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "net-bench-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	f, err := Prepare(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "net bench:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	f.SetEnv()
	files = f
	code := lab.Exec(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

const (
	hostIP  = "10.0.2.1"
	guestIP = "10.0.2.2"
	mac     = "0e:90:df:9f:a8:90"
	rrCount = 200
	// nowatchdog: the guests are stopped (SIGSTOP) while another is
	// measured, which the lockup watchdog would take for a stuck CPU.
	cmdline = "console=ttyS0 reboot=k panic=1 nowatchdog quiet loglevel=3 test.mac=" + mac + " test.ip=" + guestIP
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// vm is one VMM running a benchmark guest on tap0 of its own namespace.
type vm struct {
	name string
	ns   *nettest.NetNS
	cmd  *exec.Cmd
	out  *syncBuf
	done chan error
	cpu  map[string]time.Duration // VMM process CPU time per workload
	gcpu map[string]time.Duration // of which running guest code (guest_time)
	// idleCPU and idleWall: CPU time the VMM used while every guest
	// was idle, over that wall time.
	idleCPU, idleWall time.Duration
	// kvm: the VM's KVM exit counters per workload (bench.KVMStats); sw:
	// the VMM's context switches by thread name (bench.ThreadSwitches).
	kvm, sw map[string]map[string]int64
}

func startVM(t *testing.T, i int, name string, args []string) *vm {
	t.Helper()
	ns, err := nettest.NewNetNS(fmt.Sprintf("svtnb%d-%d", i, os.Getpid()))
	if err != nil {
		t.Skipf("network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	if err := ns.AddTap("tap0", hostIP+"/24"); err != nil {
		t.Fatal(err)
	}
	profile := profileDir() != "" && strings.HasPrefix(name, "stratovirt")
	if profile {
		args = append(args, "-disable-seccomp") // the profiler's timers need it
	}
	v := &vm{name: name, ns: ns, cmd: ns.Command(args...), out: &syncBuf{}, done: make(chan error, 1), cpu: map[string]time.Duration{}, gcpu: map[string]time.Duration{}, kvm: map[string]map[string]int64{}, sw: map[string]map[string]int64{}}
	v.cmd.Stdout, v.cmd.Stderr = v.out, v.out
	if profile {
		v.cmd.Env = append(os.Environ(), "STRATOVIRT_CPUPROFILE="+filepath.Join(profileDir(), strings.ReplaceAll(name, " ", "-")+".pprof"))
	}
	if err := v.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { v.done <- v.cmd.Wait() }()
	t.Cleanup(func() {
		v.cmd.Process.Kill()
		<-v.done
		if t.Failed() {
			t.Logf("%s output:\n%s", name, v.out.String())
		}
	})
	return v
}

// profileDir is NET_BENCH_PROFILE: a directory where each of our VMMs
// writes a CPU profile of its run (STRATOVIRT_CPUPROFILE), for
// go tool pprof with the stratovirt binary. In a lab, it must be under
// the results directory to come back.
func profileDir() string { return os.Getenv("NET_BENCH_PROFILE") }

// idleWindow is how long the idle CPU time of the VMMs is measured.
const idleWindow = 10 * time.Second

// stop ends v with SIGTERM, which lets our VMM write its profile.
func (v *vm) stop(t *testing.T) {
	v.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-v.done:
		v.done <- err
	case <-time.After(time.Minute):
		t.Errorf("%s: still running a minute after SIGTERM", v.name)
	}
}

// addDiff adds after-before to the counters m keeps for kind.
func addDiff(m map[string]map[string]int64, kind string, before, after map[string]int64) {
	if m[kind] == nil {
		m[kind] = map[string]int64{}
	}
	bench.AddStatsDiff(m[kind], before, after)
}

// client runs benchtool's client for one workload from v's namespace and
// returns its result fields (see parseResult).
func (v *vm) client(kind string, n int64) ([]float64, error) {
	cpu0, g0 := v.cpuTimes()
	k0 := bench.KVMStats(v.cmd.Process.Pid, bench.KVMExitCounters)
	sw0 := bench.ThreadSwitches(v.cmd.Process.Pid)
	out, err := v.ns.Command(files.Tool, "client", guestIP+":5201", kind, strconv.FormatInt(n, 10)).CombinedOutput()
	cpu1, g1 := v.cpuTimes()
	v.cpu[kind] += cpu1 - cpu0
	v.gcpu[kind] += g1 - g0
	addDiff(v.kvm, kind, k0, bench.KVMStats(v.cmd.Process.Pid, bench.KVMExitCounters))
	addDiff(v.sw, kind, sw0, bench.ThreadSwitches(v.cmd.Process.Pid))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %v: %s", v.name, kind, err, strings.TrimSpace(string(out)))
	}
	return parseResult(string(out), kind)
}

// cpuTime is the VMM process's user+system time (vCPU threads included;
// kernel vhost workers are not).
func (v *vm) cpuTime() time.Duration { t, _ := v.cpuTimes(); return t }

// cpuTimes returns the VMM process's user+system time and the part of it
// spent running guest code (guest_time).
func (v *vm) cpuTimes() (total, guest time.Duration) {
	total, guest, _ = bench.ProcCPU(v.cmd.Process.Pid)
	return total, guest
}

func oursArgs(vhost string) []string {
	return []string{files.VMM, "-name", "net-bench", "-kernel", files.Kernel, "-initrd", files.Initrd,
		"-m", "512M", "-smp", "2", "-serial", "stdio", "-netdev", "id=net0,netdev=tap0,mac=" + mac + ",vhost=" + vhost, "-append", cmdline}
}

func qemuArgs(vhost string) []string {
	return []string{"qemu-system-x86_64", "-M", "microvm", "-accel", "kvm", "-cpu", "host",
		"-m", "512M", "-smp", "2", "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot",
		"-kernel", files.Kernel, "-initrd", files.Initrd, "-append", cmdline,
		"-netdev", "tap,id=n0,ifname=tap0,script=no,downscript=no,vhost=" + vhost,
		"-device", "virtio-net-device,netdev=n0,mac=" + mac}
}

func TestNetBench(t *testing.T) {
	if os.Getenv("NET_BENCH") == "" {
		t.Skip("set NET_BENCH=1 to run the network benchmark")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root for network namespaces and taps")
	}
	for _, p := range []string{"ip", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("needs %s", p)
		}
	}
	for _, p := range []string{"/dev/kvm", "/dev/net/tun"} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("needs %s", p)
		}
	}
	if prof := profileDir(); prof != "" {
		if err := os.MkdirAll(prof, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	size := int64(envInt("NET_BENCH_SIZE", 32)) << 20
	runs := envInt("NET_BENCH_RUNS", envInt("BENCH_RUNS", 5)) // make bench BENCH_RUNS=N exports it

	type spec struct {
		name string
		args []string
	}
	specs := []spec{{"stratovirt-go", oursArgs("off")}, {"QEMU vhost=off", qemuArgs("off")}}
	pairs := []pair{{"stratovirt-go", "QEMU vhost=off", ""}}
	if _, err := os.Stat("/dev/vhost-net"); err == nil {
		specs = append(specs, spec{"stratovirt-go vhost=on", oursArgs("on")}, spec{"QEMU vhost=on", qemuArgs("on")})
		pairs = append(pairs, pair{"stratovirt-go vhost=on", "QEMU vhost=on", ", vhost-net"})
	} else {
		t.Log("no /dev/vhost-net: no vhost=on rows")
	}
	bench.MountDebugfs()
	// All guests run at once, each on its own tap in its own namespace
	// (same addresses); only one transfers at a time, with the other
	// VMMs stopped (SIGSTOP).
	var vms []*vm
	var procs []*os.Process // ip netns exec runs each VMM in its own place
	for i, s := range specs {
		vms = append(vms, startVM(t, i, s.name, s.args))
		procs = append(procs, vms[i].cmd.Process)
	}
	for _, v := range vms {
		start := time.Now()
		// Boots are slow when the lab's host is loaded: wait for the
		// guest's server before the client's own 3-minute dial retry.
		for !strings.Contains(v.out.String(), "BENCHTOOL SERVING") {
			select {
			case err := <-v.done:
				v.done <- err
				t.Fatalf("%s exited before its guest served: %v", v.name, err)
			case <-time.After(100 * time.Millisecond):
			}
			if time.Since(start) > 10*time.Minute {
				t.Fatalf("%s: guest server not up after 10 minutes", v.name)
			}
		}
		if _, err := v.client("rr", 10); err != nil {
			t.Fatalf("%s: guest server not reachable: %v", v.name, err)
		}
		// Warm up both directions.
		for _, k := range []string{"source", "sink"} {
			if _, err := v.client(k, 4<<20); err != nil {
				t.Fatalf("warm-up: %v", err)
			}
		}
		fmt.Printf("%s: guest ready and warmed up in %v\n", v.name, time.Since(start).Round(time.Millisecond))
	}
	for _, v := range vms {
		clear(v.cpu)
		clear(v.gcpu)
		clear(v.kvm)
		clear(v.sw)
	}
	// What each VMM costs while its guest idles, all of them running.
	idle0, idleStart := make([]time.Duration, len(vms)), time.Now()
	for i, v := range vms {
		idle0[i] = v.cpuTime()
	}
	time.Sleep(idleWindow)
	for i, v := range vms {
		v.idleCPU, v.idleWall = v.cpuTime()-idle0[i], time.Since(idleStart)
	}

	// The rounds finished are saved after each (bench.SaveRuns): after a
	// lab freeze the benchmark goes on from there in a fresh lab.
	res, first := results{}, 0
	if ok, err := bench.LoadRuns("net", &res); err != nil {
		t.Fatal(err)
	} else if ok {
		first = min(res.rounds(), runs)
		t.Logf("%d rounds saved by an earlier lab", first)
	}
	for r := first; r < runs; r++ {
		// Rotate the order each round so that no VMM always goes first.
		for j := range vms {
			v := vms[(r+j)%len(vms)]
			// The other VMMs are stopped while v is measured: their
			// guests' timers would otherwise take turns on the lab's
			// CPU at random moments of v's transfers.
			if err := bench.SignalOthers(procs, v.cmd.Process, syscall.SIGSTOP); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"source", "sink"} {
				f, err := v.client(k, size)
				if err != nil {
					t.Fatal(err)
				}
				res.add(v.name, k, f[2])
			}
			f, err := v.client("rr", rrCount)
			if err != nil {
				t.Fatal(err)
			}
			res.add(v.name, "rr", f[1])
			if err := bench.SignalOthers(procs, v.cmd.Process, syscall.SIGCONT); err != nil {
				t.Fatal(err)
			}
		}
		line := fmt.Sprintf("round %d/%d:", r+1, runs)
		for _, v := range vms {
			m := res[v.name]
			line += fmt.Sprintf(" %s %.1f/%.1f MB/s %.0f µs;", v.name, m["source"][r], m["sink"][r], m["rr"][r])
		}
		fmt.Println(line)
		if err := bench.SaveRuns("net", res); err != nil {
			t.Fatal(err)
		}
	}

	if prof := profileDir(); prof != "" {
		for _, v := range vms {
			v.stop(t)
		}
		fmt.Printf("CPU profiles of our VMMs in %s\n", prof)
	}

	where, _ := lab.Where()
	var b strings.Builder
	fmt.Fprintf(&b, "\nvirtio-net TCP, stratovirt-go vs QEMU %s microvm virtio-net-device, same tap setup (guest: Debian cloud kernel, 2 vCPUs, 512 MiB; "+
		"%d MiB per transfer, %d interleaved runs with the other VMMs stopped, %d round trips per run; both ends are the static Go benchtool (iperf3 would need its shared libraries in the guest); measured on: %s)\n\n",
		qemuVersion(), size>>20, runs, rrCount, where)
	b.WriteString(table(res, pairs))
	if err := bench.EmitRows(benchRows(res, pairs)); err != nil {
		t.Error(err)
	}
	b.WriteString("\nRatios are ours/peer: above 1 is better for MB/s, worse for µs.\n\n")
	b.WriteString("VMM process CPU time per GB moved, total (of which running guest code, proc guest_time); a vhost=on kernel worker (vhost-PID thread) is not counted:\n\n")
	b.WriteString("| VMM | guest→host CPU s/GB | host→guest CPU s/GB | CPU while idle (all guests idle) |\n|---|---:|---:|---:|\n")
	gb := float64(size) * float64(max(runs-first, 1)) / 1e9 // CPU time counts this lab's rounds
	for _, v := range vms {
		idle := 0.0
		if v.idleWall > 0 {
			idle = 100 * v.idleCPU.Seconds() / v.idleWall.Seconds()
		}
		fmt.Fprintf(&b, "| %s | %.1f (%.1f) | %.1f (%.1f) | %.1f%% |\n", v.name, v.cpu["source"].Seconds()/gb, v.gcpu["source"].Seconds()/gb,
			v.cpu["sink"].Seconds()/gb, v.gcpu["sink"].Seconds()/gb, idle)
	}
	if len(vms[0].kvm) > 0 {
		mb := gb * 1000
		units := []struct {
			kind, name string
			per        float64
		}{{"source", "guest→host, per MB", mb}, {"sink", "host→guest, per MB", mb}, {"rr", "round trip", float64(rrCount * max(runs-first, 1))}}
		b.WriteString("\nKVM exits of the VM (the lab's KVM debugfs counters, summed over vCPUs) and context switches of the VMM's threads (by thread name, vhost workers included), per MB moved and per round trip:\n\n")
		b.WriteString("| VMM | workload | KVM exits | context switches |\n|---|---|---|---|\n")
		for _, v := range vms {
			for _, k := range units {
				fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", v.name, k.name, bench.FormatStats(v.kvm[k.kind], k.per), bench.FormatStats(v.sw[k.kind], k.per))
			}
		}
	}
	fmt.Println(b.String())
	t.Log(b.String())
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
